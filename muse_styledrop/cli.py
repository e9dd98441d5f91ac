"""Shared command-line behaviour: a user's mistake is one clear line on stderr and a non-zero exit."""

from __future__ import annotations

import sys

from absl import app

from muse_styledrop.images import ImageError
from muse_styledrop.pipeline import ModelDirectoryError
from muse_styledrop.weights import WeightsError

USER_ERRORS = (ModelDirectoryError, WeightsError, ImageError, FileNotFoundError, ValueError)


def run_main(main) -> None:
  """absl's app.run, with user errors reported as `error: <message>` and exit code 2 instead of a traceback."""

  def guarded(argv):
    try:
      return main(argv)
    except USER_ERRORS as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)

  app.run(guarded)
