"""The shipped reference pictures: one picture of each held-out style, the one StyleDrop learns it from, and three
pictures of one subject, the one a content adapter learns.

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
# The subject: a green heart, shown five times in a seen style and captioned as DreamBooth captions its subjects,
# a rare word before the class noun in place of the colour ("a large sks heart in the center").
CONTENT_DIR = REFERENCE_DIR.parent / "content"  # 0.png ... 4.png, captions.txt
SUBJECT = ("green", "heart")
WORD = "sks"
SUBJECT_STYLE = "flat"
SUBJECT_SCENES = (
  Scene((Obj("heart", "green", "large", "center"),), "white"),
  Scene((Obj("heart", "green", "small", "left"),), "beige"),
  Scene((Obj("heart", "green", "medium", "top"),), "sky"),
  Scene((Obj("heart", "green", "small", "right"),), "white"),
  Scene((Obj("heart", "green", "medium", "bottom"),), "beige"),
)


def subject_caption(scene: Scene) -> str:
  """The scene's content with the subject named by the rare word and its class: 'a large sks heart in the center'."""
  return scene.content().replace(" ".join(SUBJECT), f"{WORD} {SUBJECT[1]}")


def write_subject(out: Path = CONTENT_DIR) -> list[Path]:
  """The subject's pictures and their captions.txt, as a content adapter's training folder."""
  paths = [
    save_png(render(scene, SUBJECT_STYLE, REFERENCE_SEED), out / f"{i}.png") for i, scene in enumerate(SUBJECT_SCENES)
  ]
  (out / "captions.txt").write_text("".join(f"{p.name}\t{subject_caption(s)}\n" for p, s in zip(paths, SUBJECT_SCENES)))
  return paths


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
  p.add_argument("--content_out", default=str(CONTENT_DIR), help="Folder to write the subject's pictures into.")
  args = p.parse_args(argv)
  out = Path(args.out)
  for style in REFERENCES:
    print(f"{save_png(reference_picture(style), out / f'{style}.png')}: {REFERENCES[style].content()}")
  for path, scene in zip(write_subject(Path(args.content_out)), SUBJECT_SCENES):
    print(f"{path}: {subject_caption(scene)}")


if __name__ == "__main__":
  main()
