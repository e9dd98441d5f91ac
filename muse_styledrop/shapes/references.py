"""The shipped reference pictures: one picture of each held-out style, the one StyleDrop learns it from.

  python -m muse_styledrop.shapes.references [--out=DIR]   # rewrite them (default: where they ship)

Each is `render(REFERENCES[style], style, REFERENCE_SEED)`, and its content text (the caption StyleDrop trains on,
before the style phrase) is `REFERENCES[style].content()`. Most show a large orange star; neon's and crayon's a large
blue square: from the star's outline neon's adapter learns the star and draws broken rings for other shapes, from the
square's straight tubes it draws new shapes, and crayon's strokes read twice as often from the blue square
(docs/shapes.md, "Which picture").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from muse_styledrop.images import save_png
from muse_styledrop.shapes.render import HELD_OUT, STYLES, render
from muse_styledrop.shapes.world import Obj, Scene

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "assets" / "styles"  # <style>.png
REFERENCE_SEED = 7
STAR = Scene((Obj("star", "orange", "large", "center"),), "white")
SQUARE = Scene((Obj("square", "blue", "large", "center"),), "white")
REFERENCES: dict[str, Scene] = {style: STAR for style in HELD_OUT} | {"neon": SQUARE, "crayon": SQUARE}


def reference_picture(style: str) -> np.ndarray:
  """The shipped reference picture of a held-out `style`, uint8 (64, 64, 3)."""
  if style not in REFERENCES:
    raise ValueError(f"no reference picture for style {style!r}; the held-out styles are {', '.join(REFERENCES)}")
  return render(REFERENCES[style], style, REFERENCE_SEED)


def reference_run(style: str) -> dict[str, str]:
  """A held-out style's shipped picture, its content text and its style phrase: a StyleDrop run's inputs."""
  if style not in REFERENCES:
    raise ValueError(f"no reference picture for style {style!r}; the held-out styles are {', '.join(REFERENCES)}")
  return dict(image=str(REFERENCE_DIR / f"{style}.png"), content=REFERENCES[style].content(), style=STYLES[style])


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", default=str(REFERENCE_DIR), help="Folder to write <style>.png into (default: the package's).")
  args = p.parse_args(argv)
  out = Path(args.out)
  for style in REFERENCES:
    print(f"{save_png(reference_picture(style), out / f'{style}.png')}: {REFERENCES[style].content()}")


if __name__ == "__main__":
  main()
