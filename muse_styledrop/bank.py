"""Several exported adapters as one bank, so one forward serves pictures of different adapters.

Adapters of one kind share a bank, entry after entry in the order given.
Their configs need not match: the bank takes the widest bottleneck (or the
highest LoRA rank), and each adapter is written into it so that it computes
exactly what it computed alone:
  - a narrower adapter is padded with zeros (a zero column of Wd and row of
    Wu add nothing; likewise for LoRA's A and B);
  - when any adapter is unshared, a shared one is written out per layer,
    Wd_l = Wd + dd_l and Wu_l = Wu + du_l, as the model computes it;
  - a site only some adapters have (blocks, head) is zero for the others;
  - each LoRA adapter's alpha/rank is folded into its B.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from muse_styledrop.models.adapters import AdapterConfig


class BankError(ValueError):
  """Adapters that cannot share a bank."""


def bank_config(configs: list[AdapterConfig], names: list[str]) -> AdapterConfig:
  """The config of a bank that holds every adapter of `configs` (named `names` in errors)."""
  kinds = {c.kind for c in configs}
  if len(kinds) > 1:
    found = ", ".join(f"{n} ({c.kind})" for n, c in zip(names, configs))
    raise BankError(f"adapters of different kinds cannot be drawn together: {found}; use adapters of one kind")
  first = configs[0]
  same_scale = len({(c.alpha, c.rank) for c in configs}) == 1
  rank = max(c.rank for c in configs)
  return dataclasses.replace(
    first,
    hidden=max(c.hidden for c in configs),
    shared=all(c.shared for c in configs),
    blocks=any(c.blocks for c in configs),
    head=any(c.head for c in configs),
    rank=rank,
    alpha=first.alpha if same_scale else float(rank),
    bank_size=sum(c.bank_size for c in configs),
  )


def _pad(x: np.ndarray, axis: int, size: int) -> np.ndarray:
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, size - x.shape[axis])
  return np.pad(x, widths)


def entry(tensors: dict, config: AdapterConfig, target: AdapterConfig, name: str, shape: tuple) -> np.ndarray:
  """One adapter's weight `name` as the bank of `target` holds it, for its own entries (`shape` without the bank
  axis)."""
  k = config.bank_size
  site, leaf = name.rsplit(".", 1)
  if config.kind == "lora":
    if name not in tensors:
      return np.zeros((k, *shape), np.float32)
    x = np.asarray(tensors[name], np.float32)
    if leaf.endswith("_a"):
      return _pad(x, 2, shape[-1])
    return _pad(x, 1, shape[0]) * np.float32((config.alpha / config.rank) / (target.alpha / target.rank))
  if f"{site}.wd" not in tensors:  # a site this adapter does not have
    return np.zeros((k, *shape), np.float32)
  get = lambda leaf: np.asarray(tensors[f"{site}.{leaf}"], np.float32)
  shared_here = f"{site}.dd" in tensors
  if shared_here and len(shape) == 3 and leaf in ("wd", "wu"):  # written out per layer: Wd_l = Wd + dd_l
    x = get(leaf)[:, None] + get("dd" if leaf == "wd" else "du")[:, :, None, :]
  else:
    x = get(leaf)
  hidden_axis = {"wd": -1, "dd": -1, "wu": -2, "du": None}[leaf]
  return x if hidden_axis is None else _pad(x, x.ndim + hidden_axis, target.hidden)


def merge(adapters: list[tuple[dict, AdapterConfig]], shapes: dict[str, tuple]) -> dict[str, np.ndarray]:
  """The bank's weights (name -> array with the bank axis first) from each adapter's tensors and config, given the
  shapes of the bank's weights (from a model with the bank attached)."""
  target = bank_config([c for _, c in adapters], [str(i) for i in range(len(adapters))])
  return {
    name: np.concatenate([entry(t, c, target, name, tuple(shape[1:])) for t, c in adapters])
    for name, shape in shapes.items()
  }
