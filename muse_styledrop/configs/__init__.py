"""The configs that ship with the package, and the one parser of their variants.

Each file's `get_config(arg)` builds its defaults, then applies the variants
named in `arg`, comma-separated and in order (`style_one_shot.py:paper,round2`).
The commands find a config by its path, and a path under `configs/` that does
not exist where they run is read from the installed package instead, so
`--config=configs/style_one_shot.py` works from any directory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import ml_collections

PACKAGED = Path(__file__).resolve().parent


def with_variants(
  config: ml_collections.ConfigDict,
  arg: str | None,
  variants: dict[str, Callable[[ml_collections.ConfigDict], None]],
  name: str,
) -> ml_collections.ConfigDict:
  """`config` changed by each variant named in `arg` ('a,b': a, then b); an unknown name is one clear error."""
  for variant in [v.strip() for v in (arg or "").split(",") if v.strip()]:
    if variant not in variants:
      raise ValueError(f"unknown variant {variant!r} of {name}; use any of {', '.join(variants)}, comma-separated")
    variants[variant](config)
  return config


def resolve(path: str) -> str:
  """`path` itself when it exists, else the packaged config of the same name under configs/ (variants kept)."""
  file, colon, variant = path.partition(":")
  if Path(file).exists() or not Path(file).parent.name == "configs":
    return path
  packaged = PACKAGED / Path(file).name
  return str(packaged) + colon + variant if packaged.is_file() else path


def sharding_rules() -> ml_collections.ConfigDict:
  """Logical axis -> mesh axes ("": whole on every device); `--config.sharding.rules.embed=model` changes one.

  embed -> fsdp shards every large weight over 'fsdp' (fully sharded data parallel); heads, mlp and vocab ->
  model split attention, feed-forward and logit widths over 'model' (tensor parallel); adapters, norms,
  positions and kernel windows stay whole (docs/scale.md).
  """
  return ml_collections.ConfigDict(
    dict(
      batch=("data", "fsdp"),
      embed="fsdp",
      heads="model",
      mlp="model",
      vocab="model",
      codebook="",
      conv_in="",
      conv_out="fsdp",
      window="",
      norm="",
      position="",
      adapter="",
    )
  )
