"""Style sets: the few images of one style, each with its own content text, and the style phrase.

A training prompt is the image's content followed by the style phrase
("A house" + "in watercolor painting style"): that separation is what lets
content and style come apart (docs/method.md).

Images of any size and mode become RGB squares at the model's resolution:
the shorter side is resized to the resolution (bicubic), then the centre is
cropped (images.load_image). Augmentation, when on, adds a horizontal flip
and random crops (80-100% of the side) of every image, and optionally
hue-turned copies (captioned with the style phrase alone, or their own
content text); all versions are
tokenised once, up front, and stay on device.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from muse_styledrop import files
from muse_styledrop.images import MIN_SIDE, ImageError, load_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
CAPTION_FILES = ("captions.txt", "captions.tsv")


class StyleSetError(ValueError):
  """A style set that cannot be built from what the user gave."""


def join_prompt(content: str, style: str) -> str:
  """'A cat' + 'in watercolor painting style' -> 'A cat in watercolor painting style'."""
  return " ".join(part.strip() for part in (content, style) if part and part.strip())


@dataclasses.dataclass
class StyleSet:
  paths: list[Path]
  contents: list[str]
  style_phrase: str

  @property
  def prompts(self) -> list[str]:
    return [join_prompt(c, self.style_phrase) for c in self.contents]

  def sha256(self) -> list[str]:
    """Each picture's content hash: what a workdir records to know its pictures again under any name."""
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in self.paths]


def _read_captions(folder: Path) -> dict[str, str] | None:
  for name in CAPTION_FILES:
    path = folder / name
    if path.is_file():
      captions = {}
      for n, line in enumerate(files.read_text(path).splitlines(), 1):
        if not line.strip():
          continue
        if "\t" not in line:
          raise StyleSetError(f"{path}:{n}: expected 'file name<TAB>content text', got {line!r}")
        file, text = line.split("\t", 1)
        if file.strip() in captions:
          raise StyleSetError(f"{path}:{n}: {file.strip()!r} has a caption already; give each picture one line")
        captions[file.strip()] = text.strip()
      pictures = {f.name for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES}
      extra = sorted(set(captions) - pictures)
      if extra:
        raise StyleSetError(f"{path} captions {extra[0]!r}, which is not a picture in {folder}; fix or remove the line")
      return captions
  return None


ROLES = ("style", "content")


def resolve_style_set(
  style_images: str | list[str], content_prompts: str | list[str], style_descriptor: str, role: str = "style"
) -> StyleSet:
  """Paths and content texts from config values: a path, a comma-separated list, or a folder (+ captions).

  A 'content' set (pictures of one subject, captions that name it by a rare word) needs no style phrase.
  """
  if role not in ROLES:
    raise StyleSetError(f"config.role={role!r}; use 'style' (StyleDrop) or 'content' (one subject, DreamBooth-like)")
  items = style_images if isinstance(style_images, (list, tuple)) else [s for s in str(style_images).split(",")]
  items = [s.strip() for s in items if s and s.strip()]
  if not items:
    raise StyleSetError(
      "the style set is empty; set --config.style_images to an image, a comma-separated list "
      "of images, or a folder of images"
    )
  paths, captions = [], {}
  for item in items:
    p = files.path(item)
    if p.is_dir():
      found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
      if not found:
        raise StyleSetError(f"folder {p} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
      paths += found
      captions.update({str(p / k): v for k, v in (_read_captions(p) or {}).items()})
    elif p.exists():
      paths.append(p)
    else:
      raise ImageError(f"style image {p} does not exist; check --config.style_images")
  if isinstance(content_prompts, str):
    given = [c.strip() for c in content_prompts.split("|")] if content_prompts.strip() else []
  else:
    given = [c.strip() for c in content_prompts]
  if given:
    if len(given) != len(paths):
      raise StyleSetError(
        f"{len(given)} content prompt(s) for {len(paths)} style image(s); give one per image, "
        "separated by '|', in the order of the images"
      )
    contents = given
  else:
    missing = [p for p in paths if str(p) not in captions]
    if missing:
      raise StyleSetError(
        f"style image {missing[0]} has no content text; set --config.content_prompts "
        "('a house|a cat', one per image) or put a captions.txt (file<TAB>text) in its folder"
      )
    contents = [captions[str(p)] for p in paths]
  if not style_descriptor.strip() and role == "style":
    raise StyleSetError(
      "the style phrase is empty; set --config.style_descriptor (e.g. 'in watercolor painting "
      "style', or a rare token such as 'in sks style'); a content adapter takes --config.role=content"
    )
  for p in paths:  # every picture readable now, before a model loads or a folder is made
    load_image(p, MIN_SIDE)
  return StyleSet(paths, contents, style_descriptor.strip())


def rotate_hue(image_HWC: np.ndarray, turn: float) -> np.ndarray:
  """An RGB picture in [0, 1] with every hue turned by `turn` of the colour wheel (saturation and value kept)."""
  hsv = np.asarray(Image.fromarray((image_HWC * 255).round().astype(np.uint8)).convert("HSV")).copy()
  hsv[..., 0] = (hsv[..., 0].astype(np.int32) + int(round(turn * 256))) % 256
  return np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"), np.float32) / 255.0


def check_augment(hues: int, hue_caption: str) -> None:
  if hue_caption not in ("phrase", "content"):
    raise StyleSetError(f"augment.hue_caption={hue_caption!r}: use 'phrase' or 'content'")
  if hues < 0:
    raise StyleSetError(f"augment.hues={hues}: the number of hue-turned copies per image must be 0 or more")


def augmented_images(
  style: StyleSet, resolution: int, augment: bool, crops: int, seed: int, hues: int = 0, hue_caption: str = "phrase"
):
  """(images_NHWC in [0, 1], prompt index per version): each image, its flip, and random crops.

  With `hues` = k, also k copies of each image with its hues turned evenly round the colour wheel. Their colours no
  longer match the content text, so with hue_caption 'phrase' they index one more prompt, the style phrase alone
  (len(style.paths)); with 'content' they keep their image's prompt.
  """
  check_augment(hues, hue_caption)
  rng = np.random.default_rng(seed)
  out, index = [], []
  for i, path in enumerate(style.paths):
    base = load_image(path, resolution)
    versions = [base]
    if augment and hues:
      turned = [rotate_hue(base, k / (hues + 1)) for k in range(1, hues + 1)]
      out += turned
      index += [len(style.paths) if hue_caption == "phrase" else i] * hues
    if augment:
      versions.append(base[:, ::-1])
      big = load_image(path, int(resolution * 1.25))
      for _ in range(crops):
        side = int(rng.integers(int(0.8 * big.shape[0]), big.shape[0] + 1))
        top, left = rng.integers(0, big.shape[0] - side + 1, size=2)
        crop = (big[top : top + side, left : left + side] * 255).astype(np.uint8)
        versions.append(
          np.asarray(Image.fromarray(crop).resize((resolution, resolution), Image.Resampling.BICUBIC), np.float32)
          / 255.0
        )
    out += versions
    index += [i] * len(versions)
  return np.stack(out).astype(np.float32), np.asarray(index, np.int32)
