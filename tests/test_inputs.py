"""Bad and unusual input, one kind a test: a one-line message that says what is wrong and what to do, a non-zero
exit through the commands, nothing half-written. docs/reliability.md's table names each test."""

import errno
import json
import logging
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image
from test_train import load_config, with_fields

from muse_styledrop import cli, data, files, images, loop, optim, prompts, sample, train, weights
from muse_styledrop.models.adapters import AdapterParam

CONFIG = Path(__file__).parent.parent / "configs" / "style_one_shot.py"


# -- Pictures ------------------------------------------------------------------


def png_header(width: int, height: int) -> bytes:
  """A PNG whose header claims width x height and whose data is a few bytes: what a decompression bomb looks like
  before it is decoded."""
  chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
  ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def picture(tmp_path, kind: str) -> Path:
  path = tmp_path / {"text": "notes.png", "cmyk": "p.jpg", "exif": "p.jpg", "animated": "p.gif"}.get(kind, "p.png")
  rgb = np.zeros((24, 40, 3), np.uint8)
  rgb[:, :20] = (255, 0, 0)
  if kind == "truncated":
    Image.fromarray(rgb).save(path)
    path.write_bytes(path.read_bytes()[:60])
  elif kind == "empty":
    path.write_bytes(b"")
  elif kind == "text":
    path.write_text("not a picture, only named like one")
  elif kind == "bomb":
    path.write_bytes(png_header(100_000, 100_000))
  elif kind == "tiny":
    Image.new("RGB", (1, 1), (10, 20, 30)).save(path)
  return path


@pytest.mark.parametrize(
  "kind, message",
  [
    ("truncated", r"p.png is not a readable image \(OSError\); use a PNG or JPEG file"),
    ("empty", r"p.png is not a readable image \(UnidentifiedImageError\)"),
    ("text", r"notes.png is not a readable image \(UnidentifiedImageError\)"),
    ("bomb", r"p.png has more than 89,478,485 pixels \(a decompression bomb, or a huge picture\); resize it"),
    ("tiny", r"p.png is 1x1 pixels; a picture needs at least 16 on its shorter side"),
  ],
)
def test_a_picture_that_cannot_be_used_is_one_line(tmp_path, kind, message):
  with pytest.raises(images.ImageError, match=message) as e:
    images.load_image(picture(tmp_path, kind), 32)
  assert "\n" not in str(e.value)


def test_unusual_pictures_are_read_as_what_they_show(tmp_path, caplog):
  red = (255, 0, 0)
  Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
  np.testing.assert_allclose(images.load_image(tmp_path / "cmyk.jpg", 16)[8, 8], (1, 0, 0), atol=0.02)

  Image.fromarray(np.full((32, 32), 40000, np.uint16)).save(tmp_path / "grey16.png")  # 16-bit: scaled, not clipped
  np.testing.assert_allclose(images.load_image(tmp_path / "grey16.png", 16), 40000 / 65535, atol=1 / 255)

  alpha = np.zeros((32, 32, 4), np.uint8)
  alpha[:, :16] = (*red, 255)  # the right half is see-through: composited on white
  Image.fromarray(alpha).save(tmp_path / "alpha.png")
  x = images.load_image(tmp_path / "alpha.png", 32)
  np.testing.assert_allclose(x[5, 2], (1, 0, 0), atol=0.01)
  np.testing.assert_allclose(x[5, 29], (1, 1, 1), atol=0.01)

  palette = Image.new("P", (32, 32), 1)
  palette.putpalette([0, 0, 255, *red] + [0] * 762)
  palette.paste(0, (0, 0, 32, 16))
  palette.save(tmp_path / "palette.png", transparency=0)  # index 0 (blue) is transparent
  x = images.load_image(tmp_path / "palette.png", 32)
  np.testing.assert_allclose(x[4, 16], (1, 1, 1), atol=0.01)
  np.testing.assert_allclose(x[28, 16], (1, 0, 0), atol=0.01)

  frames = [Image.new("RGB", (32, 32), red), Image.new("RGB", (32, 32), (0, 0, 255))]
  frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
  with caplog.at_level(logging.WARNING):
    np.testing.assert_allclose(images.load_image(tmp_path / "anim.gif", 16)[8, 8], (1, 0, 0), atol=0.02)
  assert "anim.gif is animated (2 frames); its first frame is used" in caplog.text

  upright = np.zeros((20, 40, 3), np.uint8)
  upright[:, :20] = red  # red on the left; EXIF orientation 6 says: turn 90 degrees clockwise to show it
  exif = Image.Exif()
  exif[0x0112] = 6
  Image.fromarray(upright).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
  x = images.load_image(tmp_path / "rotated.jpg", 20)  # shown 20 wide, 40 tall (middle kept): red above, black below
  assert (x[2, [2, 17], 0] > 0.8).all() and (x[17, [2, 17], 0] < 0.2).all()


# -- Style sets ----------------------------------------------------------------


def style_folder(tmp_path, captions: bytes | None) -> Path:
  folder = tmp_path / "set"
  folder.mkdir()
  for name in ("a.png", "b.png"):
    Image.new("RGB", (32, 32), (200, 30, 30)).save(folder / name)
  if captions is not None:
    (folder / "captions.txt").write_bytes(captions)
  return folder


@pytest.mark.parametrize(
  "captions, message",
  [
    (b"a.png\ta cat\n", r"style image .*b.png has no content text; set --config.content_prompts"),
    (b"a.png\ta cat\nb.png\ta dog\nc.png\ta cow\n", r"captions.txt captions 'c.png', which is not a picture in"),
    (b"a.png\ta cat\nb.png\ta dog\na.png\ta cow\n", r"captions.txt:3: 'a.png' has a caption already"),
    (b"a.png\ta caf\xe9\nb.png\ta dog\n", r"captions.txt is not UTF-8 text \(byte 0xe9 at offset 11\); save it as"),
    (b"a.png a cat\n", r"captions.txt:1: expected 'file name<TAB>content text'"),
  ],
)
def test_captions_that_do_not_match_the_pictures_are_one_line(tmp_path, captions, message):
  with pytest.raises(ValueError, match=message):
    data.resolve_style_set(str(style_folder(tmp_path, captions)), "", "in sks style")


def test_a_folder_without_pictures_and_a_byte_order_mark_in_captions(tmp_path):
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "readme.txt").write_text("no pictures here")
  with pytest.raises(data.StyleSetError, match=r"folder .*empty holds no images \(.*\.png"):
    data.resolve_style_set(str(tmp_path / "empty"), "", "in sks style")
  folder = style_folder(tmp_path, "\ufeffa.png\ta cat\nb.png\ta dog\n".encode())  # as Notepad saves UTF-8
  assert data.resolve_style_set(str(folder), "", "in sks style").contents == ["a cat", "a dog"]


# -- Configs -------------------------------------------------------------------


def config(**overrides):
  return with_fields(load_config("runlocal"), **overrides)


@pytest.mark.parametrize(
  "overrides, message",
  [
    ({"steps": 0}, r"config.steps=0 must be a whole number of at least 1"),
    ({"batch_size": -8}, r"config.batch_size=-8 must be a whole number of at least 1"),
    ({"steps_per_call": 0}, r"config.steps_per_call=0 must be a whole number"),
    ({"steps": 30, "steps_per_call": 20}, r"config.steps=30 is not a multiple of config.steps_per_call=20"),
    ({"optimizer.learning_rate": float("nan")}, r"learning_rate=nan must be a finite number above 0"),
    ({"optimizer.learning_rate": float("inf")}, r"learning_rate=inf must be a finite number above 0"),
    ({"optimizer.learning_rate": 0.0}, r"learning_rate=0.0 must be a finite number above 0"),
    ({"checkpoint.every": -1}, r"config.checkpoint.every=-1 must be 0"),
  ],
)
def test_impossible_run_lengths_and_rates_are_one_line_before_anything_loads(tmp_path, overrides, message):
  with pytest.raises(ValueError, match=message):
    optim.check_run_lengths(config(**overrides))
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config(**overrides), tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_a_mesh_the_devices_cannot_fill_is_one_line_and_one_that_leaves_devices_idle_is_said(caplog):
  from muse_styledrop import sharding

  with caplog.at_level(logging.WARNING):
    assert sharding.make_mesh({"data": 2, "fsdp": 1, "model": 1}).devices.size == 2
  assert "config.mesh {'data': 2, 'fsdp': 1, 'model': 1} uses 2 of the 8 devices; the others stay idle" in caplog.text
  with pytest.raises(sharding.ShardingError, match=r"each is at least 1, or -1 for the devices left over"):
    sharding.make_mesh({"data": 0, "fsdp": 1, "model": 1})

  message = r"mesh \{'data': 16, 'fsdp': 1, 'model': 1\} needs 16 devices but 8 are visible; change config.mesh"
  with pytest.raises(sharding.ShardingError, match=message):
    sharding.make_mesh({"data": 16, "fsdp": 1, "model": 1})


def test_a_value_of_the_wrong_type_is_one_line_and_exit_2(tmp_path):
  cmd = [sys.executable, "-m", "muse_styledrop.train", f"--config={CONFIG}:runlocal", f"--workdir={tmp_path / 'r'}"]
  result = subprocess.run([*cmd, "--config.steps=ten"], capture_output=True, text=True)
  assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
  assert "error: " in result.stderr and "steps" in result.stderr and "ten" in result.stderr
  assert not (tmp_path / "r").exists()


# -- Text ----------------------------------------------------------------------


def test_empty_prompts_and_prompt_files_are_one_line(tmp_path):
  with pytest.raises(ValueError, match=r"a --prompt is empty; write what to draw"):
    sample.run("", ["a cat", "  "], 1, 0, tmp_path / "out")
  (tmp_path / "empty.txt").write_text("# only a comment\n\n")
  with pytest.raises(ValueError, match=r"empty.txt holds no prompts; write one content prompt a line"):
    prompts.read_file(tmp_path / "empty.txt")
  (tmp_path / "latin1.txt").write_bytes("a caf\xe9 in sks style\n".encode("latin-1"))
  with pytest.raises(files.FileFormatError, match=r"latin1.txt is not UTF-8 text \(byte 0xe9 at offset 5\)"):
    prompts.read_file(tmp_path / "latin1.txt")


def test_a_prompt_past_the_tokenizers_window_is_cut_with_a_warning(amused_dir, caplog):
  from muse_styledrop.tokenizer import Tokenizer

  tok = Tokenizer(amused_dir / "tokenizer")
  long = " ".join(["red"] * (tok.max_length + 10))
  with caplog.at_level(logging.WARNING):
    ids = tok([long, "a cat"])
  assert ids.shape == (2, tok.max_length)
  assert f"is {tok.max_length + 12} tokens; the model reads its first {tok.max_length}" in caplog.text
  assert caplog.text.count("tokens; the model reads") == 1  # the short one says nothing


# -- Weight and adapter files ----------------------------------------------------


def safetensors_bytes(header: dict, data: bytes) -> bytes:
  text = json.dumps(header).encode()
  return struct.pack("<Q", len(text)) + text + data


@pytest.mark.parametrize(
  "content",
  [
    struct.pack("<Q", 2**62) + b"{}",  # a header length far past the file
    safetensors_bytes({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8),  # past the end
    safetensors_bytes({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, b"\0" * 8),  # shape != bytes
  ],
  ids=["huge_header", "offsets_past_end", "shape_against_bytes"],
)
def test_a_lying_safetensors_header_is_one_line(tmp_path, content):
  path = tmp_path / "model.safetensors"
  path.write_bytes(content)
  with pytest.raises(weights.WeightsError, match=r"model.safetensors is not a readable safetensors file \(.*\); re-"):
    weights.read_tensors([path])


def test_integer_tensors_where_weights_belong_are_refused(tmp_path):
  from safetensors.numpy import save_file

  linear = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
  save_file({"weight": np.ones((3, 2), np.int32), "bias": np.zeros(3, np.float32)}, str(tmp_path / "m.safetensors"))
  with pytest.raises(weights.WeightsError, match=r"m.safetensors: weight 'weight' is stored as int32, not floating"):
    weights.load_params(linear, weights.read_tensors([tmp_path / "m.safetensors"]), "a linear layer")


def adapter_state(value: float = 0.5):
  return nnx.State({"adapters": {"ff": {"wu": AdapterParam(jnp.full((2, 4), value))}}})


def test_an_edited_adapter_json_is_named_and_the_weights_own_record_is_used(tmp_path, caplog):
  st, js = weights.write_adapter(adapter_state(), {"style_phrase": "in sks style", "step": 20}, tmp_path / "adapter")
  record = json.loads(js.read_text())
  js.write_text(json.dumps({**record, "style_phrase": "in evil style"}))
  with caplog.at_level(logging.WARNING):
    tensors, meta = weights.read_adapter(tmp_path)
  assert meta["style_phrase"] == "in sks style" and "differs from the record inside" in caplog.text
  js.write_text("{ not json")
  assert weights.read_adapter(tmp_path)[1] == record
  js.unlink()  # the weights file alone is a whole export
  assert weights.read_adapter(st)[1] == record
  st.write_bytes(st.read_bytes()[:-3])
  with pytest.raises(weights.WeightsError, match="not a readable safetensors file"):
    weights.read_adapter(st)


# -- Workdirs ------------------------------------------------------------------


def style_config(tmp_path, **overrides):
  """A run of the tiny random base when `base_model` is given (as the training tests run it)."""
  Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "style.png")
  tiny = {"mesh.data": 1, "mesh.fsdp": 1, "mesh.model": 1, "evals": {}, "checkpoint.use_async": False}
  tiny |= {"optimizer.learning_rate": 3e-3, "steps_per_call": 5, "batch_size": 8}
  return config(style_images=str(tmp_path / "style.png"), content_prompts="a house", **{**tiny, **overrides})


def test_a_diverging_run_stops_naming_its_steps_keeps_the_last_good_checkpoint_and_resumes(
  amused_dir, tmp_path, capsys
):
  run, tiny = tmp_path / "run", {"base_model": str(amused_dir), "checkpoint.every": 5}
  train.train_and_evaluate(style_config(tmp_path, steps=5, **tiny), run)
  kept = (run / "adapter.safetensors").read_bytes()
  blowing_up = style_config(tmp_path, steps=10, **tiny, **{"optimizer.learning_rate": 1e30})
  with pytest.raises(loop.TrainingDiverged, match=rf"NaN/Inf in steps 6-10; checkpoint 5 in {run / 'checkpoints'} is"):
    train.train_and_evaluate(blowing_up, run)
  assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["5"]
  assert (run / "adapter.safetensors").read_bytes() == kept  # the last export is untouched
  summary = train.train_and_evaluate(style_config(tmp_path, steps=10, **tiny), run)
  assert f"resumed from {run / 'checkpoints' / '5'}" in capsys.readouterr().out
  assert summary["steps"] == 10 and np.isfinite(summary["loss"])


def test_fresh_sets_the_old_workdir_aside_and_never_deletes_it(tmp_path):
  run = tmp_path / "run"
  (run / "checkpoints").mkdir(parents=True)
  (run / "adapter.safetensors").write_bytes(b"the user's adapter")
  cmd = [sys.executable, "-m", "muse_styledrop.train", f"--config={CONFIG}:runlocal", f"--workdir={run}", "--fresh"]
  result = subprocess.run([*cmd, "--config.trainable=bogus"], capture_output=True, text=True)  # fails after
  assert result.returncode == 2 and result.stderr.strip().startswith("error: config.trainable='bogus'")
  (aside,) = tmp_path.glob("run.old-*")
  assert f"--fresh: the old run is now {aside}" in result.stdout
  assert (aside / "adapter.safetensors").read_bytes() == b"the user's adapter" and not run.exists()


def test_a_workdir_that_is_a_file_is_one_line(tmp_path):
  (tmp_path / "run").write_text("my notes")
  with pytest.raises(files.FileFormatError, match=r"--workdir=.*run is a file, not a folder; give a folder"):
    train.train_and_evaluate(style_config(tmp_path), tmp_path / "run")
  assert (tmp_path / "run").read_text() == "my notes"


@pytest.fixture
def read_only(tmp_path):
  """A folder no process here can write into: chmod for a user, the immutable attribute for root."""
  folder = tmp_path / "read_only"
  folder.mkdir()
  folder.chmod(0o555)
  immutable = os.geteuid() == 0 and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
  try:
    probe = folder / "probe"
    probe.touch()  # still writable: this machine cannot make the folder this test needs
    probe.unlink()
    pytest.fail("cannot make a read-only folder here (as root, chattr +i is needed)")
  except PermissionError:
    pass
  yield folder
  if immutable:
    subprocess.run(["chattr", "-i", str(folder)], check=True)
  folder.chmod(0o755)


def test_a_read_only_workdir_is_one_line_before_training(tmp_path, read_only):
  message = r"read_only is not writable \((Permission denied|Operation not permitted)\); choose another folder"
  with pytest.raises(files.FileFormatError, match=message):
    train.train_and_evaluate(style_config(tmp_path), read_only)


def test_a_full_disk_keeps_the_last_export_whole_and_is_one_line(tmp_path, monkeypatch, capsys):
  """ENOSPC injected while the new adapter file is half written: the old export stays, no temporary file is left,
  and the command says what happened in one line with exit code 2."""
  st, _ = weights.write_adapter(adapter_state(0.5), {"step": 10}, tmp_path / "adapter")
  before = st.read_bytes()

  def half_then_full(tensors, filename, metadata=None):
    Path(filename).write_bytes(b"\0" * 100)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

  monkeypatch.setattr(weights, "save_file", half_then_full)
  with pytest.raises(OSError) as e:
    weights.write_adapter(adapter_state(0.7), {"step": 20}, tmp_path / "adapter")
  assert st.read_bytes() == before and weights.read_adapter(st)[1]["step"] == 10
  assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter.json", "adapter.safetensors"]

  monkeypatch.setattr(sys, "argv", ["train"])
  with pytest.raises(SystemExit) as exit_:
    cli.run_main(lambda argv: (_ for _ in ()).throw(e.value), compilation_cache=False)
  err = capsys.readouterr().err
  assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1
  assert err.startswith("error: No space left on device while writing ") and "run the same command again" in err


def test_a_user_error_from_a_command_is_one_line_and_exit_2(tmp_path):
  Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
  cmd = [sys.executable, "-m", "muse_styledrop.train", f"--config={CONFIG}:runlocal", f"--workdir={tmp_path / 'r'}"]
  result = subprocess.run([*cmd, f"--config.style_images={tmp_path / 'dot.png'}"], capture_output=True, text=True)
  assert result.returncode == 2 and result.stderr.strip().splitlines() == [
    f"error: {tmp_path / 'dot.png'} is 1x1 pixels; a picture needs at least 16 on its shorter side"
  ]
  assert not (tmp_path / "r").exists()


def test_a_resumed_runs_metrics_log_each_step_once_and_no_torn_line(tmp_path):
  from muse_styledrop.metrics import MetricWriter

  lines = [json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (5, 10, 15)]
  (tmp_path / "metrics.jsonl").write_text("".join(lines) + '{"step": 20, "lo')  # killed mid-line after step 15
  writer = MetricWriter(tmp_path, resumed_at=10)  # the last checkpoint was step 10: 15 is logged again
  writer.write(15, {"loss": 0.5})
  writer.close()
  rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [(r["step"], r["loss"]) for r in rows] == [(5, 1.0), (10, 1.0), (15, 0.5)]
