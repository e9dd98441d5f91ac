"""The one path layer: local paths and cloud URIs (gs://, s3://) alike, and the files the project writes and reads
through it (JSON records, .npz arrays, any file made whole before it appears).

Paths are `etils.epath` paths, the layer Orbax uses, so a workdir or a model can live in a bucket wherever the
filesystem package for its scheme is installed (`pip install 'muse_styledrop[gcs]'` for gs://). A local file is
written to a temporary name and renamed into place; a cloud object is uploaded whole, which object stores make
visible all at once. Cloud files that must be read locally (safetensors are memory-mapped) are copied once into a
cache folder and refreshed when their size or time changes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from etils import epath

from muse_styledrop import faults

CACHE_ENV = "MUSE_STYLEDROP_CACHE"


class FileFormatError(ValueError):
  """A file that is missing or cannot be read as what it should be."""


def path(p: str | os.PathLike) -> Path | epath.Path:
  """`p` as a path: a pathlib.Path for a local one (`~` expanded), an epath.Path for a cloud URI. Both have
  pathlib's methods (open, read_bytes, iterdir, exists, mkdir, /)."""
  text = os.fspath(p)
  return epath.Path(text) if is_remote(text) else Path(text).expanduser()


def size(p: str | os.PathLike) -> int:
  """The size of a file in bytes, local or cloud."""
  p = path(p)
  return p.stat().length if is_remote(p) else p.stat().st_size


def is_remote(p: str | os.PathLike) -> bool:
  """True for a cloud URI (scheme://...)."""
  return "://" in os.fspath(p)


def copy_file(src: Path | epath.Path, dst: Path | epath.Path) -> None:
  """Stream one file's bytes to another path, either of them local or cloud."""
  with src.open("rb") as r, dst.open("wb") as w:
    shutil.copyfileobj(r, w, 1 << 22)


@contextlib.contextmanager
def atomic_file(p: str | os.PathLike) -> Iterator[Path]:
  """A local file to write; when the block ends without error it becomes `p`, whole (renamed into place locally,
  uploaded for a cloud path). On error nothing appears and `p` keeps its old content."""
  dst = path(p)
  dst.parent.mkdir(parents=True, exist_ok=True)
  if not is_remote(dst):
    tmp = dst.parent / f".{dst.name}.{os.getpid()}.tmp"  # one per process: several may write the same file
    try:
      yield tmp
      faults.point(f"write {dst.name}")
      os.replace(tmp, dst)
    finally:
      tmp.unlink(missing_ok=True)
    return
  with tempfile.TemporaryDirectory(prefix="muse_styledrop_") as folder:
    tmp = Path(folder) / dst.name
    yield tmp
    copy_file(tmp, dst)


@contextlib.contextmanager
def atomic_folder(p: str | os.PathLike) -> Iterator[Path]:
  """A local folder to fill; when the block ends without error it replaces the folder `p` whole (renamed into
  place locally; for a cloud path the old objects are removed and the new uploaded once every file is written).
  On error `p` is left as it was."""
  dst = path(p)
  if not is_remote(dst):
    tmp = _parent(dst) / f".{dst.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
      yield tmp
      faults.point(f"write {dst.name}/")
      if dst.exists():  # the old folder steps aside, the new one takes its name, then the old one goes
        old = dst.parent / f".{dst.name}.{os.getpid()}.old.tmp"
        dst.rename(old)
        tmp.rename(dst)
        shutil.rmtree(old)
      else:
        tmp.rename(dst)
    finally:
      shutil.rmtree(tmp, ignore_errors=True)
    return
  with tempfile.TemporaryDirectory(prefix="muse_styledrop_") as folder:
    tmp = Path(folder) / dst.name
    tmp.mkdir()
    yield tmp
    if dst.exists():
      dst.rmtree()
    for f in sorted(tmp.rglob("*")):
      if f.is_file():
        target = dst / os.fspath(f.relative_to(tmp))
        target.parent.mkdir(parents=True, exist_ok=True)
        copy_file(f, target)


def _parent(dst: Path) -> Path:
  parent = dst.parent
  parent.mkdir(parents=True, exist_ok=True)
  return parent


STALE = re.compile(r"^\.(.+)\.(\d+)(\.old)?\.tmp$")


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
  """Clear what killed processes left of their atomic writes under a local `folder` (`.NAME.PID[.old].tmp`, PID no
  longer running): a folder a process stopped between setting the old NAME aside and renaming the new one in is
  put back as NAME; the rest is removed. Returns the paths cleared. A cloud folder has none (uploads are whole)."""
  folder = path(folder)
  if is_remote(folder) or not folder.is_dir():
    return []
  cleared = []
  for p in sorted(folder.rglob(".*.tmp"), key=lambda p: len(p.parts), reverse=True):
    match = STALE.match(p.name)
    if not match or _running(int(match.group(2))) or not p.exists():
      continue
    name = p.parent / match.group(1)
    if match.group(3) and not name.exists():
      p.rename(name)
    elif p.is_dir():
      shutil.rmtree(p, ignore_errors=True)
    else:
      p.unlink(missing_ok=True)
    cleared.append(p)
  return cleared


def _running(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's process
    return True
  return True


def check_folder(p: str | os.PathLike, flag: str) -> None:
  """Make sure `p` is (or can become) a folder this process can write: one line naming `flag` otherwise."""
  folder = path(p)
  if is_remote(folder):
    return
  if folder.exists() and not folder.is_dir():
    raise FileFormatError(f"{flag}={folder} is a file, not a folder; give a folder (a new one is made)")
  try:
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".write_check.{os.getpid()}.tmp"
    probe.write_bytes(b"")
    probe.unlink()
  except OSError as e:
    raise FileFormatError(f"{flag}={folder} is not writable ({e.strerror}); choose another folder") from None


def set_aside(p: str | os.PathLike) -> Path | epath.Path:
  """Rename `p` to `p.old-<UTC time>` (a number added if that exists) and return the new name."""
  src = path(p)
  stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
  dst, n = src.parent / f"{src.name}.old-{stamp}", 1
  while dst.exists():
    dst, n = src.parent / f"{src.name}.old-{stamp}-{n}", n + 1
  src.rename(dst)
  return dst


def write_bytes(data: bytes, p: str | os.PathLike) -> None:
  """Write `data` atomically: a reader sees the old file or the new, whole."""
  with atomic_file(p) as tmp:
    tmp.write_bytes(data)


def write_text(text: str, p: str | os.PathLike) -> None:
  write_bytes(text.encode(), p)


def write_json(obj: Any, p: str | os.PathLike) -> None:
  """Write `obj` as indented JSON, atomically."""
  write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", p)


def read_text(p: str | os.PathLike) -> str:
  """A text file a person wrote (prompts, captions), as UTF-8; anything else is one clear error."""
  p = path(p)
  data = p.read_bytes()
  try:
    return data.decode("utf-8-sig")  # a byte-order mark, as some editors write, is not part of the first line
  except UnicodeDecodeError as e:
    raise FileFormatError(
      f"{p} is not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start}); save it as UTF-8"
    ) from None


def read_json(p: str | os.PathLike, error: type[Exception] = FileFormatError) -> Any:
  """The JSON in `p`; a missing or broken file raises `error` with a message that names it."""
  p = path(p)
  if not p.is_file():
    raise error(f"{p} is missing; point the config at a complete model directory")
  try:
    return json.loads(p.read_text())
  except json.JSONDecodeError as e:
    raise error(f"{p} is not valid JSON ({e}); re-download or re-export that file") from e


def save_arrays(arrays: dict, p: str | os.PathLike, compressed: bool = False) -> None:
  """Write named arrays as one .npz, atomically."""
  buffer = io.BytesIO()
  (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
  write_bytes(buffer.getvalue(), p)


def load_arrays(p: str | os.PathLike) -> dict:
  """Every array of an .npz file, read into memory."""
  with path(p).open("rb") as f, np.load(io.BytesIO(f.read())) as arrays:
    return {k: arrays[k] for k in arrays.files}


@contextlib.contextmanager
def fetched(p: str | os.PathLike) -> Iterator[Path]:
  """A local path to read `p` from during the block: `p` itself when local, else a temporary copy."""
  src = path(p)
  if not is_remote(src):
    yield src
    return
  with tempfile.TemporaryDirectory(prefix="muse_styledrop_") as folder:
    local = Path(folder) / src.name
    copy_file(src, local)
    yield local


def _files_under(folder: epath.Path) -> Iterator[epath.Path]:
  """Every file below `folder`, a listing per folder (cloud paths take no recursive glob)."""
  for child in sorted(folder.iterdir()):
    if child.is_dir():
      yield from _files_under(child)
    else:
      yield child


def cache_root() -> Path:
  """Where cloud files are copied to be read locally: $MUSE_STYLEDROP_CACHE, else ~/.cache/muse_styledrop."""
  return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "muse_styledrop").expanduser()


def local_copy(p: str | os.PathLike) -> Path:
  """A local path holding what `p` holds: `p` itself when it is local; for a cloud file or folder, its copy under
  cache_root()/remote/, each file fetched again only when its size or modification time changed."""
  src = path(p)
  if not is_remote(src):
    return src
  if not src.exists():
    raise FileNotFoundError(f"{src} does not exist; check the URI and that this machine can read the bucket")
  scheme, rest = os.fspath(src).split("://", 1)
  dst = cache_root() / "remote" / scheme / rest
  if src.is_dir():
    pairs = [(f, dst / os.fspath(f.relative_to(src))) for f in _files_under(src)]
  else:
    pairs = [(src, dst)]
  stamps_file = dst.with_name(dst.name + ".sources.json")
  stamps = json.loads(stamps_file.read_text()) if stamps_file.is_file() else {}
  for f, local in pairs:
    st = f.stat()
    stamp = [st.length, st.mtime]
    key = os.fspath(local.relative_to(dst)) if local != dst else "."
    if stamps.get(key) == stamp and local.is_file():
      continue
    with atomic_file(local) as tmp:
      copy_file(f, tmp)
    stamps[key] = stamp
    write_json(stamps, stamps_file)
  return dst
