"""What a picture is drawn from: one or more guided terms and its own sampling settings.

A term is a prompt under one adapter of the bank (or none), with a weight. One
term is the usual picture: StyleDrop guidance with an adapter, classifier-free
without. Two are a composition (a style adapter on the full prompt, a content
adapter on the prompt without the style phrase) or a blend of two styles; the
terms' guided logits are mixed per decoding step (sampling.mixed). Pictures of
different adapters and settings share one compiled forward, as long as they
decode for the same number of steps (docs/sampling.md).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from muse_styledrop.sampling import SamplingSettings


@dataclasses.dataclass(frozen=True)
class Term:
  prompt: str
  adapter: int | None = None  # the bank entry; None: the base alone
  weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class Request:
  """One picture: its terms (weights summing to 1) and the settings it is drawn with."""

  terms: tuple[Term, ...]
  settings: SamplingSettings

  def __post_init__(self):
    object.__setattr__(self, "terms", tuple(self.terms))
    if not self.terms:
      raise ValueError("a picture needs at least one term (a prompt, with or without an adapter)")
    total = sum(t.weight for t in self.terms)
    if not math.isclose(total, 1.0, abs_tol=1e-6) or min(t.weight for t in self.terms) < 0:
      raise ValueError(
        f"the weights of a picture's terms are {[t.weight for t in self.terms]}: give weights in [0, 1] that sum to 1"
      )

  @property
  def adapted(self) -> bool:
    return any(t.adapter is not None for t in self.terms)


def single(prompts: list[str], settings: SamplingSettings, adapter: int | None = None) -> list[Request]:
  """One request a prompt, all with `adapter` (or none) and `settings`."""
  return [Request((Term(p, adapter),), settings) for p in prompts]


def by_steps(requests: list[Request]) -> dict[int, list[int]]:
  """The requests' indices, grouped by their number of decoding steps (one compiled sampler a group)."""
  groups: dict[int, list[int]] = {}
  for i, r in enumerate(requests):
    groups.setdefault(r.settings.steps, []).append(i)
  return groups


@dataclasses.dataclass
class Layout:
  """What stays fixed over a group's batches, so its sampler compiles once: the number of terms, which of them
  ever name an adapter, and whether the guidance weight moves over the steps."""

  terms: int
  adapted: tuple[bool, ...]
  moving: bool

  @classmethod
  def of(cls, requests: list[Request]) -> Layout:
    k = max(len(r.terms) for r in requests)
    adapted = tuple(any(len(r.terms) > t and r.terms[t].adapter is not None for r in requests) for t in range(k))
    return cls(k, adapted, any(r.settings.lambda_a_end is not None for r in requests))


@dataclasses.dataclass
class Batch:
  """A batch of requests as the arrays sampling.mixed takes (prompts still as text)."""

  prompts_KB: list[list[str]]
  adapter_ids_KB: np.ndarray
  mix_KB: np.ndarray
  negative_prompts_B: list[str]
  lambda_a_B: np.ndarray
  lambda_b_B: np.ndarray
  lambda_a_end_B: np.ndarray | None
  temperature_B2: np.ndarray
  token_temperature_B: np.ndarray


def batch(requests: list[Request], layout: Layout) -> Batch:
  """The arrays of `requests`; a picture with fewer terms than the layout fills the rest with weight 0. A picture
  with no adapter is guided by its guidance_scale, one with an adapter by its lambdas."""
  pad = lambda r: list(r.terms) + [Term(r.terms[0].prompt, None, 0.0)] * (layout.terms - len(r.terms))
  terms = [pad(r) for r in requests]
  s = [r.settings for r in requests]
  lambda_a = np.asarray([x.lambda_a for x in s], np.float32)
  return Batch(
    prompts_KB=[[t[k].prompt for t in terms] for k in range(layout.terms)],
    adapter_ids_KB=np.asarray(
      [[-1 if t[k].adapter is None else t[k].adapter for t in terms] for k in range(layout.terms)], np.int32
    ),
    mix_KB=np.asarray([[t[k].weight for t in terms] for k in range(layout.terms)], np.float32),
    negative_prompts_B=[x.negative_prompt for x in s],
    lambda_a_B=lambda_a,
    lambda_b_B=np.asarray([x.lambda_b if r.adapted else x.guidance_scale for x, r in zip(s, requests)], np.float32),
    lambda_a_end_B=np.asarray([x.lambda_a if x.lambda_a_end is None else x.lambda_a_end for x in s], np.float32)
    if layout.moving
    else None,
    temperature_B2=np.asarray([x.temperature for x in s], np.float32),
    token_temperature_B=np.asarray([x.token_temperature for x in s], np.float32),
  )
