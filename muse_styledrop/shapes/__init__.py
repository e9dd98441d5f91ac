"""The shapes world: a procedural image world with exact labels, for the embedded base model and for grading."""

from muse_styledrop.shapes.render import HELD_OUT, SEEN, STYLES, Example, caption, example, render
from muse_styledrop.shapes.world import BACKGROUNDS, COLOURS, POSITIONS, SHAPES, SIZES, Obj, Scene, random_scene

__all__ = [
  "BACKGROUNDS",
  "COLOURS",
  "HELD_OUT",
  "POSITIONS",
  "SEEN",
  "SHAPES",
  "SIZES",
  "STYLES",
  "Example",
  "Obj",
  "Scene",
  "caption",
  "example",
  "random_scene",
  "render",
]
