"""Named sets of content prompts (the style phrase is appended when they are drawn)."""

from __future__ import annotations

import importlib
from pathlib import Path

from muse_styledrop import files

EVALUATION_FILE = Path(__file__).parent / "assets" / "prompts" / "evaluation.txt"

# StyleDrop's round-2 pool (docs/method.md): 30 contents, 64 pictures each in the paper.
PAPER_FEEDBACK = [
  *(
    f"{a}{b}" for a in ("A chihuahua", "A tabby cat") for b in ("", " walking on the street", " walking in the forest")
  ),
  "A portrait of chihuahua",
  "A portrait of tabby cat",
  "A portrait of human face",
  *(f"{a} on the {b}" for a in ("An apple", "A banana") for b in ("table", "dish", "ground")),
  "A human",
  "A human walking on the street",
  "A human walking in the forest",
  *(
    f"{a} {b}"
    for a in ("A church", "A temple", "A cabin")
    for b in ("on the street", "in the mountain", "in the field", "on the beach")
  ),
]

# name -> a list, or (module, function) of an evaluator that knows its world, imported only when asked for
SETS = {
  "paper": PAPER_FEEDBACK,
  # the paper's 30 and 156 of this project's own across the Parti prompts' kinds of content (the file's sections)
  "evaluation": ("muse_styledrop.prompts", "evaluation_prompts"),
  "shapes": ("muse_styledrop.evaluators.shapes_oracle", "pool_prompts"),
  "shapes_styles": ("muse_styledrop.evaluators.shapes_oracle", "style_phrases"),
}


def prompt_set(name: str) -> list[str]:
  """The content prompts of the set `name`."""
  if name not in SETS:
    raise ValueError(f"unknown prompt set {name!r}; use one of {', '.join(SETS)} or a file")
  found = SETS[name]
  if isinstance(found, tuple):
    module, function = found
    return getattr(importlib.import_module(module), function)()
  return list(found)


def read_file(path: str | Path) -> list[str]:
  """One content prompt a line; blank lines and '#' comments are skipped."""
  path = files.path(path)
  if not path.is_file():
    raise ValueError(f"prompt file {path} does not exist; give a prompt set ({', '.join(SETS)}) or a text file")
  found = [line.strip() for line in files.read_text(path).splitlines() if line.strip() and not line.startswith("#")]
  if not found:
    raise ValueError(f"prompt file {path} holds no prompts; write one content prompt a line")
  return found


def evaluation_prompts() -> list[str]:
  return read_file(EVALUATION_FILE)


def read_prompts(name_or_file: str) -> list[str]:
  """A prompt set by name, or the prompts of a file."""
  return prompt_set(name_or_file) if name_or_file in SETS else read_file(name_or_file)
