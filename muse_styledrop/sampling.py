"""MaskGIT parallel decoding with guidance, as one jitted pure function.

The decoding state (tokens, rng) goes through a `lax.fori_loop`; nothing
returns to the host between steps, and the function is compiled once per
shape (batch, grid, number of passes, steps): guidance weights, temperatures
and seeds are traced values.

Guidance as a linear combination of passes. Every guided sampler here
combines P forward passes of the same tokens under different conditions
(prompt, negative prompt, adapter on/off) with fixed weights that sum to 1:
  classifier-free, l = G(t) + s (G(t) - G(n))        -> weights (1+s, -s)
  StyleDrop, l = A(t) + a (A(t) - G(t)) + b (G(t) - G(n))
                                                     -> (1+a, b-a, -b)
The P passes run as ONE batched forward of P*B examples. Note diffusers'
aMUSEd `guidance_scale` g is u + g (c - u), i.e. s = g - 1 here.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from muse_styledrop.models.uvit import UVit2DModel


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Passes:
  """P conditions for B images, combined linearly: logits = sum_p weights_P[p] * logits(pass p)."""

  text_PBTD: jax.Array
  pooled_PBD: jax.Array
  micro_conds_PBM: jax.Array
  weights_P: jax.Array
  adapter_ids_PB: jax.Array | None = None
  end_weights_P: jax.Array | None = None  # weights at the last step, reached linearly from weights_P; None: fixed

  def weights_at(self, step, num_steps: int) -> jax.Array:
    """The weights of decoding step `step` of `num_steps`."""
    if self.end_weights_P is None:
      return self.weights_P
    return temperature_at(step, num_steps, self.weights_P, self.end_weights_P)


def classifier_free(text_BTD, pooled_BD, neg_text_BTD, neg_pooled_BD, micro_conds_BM, scale: float) -> Passes:
  """Two passes, prompt and negative prompt: l = c + scale * (c - u)."""
  return Passes(
    text_PBTD=jnp.stack([text_BTD, neg_text_BTD]),
    pooled_PBD=jnp.stack([pooled_BD, neg_pooled_BD]),
    micro_conds_PBM=jnp.stack([micro_conds_BM, micro_conds_BM]),
    weights_P=jnp.asarray([1.0 + scale, -scale], jnp.float32),
  )


def styledrop(
  text_BTD,
  pooled_BD,
  neg_text_BTD,
  neg_pooled_BD,
  micro_conds_BM,
  lambda_a: float,
  lambda_b: float,
  adapter_id: int = 0,
  lambda_a_end: float | None = None,
) -> Passes:
  """Three passes: l = A(t) + lambda_a (A(t) - G(t)) + lambda_b (G(t) - G(n)) (PAPER.md section 4).

  A is the model with adapter `adapter_id` of the bank, G without any. With `lambda_a_end`, lambda_a goes
  linearly from `lambda_a` at the first decoding step to `lambda_a_end` at the last (our extension).
  """
  b = text_BTD.shape[0]
  weights = lambda a: jnp.asarray([1.0 + a, lambda_b - a, -lambda_b], jnp.float32)
  return Passes(
    text_PBTD=jnp.stack([text_BTD, text_BTD, neg_text_BTD]),
    pooled_PBD=jnp.stack([pooled_BD, pooled_BD, neg_pooled_BD]),
    micro_conds_PBM=jnp.stack([micro_conds_BM] * 3),
    weights_P=weights(lambda_a),
    adapter_ids_PB=jnp.asarray([[adapter_id] * b, [-1] * b, [-1] * b], jnp.int32),
    end_weights_P=None if lambda_a_end is None else weights(lambda_a_end),
  )


def styledrop_from_config(c, text_BTD, pooled_BD, neg_text_BTD, neg_pooled_BD, micro_conds_BM) -> Passes:
  """`styledrop` with the guidance of a config's `sample` block (lambda_a, lambda_a_end if set, lambda_b)."""
  return styledrop(
    text_BTD,
    pooled_BD,
    neg_text_BTD,
    neg_pooled_BD,
    micro_conds_BM,
    c.lambda_a,
    c.lambda_b,
    lambda_a_end=c.get("lambda_a_end"),
  )


def unguided(text_BTD, pooled_BD, micro_conds_BM) -> Passes:
  return Passes(text_BTD[None], pooled_BD[None], micro_conds_BM[None], jnp.ones((1,), jnp.float32))


def masked_count(step, num_steps: int, seq_len: int, num_unknown_B):
  """How many tokens stay masked after `step` (0-based): floor(L cos(pi/2 (k+1)/K)), in [1, unknown - 1]."""
  ratio = jnp.cos(math.pi / 2 * (step + 1) / num_steps)
  count = jnp.floor(seq_len * ratio).astype(jnp.int32)
  return jnp.maximum(1, jnp.minimum(num_unknown_B - 1, count))


def remask(confidence_BL, count_B):
  """True where a token is re-masked: the `count` least confident positions (diffusers' rule)."""
  cutoff_B1 = jnp.take_along_axis(jnp.sort(confidence_BL, axis=-1), count_B[:, None], axis=-1)
  return confidence_BL < cutoff_B1


def temperature_at(step, num_steps: int, start, end):
  """Linear annealing from `start` at step 0 to `end` at the last step (temperatures, guidance weights)."""
  return start + (end - start) * step / max(num_steps - 1, 1)


def guided_logits(model: UVit2DModel, tokens_BHW, passes: Passes, weights_P=None):
  """Combined logits_BHWV of all passes, from one batched forward (with `weights_P` in place of the passes')."""
  p, b = passes.weights_P.shape[0], tokens_BHW.shape[0]
  flat = lambda x: None if x is None else x.reshape(p * b, *x.shape[2:])
  logits = model(
    jnp.tile(tokens_BHW, (p, 1, 1)),
    flat(passes.text_PBTD),
    flat(passes.pooled_PBD),
    flat(passes.micro_conds_PBM),
    flat(passes.adapter_ids_PB),
  )
  logits = logits.astype(jnp.float32).reshape(p, b, *logits.shape[1:])
  return jnp.einsum("p,pbhwv->bhwv", passes.weights_P if weights_P is None else weights_P, logits)


def decode_step(step, tokens_BL, logits_BLV, rng, *, num_steps: int, mask_id: int, temperature, token_temperature=1.0):
  """One MaskGIT step: sample every masked position, keep the confident ones, re-mask the rest.

  `temperature` scales the Gumbel noise on the confidences (which tokens are kept); `token_temperature` divides
  the logits the tokens are drawn from (1: diffusers' rule; toward 0: the most likely token).
  """
  sample_rng, gumbel_rng = jax.random.split(rng)
  unknown_BL = tokens_BL == mask_id
  logits_BLV = logits_BLV / token_temperature
  sampled_BL = jax.random.categorical(sample_rng, logits_BLV, axis=-1).astype(tokens_BL.dtype)
  pred_BL = jnp.where(unknown_BL, sampled_BL, tokens_BL)
  logp_BL = jnp.take_along_axis(jax.nn.log_softmax(logits_BLV, axis=-1), pred_BL[..., None], axis=-1)[..., 0]
  confidence = jnp.maximum(logp_BL, math.log(1e-20)) + temperature * jax.random.gumbel(gumbel_rng, logp_BL.shape)
  confidence = jnp.where(unknown_BL, confidence, jnp.inf)
  count_B = masked_count(step, num_steps, tokens_BL.shape[1], unknown_BL.sum(-1))
  remasked = jnp.where(remask(confidence, count_B), mask_id, pred_BL)
  return jnp.where(step == num_steps - 1, pred_BL, remasked)


def _generate(
  graphdef,
  state,
  passes: Passes,
  tokens_BHW,
  rng,
  temperature_range,
  token_temperature,
  start_step,
  *,
  num_steps: int,
  mask_id: int,
):
  model = nnx.merge(graphdef, state)
  b, h, w = tokens_BHW.shape

  def body(step, carry):
    tokens_BL, rng = carry
    rng, step_rng = jax.random.split(rng)
    logits = guided_logits(model, tokens_BL.reshape(b, h, w), passes, passes.weights_at(step, num_steps))
    temperature = temperature_at(step, num_steps, *temperature_range)
    tokens_BL = decode_step(
      step,
      tokens_BL,
      logits.reshape(b, h * w, -1),
      step_rng,
      num_steps=num_steps,
      mask_id=mask_id,
      temperature=temperature,
      token_temperature=token_temperature,
    )
    return tokens_BL, rng

  tokens_BL, _ = jax.lax.fori_loop(start_step, num_steps, body, (tokens_BHW.reshape(b, h * w), rng))
  return tokens_BL.reshape(b, h, w)


def image_to_image_start(rng, tokens_BHW, num_steps: int, strength: float, mask_id: int):
  """(partly masked tokens, first step) for editing an image, as diffusers' AmusedImg2ImgPipeline does.

  The last int(num_steps * strength) steps are run; before them, each token
  of the image is masked with the schedule's probability at that point,
  cos(pi/2 (first + 1) / num_steps). strength 1 redraws everything.
  """
  if not 0 < strength <= 1:
    raise ValueError(f"strength={strength} must be in (0, 1]: the share of decoding steps that redraw the image")
  run = max(1, int(num_steps * strength))
  first = num_steps - run
  ratio = math.cos(math.pi / 2 * (first + 1) / num_steps) if run < num_steps else 1.0
  masked = jax.random.uniform(rng, tokens_BHW.shape) < ratio
  return jnp.where(masked, mask_id, tokens_BHW), first


class Sampler:
  """MaskGIT decoding for one (frozen) transformer, compiled once per shape.

  The model is split once, here: the graph definition is closed over rather
  than passed as a static argument, because hashing the graph of a
  600M-parameter model on every call costs about a second on CPU.
  """

  def __init__(self, model: UVit2DModel, mask_id: int):
    self.graphdef, self.state = nnx.split(model)
    self.mask_id = mask_id
    self.jitted = jax.jit(functools.partial(_generate, self.graphdef), static_argnames=("num_steps", "mask_id"))

  def __call__(
    self,
    passes: Passes,
    rng: jax.Array,
    grid_hw: tuple[int, int],
    *,
    num_steps: int,
    temperature: tuple[float, float] = (2.0, 0.0),
    token_temperature: float = 1.0,
    init_tokens_BHW: jax.Array | None = None,
    start_step: int = 0,
    state: nnx.State | None = None,
  ):
    """tokens_BHW drawn by `num_steps` of MaskGIT decoding under the guided logits of `passes`.

    `temperature` (start, end) scales the confidence noise, annealed linearly;
    `token_temperature` divides the logits tokens are drawn from (see
    decode_step). Decoding runs steps start_step..num_steps-1 from
    `init_tokens_BHW` (all masked by default; see image_to_image_start).
    `state` replaces the model's weights captured at construction (a model in
    training passes its current state).
    """
    b = passes.text_PBTD.shape[1]
    if init_tokens_BHW is None:
      init_tokens_BHW = jnp.full((b, *grid_hw), self.mask_id, jnp.int32)
    return self.jitted(
      self.state if state is None else state,
      passes,
      init_tokens_BHW.astype(jnp.int32),
      rng,
      jnp.asarray(temperature, jnp.float32),
      jnp.asarray(token_temperature, jnp.float32),
      jnp.asarray(start_step, jnp.int32),
      num_steps=num_steps,
      mask_id=self.mask_id,
    )
