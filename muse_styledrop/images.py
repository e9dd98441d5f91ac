"""Image files: reading any user image into model-ready RGB, writing PNGs and sample grids atomically."""

from __future__ import annotations

import io
import os

import numpy as np
from absl import logging
from PIL import Image, ImageOps, UnidentifiedImageError

from muse_styledrop import files


class ImageError(ValueError):
  """An image file that does not exist or cannot be decoded."""


MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # about 9,459 x 9,459: larger is refused from the header, before any decoding
MIN_SIDE = 16  # a smaller picture holds no style to learn


def load_image(path: str | os.PathLike, size: int) -> np.ndarray:
  """An RGB float image in [0, 1], size x size: shorter side resized to `size`, then centre-cropped.

  EXIF orientation is honoured; palette, greyscale, CMYK and 16-bit pictures are converted; transparency is
  composited on white; an animation gives its first frame (with a warning). A file that is not an image, a
  picture past MAX_PIXELS (a decompression bomb) or under MIN_SIDE is refused with one line.
  """
  path = files.path(path)
  if not path.is_file():
    raise ImageError(f"image {path} does not exist; check the path")
  too_big = f"{path} has more than {MAX_PIXELS:,} pixels (a decompression bomb, or a huge picture); resize it"
  try:
    with path.open("rb") as f, Image.open(io.BytesIO(f.read())) as im:
      w, h = im.size  # from the header: nothing is decoded yet
      if w * h > MAX_PIXELS:
        raise ImageError(f"{too_big} ({w}x{h})")
      if min(w, h) < MIN_SIDE:
        raise ImageError(f"{path} is {w}x{h} pixels; a picture needs at least {MIN_SIDE} on its shorter side")
      if getattr(im, "n_frames", 1) > 1:
        logging.warning("%s is animated (%d frames); its first frame is used", path, im.n_frames)
      im.seek(0)
      im.load()
      im = _to_rgb(ImageOps.exif_transpose(im))
  except Image.DecompressionBombError as e:  # Pillow's own check, at twice the limit, fires inside open()
    raise ImageError(too_big) from e
  except (UnidentifiedImageError, OSError, SyntaxError) as e:
    raise ImageError(f"{path} is not a readable image ({e.__class__.__name__}); use a PNG or JPEG file") from e
  w, h = im.size
  scale = size / min(w, h)
  im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
  w, h = im.size
  left, top = (w - size) // 2, (h - size) // 2
  im = im.crop((left, top, left + size, top + size))
  return np.asarray(im, np.float32) / 255.0


def _to_rgb(im: Image.Image) -> Image.Image:
  """8-bit RGB of any mode: 16-bit and 32-bit greyscale scaled (not clipped), transparency over white."""
  if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
    grey = np.asarray(im, np.float64) / (65535.0 if im.mode.startswith("I;16") or np.asarray(im).max() > 255 else 255)
    return Image.fromarray((np.clip(grey, 0, 1) * 255).round().astype(np.uint8)).convert("RGB")
  if im.mode == "F":
    return Image.fromarray((np.clip(np.asarray(im), 0, 1) * 255).round().astype(np.uint8)).convert("RGB")
  if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
    rgba = im.convert("RGBA")
    im = Image.new("RGB", rgba.size, (255, 255, 255))
    im.paste(rgba, mask=rgba.getchannel("A"))
  return im.convert("RGB")


def to_uint8(image_HWC: np.ndarray) -> np.ndarray:
  """A float image in [0, 1] as uint8 pixels."""
  return (np.clip(image_HWC, 0, 1) * 255).round().astype(np.uint8)


def png_bytes(image_HWC: np.ndarray) -> bytes:
  """A uint8 RGB array as the bytes of a PNG file."""
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(image_HWC, np.uint8)).save(buffer, format="PNG")
  return buffer.getvalue()


def save_png(image_HWC: np.ndarray, path: str | os.PathLike) -> os.PathLike:
  """Write a uint8 RGB array as PNG, atomically (a killed run leaves no half-written file)."""
  files.write_bytes(png_bytes(image_HWC), path)
  return files.path(path)


def grid_columns(num_prompts: int, num_images: int) -> int | None:
  """A grid's columns for several prompts' images: a row per prompt when each has several images, else near-square
  (None), so that 24 prompts of one image each are not one column 24 pictures tall."""
  return num_images if num_prompts > 1 and num_images > 1 else None


def grid(images_NHWC: np.ndarray, columns: int | None = None, pad: int = 2) -> np.ndarray:
  """Tile images into one picture with a white gutter, `columns` across (default: near-square)."""
  n, h, w, c = images_NHWC.shape
  columns = columns or int(np.ceil(np.sqrt(n)))
  rows = int(np.ceil(n / columns))
  out = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, np.uint8)
  for i, image in enumerate(images_NHWC):
    r, k = divmod(i, columns)
    out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + k * (w + pad) : pad + k * (w + pad) + w] = image
  return out


def titled_bands(bands: list[tuple[str, np.ndarray]], columns: int, scale: int = 2) -> np.ndarray:
  """Several grids stacked, each under a one-line title (e.g. "reference" / "with adapter" / "base"), upscaled
  `scale` times with nearest neighbours so small pictures stay crisp."""
  from PIL import ImageDraw, ImageFont  # noqa: PLC0415

  font = ImageFont.load_default(size=12)  # Pillow's bundled scalable font (its bitmap fallback without FreeType)
  parts = []
  for title, images_NHWC in bands:
    g = grid(images_NHWC, columns=columns)
    g = np.repeat(np.repeat(g, scale, axis=0), scale, axis=1)
    strip = Image.new("RGB", (g.shape[1], 18), "white")
    ImageDraw.Draw(strip).text((4, 2), title, fill="black", font=font)
    parts += [np.asarray(strip), g]
  width = max(p.shape[1] for p in parts)
  return np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in parts])
