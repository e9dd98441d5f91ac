"""Adapters drawn together: a bank of differing adapters, composition and blending, many styles in one batch."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_adapters import TINY, inputs, randomize_adapters

from muse_styledrop import bank, sample, sampling, weights
from muse_styledrop.models.adapters import AdapterConfig, AdapterParam
from muse_styledrop.models.uvit import UVit2DModel
from muse_styledrop.pipeline import Pipeline
from muse_styledrop.requests import Request, Term
from muse_styledrop.sampling import SamplingSettings


def flat(state) -> dict:
  return {".".join(str(k) for k in key): np.asarray(v[...]) for key, v in nnx.to_flat_state(state)}


def trained(model, config, seed):
  """`model`'s adapter tensors after attaching `config` and filling it with random weights."""
  model.attach_adapters(config, nnx.Rngs(seed))
  randomize_adapters(model, seed)
  return flat(nnx.state(model, AdapterParam))


@pytest.mark.parametrize(
  "configs",
  [
    [AdapterConfig(hidden=4, blocks=True), AdapterConfig(hidden=8, shared=False, head=True), AdapterConfig()],
    [AdapterConfig(kind="lora", rank=4, alpha=4.0), AdapterConfig(kind="lora", rank=2, alpha=8.0)],
  ],
)
def test_a_bank_of_differing_adapters_computes_what_each_computed_alone(configs):
  model = UVit2DModel(TINY, rngs=nnx.Rngs(0))
  x = inputs(b=len(configs))
  forward = nnx.jit(lambda m, ids: m(*x, adapter_ids_B=ids))  # one program a bank, not one per op
  found, alone = [], []
  for i, config in enumerate(configs):
    found.append((trained(model, config, seed=i + 1), config))
    alone.append(forward(model, jnp.zeros((len(configs),), jnp.int32)))
  model.attach_adapters(bank.bank_config(configs, ["a", "b", "c"]), nnx.Rngs(0))
  variables = {".".join(str(k) for k in key): v for key, v in nnx.to_flat_state(nnx.state(model, AdapterParam))}
  merged = bank.merge(found, {n: v.shape for n, v in variables.items()})
  for name, var in variables.items():
    var.set_value(jnp.asarray(merged[name]))
  together = forward(model, jnp.arange(len(configs)))
  for i in range(len(configs)):
    np.testing.assert_allclose(together[i], alone[i][i], rtol=1e-5, atol=1e-5)


def test_adapters_of_two_kinds_cannot_share_a_bank():
  with pytest.raises(bank.BankError, match="different kinds.*b \\(lora\\)"):
    bank.bank_config([AdapterConfig(), AdapterConfig(kind="lora")], ["a", "b"])


def test_composed_logits_are_the_mix_of_each_adapters_guided_logits(amused_dir):
  pipe = Pipeline.from_pretrained(amused_dir)
  pipe.attach_adapters(AdapterConfig(bank_size=2), nnx.Rngs(0))
  randomize_adapters(pipe.transformer)
  full, content, neg = (pipe.encode_prompts([p] * 2) for p in ("a red cat in sks style", "a red cat", ""))
  micro = pipe.micro_conds(2, 16, 16)
  tokens = jax.random.randint(jax.random.key(0), (2, 4, 4), 0, 40)
  guided = nnx.jit(sampling.guided_logits)
  a, b, g = 1.5, 3.0, 0.6
  style = guided(pipe.transformer, tokens, sampling.styledrop(*full, *neg, micro, a, b, adapter_ids_B=0))
  alone = guided(pipe.transformer, tokens, sampling.styledrop(*content, *neg, micro, a, b, adapter_ids_B=1))
  mix = jnp.asarray([[1 - g] * 2, [g] * 2])
  passes = sampling.mixed(
    *(jnp.stack(x) for x in zip(full, content)), jnp.asarray([[0, 0], [1, 1]]), mix, *neg, micro, a, b
  )
  assert passes.weights_PB.shape == (5, 2)  # two terms of two passes each, one shared negative pass
  np.testing.assert_allclose(
    guided(pipe.transformer, tokens, passes), (1 - g) * style + g * alone, rtol=1e-5, atol=1e-4
  )


def write_adapter(pipe, path, config, seed, **sampling_settings):
  pipe.attach_adapters(config, nnx.Rngs(seed))
  randomize_adapters(pipe.transformer, seed)
  settings = SamplingSettings(
    steps=4, temperature=(1.0, 0.0), token_temperature=1.0, guidance_scale=2.0, lambda_a=1.0, lambda_b=2.0
  )
  meta = {
    "base_fingerprint": pipe.fingerprint,
    "adapter": dataclasses.asdict(config),
    "style_phrase": "in sks style",
    "sampling": settings.replace(**sampling_settings).to_dict(),
  }
  weights.write_adapter(nnx.state(pipe.transformer, AdapterParam), meta, path)
  return path.with_suffix(".safetensors")


def test_many_styles_in_one_batch_draw_what_each_draws_alone(amused_dir, tmp_path):
  pipe = Pipeline.from_pretrained(amused_dir)
  a = write_adapter(pipe, tmp_path / "a", AdapterConfig(), 1, lambda_a=2.0, temperature=(3.0, 1.0))
  b = write_adapter(
    pipe, tmp_path / "b", AdapterConfig(hidden=8, shared=False), 2, token_temperature=0.5, lambda_a_end=0.0
  )
  base = SamplingSettings(
    steps=4, temperature=(2.0, 0.0), token_temperature=1.0, guidance_scale=3.0, lambda_a=1.0, lambda_b=5.0
  )
  settings = [SamplingSettings.from_dict(m["sampling"]) for m in pipe.load_adapters([a, b])]
  wanted = [
    Request((Term("a red cat", 0),), settings[0]),
    Request((Term("a house"),), base),
    Request((Term("a red cat", 1),), settings[1]),
    Request((Term("a red cat", 0),), settings[0]),  # the second picture of its terms: another key
    Request((Term("a dog", 1, 1.0), Term("a dog in sks style", 0, 0.0)), settings[1]),  # a share of 0 adds nothing
  ]
  together = pipe.draw_requests(wanted, seed=3)
  assert pipe.sampler.jitted._cache_size() == 1  # one compiled forward for the mixed batch
  assert not np.array_equal(together[0], together[3])
  for path, rows, s, prompts in [
    (a, [0, 3], settings[0], ["a red cat"] * 2),
    (b, [2, 4], settings[1], ["a red cat", "a dog"]),
  ]:
    pipe.load_adapter(path)
    np.testing.assert_array_equal(pipe.draw_tokens(prompts, s, seed=3, adapter=0), together[np.asarray(rows)])
  np.testing.assert_array_equal(pipe.draw_tokens(["a house"], base, seed=3), together[1:2])


def test_sample_mixes_styles_from_a_prompts_file_and_composes_in_one_line_errors(amused_dir, tmp_path):
  pipe = Pipeline.from_pretrained(amused_dir)
  a = write_adapter(pipe, tmp_path / "a", AdapterConfig(), 1)
  b = write_adapter(pipe, tmp_path / "b", AdapterConfig(), 2)
  lines = tmp_path / "prompts.txt"
  lines.write_text("a: a red cat in sks style\nb: a house\n# a comment\nnone: a dog\na bare prompt\n")
  paths = sample.run(
    str(amused_dir),
    [],
    1,
    0,
    tmp_path / "mixed",
    settings_for=settings_or_default,
    adapters={"a": str(a), "b": str(b)},
    prompts_file=str(lines),
  )
  assert sorted(p.name for p in paths) == ["grid.png", *(f"image_{i:03d}.png" for i in range(4))]
  composed = sample.run(
    str(amused_dir),
    ["a red cat in sks style"],
    2,
    0,
    tmp_path / "composed",
    str(a),
    settings_or_default,
    content_adapter=str(b),
    gamma=0.5,
  )
  assert len(composed) == 3
  blended = sample.run(
    str(amused_dir),
    ["a red cat in sks style"],
    1,
    0,
    tmp_path / "blended",
    str(a),
    settings_or_default,
    blend_adapter=str(b),
    blend=0.3,
  )
  assert [p.name for p in blended] == ["image_000.png"]
  lines.write_text("c: a red cat\n")
  with pytest.raises(ValueError, match="names 'c', which is not one of a, none"):
    sample.run(str(amused_dir), [], 1, 0, tmp_path / "x", adapters={"a": str(a)}, prompts_file=str(lines))
  with pytest.raises(ValueError, match="does not hold the style adapter's phrase 'in sks style'"):
    sample.run(str(amused_dir), ["a red cat"], 1, 0, tmp_path / "x", str(a), content_adapter=str(b))
  with pytest.raises(ValueError, match="give --adapter too"):
    sample.run(str(amused_dir), ["a red cat"], 1, 0, tmp_path / "x", content_adapter=str(b))
  assert not (tmp_path / "x").exists()


def settings_or_default(recorded):
  return SamplingSettings.from_dict(
    recorded
    or dict(steps=4, temperature=(2.0, 0.0), token_temperature=1.0, guidance_scale=3.0, lambda_a=1.0, lambda_b=5.0)
  )


def test_image_to_image_with_an_adapter_keeps_the_tokens_it_does_not_redraw(amused_dir):
  pipe = Pipeline.from_pretrained(amused_dir)
  pipe.attach_adapters(AdapterConfig(), nnx.Rngs(0))
  randomize_adapters(pipe.transformer, 4)
  settings = settings_or_default(None).replace(steps=8)
  source = jax.random.randint(jax.random.key(5), (3, 4, 4), 0, 40)
  prompts = ["a red cat in sks style"] * 3
  drawn = {
    a: pipe.draw_tokens(prompts, settings, seed=1, adapter=a, init_tokens_BHW=source, strength=0.5) for a in (0, None)
  }
  keys = sampling.picture_keys(1, [(Term(p, 0),) for p in prompts])
  mask_keys = jax.vmap(jax.random.split)(keys)[:, 1]
  init, first = sampling.image_to_image_start(mask_keys, source, 8, 0.5, pipe.mask_token_id)
  kept = np.asarray(init != pipe.mask_token_id)
  assert first == 4 and 0 < kept.mean() < 1
  np.testing.assert_array_equal(np.asarray(drawn[0])[kept], np.asarray(source)[kept])
  assert not np.array_equal(drawn[0], drawn[None])  # the adapter redraws the rest its own way
