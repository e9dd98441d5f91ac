"""Pretraining the embedded base's components: they learn, restart dead codes, resume exactly, export loadable files."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configs import pretrain_clip, pretrain_vq  # noqa: E402
from muse_styledrop import files, weights  # noqa: E402
from muse_styledrop.models.vq import VQConfig, VQModel  # noqa: E402
from muse_styledrop.pipeline import EMBEDDED_BASE  # noqa: E402
from muse_styledrop.pretrain import pretrain  # noqa: E402
from muse_styledrop.pretraining import patch_codes  # noqa: E402
from muse_styledrop.pretraining.clip import caption_words  # noqa: E402
from muse_styledrop.pretraining.uvit import training_subset  # noqa: E402
from muse_styledrop.pretraining.vq import fsq_grid  # noqa: E402
from muse_styledrop.shapes import dataset  # noqa: E402
from muse_styledrop.shapes.styles import STYLES  # noqa: E402
from muse_styledrop.tokenizer import Tokenizer  # noqa: E402

# one worker runs this module, so its fixtures (pretraining runs, session-scoped) are built once, not per worker
pytestmark = pytest.mark.xdist_group("pretrain")
ONE_DEVICE = dict(data=1, fsdp=1, model=1)  # tiny batches; the sharded step: test_pretraining_on_a_mesh_*


@pytest.fixture(scope="session")
def data_files(tmp_path_factory):
  root = tmp_path_factory.mktemp("shapes")
  dataset.save(dataset.render(48, first_seed=0, styles=("flat", "neon", "stripes"), workers=1), root / "train.npz")
  dataset.save(dataset.render(16, first_seed=100, styles=("flat", "neon", "stripes"), workers=1), root / "test.npz")
  return root / "train.npz", root / "test.npz"


def tiny_vq(data_files, steps=12, quantizer="vq"):
  c = pretrain_vq.get_config()
  c.mesh = ONE_DEVICE
  c.quantizer, c.fsq_levels = quantizer, (4, 4)
  c.data.train = str(data_files[0])
  c.evals.shapes_vq.test, c.evals.shapes_vq.oracle_dir = str(data_files[1]), "/nonexistent"
  c.vq.block_out_channels, c.vq.latent_channels, c.vq.vq_embed_dim = (8, 8), 8, 2 if quantizer == "fsq" else 4
  c.vq.num_vq_embeddings, c.vq.norm_num_groups = 16, 4
  c.crop, c.batch_size, c.steps, c.steps_per_call = 16, 4, steps, 4
  c.optimizer.warmup_steps = 2
  c.checkpoint.use_async = False
  return c


@pytest.fixture(scope="session")
def vq_run(data_files, tmp_path_factory):
  """A tiny VQ pretrained for 8 steps, uninterrupted: (summary, workdir)."""
  workdir = tmp_path_factory.mktemp("vq")
  return pretrain(tiny_vq(data_files, 8), workdir), workdir


def test_vq_pretraining_learns_fills_codebook_from_data_and_exports(data_files, vq_run, tmp_path):
  summary, run = vq_run
  lines = (run / "metrics.jsonl").read_text().splitlines()
  first, last = json.loads(lines[0]), json.loads(lines[-1])
  assert first["restarted"] > 0  # every code starts dead and is filled from encoder outputs
  assert last["loss"] < first["loss"]
  vq = weights.load_vqvae(Path(summary["export"]))
  assert vq.config.num_vq_embeddings == 16 and summary["quality"]["tokens"] == [32, 32]

  # train="decoder" continues only the decoder: the encoder, codebook and so every token stay bitwise the same
  c = tiny_vq(data_files, steps=8)
  c.init_from, c.train, c.crop = summary["export"], "decoder", 64
  again = weights.load_vqvae(Path(pretrain(c, tmp_path / "decoder")["export"]))
  before, after = weights.state_dict(vq), weights.state_dict(again)
  decoder = [k for k in before if k.startswith(("decoder.", "post_quant_conv."))]
  assert decoder and all(not np.array_equal(before[k], after[k]) for k in decoder)
  for k in set(before) - set(decoder):
    np.testing.assert_array_equal(np.asarray(before[k]), np.asarray(after[k]), err_msg=k)
  c.init_from = ""
  with pytest.raises(ValueError, match="train='decoder' needs init_from"):
    pretrain(c, tmp_path / "bad")
  c.init_from, c.vq.num_vq_embeddings = summary["export"], 32
  with pytest.raises(ValueError, match="make config.vq match the directory"):
    pretrain(c, tmp_path / "bad")


def test_fsq_grid_lookup_is_per_dimension_rounding():
  grid = fsq_grid((8, 5, 3))
  assert grid.shape == (120, 3) and len(np.unique(grid, axis=0)) == 120
  z = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype(np.float32) * 3
  vq = VQModel(
    VQConfig(
      vq_embed_dim=3,
      num_vq_embeddings=120,
      block_out_channels=(8,),
      latent_channels=4,
      norm_num_groups=4,
      mid_block_add_attention=False,
    ),
    rngs=nnx.Rngs(0),
  )
  vq.quantize.embedding.embedding.set_value(jnp.asarray(grid))
  looked_up = np.asarray(vq.quantize.lookup(vq.quantize.nearest(jnp.asarray(z))))
  per_axis = [np.arange(n) - (n - 1) / 2 for n in (8, 5, 3)]
  nearest = [v[np.abs(z[..., d, None] - v).argmin(-1)] for d, v in enumerate(per_axis)]
  np.testing.assert_array_equal(looked_up, np.stack(nearest, -1))


def test_fsq_pretraining_keeps_its_grid_and_checks_levels(data_files, tmp_path):
  summary = pretrain(tiny_vq(data_files, quantizer="fsq"), tmp_path / "run")
  vq = weights.load_vqvae(Path(summary["export"]))
  codes = np.asarray(vq.quantize.embedding.embedding[...])  # exported padded to the latent channels
  np.testing.assert_array_equal(codes[:, :2], fsq_grid((4, 4)))
  assert not codes[:, 2:].any()
  bad = tiny_vq(data_files, quantizer="fsq")
  bad.fsq_levels = (4, 5)
  with pytest.raises(ValueError, match="fsq_levels=.*20 codes"):
    pretrain(bad, tmp_path / "bad")


def tiny_anchored_vq(data_files, steps):
  c = tiny_vq(data_files, steps=steps, quantizer="patch_kmeans")
  c.kmeans_pictures, c.kmeans_iters = 48, 5
  c.vq.latent_channels = c.vq.vq_embed_dim = 12  # codes are 2x2x3 pixel patches
  c.vq.block_out_channels = (16, 16)  # room for the 12 numbers of a patch
  c.commitment = 10.0
  c.optimizer.learning_rate = 1e-2
  return c


@pytest.fixture(scope="session")
def anchored_run(data_files, tmp_path_factory):
  """A tiny anchored VQ trained once: (config, summary, workdir)."""
  c = tiny_anchored_vq(data_files, steps=240)
  run = tmp_path_factory.mktemp("anchored")
  return c, pretrain(c, run), run


def test_anchored_vq_learns_to_pick_each_patch_code(anchored_run, data_files, tmp_path):
  c, summary, run = anchored_run
  with np.load(run / "patch_codes.npz") as f:
    centres, anchored = f["centres"], f["ids"]
  assert centres.shape == (16, 2 * 2 * 3) and anchored.shape == (48, 32, 32)  # 2x2 patches: the tiny VQ's downscale
  vq = weights.load_vqvae(Path(summary["export"]))
  np.testing.assert_allclose(np.asarray(vq.quantize.embedding.embedding[...]), centres, atol=1e-6)  # fixed codebook
  pictures = dataset.load(Path(c.data.train))["images"][:16]
  got = np.asarray(vq.encode(jnp.asarray(pictures, jnp.float32) / 255.0))
  majority = np.bincount(anchored[:16].ravel()).max() / anchored[:16].size  # always the commonest code
  assert (got == anchored[:16]).mean() > majority + 0.1
  assert 0 <= summary["quality"]["neighbour_majority"] <= 1
  assert summary["quality"]["patch_codes"]["psnr"] > 15  # the centres pasted back
  bad = tiny_vq(data_files, quantizer="patch_kmeans")
  with pytest.raises(ValueError, match="vq_embed_dim must be 3 x 2 x 2 = 12, not 4"):
    pretrain(bad, tmp_path / "bad")
  bad.vq.latent_channels = bad.vq.vq_embed_dim = 12
  bad.crop = 15
  with pytest.raises(ValueError, match="crop=15 must be a multiple"):
    pretrain(bad, tmp_path / "bad")


def test_anchored_vq_continues_on_its_own_codebook_and_a_sharp_code_loss_picks_the_nearest_patch(
  anchored_run, data_files, tmp_path
):
  """init_from's codebook is the anchor (no new k-means), and code_temperature sharpens the code cross-entropy
  without changing which code is nearest."""
  _, first, _ = anchored_run
  start = weights.load_vqvae(Path(first["export"]))
  codebook = np.asarray(start.quantize.embedding.embedding[...], np.float32)
  pictures = dataset.load(Path(data_files[0]))["images"]
  nearest = patch_codes.encode(pictures, codebook, 2)
  first_rows = {}
  for temperature in (1.0, 0.01):
    c = tiny_anchored_vq(data_files, steps=2)
    c.steps_per_call = 1  # metrics.jsonl's first row is the first step alone
    c.init_from, c.code_temperature = first["export"], temperature
    c.kmeans_pictures = 8  # a fresh k-means would fit other centres: the targets must come from the codebook
    run = tmp_path / f"t{temperature}"
    summary = pretrain(c, run)
    with np.load(run / "patch_codes.npz") as f:
      np.testing.assert_array_equal(f["centres"], codebook)
      np.testing.assert_array_equal(f["ids"], nearest)
    vq = weights.load_vqvae(Path(summary["export"]))
    np.testing.assert_array_equal(np.asarray(vq.quantize.embedding.embedding[...]), codebook)
    first_rows[temperature] = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
  sharp, soft = first_rows[0.01], first_rows[1.0]
  assert sharp["code_accuracy"] == soft["code_accuracy"]  # the same first steps pick the same nearest codes
  assert abs(sharp["code_ce"] - soft["code_ce"]) > 0.2 * soft["code_ce"]  # but not the same loss
  other = tmp_path / "other"
  other.mkdir()
  np.savez(other / "patch_codes.npz", centres=codebook + 0.5, ids=nearest.astype(np.int16))
  c = tiny_anchored_vq(data_files, steps=4)
  c.init_from = first["export"]
  with pytest.raises(ValueError, match="made for another codebook than init_from's"):
    pretrain(c, other)


def test_uvit_data_selection_keeps_single_medium_or_large_objects(data_files):
  arrays = dataset.load(data_files[0])
  keep = training_subset(arrays, "single_large")
  assert 0 < len(keep) < len(arrays["objects"])
  assert (arrays["objects"][keep] == 1).all() and not any("a small " in str(c) for c in arrays["caption"][keep])
  assert len(training_subset(arrays, "all")) == len(arrays["objects"])
  with pytest.raises(ValueError, match="data.select='big'"):
    training_subset(arrays, "big")


@pytest.mark.multiprocess
def test_two_processes_pretrain_on_a_mesh_and_one_device_resumes_to_the_same_weights(data_files, vq_run, tmp_path):
  """launch/local.py: 2 processes x 2 fake devices on a data 2 x fsdp 2 mesh (the sharded step of training), stopped
  by its time box; one process on one device resumes and ends with the weights of an uninterrupted run."""
  straight, straight_dir = vq_run
  boxed = tiny_vq(data_files, 8)
  boxed.mesh = dict(data=2, fsdp=2, model=1)
  boxed.unroll = False  # compiles faster; one step at a time gives the same numbers
  boxed.max_seconds = 1e-9  # out of time after the first call: checkpointed, exported, and the same command resumes
  config = tmp_path / "tiny_vq.py"
  config.write_text(
    f"import ml_collections\n\n\ndef get_config():\n  return ml_collections.ConfigDict({boxed.to_dict()!r})\n"
  )
  launcher = [sys.executable, str(Path(__file__).parent.parent / "launch" / "local.py"), "--num_processes=2"]
  launcher += ["--devices_per_process=2", f"--log_dir={tmp_path / 'logs'}", "--", sys.executable, "-m"]
  command = ["muse_styledrop.pretrain", f"--config={config}", f"--workdir={tmp_path / 'b'}"]
  out = subprocess.run([*launcher, *command], capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "process 1 of 2: 2 of 4 devices" in (tmp_path / "logs" / "process_1.log").read_text()
  stopped = json.loads((tmp_path / "b" / "summary.json").read_text())
  assert stopped["steps"] == 4 and "max_seconds=1e-09 reached at step 4 of 8" in stopped["stopped_early"]
  assert len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) == 1  # one writer
  boxed.mesh, boxed.max_seconds = ONE_DEVICE, 0
  resumed = pretrain(boxed, tmp_path / "b")
  assert straight["steps"] == resumed["steps"] == 8 and "stopped_early" not in resumed
  np.testing.assert_allclose(resumed["last"]["loss"], straight["last"]["loss"], rtol=1e-5)
  a = weights.read_tensors(weights.weight_files(straight_dir / "export/vqvae", "diffusion_pytorch_model"))
  b = weights.read_tensors(weights.weight_files(tmp_path / "b/export/vqvae", "diffusion_pytorch_model"))
  for k in a:
    np.testing.assert_allclose(np.asarray(a[k][0]), np.asarray(b[k][0]), atol=1e-5, err_msg=k)


def test_clip_pretraining_exports_a_model_and_tokenizer_transformers_loads(data_files, tmp_path):
  import torch
  from transformers import CLIPModel as TorchCLIP

  c = pretrain_clip.get_config()
  c.mesh = ONE_DEVICE
  c.data.train, c.evals.shapes_clip.test = map(str, data_files)
  for tower in (c.clip.text, c.clip.vision):
    tower.hidden_size, tower.intermediate_size, tower.num_hidden_layers = 32, 64, 1
  c.clip.projection_dim, c.batch_size, c.steps, c.steps_per_call = 16, 8, 4, 2
  c.checkpoint.use_async = False
  summary = pretrain(c, tmp_path)
  export = Path(summary["export"])
  tok = Tokenizer(export / "tokenizer")
  ids = tok(["a sks thing in zorblax style", "a red star in neon glow style"])
  assert ids.shape == (2, c.max_length) and (ids[0] != ids[1]).any()
  # every word of the world is one token (CLIP's pre-tokeniser splits digits off, so "3d" is two)
  words = [w for w in caption_words(dataset.load(data_files[0])["caption"], STYLES.values()) if w.isalpha()]
  eos = tok([""])[0][1]
  assert [w for w in words if tok([w])[0][2] != eos] == []
  theirs = TorchCLIP.from_pretrained(export / "clip").eval()
  ours = weights.load_clip(export / "clip")
  with torch.no_grad():
    pooled = theirs.text_model(input_ids=torch.tensor(ids, dtype=torch.long)).pooler_output
    want = theirs.text_projection(pooled).numpy()
  got = ours.encode_text(jax.numpy.asarray(ids))[1]
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)
  assert set(summary["quality"]) == {"shape", "colour", "style"}


def transformer_without_position(folder: Path) -> Path:
  """The embedded base's transformer as aMUSEd has it: no position embedding."""
  source = EMBEDDED_BASE / "transformer"
  tensors = weights.read_tensors(weights.weight_files(source, "diffusion_pytorch_model"))
  folder.mkdir(parents=True)
  weights.write_safetensors(
    {k: v for k, (v, _) in tensors.items() if k != "position_embedding"}, folder / "diffusion_pytorch_model.safetensors"
  )
  files.write_json({**files.read_json(source / "config.json"), "position_embedding_grid": []}, folder / "config.json")
  return folder


def test_uvit_warm_start_keeps_a_new_position_embedding_and_token_cache_follows_the_encoder(data_files, tmp_path):
  from configs import pretrain_uvit
  from muse_styledrop.pretraining.uvit import UVitObjective

  c = pretrain_uvit.get_config()
  c.mesh = ONE_DEVICE
  c.data.train = str(data_files[0])
  c.vq_dir, c.clip_dir = str(EMBEDDED_BASE / "vqvae"), str(EMBEDDED_BASE)
  c.init_from = str(transformer_without_position(tmp_path / "source"))
  c.uvit.position_embedding_grid = (16, 16)
  model = UVitObjective(c, tmp_path).build(nnx.Rngs(0))
  source = weights.read_tensors(weights.weight_files(Path(c.init_from), "diffusion_pytorch_model"))
  ours = weights.state_dict(model)
  assert set(ours) == set(source) | {"position_embedding"}
  for k, (v, _) in source.items():
    np.testing.assert_array_equal(np.asarray(ours[k]), np.asarray(v, np.float32), err_msg=k)
  assert 0.5 < float(jnp.std(ours["position_embedding"])) < 1.5  # a fresh unit-scale table, not zeros

  c.uvit.hidden_size = 64  # another architecture: refused, naming the weight
  with pytest.raises(weights.WeightsError, match="has shape"):
    UVitObjective(c, tmp_path).build(nnx.Rngs(0))

  # the tokens, captions and labels are cached: a later run never opens the pictures (a GPU machine lacks them)
  first = UVitObjective(c, tmp_path)
  c.data.train = str(tmp_path / "missing.npz")
  again = UVitObjective(c, tmp_path)
  np.testing.assert_array_equal(again.tokens, first.tokens)
  np.testing.assert_array_equal(again.ids, first.ids)
  with pytest.raises(FileNotFoundError, match="missing.npz does not exist and .*tokens.npz is not there yet"):
    UVitObjective(c, tmp_path / "fresh")
  other = weights.load_vqvae(EMBEDDED_BASE / "vqvae", dtype=jnp.float16)
  other.decoder.conv_out.bias.set_value(other.decoder.conv_out.bias[...] + 1)  # another decoder: the same tokens
  weights.save_vqvae(other, tmp_path / "other_vq")
  c.vq_dir = str(tmp_path / "other_vq")
  UVitObjective(c, tmp_path)
  other.quant_conv.bias.set_value(other.quant_conv.bias[...] + 1)  # another encoder's tokens would be stale: refused
  weights.save_vqvae(other, tmp_path / "other_vq")
  with pytest.raises(ValueError, match="holds tokens of another VQ encoder"):
    UVitObjective(c, tmp_path)


def test_uvit_warm_start_onto_another_vq_keeps_the_body_and_resizes_the_position_embedding(tmp_path):
  """As configs/pretrain_uvit.py:anchored_2px_warm does: a trained body on a grid twice as wide, with a new token
  embedding and head (here the embedded base's 16x16 grid onto 32x32)."""
  import dataclasses

  from configs import pretrain_uvit
  from muse_styledrop.models.uvit import UVit2DModel
  from muse_styledrop.pretraining.uvit import warm_start

  c = pretrain_uvit.get_config("anchored_2px_warm")
  c.mesh = ONE_DEVICE
  source = EMBEDDED_BASE / "transformer"
  tensors = weights.read_tensors(weights.weight_files(source, "diffusion_pytorch_model"))
  shipped = {k: np.asarray(v, np.float32) for k, (v, _) in tensors.items()}
  config = weights.uvit_config(weights.read_json(source / "config.json"), source)
  assert config.position_embedding_grid == (16, 16)
  config = dataclasses.replace(config, position_embedding_grid=(32, 32), sample_size=64)
  fresh = weights.state_dict(UVit2DModel(config, rngs=nnx.Rngs(3)))
  model = UVit2DModel(config, rngs=nnx.Rngs(3))
  warm_start(model, source, fresh=tuple(c.init_fresh))
  ours = weights.state_dict(model)
  assert set(ours) == set(shipped)
  for k, v in ours.items():
    if k.startswith(("embed.", "mlm_layer.")):  # the new codes' layers keep their init
      np.testing.assert_array_equal(np.asarray(v), np.asarray(fresh[k]), err_msg=k)
      assert not np.array_equal(np.asarray(v), shipped[k]), k
    elif k != "position_embedding":
      np.testing.assert_array_equal(np.asarray(v), shipped[k], err_msg=k)
  old = shipped["position_embedding"].reshape(16, 16, -1)
  new = np.asarray(ours["position_embedding"]).reshape(32, 32, -1)
  np.testing.assert_allclose(new.mean((0, 1)), old.mean((0, 1)), atol=1e-4)  # bilinear 2x keeps the mean
  blocks = new.reshape(16, 2, 16, 2, -1).mean((1, 3))  # each 2x2 block follows the cell it came from
  assert np.corrcoef(blocks.ravel(), old.ravel())[0, 1] > 0.95

  bad = {**shipped, "position_embedding": np.zeros((60, 128), np.float32)}
  (tmp_path / "t").mkdir()
  weights.write_safetensors(bad, tmp_path / "t" / "diffusion_pytorch_model.safetensors")
  with pytest.raises(ValueError, match="60 rows is not a square grid"):
    warm_start(UVit2DModel(config, rngs=nnx.Rngs(3)), tmp_path / "t")


def test_clip_hard_negative_batches_are_whole_shape_groups():
  from types import SimpleNamespace

  import ml_collections

  from muse_styledrop.pretraining.clip import CLIPObjective

  groups = np.repeat(np.arange(6), 4)[np.random.default_rng(0).permutation(24)]  # a file's groups, not in order
  c = ml_collections.ConfigDict(dict(batch_size=8, hard_negatives=4, data=dict(train="groups.npz")))
  objective = SimpleNamespace(c=c, groups=groups)
  idx = CLIPObjective.pick(objective, np.random.default_rng(1), 5, 24)
  assert idx.shape == (5, 8)
  for part in idx.reshape(-1, 4):
    assert len(set(groups[part].tolist())) == 1 and len(set(part.tolist())) == 4
  c.batch_size = 6
  with pytest.raises(ValueError, match="multiple"):
    CLIPObjective.pick(objective, np.random.default_rng(1), 5, 24)


def test_clip_with_a_locked_text_tower_trains_the_image_tower_only(data_files, tmp_path):
  """config.locked_text keeps a base's text encoder and tokenizer bit for bit; the image tower learns to meet it."""
  from muse_styledrop.pipeline import EMBEDDED_BASE

  c = pretrain_clip.get_config("image_tower_for_embedded_base")
  c.mesh = ONE_DEVICE
  assert c.locked_text == str(EMBEDDED_BASE)
  c.data.train, c.evals.shapes_clip.test = map(str, data_files)
  c.clip.vision.hidden_size, c.clip.vision.intermediate_size, c.clip.vision.num_hidden_layers = 32, 64, 1
  c.batch_size, c.steps, c.steps_per_call = 8, 4, 2
  c.checkpoint.use_async = False
  export = Path(pretrain(c, tmp_path)["export"])
  base = weights.state_dict(weights.load_clip(EMBEDDED_BASE / "text_encoder"))
  for folder in ("text_encoder", "clip"):
    exported = weights.state_dict(weights.load_clip(export / folder))
    for key, value in base.items():
      np.testing.assert_array_equal(np.asarray(exported[key]), np.asarray(value), err_msg=f"{folder}: {key}")
  clip = weights.load_clip(export / "clip")
  assert clip.vision_model is not None and clip.config.projection_dim == 128
  texts = ["a red star in mosaic tile style"]
  assert (Tokenizer(export / "tokenizer")(texts) == Tokenizer(EMBEDDED_BASE / "tokenizer")(texts)).all()
