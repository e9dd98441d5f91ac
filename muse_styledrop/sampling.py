"""MaskGIT parallel decoding with guidance, as one jitted pure function.

The tokens go through a `lax.fori_loop` over a logits function (the
transformer, or anything called like it); nothing returns to the host
between steps, and the function is compiled once per shape (batch, grid,
number of passes, steps): guidance weights, temperatures and seeds are
traced values. Each picture draws from its own key, so a picture depends on
its prompt, seed and settings, not on its batch.

Guidance as a linear combination of passes. Every guided sampler here
combines P forward passes of the same tokens under different conditions
(prompt, negative prompt, adapter on/off) with fixed weights that sum to 1:
  classifier-free, l = G(t) + s (G(t) - G(n))        -> weights (1+s, -s)
  StyleDrop, l = A(t) + a (A(t) - G(t)) + b (G(t) - G(n))
                                                     -> (1+a, b-a, -b)
The P passes run as ONE batched forward of P*B examples, with weights per
picture, so pictures of different adapters and settings share a batch; a
composition or blend of K adapters is 2K + 1 passes (`mixed`). Note
diffusers' aMUSEd `guidance_scale` g is u + g (c - u), i.e. s = g - 1 here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from muse_styledrop.losses import mask_ratio

SCHEDULES = ("cosine",)


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
  """How pictures are drawn: the decoding schedule, its noise and the guidance weights.

  A training run records the settings it drew its samples with in adapter.json, and every command that draws with
  that adapter starts from them (docs/sampling.md).
  """

  steps: int  # MaskGIT decoding steps
  temperature: tuple[float, float]  # confidence noise (start, end), annealed linearly
  token_temperature: float  # divides the logits tokens are drawn from (1: diffusers' rule, toward 0: the likeliest)
  guidance_scale: float  # without an adapter: l = G(t) + s (G(t) - G(n))
  lambda_a: float  # with an adapter: l = A(t) + lambda_a (A(t) - G(t)) + lambda_b (G(t) - G(n))
  lambda_b: float
  lambda_a_end: float | None = None  # set: lambda_a goes linearly to it over the steps
  negative_prompt: str = ""
  schedule: str = "cosine"  # the share of tokens still masked after each step

  def __post_init__(self):
    object.__setattr__(self, "temperature", tuple(float(t) for t in self.temperature))
    if len(self.temperature) != 2:
      raise ValueError(f"temperature={self.temperature}: give two numbers, start and end")
    if self.steps < 1:
      raise ValueError(f"steps={self.steps} must be at least 1")
    if not self.token_temperature > 0:
      raise ValueError(f"token_temperature={self.token_temperature} must be > 0 (small values: the likeliest token)")
    if self.schedule not in SCHEDULES:
      raise ValueError(f"schedule={self.schedule!r}; use one of {', '.join(SCHEDULES)}")

  @classmethod
  def from_dict(cls, d) -> SamplingSettings:
    """The settings among the keys of `d` (a config's `sample` block or adapter.json's record); others are ignored."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: d[k] for k in names if k in d})

  def to_dict(self) -> dict:
    return {**dataclasses.asdict(self), "temperature": list(self.temperature)}

  def replace(self, **changes) -> SamplingSettings:
    return dataclasses.replace(self, **changes)

  def passes(self, text_BTD, pooled_BD, neg_text_BTD, neg_pooled_BD, micro_conds_BM, adapter_ids_B=None) -> Passes:
    """StyleDrop guidance where an example names an adapter (its id in the bank), classifier-free guidance with
    `guidance_scale` where none is named (adapter_ids_B None, or -1 for an example)."""
    if adapter_ids_B is None:
      return classifier_free(text_BTD, pooled_BD, neg_text_BTD, neg_pooled_BD, micro_conds_BM, self.guidance_scale)
    return styledrop(
      text_BTD,
      pooled_BD,
      neg_text_BTD,
      neg_pooled_BD,
      micro_conds_BM,
      self.lambda_a,
      self.lambda_b,
      adapter_ids_B,
      self.lambda_a_end,
    )


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Passes:
  """P conditions for B pictures, combined linearly per picture: logits_b = sum_p weights_PB[p, b] * logits(p, b)."""

  text_PBTD: jax.Array
  pooled_PBD: jax.Array
  micro_conds_PBM: jax.Array
  weights_PB: jax.Array
  adapter_ids_PB: jax.Array | None = None
  end_weights_PB: jax.Array | None = None  # weights at the last step, reached linearly from weights_PB; None: fixed

  def weights_at(self, step, num_steps: int) -> jax.Array:
    """The weights of decoding step `step` of `num_steps`."""
    if self.end_weights_PB is None:
      return self.weights_PB
    return temperature_at(step, num_steps, self.weights_PB, self.end_weights_PB)


def mixed(
  text_KBTD,
  pooled_KBD,
  adapter_ids_KB,
  mix_KB,
  neg_text_BTD,
  neg_pooled_BD,
  micro_conds_BM,
  lambda_a,
  lambda_b,
  lambda_a_end=None,
  adapted_K: tuple[bool, ...] | None = None,
) -> Passes:
  """K guided terms per picture, mixed by weights m_k (mix_KB, summing to 1 per picture), with one negative pass:
    l = sum_k m_k [A_k(t_k) + lambda_a (A_k(t_k) - G(t_k)) + lambda_b (G(t_k) - G(n))]
  where A_k is the model with term k's adapter of the bank (adapter_ids_KB; -1: none, and then A_k = G) and t_k its
  prompt. One term is StyleDrop guidance, or classifier-free guidance with scale lambda_b when it has no adapter;
  two terms are a composition (a style and a content adapter) or a blend of two styles (docs/sampling.md).

  The lambdas are one number or one per picture. `adapted_K` (static) says which terms may name an adapter in this
  batch; a term that never does costs one pass, G(t_k), instead of two.
  """
  k, b = adapter_ids_KB.shape
  adapted_K = (True,) * k if adapted_K is None else tuple(adapted_K)
  ids_KB = jnp.asarray(adapter_ids_KB, jnp.int32)
  mix_KB = jnp.asarray(mix_KB, jnp.float32)
  per_picture = lambda x: jnp.broadcast_to(jnp.asarray(x, jnp.float32), (b,))
  lb = per_picture(lambda_b)
  none = jnp.full((b,), -1, jnp.int32)

  def weights(lambda_a):
    a, rows = per_picture(lambda_a), []
    for term in range(k):
      m, on = mix_KB[term], ids_KB[term] >= 0
      if adapted_K[term]:
        rows += [m * jnp.where(on, 1 + a, 1 + lb), m * jnp.where(on, lb - a, 0.0)]
      else:
        rows.append(m * (1 + lb))
    return jnp.stack([*rows, -lb * mix_KB.sum(0)])

  text, pooled, ids = [], [], []
  for term in range(k):
    twice = 2 if adapted_K[term] else 1
    text += [text_KBTD[term]] * twice
    pooled += [pooled_KBD[term]] * twice
    ids += [ids_KB[term], none] if adapted_K[term] else [none]
  return Passes(
    text_PBTD=jnp.stack([*text, neg_text_BTD]),
    pooled_PBD=jnp.stack([*pooled, neg_pooled_BD]),
    micro_conds_PBM=jnp.stack([micro_conds_BM] * (len(text) + 1)),
    weights_PB=weights(lambda_a),
    adapter_ids_PB=jnp.stack([*ids, none]),
    end_weights_PB=None if lambda_a_end is None else weights(lambda_a_end),
  )


def classifier_free(text_BTD, pooled_BD, neg_text_BTD, neg_pooled_BD, micro_conds_BM, scale: float) -> Passes:
  """Two passes, prompt and negative prompt, no adapter: l = c + scale * (c - u)."""
  ids = jnp.full((1, text_BTD.shape[0]), -1, jnp.int32)
  args = (text_BTD[None], pooled_BD[None], ids, jnp.ones(ids.shape), neg_text_BTD, neg_pooled_BD, micro_conds_BM)
  return mixed(*args, 0.0, scale, adapted_K=(False,))


def styledrop(
  text_BTD,
  pooled_BD,
  neg_text_BTD,
  neg_pooled_BD,
  micro_conds_BM,
  lambda_a: float,
  lambda_b: float,
  adapter_ids_B=0,
  lambda_a_end: float | None = None,
) -> Passes:
  """Three passes: l = A(t) + lambda_a (A(t) - G(t)) + lambda_b (G(t) - G(n)) (docs/method.md).

  A is the model with each example's adapter of the bank (`adapter_ids_B`: one id for all, or one per example), G
  without any. With `lambda_a_end`, lambda_a goes linearly from `lambda_a` at the first decoding step to
  `lambda_a_end` at the last (our extension).
  """
  ids = jnp.broadcast_to(jnp.asarray(adapter_ids_B, jnp.int32), (1, text_BTD.shape[0]))
  args = (text_BTD[None], pooled_BD[None], ids, jnp.ones(ids.shape), neg_text_BTD, neg_pooled_BD, micro_conds_BM)
  return mixed(*args, lambda_a, lambda_b, lambda_a_end)


def unguided(text_BTD, pooled_BD, micro_conds_BM) -> Passes:
  return Passes(text_BTD[None], pooled_BD[None], micro_conds_BM[None], jnp.ones((1, text_BTD.shape[0]), jnp.float32))


def masked_count(step, num_steps: int, seq_len: int, num_unknown_B):
  """How many tokens stay masked after `step` (0-based): floor(L mask_ratio((k+1)/K)), in [1, unknown - 1]."""
  count = jnp.floor(seq_len * mask_ratio((step + 1) / num_steps)).astype(jnp.int32)
  return jnp.maximum(1, jnp.minimum(num_unknown_B - 1, count))


def remask(confidence_BL, count_B):
  """True where a token is re-masked: the `count` least confident positions (diffusers' rule)."""
  cutoff_B1 = jnp.take_along_axis(jnp.sort(confidence_BL, axis=-1), count_B[:, None], axis=-1)
  return confidence_BL < cutoff_B1


def temperature_at(step, num_steps: int, start, end):
  """Linear annealing from `start` at step 0 to `end` at the last step (temperatures, guidance weights)."""
  return start + (end - start) * step / max(num_steps - 1, 1)


LogitsFn = Callable[..., jax.Array]  # (tokens_BHW, text_BTD, pooled_BD, micro_conds_BM, adapter_ids_B) -> logits_BHWV


def guided_logits(logits_fn: LogitsFn, tokens_BHW, passes: Passes, weights_PB=None):
  """Combined logits_BHWV of all passes, from one batched call of `logits_fn` (a transformer, or any function of
  the same arguments), with `weights_PB` in place of the passes' weights when given."""
  p, b = passes.weights_PB.shape[0], tokens_BHW.shape[0]
  flat = lambda x: None if x is None else x.reshape(p * b, *x.shape[2:])
  logits = logits_fn(
    jnp.tile(tokens_BHW, (p, 1, 1)),
    flat(passes.text_PBTD),
    flat(passes.pooled_PBD),
    flat(passes.micro_conds_PBM),
    flat(passes.adapter_ids_PB),
  )
  logits = logits.astype(jnp.float32).reshape(p, b, *logits.shape[1:])
  return jnp.einsum("pb,pbhwv->bhwv", passes.weights_PB if weights_PB is None else weights_PB, logits)


def decode_step(
  step, tokens_BL, logits_BLV, keys_B, *, num_steps: int, mask_id: int, temperature, token_temperature=1.0
):
  """One MaskGIT step: sample every masked position, keep the confident ones, re-mask the rest.

  Each example draws from its own key (keys_B), so a picture does not depend on what else is in its batch.
  `temperature` scales the Gumbel noise on the confidences (which tokens are kept); `token_temperature` divides
  the logits the tokens are drawn from (1: diffusers' rule; toward 0: the most likely token). Each is one number,
  or one a picture.
  """
  keys_B2 = jax.vmap(jax.random.split)(keys_B)
  unknown_BL = tokens_BL == mask_id
  logits_BLV = logits_BLV / jnp.reshape(token_temperature, (-1, 1, 1))  # one for all, or one a picture
  sampled_BL = jax.vmap(jax.random.categorical)(keys_B2[:, 0], logits_BLV).astype(tokens_BL.dtype)
  pred_BL = jnp.where(unknown_BL, sampled_BL, tokens_BL)
  logp_BL = jnp.take_along_axis(jax.nn.log_softmax(logits_BLV, axis=-1), pred_BL[..., None], axis=-1)[..., 0]
  gumbel_BL = jax.vmap(lambda k: jax.random.gumbel(k, logp_BL.shape[1:]))(keys_B2[:, 1])
  confidence = jnp.maximum(logp_BL, math.log(1e-20)) + jnp.reshape(temperature, (-1, 1)) * gumbel_BL
  confidence = jnp.where(unknown_BL, confidence, jnp.inf)
  count_B = masked_count(step, num_steps, tokens_BL.shape[1], unknown_BL.sum(-1))
  remasked = jnp.where(remask(confidence, count_B), mask_id, pred_BL)
  return jnp.where(step == num_steps - 1, pred_BL, remasked)


def generate(
  logits_fn: LogitsFn,
  passes: Passes,
  tokens_BHW,
  keys_B,
  temperature_range,
  token_temperature,
  start_step,
  *,
  num_steps: int,
  mask_id: int,
):
  """Decoding steps start_step..num_steps-1 from `tokens_BHW` under the guided logits of `passes`, as one
  `lax.fori_loop`: a pure function of its arguments."""
  b, h, w = tokens_BHW.shape

  def body(step, tokens_BL):
    logits = guided_logits(logits_fn, tokens_BL.reshape(b, h, w), passes, passes.weights_at(step, num_steps))
    step_keys_B = jax.vmap(jax.random.fold_in, (0, None))(keys_B, step)
    return decode_step(
      step,
      tokens_BL,
      logits.reshape(b, h * w, -1),
      step_keys_B,
      num_steps=num_steps,
      mask_id=mask_id,
      temperature=temperature_at(step, num_steps, temperature_range[..., 0], temperature_range[..., 1]),
      token_temperature=token_temperature,
    )

  return jax.lax.fori_loop(start_step, num_steps, body, tokens_BHW.reshape(b, h * w)).reshape(b, h, w)


def picture_keys(seed: int, prompts: list) -> jax.Array:
  """One key per picture: the n-th picture of a prompt (or of any hashable description of a picture) in a call
  draws with fold_in(key(seed), n), wherever it sits in the batch, so the same prompt, seed and settings give the
  same picture alone or among others."""
  seen: dict = {}
  index = []
  for p in prompts:
    index.append(seen.get(p, 0))
    seen[p] = index[-1] + 1
  return jax.vmap(jax.random.fold_in, (None, 0))(jax.random.key(seed), jnp.asarray(index, jnp.uint32))


def image_to_image_start(keys_B, tokens_BHW, num_steps: int, strength: float, mask_id: int):
  """(partly masked tokens, first step) for editing an image, as diffusers' AmusedImg2ImgPipeline does.

  The last int(num_steps * strength) steps are run; before them, each token
  of the image is masked with the schedule's probability at that point,
  mask_ratio((first + 1) / num_steps). strength 1 redraws everything.
  """
  if not 0 < strength <= 1:
    raise ValueError(f"strength={strength} must be in (0, 1]: the share of decoding steps that redraw the image")
  run = max(1, int(num_steps * strength))
  first = num_steps - run
  ratio = float(mask_ratio((first + 1) / num_steps)) if run < num_steps else 1.0
  masked = jax.vmap(lambda k: jax.random.uniform(k, tokens_BHW.shape[1:]))(keys_B) < ratio
  return jnp.where(masked, mask_id, tokens_BHW), first


class Sampler:
  """MaskGIT decoding for one transformer (any nnx module called as a LogitsFn), compiled once per shape.

  The module is split once, here: the graph definition is closed over rather
  than passed as a static argument, because hashing the graph of a
  600M-parameter model on every call costs about a second on CPU.
  """

  def __init__(self, module: nnx.Module, mask_id: int):
    graphdef, self.state = nnx.split(module)
    self.mask_id = mask_id

    def run(state, *args, **static):
      return generate(nnx.merge(graphdef, state), *args, **static)

    self.jitted = jax.jit(run, static_argnames=("num_steps", "mask_id"))

  def __call__(
    self,
    passes: Passes,
    keys_B: jax.Array,
    grid_hw: tuple[int, int],
    *,
    num_steps: int,
    temperature=(2.0, 0.0),
    token_temperature=1.0,
    init_tokens_BHW: jax.Array | None = None,
    start_step: int = 0,
    state: nnx.State | None = None,
  ):
    """tokens_BHW drawn by `num_steps` of MaskGIT decoding under the guided logits of `passes`, one key a picture.

    `temperature` (start, end) scales the confidence noise, annealed linearly;
    `token_temperature` divides the logits tokens are drawn from (see
    decode_step); each is one for all pictures, or one a picture. Decoding runs steps start_step..num_steps-1 from
    `init_tokens_BHW` (all masked by default; see image_to_image_start).
    `state` replaces the module's weights captured at construction (a model in
    training passes its current state).
    """
    b = passes.text_PBTD.shape[1]
    if init_tokens_BHW is None:
      init_tokens_BHW = jnp.full((b, *grid_hw), self.mask_id, jnp.int32)
    return self.jitted(
      self.state if state is None else state,
      passes,
      init_tokens_BHW.astype(jnp.int32),
      keys_B,
      jnp.broadcast_to(jnp.asarray(temperature, jnp.float32), (b, 2)),  # one shape, so one compile
      jnp.broadcast_to(jnp.asarray(token_temperature, jnp.float32), (b,)),
      jnp.asarray(start_step, jnp.int32),
      num_steps=num_steps,
      mask_id=self.mask_id,
    )
