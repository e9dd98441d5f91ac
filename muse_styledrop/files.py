"""Small files the project writes and reads: JSON records and .npz arrays, each written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np


class FileFormatError(ValueError):
  """A file that is missing or cannot be read as what it should be."""


def read_json(path: Path, error: type[Exception] = FileFormatError) -> Any:
  """The JSON in `path`; a missing or broken file raises `error` with a message that names it."""
  path = Path(path)
  if not path.is_file():
    raise error(f"{path} is missing; point the config at a complete model directory")
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise error(f"{path} is not valid JSON ({e}); re-download or re-export that file") from e


def write_json(obj: Any, path: Path) -> None:
  """Write `obj` as indented JSON, atomically."""
  write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)


def write_text(text: str, path: Path) -> None:
  """Write `text` atomically (a temporary file, then a rename): a reader sees the old file or the new, whole."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text)
  os.replace(tmp, path)


def save_arrays(arrays: dict, path: Path, compressed: bool = False) -> None:
  """Write named arrays as one .npz, atomically."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp.npz")
  (np.savez_compressed if compressed else np.savez)(tmp, **arrays)
  os.replace(tmp, path)


def load_arrays(path: Path) -> dict:
  """Every array of an .npz file, read into memory."""
  with np.load(path) as f:
    return {k: f[k] for k in f.files}
