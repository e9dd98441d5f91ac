"""MaskGIT decoding: schedule and re-masking against diffusers' AmusedScheduler, one trace, batched guidance."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from muse_styledrop import sampling
from muse_styledrop.pipeline import Pipeline


def keys(seed, b=2):
  """One key a picture, as the sampler takes them."""
  return jax.random.split(jax.random.key(seed), b)


@pytest.mark.parametrize("num_steps,seq_len", [(12, 256), (36, 256), (8, 24)])
def test_masked_counts_follow_amused_scheduler(num_steps, seq_len):
  from diffusers import AmusedScheduler

  mask_id, vocab = 99, 16
  scheduler = AmusedScheduler(mask_token_id=mask_id)
  scheduler.set_timesteps(num_steps, temperature=(0.0, 0.0))
  g = torch.Generator().manual_seed(0)
  sample = torch.full((2, seq_len), mask_id)
  for step, timestep in enumerate(scheduler.timesteps):
    logits = torch.randn(2, seq_len, vocab, generator=g)
    unknown = (sample == mask_id).sum(-1)
    sample = scheduler.step(logits, timestep, sample, generator=g).prev_sample
    expected = np.asarray(sampling.masked_count(step, num_steps, seq_len, jnp.asarray(unknown.numpy())))
    if step == num_steps - 1:
      assert (sample == mask_id).sum() == 0
    else:
      np.testing.assert_array_equal((sample == mask_id).sum(-1).numpy(), expected)


def test_remasked_positions_follow_amused_scheduler():
  from diffusers.schedulers.scheduling_amused import mask_by_random_topk

  g = torch.Generator().manual_seed(1)
  probs = torch.rand(3, 50, generator=g)
  mask_len = torch.tensor([[1], [17], [49]])
  ref = mask_by_random_topk(mask_len, probs, temperature=0.0, generator=g).numpy()
  ours = sampling.remask(jnp.log(jnp.asarray(probs.numpy())), jnp.asarray(mask_len[:, 0].numpy()))
  np.testing.assert_array_equal(np.asarray(ours), ref)
  assert ref.sum(-1).tolist() == [1, 17, 49]


def test_decode_step_keeps_known_tokens_and_masks_the_scheduled_count():
  mask_id, seq_len = 40, 64
  tokens = jnp.full((2, seq_len), mask_id).at[:, :10].set(3)
  logits = jax.random.normal(jax.random.key(0), (2, seq_len, 40))
  out = sampling.decode_step(2, tokens, logits, keys(1), num_steps=8, mask_id=mask_id, temperature=1.0)
  assert (out[:, :10] == 3).all()
  expected = sampling.masked_count(2, 8, seq_len, jnp.full((2,), seq_len - 10))
  np.testing.assert_array_equal((out == mask_id).sum(-1), expected)
  last = sampling.decode_step(7, tokens, logits, keys(1), num_steps=8, mask_id=mask_id, temperature=1.0)
  assert not (last == mask_id).any()


def prompts(pipe, texts):
  text, pooled = pipe.encode_prompts(texts)
  return text, pooled, pipe.micro_conds(len(texts), 32, 32)


def test_batched_guidance_equals_separate_forwards(amused_dir):
  pipe = Pipeline.from_pretrained(amused_dir)
  text, pooled, micro = prompts(pipe, ["a red cat", "a blue dog"])
  neg_text, neg_pooled, _ = prompts(pipe, ["", ""])
  tokens = jax.random.randint(jax.random.key(0), (2, 4, 4), 0, 41)
  passes = sampling.classifier_free(text, pooled, neg_text, neg_pooled, micro, scale=3.0)
  guided = nnx.jit(sampling.guided_logits)(pipe.transformer, tokens, passes)
  forward = nnx.jit(lambda m, *x: m(*x))  # compiled once, not op by op
  cond = forward(pipe.transformer, tokens, text, pooled, micro)
  uncond = forward(pipe.transformer, tokens, neg_text, neg_pooled, micro)
  np.testing.assert_allclose(guided, cond + 3.0 * (cond - uncond), rtol=1e-5, atol=1e-4)


def test_generate_traces_once_and_fills_every_token(amused_dir):
  pipe = Pipeline.from_pretrained(amused_dir)
  text, pooled, micro = prompts(pipe, ["a red cat", "a house"])
  neg_text, neg_pooled, _ = prompts(pipe, ["", ""])
  outs = []
  for seed, scale in [(0, 2.0), (1, 5.0), (2, 0.5)]:
    passes = sampling.classifier_free(text, pooled, neg_text, neg_pooled, micro, scale=scale)
    outs.append(pipe.sampler(passes, keys(seed), (4, 4), num_steps=6, temperature=(4.5, 0.0)))
  assert pipe.sampler.jitted._cache_size() == 1  # seeds and guidance scales do not recompile
  for tokens in outs:
    assert tokens.shape == (2, 4, 4)
    assert ((tokens >= 0) & (tokens < pipe.transformer.config.codebook_size)).all()
  assert not np.array_equal(outs[0], outs[1])
  same = pipe.sampler(
    sampling.classifier_free(text, pooled, neg_text, neg_pooled, micro, 2.0),
    keys(0),
    (4, 4),
    num_steps=6,
    temperature=(4.5, 0.0),
  )
  np.testing.assert_array_equal(same, outs[0])  # a seed reproduces its image


def test_known_tokens_survive_generation(amused_dir):
  pipe = Pipeline.from_pretrained(amused_dir)
  text, pooled, micro = prompts(pipe, ["a red cat"])
  init = jnp.full((1, 4, 4), pipe.mask_token_id).at[0, 0, 0].set(7).at[0, 2, 3].set(11)
  tokens = pipe.sampler(sampling.unguided(text, pooled, micro), keys(0, 1), (4, 4), num_steps=4, init_tokens_BHW=init)
  assert tokens[0, 0, 0] == 7 and tokens[0, 2, 3] == 11


def test_image_to_image_keeps_the_layout_at_low_strength(amused_dir):
  pipe = Pipeline.from_pretrained(amused_dir)
  text, pooled, micro = prompts(pipe, ["a red cat"])
  source = jax.random.randint(jax.random.key(5), (1, 4, 4), 0, 40)
  init, first = sampling.image_to_image_start(keys(6, 1), source, 12, 0.25, pipe.mask_token_id)
  assert first == 9  # the last 3 of 12 steps run
  kept = np.asarray(init != pipe.mask_token_id)
  out = pipe.sampler(
    sampling.unguided(text, pooled, micro),
    keys(0, 1),
    (4, 4),
    num_steps=12,
    init_tokens_BHW=init,
    start_step=first,
  )
  np.testing.assert_array_equal(np.asarray(out)[kept], np.asarray(source)[kept])
  assert not (np.asarray(out) == pipe.mask_token_id).any()
  full, first = sampling.image_to_image_start(keys(6, 1), source, 12, 1.0, pipe.mask_token_id)
  assert first == 0 and (np.asarray(full) == pipe.mask_token_id).all()
  with pytest.raises(ValueError, match="strength"):
    sampling.image_to_image_start(keys(6, 1), source, 12, 0.0, pipe.mask_token_id)


def test_token_temperature_toward_zero_draws_the_likeliest_token():
  mask_id, seq_len = 40, 64
  tokens = jnp.full((2, seq_len), mask_id)
  logits = jax.random.normal(jax.random.key(0), (2, seq_len, 40)) * 2
  step = functools.partial(sampling.decode_step, 7, tokens, logits, keys(1), num_steps=8, mask_id=mask_id)
  greedy = step(temperature=0.0, token_temperature=1e-3)  # the last step commits every position
  np.testing.assert_array_equal(np.asarray(greedy), np.asarray(jnp.argmax(logits, -1)))
  drawn = step(temperature=0.0)  # diffusers' rule samples from the softmax: not always the likeliest
  assert (np.asarray(drawn) != np.asarray(jnp.argmax(logits, -1))).mean() > 0.3
