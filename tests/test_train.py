"""Round-1 training: invariants, guidance batching, sharding, resume, export, and user errors."""

import importlib.util
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from muse_styledrop import checkpointing, sampling, train, weights
from muse_styledrop.models.adapters import AdapterConfig, AdapterParam
from muse_styledrop.optim import make_optimizer
from muse_styledrop.pipeline import Pipeline

# one worker runs this module, so its fixtures (the shared training run, session-scoped) are built once
pytestmark = pytest.mark.xdist_group("train")

CONFIG = Path(__file__).parent.parent / "configs" / "style_one_shot.py"


def load_config(variant="runlocal"):
  spec = importlib.util.spec_from_file_location("style_one_shot", CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def test_paper_variant_keeps_the_papers_sites_and_guidance_and_the_adapter_config_builds():
  """The embedded base's default adds block adapters (our extension); `:paper` is the paper's recipe."""
  paper, default = load_config("paper"), load_config(None)
  assert not paper.adapter.blocks and paper.sample.lambda_a == 1.0 and paper.sample.lambda_b == 5.0
  assert (paper.optimizer.learning_rate, paper.steps, paper.sample.token_temperature) == (3e-5, 1000, 1.0)
  assert default.adapter.blocks and train.adapter_config(default).blocks
  assert not train.adapter_config(paper).blocks


def config_for(amused_dir, style_image, **overrides):
  c = load_config()
  c.base_model = str(amused_dir)
  c.style_images = str(style_image)
  c.content_prompts = "a house"
  c.mesh = dict(data=1, fsdp=1, model=1)
  c.checkpoint.use_async = False
  c.evals = {}  # the tiny random base draws no shapes-world pictures
  c.optimizer.learning_rate = 3e-3  # tiny model, few steps: large enough that weights visibly move
  return with_fields(c, **overrides)


def with_fields(c, **overrides):
  """`c` with dotted fields set: with_fields(c, **{"optimizer.learning_rate": 1e-3})."""
  for key, value in overrides.items():
    target = c
    *head, leaf = key.split(".")
    for h in head:
      target = target[h]
    target[leaf] = value
  return c


RUN = dict(steps=20, steps_per_call=5, batch_size=8)  # the shared run; the killed run's command repeats it


@pytest.fixture(scope="session")
def trained(amused_dir, style_image, tmp_path_factory):
  """One finished round-1 run on the tiny base, shared by the tests that need one: (config, summary, workdir)."""
  c = config_for(amused_dir, style_image, **RUN)
  c.sample.prompts, c.sample.seed = ["a house", "a cat", "a tree"], 7
  workdir = tmp_path_factory.mktemp("trained")
  return c, train.train_and_evaluate(c, workdir), workdir


def test_training_changes_only_the_adapter(amused_dir, trained):
  before = Pipeline.from_pretrained(amused_dir)
  _, summary, workdir = trained
  assert summary["steps"] == 20
  tensors, meta = weights.read_adapter(workdir / "adapter.safetensors")
  assert tensors and all(k.startswith("adapters.") for k in tensors)  # no base weight in the export
  assert np.abs(np.asarray(tensors["adapters.ff.wu"])).max() > 0  # Wu left zero: it trained
  assert meta["base_fingerprint"] == before.fingerprint
  for name in ("checkpoints", "adapter.safetensors", "adapter.json", "samples.png", "summary.json", "metrics.jsonl"):
    assert (workdir / name).exists(), name
  assert summary["adapter_parameters"] == sum(int(np.prod(v.shape)) for v in tensors.values())


def test_frozen_weights_stay_bitwise_equal_and_have_no_optimizer_state(amused_dir):
  pipe = Pipeline.from_pretrained(amused_dir)
  model = pipe.transformer
  model.attach_adapters(AdapterConfig(hidden=4), nnx.Rngs(0))
  graphdef, trainable, frozen = nnx.split(model, AdapterParam, ...)
  frozen_before = jax.tree.map(np.asarray, frozen)
  c = load_config().optimizer
  c.learning_rate = 1e-2
  tx = make_optimizer(c)
  opt_state = tx.init(trainable)
  n_opt = sum(x.size for x in jax.tree.leaves(opt_state))
  n_adapter = sum(x.size for x in jax.tree.leaves(trainable))
  assert n_opt <= 2 * n_adapter + 8  # Adam's two moments of the adapter (+ counters), nothing of the base
  tokens = jax.random.randint(jax.random.key(0), (3, 4, 4), 0, 40)
  text, pooled = pipe.encode_prompts(["a red cat in watercolor painting style"])
  data = train.EncodedStyle(
    tokens, jnp.zeros((3,), jnp.int32), text, pooled, text[0] * 0, pooled[0] * 0, pipe.micro_conds(1, 16, 16)[0]
  )
  steps = jax.jit(
    train.make_train_steps(
      graphdef, tx, steps=4, batch_size=2, mask_id=pipe.mask_token_id, text_dropout=0.1, use_adapter=True
    )
  )
  new_trainable, _, _, metrics = steps(trainable, frozen, opt_state, jax.random.key(1), data)
  assert bool(metrics["finite"])
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, frozen), frozen_before)
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new_trainable, trainable))
  assert max(moved) > 0


def pipe_with_a_trained_adapter(amused_dir, scale: float):
  """The tiny base with random adapter weights, and the StyleDrop passes' inputs for two prompts."""
  pipe = Pipeline.from_pretrained(amused_dir)
  pipe.transformer.attach_adapters(AdapterConfig(), nnx.Rngs(0))
  state = nnx.state(pipe.transformer, AdapterParam)
  keys = iter(jax.random.split(jax.random.key(3), 8))
  nnx.update(pipe.transformer, jax.tree.map(lambda x: scale * jax.random.normal(next(keys), x.shape), state))
  text, pooled = pipe.encode_prompts(["a cat in watercolor painting style", "a house in watercolor painting style"])
  neg_text, neg_pooled = pipe.encode_prompts(["", ""])
  return pipe, (text, pooled, neg_text, neg_pooled, pipe.micro_conds(2, 16, 16))


def test_styledrop_guidance_as_one_batch_equals_three_forwards(amused_dir):
  pipe, (text, pooled, neg_text, neg_pooled, micro) = pipe_with_a_trained_adapter(amused_dir, 0.1)
  model = pipe.transformer
  tokens = jax.random.randint(jax.random.key(4), (2, 4, 4), 0, 41)
  passes = sampling.styledrop(text, pooled, neg_text, neg_pooled, micro, lambda_a=1.5, lambda_b=5.0)
  batched = nnx.jit(sampling.guided_logits)(model, tokens, passes)
  forward = nnx.jit(lambda m, *x: m(*x))  # compiled once per input structure, not op by op
  on = jnp.zeros((2,), jnp.int32)
  a_t = forward(model, tokens, text, pooled, micro, on)
  g_t = forward(model, tokens, text, pooled, micro)
  g_n = forward(model, tokens, neg_text, neg_pooled, micro)
  expected = a_t + 1.5 * (a_t - g_t) + 5.0 * (g_t - g_n)
  np.testing.assert_allclose(batched, expected, rtol=1e-5, atol=1e-4)
  assert not np.allclose(a_t, g_t)  # the adapter matters, so the check is not vacuous


def test_a_lambda_a_schedule_reaches_its_end_weights_on_the_last_step(amused_dir):
  pipe, args = pipe_with_a_trained_adapter(amused_dir, 0.3)
  sampler = sampling.Sampler(pipe.transformer, pipe.mask_token_id)
  masked = jnp.full((2, 4, 4), pipe.mask_token_id, jnp.int32)

  def draw(lambda_a, lambda_a_end=None, start_step=0):
    passes = sampling.styledrop(*args, lambda_a=lambda_a, lambda_b=2.0, lambda_a_end=lambda_a_end)
    kw = dict(num_steps=4, temperature=(0.0, 0.0), token_temperature=1e-3, init_tokens_BHW=masked)
    keys = jax.random.split(jax.random.key(0), 2)
    return np.asarray(sampler(passes, keys, (4, 4), start_step=start_step, **kw))

  np.testing.assert_array_equal(draw(0.5, 0.5), draw(0.5))  # a flat schedule is the fixed weight
  last = lambda *a: draw(*a, start_step=3)  # only the last step runs: it must use the end weights
  np.testing.assert_array_equal(last(-1.0, 3.0), last(3.0))
  assert not np.array_equal(last(-1.0), last(3.0))  # the two weights draw differently, so the check can fail
  # Every drawing builds its passes from SamplingSettings, which a run takes from its config's sample block.
  c = load_config(None).sample
  settings = sampling.SamplingSettings.from_dict(c)
  assert settings.passes(*args, adapter_ids_B=0).end_weights_PB is None  # unset by default: a fixed weight
  c.lambda_a, c.lambda_a_end = -1.0, 3.0
  end = sampling.SamplingSettings.from_dict(c).passes(*args, adapter_ids_B=0).end_weights_PB
  np.testing.assert_array_equal(end, sampling.styledrop(*args, lambda_a=3.0, lambda_b=c.lambda_b).weights_PB)


def test_a_data_fsdp_model_mesh_matches_one_device(amused_dir, style_image, trained, tmp_path):
  assert jax.device_count() == 8, "conftest sets --xla_force_host_platform_device_count=8"
  c, one, one_dir = trained  # on one device
  eight = train.train_and_evaluate(
    config_for(amused_dir, style_image, **RUN, mesh=dict(data=2, fsdp=2, model=2)), tmp_path / "eight"
  )
  losses = lambda d: [json.loads(line)["loss"] for line in (d / "metrics.jsonl").read_text().splitlines()]
  np.testing.assert_allclose(losses(tmp_path / "eight"), losses(one_dir), rtol=1e-5, atol=1e-5)
  a, _ = weights.read_adapter(one_dir)
  b, _ = weights.read_adapter(tmp_path / "eight")
  for k in a:
    np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6)
  assert one["steps"] == eight["steps"] == 20


@pytest.mark.multiprocess
def test_two_processes_train_the_adapter_of_one_and_only_process_0_writes(amused_dir, style_image, trained, tmp_path):
  """launch/local.py: 2 processes x 2 fake devices on a data 2 x fsdp 2 mesh; then one process resumes the run."""
  c, _, one_dir = trained
  config = tmp_path / "tiny.py"
  config.write_text(
    "from muse_styledrop.configs import style_one_shot\n\n\ndef get_config(arg=None):\n"
    '  c = style_one_shot.get_config("runlocal")\n'
    + "".join(
      f"  c.{k} = {v!r}\n"
      for k, v in dict(
        base_model=str(amused_dir), style_images=str(style_image), content_prompts="a house", evals={}, **RUN
      ).items()
    )
    + f"  c.checkpoint.use_async = False\n  c.optimizer.learning_rate = {c.optimizer.learning_rate!r}\n"
    + '  c.sample.prompts, c.sample.steps = ["a house", "a cat"] * 2, 2\n  return c\n'  # split over the 4 devices
  )
  workdir = tmp_path / "two"
  launcher = [sys.executable, str(Path(__file__).parent.parent / "launch" / "local.py"), "--num_processes=2"]
  launcher += ["--devices_per_process=2", f"--log_dir={tmp_path / 'logs'}", "--", sys.executable, "-m"]
  command = ["muse_styledrop.train", f"--config={config}", "--config.mesh.data=2", "--config.mesh.fsdp=2"]
  out = subprocess.run([*launcher, *command, f"--workdir={workdir}"], capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "process 1 of 2: 2 of 4 devices" in (tmp_path / "logs" / "process_1.log").read_text()
  a, _ = weights.read_adapter(one_dir)
  b, meta = weights.read_adapter(workdir)
  for k in a:
    np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6)
  # One writer: metrics.jsonl is appended to, so two writers would have left 8 lines for the 4 calls.
  assert len((workdir / "metrics.jsonl").read_text().splitlines()) == RUN["steps"] // RUN["steps_per_call"]
  assert '"adapter_bytes"' not in (tmp_path / "logs" / "process_1.log").read_text()
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["10", "20"]
  # The checkpoint that two processes saved restores in this one, on one device, to the adapter they exported.
  pipe = Pipeline.from_pretrained(amused_dir)
  pipe.attach_adapters(train.adapter_config(c), nnx.Rngs(0))
  trainable = nnx.state(pipe.transformer, AdapterParam)
  like = {"trainable": trainable, "opt_state": make_optimizer(c.optimizer).init(trainable)}
  like["rng"] = jax.random.key_data(jax.random.key(0))
  state, saved = checkpointing.Checkpointer(workdir / "checkpoints", use_async=False).restore(RUN["steps"], like)
  assert saved["base_fingerprint"] == pipe.fingerprint
  for path, var in nnx.to_flat_state(state["trainable"]):
    np.testing.assert_array_equal(np.asarray(var[...]), b[".".join(map(str, path))])


def test_sample_draws_what_training_drew_with_the_settings_it_recorded(amused_dir, trained, tmp_path):
  c, _, run = trained
  _, meta = weights.read_adapter(run)
  assert meta["sampling"] == sampling.SamplingSettings.from_dict(c.sample).to_dict()
  prompt = f"a cat {c.style_descriptor}"
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "muse_styledrop.sample",
      f"--base_model={amused_dir}",
      f"--adapter={run}",
      f"--prompt={prompt}",
      "--seed=7",
      f"--out={tmp_path / 'drawn'}",
    ],
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, result.stderr
  grid = np.asarray(Image.open(run / "samples.png"))
  alone = np.asarray(Image.open(tmp_path / "drawn" / "image_000.png"))
  side, pad = alone.shape[0], 2  # samples.png: one row of the three prompts, a 2-pixel white gutter
  np.testing.assert_array_equal(grid[pad : pad + side, 2 * pad + side : 2 * pad + 2 * side], alone)

  # token for token: a picture depends on its prompt, seed and settings, not on the batch it is drawn in
  pipe = Pipeline.from_pretrained(amused_dir)
  pipe.load_adapter(run)
  settings = sampling.SamplingSettings.from_dict(meta["sampling"])
  prompts = [f"{p} {c.style_descriptor}" for p in c.sample.prompts]
  together = pipe.draw_tokens(prompts, settings, seed=7, adapter=0)
  np.testing.assert_array_equal(pipe.draw_tokens([prompt], settings, seed=7, adapter=0)[0], together[1])
  assert not np.array_equal(pipe.draw_tokens([prompt], settings, seed=8, adapter=0)[0], together[1])


def test_workdir_of_another_base_is_refused(style_image, trained, tmp_path):
  import reference

  _, _, run = trained
  other = reference.amused_dir(tmp_path / "other-base", uvit_overrides={"num_hidden_layers": 3})
  from muse_styledrop.checkpointing import CheckpointMismatch

  with pytest.raises(CheckpointMismatch, match="another base model"):
    train.train_and_evaluate(config_for(other, style_image, steps=40), run)


@pytest.mark.parametrize("change", ["picture", "phrase", "text", "exported_only"])
def test_a_workdir_refuses_other_pictures_phrase_or_texts(amused_dir, style_image, trained, tmp_path, change):
  from muse_styledrop.checkpointing import CheckpointMismatch

  c, _, run = trained
  copy = tmp_path / "run"
  shutil.copytree(run, copy)
  before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
  other = tmp_path / "other.png"
  Image.open(style_image).rotate(90, expand=True).save(other)
  renamed = tmp_path / "renamed.png"
  shutil.copy(style_image, renamed)
  new = config_for(amused_dir, renamed, **RUN)  # the same picture under another name is the same run
  train.check_same_inputs(copy, train.recorded_inputs(_checkpointer(copy), copy), train.style_inputs(_style(new)))
  match = {
    "picture": r"style picture\(s\) stripes.png \(sha256 [0-9a-f]{12}\), this run has other.png",
    "phrase": "style phrase 'in mosaic tile style', this run has 'in stripes style'",
    "text": "content text\\(s\\) 'a house', this run has 'a barn'",
    "exported_only": "content text",
  }[change]
  if change == "picture":
    new = config_for(amused_dir, other, **RUN)
  elif change == "phrase":
    new.style_descriptor = "in stripes style"
  else:
    new.content_prompts = "a barn"
  if change == "exported_only":  # no checkpoints left: the exported adapter's record speaks for the run
    shutil.rmtree(copy / "checkpoints")
    before = {p: b for p, b in before.items() if p.exists()}
  with pytest.raises(CheckpointMismatch, match=match) as e:
    train.train_and_evaluate(new, copy)
  assert "--fresh" in str(e.value)
  assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before  # nothing touched


def _checkpointer(workdir):
  from muse_styledrop.checkpointing import Checkpointer

  return Checkpointer(workdir / "checkpoints", use_async=False)


def _style(c):
  from muse_styledrop.data import resolve_style_set

  return resolve_style_set(c.style_images, c.content_prompts, c.style_descriptor, c.role)


def test_full_size_round1_adapter_file_is_small_and_holds_no_base_weight(tmp_path):
  from muse_styledrop.models import presets
  from muse_styledrop.models.uvit import UVit2DModel

  def build():
    model = UVit2DModel(presets.AMUSED_256_TRANSFORMER, rngs=nnx.Rngs(0))
    model.attach_adapters(AdapterConfig(hidden=4, shared=True), nnx.Rngs(1))
    return model

  model = nnx.eval_shape(build)
  abstract = nnx.state(model, AdapterParam)
  state = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), abstract)  # only the adapter is materialised
  st, _ = weights.write_adapter(state, {"adapter": {}}, tmp_path / "adapter")
  assert st.stat().st_size < 1_000_000
  tensors, _ = weights.read_adapter(st)
  assert set(tensors) == {f"adapters.{site}.{w}" for site in ("attn2", "ff") for w in ("wd", "wu", "dd", "du")}


@pytest.mark.parametrize(
  "case", ["missing", "corrupt", "empty", "count", "no_style_phrase", "role", "hue_caption", "hues", "no_reference"]
)
def test_bad_style_input_is_a_clear_error_and_writes_nothing(amused_dir, style_image, tmp_path, case):
  from muse_styledrop.data import StyleSetError
  from muse_styledrop.images import ImageError

  c = config_for(amused_dir, style_image, steps=10)
  if case == "missing":
    c.style_images, error, match = str(tmp_path / "nope.png"), ImageError, "does not exist"
  elif case == "corrupt":
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    c.style_images, error, match = str(bad), ImageError, "not a readable image"
  elif case == "empty":
    c.style_images, error, match = " , ", StyleSetError, "style set is empty"
  elif case == "count":
    c.content_prompts, error, match = "a house|a cat", StyleSetError, "2 content prompt"
  elif case == "no_style_phrase":
    c.style_descriptor, error, match = "  ", StyleSetError, "style phrase is empty"
  elif case == "role":
    c.role, error, match = "subject", StyleSetError, "config.role='subject'"
  elif case == "hue_caption":
    c.augment.hue_caption, error, match = "colour", StyleSetError, "hue_caption='colour'"
  elif case == "hues":
    c.augment.hues, error, match = -2, StyleSetError, "augment.hues=-2"
  else:  # round 2 grades on round 1's picture: a typo there must not wait for the end of training
    c.evals = {"shapes_oracle": dict(prompts=2, seed=0, reference=str(tmp_path / "round1.png"))}
    error, match = FileNotFoundError, "config.evals.shapes_oracle.reference="
  with pytest.raises(error, match=match):
    train.train_and_evaluate(c, tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_style_folder_with_captions(tmp_path, style_image):
  from muse_styledrop.data import resolve_style_set

  folder = tmp_path / "set"
  folder.mkdir()
  for name in ("b.png", "a.jpg"):
    Image.open(style_image).convert("RGB").save(folder / name)
  (folder / "captions.txt").write_text("a.jpg\ta cat\nb.png\ta house\n")
  style = resolve_style_set(str(folder), "", "in stripes style")
  assert [p.name for p in style.paths] == ["a.jpg", "b.png"]
  assert style.prompts == ["a cat in stripes style", "a house in stripes style"]


def test_rotate_hue_turns_colours_and_keeps_greys():
  from muse_styledrop.data import rotate_hue

  x = np.zeros((2, 2, 3), np.float32)
  x[0, 0] = (1, 0, 0)  # red
  x[0, 1] = (0.5, 0.5, 0.5)  # grey has no hue
  x[1] = 1.0  # white
  third = rotate_hue(x, 1 / 3)
  np.testing.assert_allclose(third[0, 0], (0, 1, 0), atol=0.02)  # red -> green
  np.testing.assert_allclose(third[0, 1:], x[0, 1:], atol=0.01)
  np.testing.assert_allclose(third[1], x[1], atol=0.01)
  np.testing.assert_allclose(rotate_hue(x, 1.0), x, atol=0.01)  # a whole turn


def test_hue_copies_are_captioned_with_the_phrase_alone_or_their_own_content(amused_dir, style_image):
  from muse_styledrop.data import augmented_images, resolve_style_set

  style = resolve_style_set(f"{style_image},{style_image}", "a cat|a dog", "in stripes style")
  plain, plain_index = augmented_images(style, 32, True, 2, 0)
  pictures, index = augmented_images(style, 32, True, 2, 0, hues=3)
  assert len(pictures) == len(plain) + 2 * 3
  turned = pictures[index == 2]  # the third prompt: the phrase alone
  assert len(turned) == 6 and not any(np.allclose(t, plain[0], atol=0.05) for t in turned)
  np.testing.assert_array_equal(pictures[index < 2], plain)  # the other versions are unchanged, in order
  np.testing.assert_array_equal(index[index < 2], plain_index)
  c = config_for(amused_dir, style_image)
  c.augment.hues = 3
  d = train.encode_style(Pipeline.from_pretrained(amused_dir), style, c)
  assert d.text_ITD.shape[0] == 3 and int(d.image_N.max()) == 2
  phrase_text, _ = Pipeline.from_pretrained(amused_dir).encode_prompts(["in stripes style"])
  np.testing.assert_allclose(d.text_ITD[2], phrase_text[0], atol=1e-5)
  kept, kept_index = augmented_images(style, 32, True, 2, 0, hues=3, hue_caption="content")
  np.testing.assert_array_equal(kept, pictures)
  assert list(kept_index) == [0] * 7 + [1] * 7  # each copy keeps its own image's prompt


def test_unknown_config_key_is_one_line_and_nonzero(tmp_path):
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "muse_styledrop.train",
      f"--config={CONFIG}:runlocal",
      "--config.stepz=3",
      f"--workdir={tmp_path / 'run'}",
    ],
    capture_output=True,
    text=True,
  )
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1] == (
    "error: unknown config field 'stepz' in a --config override "
    "(did you mean 'steps'?); the config file lists every field"
  )
  assert not (tmp_path / "run").exists()


def test_lora_adapter_trains_and_exports_only_lora_weights(amused_dir, style_image, tmp_path):
  c = config_for(amused_dir, style_image, steps=5, steps_per_call=5)
  c.adapter.kind, c.adapter.blocks = "lora", False
  c.adapter.rank = 2
  train.train_and_evaluate(c, tmp_path)
  tensors, meta = weights.read_adapter(tmp_path)
  assert meta["adapter"]["kind"] == "lora"
  assert all(k.startswith("adapters.projections.") for k in tensors)
  assert any(np.abs(np.asarray(v)).max() > 0 for k, v in tensors.items() if k.endswith("_b"))  # B left zero
  pipe = Pipeline.from_pretrained(amused_dir)
  pipe.load_adapter(tmp_path)  # and it loads back for sampling


def test_a_content_adapter_learns_its_subject_from_captions_without_a_style_phrase(amused_dir, tmp_path):
  from muse_styledrop.shapes import references

  c = load_config("content,runlocal")
  c.base_model, c.steps, c.steps_per_call = str(amused_dir), 5, 5
  c.mesh, c.checkpoint.use_async = dict(data=1, fsdp=1, model=1), False
  assert c.role == "content" and c.style_descriptor == "" and c.style_images == str(references.CONTENT_DIR)
  train.train_and_evaluate(c, tmp_path)
  tensors, meta = weights.read_adapter(tmp_path)
  assert meta["role"] == "content" and meta["style_phrase"] == ""
  assert meta["training_prompts"] == [references.subject_caption(s) for s in references.SUBJECT_SCENES]
  assert all("sks heart" in p and "green" not in p for p in meta["training_prompts"])
  assert any(np.abs(np.asarray(v)).max() > 0 for k, v in tensors.items() if k.endswith("wu"))


def test_all_weights_mode_trains_the_base(amused_dir, style_image, tmp_path):
  """trainable='all' (pretraining, full fine-tune): every weight moves; no adapter is exported."""
  c = config_for(amused_dir, style_image, steps=5, steps_per_call=5, trainable="all")
  summary = train.train_and_evaluate(c, tmp_path)
  assert summary["steps"] == 5 and np.isfinite(summary["loss"])
  assert not (tmp_path / "adapter.safetensors").exists()
  assert (tmp_path / "checkpoints" / "5").exists()


@pytest.fixture
def bucket(tmp_path):
  """gs://bucket served by a local Cloud Storage emulator, for gcsfs (through etils.epath) and TensorStore (Orbax's
  array writes) alike; the cache of cloud files goes to tmp_path."""
  import os
  import socket

  from gcp_storage_emulator.server import create_server

  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  server = create_server("localhost", port, in_memory=True, default_bucket="bucket")
  server.start()
  env = {
    "STORAGE_EMULATOR_HOST": f"http://localhost:{port}",
    "TENSORSTORE_GCS_HTTP_URL": f"http://localhost:{port}",
    "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
    "MUSE_STYLEDROP_CACHE": str(tmp_path / "cache"),
  }
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  yield "gs://bucket"
  server.stop()
  for k, v in saved.items():
    if v is None:
      os.environ.pop(k)
    else:
      os.environ[k] = v


def upload(local: Path, uri: str) -> None:
  from etils import epath

  for f in [local] if local.is_file() else [f for f in local.rglob("*") if f.is_file()]:
    target = epath.Path(uri) / f.relative_to(local) if local.is_dir() else epath.Path(uri)
    target.write_bytes(f.read_bytes())


def test_a_run_whose_base_style_and_workdir_are_in_a_bucket(amused_dir, style_image, trained, bucket, capsys):
  """gs:// paths everywhere: the run trains the adapter of the local run, resumes from the bucket's checkpoint, a
  resumed run's metrics keep the earlier lines, and the sample command reads the adapter back and writes its picture
  to the bucket."""
  from etils import epath

  from muse_styledrop import sample

  upload(amused_dir, f"{bucket}/models/tiny")
  upload(style_image, f"{bucket}/styles/stripes.png")
  c_local, _, local = trained
  c = config_for(f"{bucket}/models/tiny", f"{bucket}/styles/stripes.png", **RUN)
  c.sample.prompts, c.sample.seed = c_local.sample.prompts, c_local.sample.seed
  run = epath.Path(f"{bucket}/run")
  train.train_and_evaluate(c, str(run))
  a, _ = weights.read_adapter(local)
  b, meta = weights.read_adapter(str(run))
  assert meta["style_images"] == [f"{bucket}/styles/stripes.png"]
  for k in a:
    np.testing.assert_array_equal(b[k], a[k])
  assert (run / "checkpoints" / "20").is_dir() and (run / "summary.json").is_file()
  assert (run / "samples.png").read_bytes() == (local / "samples.png").read_bytes()
  logged = (run / "metrics.jsonl").read_text().splitlines()
  assert logged and len(logged) == len((local / "metrics.jsonl").read_text().splitlines())
  events = list((run / "tensorboard").iterdir())
  assert len(events) == 1 and events[0].name.startswith("events.out.tfevents") and events[0].stat().length > 100

  # the sample command reads the adapter from the bucket and writes its picture there
  prompt = f"a cat {c.style_descriptor}"
  sample.run(f"{bucket}/models/tiny", [prompt], 1, 7, epath.Path(f"{bucket}/drawn"), adapter=str(run))
  drawn = np.asarray(Image.open(io.BytesIO((epath.Path(f"{bucket}/drawn") / "image_000.png").read_bytes())))
  grid = np.asarray(Image.open(local / "samples.png"))
  side, pad = drawn.shape[0], 2
  np.testing.assert_array_equal(grid[pad : pad + side, 2 * pad + side : 2 * pad + 2 * side], drawn)

  capsys.readouterr()
  (run / "adapter.safetensors").unlink()
  train.train_and_evaluate(c, str(run))  # finished: resumes at its last checkpoint and exports again
  assert f"resumed from {run / 'checkpoints' / '20'}" in capsys.readouterr().out
  np.testing.assert_array_equal(weights.read_adapter(str(run))[0][k], a[k])
  from muse_styledrop.metrics import MetricWriter

  for step in (30, 40):  # a resumed run's writer keeps the lines before it (an object cannot be appended to)
    writer = MetricWriter(run)
    writer.write(step, {"loss": 1.0})
    writer.close()
  again = (run / "metrics.jsonl").read_text().splitlines()
  assert again[: len(logged)] == logged and [json.loads(x)["step"] for x in again[len(logged) :]] == [30, 40]
