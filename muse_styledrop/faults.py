"""Fault injection: the reliability tests stop a command with SIGKILL at a chosen moment.

`MUSE_STYLEDROP_KILL_AT="PATTERN@N"` kills this process (SIGKILL, which nothing can catch or clean up after) the
N-th time it passes a point whose name matches PATTERN (fnmatch). The points are the moments where an
interruption could lose or tear something:

  step                  a jitted call of training steps was dispatched
  save                  an Orbax checkpoint save has started (asynchronous saves are still writing)
  draw                  the end-of-run drawing is about to start
  write NAME            NAME's new content is written to its temporary file, not yet renamed into place

Unset (always, outside the tests) a point costs one environment lookup.
"""

from __future__ import annotations

import collections
import fnmatch
import os
import signal

ENV = "MUSE_STYLEDROP_KILL_AT"
_passed: collections.Counter = collections.Counter()


def point(name: str) -> None:
  """Pass the fault point `name`: SIGKILL this process here if MUSE_STYLEDROP_KILL_AT asks for it."""
  spec = os.environ.get(ENV)
  if not spec:
    return
  pattern, _, nth = spec.rpartition("@")
  if not fnmatch.fnmatchcase(name, pattern):
    return
  _passed[pattern] += 1
  if _passed[pattern] == int(nth):
    os.kill(os.getpid(), signal.SIGKILL)
