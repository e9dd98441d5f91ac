"""Shared command-line behaviour: a user's mistake is one clear line on stderr and a non-zero exit."""

from __future__ import annotations

import errno
import os
import re
import sys
from pathlib import Path

from absl import app, logging

from muse_styledrop.checkpointing import CheckpointMismatch
from muse_styledrop.distributed import DistributedError
from muse_styledrop.images import ImageError
from muse_styledrop.loop import TrainingDiverged
from muse_styledrop.pipeline import ModelDirectoryError
from muse_styledrop.weights import WeightsError

USER_ERRORS = (
  ModelDirectoryError,
  WeightsError,
  ImageError,
  CheckpointMismatch,
  DistributedError,
  TrainingDiverged,
  FileNotFoundError,
  ValueError,
)


DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def use_compilation_cache() -> None:
  """Keep compiled programs on disk (MUSE_STYLEDROP_XLA_CACHE, default ~/.cache/muse_styledrop/xla; empty: off),
  so the second run of a command starts without compiling again."""
  import jax  # noqa: PLC0415

  path = os.environ.get("MUSE_STYLEDROP_XLA_CACHE", str(Path.home() / ".cache" / "muse_styledrop" / "xla"))
  if path:
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    jax.config.update("jax_compilation_cache_max_size", 2 * 2**30)  # least recently used entries go first


def run_main(main, compilation_cache: bool = True) -> None:
  """absl's app.run, with user errors reported as `error: <message>` and exit code 2 instead of a traceback."""
  started = False

  def guarded(argv):
    nonlocal started
    started = True
    if not any(a.startswith(("--verbosity", "-v=")) for a in sys.argv):
      logging.set_verbosity(logging.WARNING)  # library INFO lines (Orbax, XLA) would bury the progress bar
    if compilation_cache:
      use_compilation_cache()
    try:
      return main(argv)
    except USER_ERRORS as e:
      fail(str(e))
    except OSError as e:
      if e.errno not in DISK_ERRORS:
        raise
      fail(
        f"{e.strerror or os.strerror(e.errno)} while writing {e.filename or 'a file'}; make room (or choose a "
        "writable folder) and run the same command again: what was written before stays whole, and training resumes"
      )

  def parse(argv):
    from absl import flags  # noqa: PLC0415

    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      # A config file's own error (an unknown variant) arrives as the text of its traceback: say its last line.
      raised = re.findall(r"^\w+Error: (.+)$", str(e), re.M)
      fail(raised[-1] if raised else str(e).strip().splitlines()[0])

  try:
    app.run(guarded, flags_parser=parse)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    if started:
      raise
    # ml_collections raises these while parsing `--config.a.b=value` overrides.
    message = str(e)
    overrides = [a[len("--config.") :].split("=", 1)[0] for a in sys.argv if a.startswith("--config.")]
    bad = [o for o in overrides if o.split(".")[-1] in message]
    if bad and isinstance(e, (AttributeError, KeyError)):
      hint = re.search(r'Did you mean "([^"]+)"', message)
      fail(
        f"unknown config field {bad[0]!r} in a --config override"
        + (f" (did you mean {hint.group(1)!r}?)" if hint else "")
        + "; the config file lists every field"
      )
    fail(f"{message.strip()} (while reading the --config flags)")


def workdir_from_flags(config) -> str:
  """--workdir (default runs/<config name>); with --fresh an existing one is renamed DIR.old-<time>, never deleted."""
  from absl import flags  # noqa: PLC0415

  from muse_styledrop import distributed, files  # noqa: PLC0415

  workdir = flags.FLAGS.workdir or str(Path("runs") / config.name)
  if flags.FLAGS.fresh and files.path(workdir).exists() and distributed.is_writer():
    aside = files.set_aside(workdir)
    print(f"--fresh: the old run is now {aside}")
  return workdir


def run_config_main(main, config_help: str, compilation_cache: bool = True) -> None:
  """`--config=FILE[:variant] [--config.key=value ...] [--workdir=DIR]`, then `main` under run_main."""
  from absl import flags  # noqa: PLC0415
  from ml_collections import config_flags  # noqa: PLC0415

  from muse_styledrop.configs import resolve  # noqa: PLC0415

  # a configs/ path that is not here is the installed package's copy of that config
  sys.argv = [f"--config={resolve(a[len('--config=') :])}" if a.startswith("--config=") else a for a in sys.argv]
  config_flags.DEFINE_config_file("config", None, config_help, lock_config=True)
  flags.DEFINE_string("workdir", "", "Run directory; default runs/<config name>.")
  flags.DEFINE_bool("fresh", False, "Set an existing --workdir aside (renamed DIR.old-<time>) and start afresh.")
  flags.mark_flags_as_required(["config"])
  run_main(main, compilation_cache)
