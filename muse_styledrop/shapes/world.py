"""The shapes world: what a picture contains (its content) and how it is drawn (its style).

A scene is one or two objects (shape, colour, size, position) on a background.
Every scene has a caption built from its labels, so the world knows the true
content and style of every picture it draws (what the oracle grades).
"""

from __future__ import annotations

import dataclasses

import numpy as np

SHAPES = ("circle", "square", "triangle", "star", "heart", "cross", "diamond", "hexagon", "crescent", "ring")
COLOURS = {
  "red": (220, 40, 40),
  "orange": (245, 140, 20),
  "yellow": (240, 210, 30),
  "green": (40, 170, 60),
  "cyan": (30, 190, 210),
  "blue": (40, 70, 210),
  "purple": (140, 50, 190),
  "pink": (240, 110, 180),
}
SIZES = {"small": 0.16, "medium": 0.24, "large": 0.33}  # radius as a fraction of the side
POSITIONS = {"left": (0.3, 0.5), "right": (0.7, 0.5), "top": (0.5, 0.3), "bottom": (0.5, 0.7), "center": (0.5, 0.5)}
BACKGROUNDS = {
  "white": (245, 245, 240),
  "grey": (150, 150, 150),
  "black": (25, 25, 30),
  "beige": (225, 205, 170),
  "sky": (175, 210, 240),
}


@dataclasses.dataclass(frozen=True)
class Obj:
  shape: str
  colour: str
  size: str
  position: str


@dataclasses.dataclass(frozen=True)
class Scene:
  objects: tuple[Obj, ...]
  background: str

  def content(self) -> str:
    """'a small red circle on the left and a blue star on the right' (background named when not white)."""
    parts = []
    for o in self.objects:
      where = (
        "in the center"
        if o.position == "center"
        else f"at the {o.position}"
        if o.position in ("top", "bottom")
        else f"on the {o.position}"
      )
      size = "" if o.size == "medium" else f"{o.size} "
      parts.append(f"a {size}{o.colour} {o.shape} {where}")
    text = " and ".join(parts)
    if self.background != "white":
      text += f" on a {self.background} background"
    return text


def random_scene(rng: np.random.Generator, two_objects_p: float = 0.3) -> Scene:
  """A random scene: two objects sit left/right or top/bottom, never overlapping."""

  def obj(position):
    return Obj(str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS))), str(rng.choice(list(SIZES))), position)

  background = str(rng.choice(list(BACKGROUNDS)))
  if rng.random() < two_objects_p:
    pair = [("left", "right"), ("top", "bottom")][rng.integers(2)]
    a, b = obj(pair[0]), obj(pair[1])
    a, b = dataclasses.replace(a, size="small"), dataclasses.replace(b, size="small")
    return Scene((a, b), background)
  return Scene((obj(str(rng.choice(list(POSITIONS)))),), background)
