"""The evaluate command and its CLIP scores: parity with transformers, the report, and what a bad request gets."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from muse_styledrop import evaluate
from muse_styledrop.clip_scores import CLIPModelError, CLIPScorer, preprocess, summary


def test_clip_scores_match_transformers(clip_dir):
  import torch
  from transformers import CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

  from muse_styledrop.models.clip import CLIP_MEAN, CLIP_STD

  rng = np.random.default_rng(0)
  pictures = (rng.random((5, 20, 27, 3)) * 255).astype(np.uint8)  # not square: resized, then centre-cropped
  references = (rng.random((2, 31, 23, 3)) * 255).astype(np.uint8)
  prompts = ["a red circle", "a house", "a cat on a mat", "a blue star", "a tree"]
  scorer = CLIPScorer(clip_dir)
  text, style = scorer.text_scores(pictures, prompts), scorer.style_scores(pictures, references)

  model = CLIPModel.from_pretrained(str(clip_dir)).eval()
  side = model.config.vision_config.image_size
  processor = CLIPImageProcessorPil(
    size={"shortest_edge": side}, crop_size={"height": side, "width": side}, image_mean=CLIP_MEAN, image_std=CLIP_STD
  )
  pixels = lambda x: processor(images=list(x), return_tensors="pt").pixel_values
  ids = CLIPTokenizer.from_pretrained(str(clip_dir))(prompts, padding="max_length", return_tensors="pt").input_ids
  with torch.no_grad():  # the forward's embeddings are unit length
    out = model(input_ids=ids, pixel_values=pixels(pictures))
    image, words = out.image_embeds.numpy(), out.text_embeds.numpy()
    ref = model(input_ids=ids[:2], pixel_values=pixels(references)).image_embeds.numpy()
  np.testing.assert_allclose(text, np.sum(image * words, -1), atol=1e-5)
  np.testing.assert_allclose(style, (image @ ref.T).mean(-1), atol=1e-5)
  assert preprocess(pictures, side).shape == (5, side, side, 3)


def test_summary_is_mean_standard_error_and_count():
  s = summary([0.2, 0.4, 0.6])
  assert s == {"mean": 0.4, "se": round(0.2 / np.sqrt(3), 5), "n": 3}


def test_a_directory_without_both_towers_is_refused(tmp_path, amused_dir):
  with pytest.raises(CLIPModelError, match="not a CLIP model directory"):
    CLIPScorer(tmp_path)
  with pytest.raises(CLIPModelError, match="lacks a text or vision tower"):
    CLIPScorer(amused_dir / "text_encoder")


@pytest.fixture(scope="session")
def evaluated(amused_dir, clip_dir, tmp_path_factory):
  from test_feedback import round1_adapter

  tmp = tmp_path_factory.mktemp("evaluate")
  adapter = round1_adapter(amused_dir, tmp)
  reference = tmp / "style.png"
  Image.fromarray((np.random.default_rng(1).random((32, 32, 3)) * 255).astype(np.uint8)).save(reference)
  prompts = tmp / "prompts.txt"
  prompts.write_text("# two contents\na house\na cat on a mat\n")
  out = tmp / "out"
  kw = dict(
    base_model=str(amused_dir),
    clip_model=str(clip_dir),
    prompts=str(prompts),
    samples_per_prompt=3,
    reference=str(reference),
    out=str(out),
  )
  scores = evaluate.evaluate(str(adapter), **kw)
  return adapter, out, scores, kw


def test_evaluate_scores_the_adapter_beside_the_base(evaluated):
  _, out, scores, _ = evaluated
  assert json.loads((out / "scores.json").read_text()) == scores
  for who in ("adapter", "base"):
    assert set(scores[who]) == {"clip_text", "clip_style"}
    assert scores[who]["clip_text"]["n"] == scores[who]["clip_style"]["n"] == 6
    assert len(list((out / "pictures" / "clip" / who).glob("*.png"))) == 6
  # a fresh adapter changes nothing: StyleDrop guidance with it is the base's guidance at lambda_b, on the same
  # prompts and seeds, so the two draw the same pictures and score the same
  for i in range(6):
    a = np.asarray(Image.open(out / "pictures" / "clip" / "adapter" / f"{i:04d}.png"))
    b = np.asarray(Image.open(out / "pictures" / "clip" / "base" / f"{i:04d}.png"))
    np.testing.assert_array_equal(a, b)
  assert scores["adapter"] == scores["base"]
  record = json.loads((out / "record.json").read_text())["clip"]
  assert record["contents"] == ["a house"] * 3 + ["a cat on a mat"] * 3
  assert record["prompts"][0] == "a house in sks style"
  page = (out / "report.html").read_text()
  assert "<svg" in page and page.count("<circle") >= 12 and "CLIP style" in page and "clip.png" in page
  assert not (out.parent / "out.tmp").exists()


def test_a_second_evaluation_replaces_the_first_whole(evaluated):
  adapter, out, _, kw = evaluated
  (out / "stale.txt").write_text("from before")
  evaluate.evaluate(str(adapter), **{**kw, "samples_per_prompt": 1, "compare_base": False})
  scores = json.loads((out / "scores.json").read_text())
  assert "base" not in scores and scores["adapter"]["clip_text"]["n"] == 2
  assert not (out / "stale.txt").exists() and not (out / "pictures" / "clip" / "base").exists()


def test_a_bad_request_is_one_line_exit_2_and_writes_nothing(evaluated, tmp_path):
  adapter, _, _, kw = evaluated
  flags = [f"--{k}={v}" for k, v in {**kw, "adapter": str(adapter), "out": str(tmp_path / "o")}.items()]
  done = subprocess.run(
    [sys.executable, "-m", "muse_styledrop.evaluate", *flags, "--reference=/nonexistent.png"],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert done.returncode == 2 and done.stderr.strip().splitlines() == [
    "error: --reference=/nonexistent.png does not exist; give the style picture to compare with"
  ]
  assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
  "change, error, message",
  [
    ({"adapter": "/nonexistent/adapter.safetensors"}, evaluate.EvaluateError, "does not exist; give adapter"),
    ({"clip_model": "/nonexistent"}, CLIPModelError, "is not a CLIP model directory"),
    ({"prompts": "/nonexistent.txt"}, ValueError, "prompt file /nonexistent.txt does not exist"),
  ],
)
def test_bad_requests_fail_before_any_loading(evaluated, tmp_path, change, error, message):
  adapter, _, _, kw = evaluated
  given = {**kw, "out": str(tmp_path / "o"), **{k: v for k, v in change.items() if k != "adapter"}}
  with pytest.raises(error, match=message):
    evaluate.evaluate(change.get("adapter", str(adapter)), **given)
  assert not (tmp_path / "o").exists()


def test_a_base_without_a_clip_is_refused_by_evaluate_and_skipped_in_training(evaluated, amused_dir, capsys):
  from muse_styledrop import data, evaluators
  from muse_styledrop.evaluators import clip_scores
  from muse_styledrop.pipeline import Pipeline
  from muse_styledrop.sampling import SamplingSettings

  adapter, _, _, kw = evaluated
  with pytest.raises(evaluate.EvaluateError, match="ships no clip/ folder; give --clip_model"):
    evaluate.evaluate(str(adapter), **{**kw, "clip_model": ""})
  pipe = Pipeline.from_pretrained(amused_dir)
  settings = SamplingSettings.from_dict(json.loads(adapter.with_suffix(".json").read_text())["sampling"])
  run = evaluators.Run(pipe, settings, data.StyleSet([], [], "in sks style"), adapter=None)
  assert clip_scores.Evaluator(prompts="paper")(run).metrics == {}  # a finished training run keeps its adapter
  assert "evals.clip.clip_model is empty; not scored" in capsys.readouterr().out


def test_default_out_and_prompts():
  assert evaluate.default_out(Path("/r/adapter.safetensors")) == Path("/r/adapter_evaluation")
  assert evaluate.default_prompts({"config": {"evals": {"shapes_oracle": {}}}}) == "shapes"
  assert evaluate.default_prompts({"config": {"evals": {}}}) == "evaluation"


def test_report_opens_in_a_real_browser(evaluated):
  """report.html in headless Chromium: the table, the scatter and every picture load."""
  from test_feedback import chromium

  executable = chromium()
  from playwright.sync_api import sync_playwright

  _, out, _, _ = evaluated
  with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
    try:
      page = browser.new_page(viewport={"width": 1000, "height": 900})
      page.goto((out / "report.html").as_uri())
      rows = page.locator("tr").all_inner_texts()
      assert rows[0].split("\t")[1:] == ["CLIP text", "CLIP style", "oracle style", "oracle shape+colour"]
      assert rows[1].split("\t")[0] == "StyleDrop adapter"  # (the base's row: a test above may have dropped it)
      assert page.locator("svg circle").count() >= 2
      widths = page.evaluate("[...document.images].map(i => i.naturalWidth)")
      assert widths and all(w > 0 for w in widths)
      if os.environ.get("MUSE_STYLEDROP_SCREENSHOTS"):
        page.screenshot(path=os.path.join(os.environ["MUSE_STYLEDROP_SCREENSHOTS"], "report.png"), full_page=True)
    finally:
      browser.close()
