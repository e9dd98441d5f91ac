"""Named sets of content prompts (the style phrase is appended when they are drawn)."""

from __future__ import annotations

import importlib

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
