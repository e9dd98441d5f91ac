"""Shared command-line behaviour: a user's mistake is one clear line on stderr and a non-zero exit."""

from __future__ import annotations

import re
import sys

from absl import app, logging

from muse_styledrop.checkpointing import CheckpointMismatch
from muse_styledrop.images import ImageError
from muse_styledrop.pipeline import ModelDirectoryError
from muse_styledrop.weights import WeightsError

USER_ERRORS = (ModelDirectoryError, WeightsError, ImageError, CheckpointMismatch, FileNotFoundError, ValueError)


def fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def run_main(main) -> None:
  """absl's app.run, with user errors reported as `error: <message>` and exit code 2 instead of a traceback."""
  started = False

  def guarded(argv):
    nonlocal started
    started = True
    if not any(a.startswith(("--verbosity", "-v=")) for a in sys.argv):
      logging.set_verbosity(logging.WARNING)  # library INFO lines (Orbax, XLA) would bury the progress bar
    try:
      return main(argv)
    except USER_ERRORS as e:
      fail(str(e))

  try:
    app.run(guarded)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    if started:
      raise
    # ml_collections raises these while parsing `--config.a.b=value` overrides.
    name = re.findall(r"'([^']+)'", str(e))
    what = f"unknown config field {name[0]!r}" if name and isinstance(e, (AttributeError, KeyError)) else str(e)
    fail(f"{what} in a --config override; the config file lists every field")
