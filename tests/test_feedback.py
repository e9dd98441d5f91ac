"""Round 2 (muse_styledrop.feedback): the pool, the three selections, and the style set it hands the trainer."""

import http.client
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configs import style_one_shot  # noqa: E402
from muse_styledrop import data, feedback  # noqa: E402
from muse_styledrop.sampling import SamplingSettings  # noqa: E402


def round1_adapter(amused_dir, folder, phrase="in sks style"):
  """A fresh round-1 adapter file with the metadata train writes (its sampling settings, 2 decoding steps)."""
  from flax import nnx

  from muse_styledrop import weights
  from muse_styledrop.models.adapters import AdapterConfig, AdapterParam
  from muse_styledrop.pipeline import Pipeline

  pipe = Pipeline.from_pretrained(amused_dir)
  pipe.transformer.attach_adapters(AdapterConfig(), nnx.Rngs(0))
  settings = SamplingSettings.from_dict(style_one_shot.get_config().sample).replace(steps=2)
  meta = {
    "base_fingerprint": pipe.fingerprint,
    "adapter": {"hidden": 4},
    "style_phrase": phrase,
    "style_images": ["round1.png"],
    "sampling": settings.to_dict(),
    "config": {"feedback_prompts": "paper", "evals": {}},
  }
  weights.write_adapter(nnx.state(pipe.transformer, AdapterParam), meta, folder / "adapter")
  return folder / "adapter.safetensors"


@pytest.fixture(scope="session")
def pool_run(amused_dir, tmp_path_factory):
  tmp = tmp_path_factory.mktemp("feedback")
  adapter = round1_adapter(amused_dir, tmp)
  prompts = tmp / "prompts.txt"
  prompts.write_text("a house\n\na cat on a mat\n")
  out = tmp / "out"
  selected = feedback.run_feedback(
    str(adapter), out, select_how="random", base_model=str(amused_dir), prompts_file=str(prompts), per_prompt=3
  )
  return out, selected


def test_random_feedback_writes_the_pool_and_a_style_set_the_trainer_reads(pool_run):
  out, selected = pool_run
  pool = json.loads((out / "pool" / "pool.json").read_text())
  assert [e["prompt"] for e in pool] == ["a house in sks style"] * 3 + ["a cat on a mat in sks style"] * 3
  pictures = np.stack([np.asarray(Image.open(out / "pool" / e["file"])) for e in pool])
  assert not np.array_equal(pictures[0], pictures[1])  # token temperature 1: a prompt's pictures differ
  style = data.resolve_style_set(str(selected), "", "in sks style")
  assert [p.name[:3] for p in style.paths] == ["p00", "p01"]  # one kept per prompt
  assert style.contents == ["a house", "a cat on a mat"]
  record = json.loads((selected / "selection.json").read_text())
  assert record["select"] == "random" and record["round1_style_images"] == ["round1.png"]
  assert not (out / "selected.tmp").exists() and (out / "selected.png").is_file()
  # the printed round-2 command trains on the round-1 adapter's base, with the paper's round-2 recipe there
  command = feedback.round2_command(record, selected)
  assert f"--config.base_model={record['base_model']}" in command and record["base_model"]
  assert "style_one_shot.py:paper,round2" in command and f"--config.style_images={selected}" in command


def test_round2_variant_is_the_papers_adapter_graded_on_round_1s_picture():
  from muse_styledrop.models.adapters import AdapterConfig

  c = style_one_shot.get_config("round2")
  adapter = AdapterConfig(**c.adapter.to_dict())
  assert (adapter.hidden, adapter.shared) == (32, False)
  assert c.style_images == "runs/feedback/selected" and c.content_prompts == ""  # feedback's default --out
  assert c.evals.shapes_oracle.reference == style_one_shot.REFERENCE["image"]
  both = style_one_shot.get_config("paper,round2")  # variants compose: the paper's recipe, round 2's adapter
  assert (both.adapter.hidden, both.optimizer.learning_rate, list(both.evals)) == (32, 3e-5, ["clip"])


def test_selection_keeps_the_best_scored_or_a_seeded_random_pick():
  scores = np.asarray([[0.1, 0.9, 0.5], [0.7, 0.2, 0.8]])
  assert feedback.choose("clip", scores, (2, 3), 1, 0) == [(0, 1), (1, 2)]
  assert feedback.choose("clip", scores, (2, 3), 2, 0) == [(0, 1), (0, 2), (1, 0), (1, 2)]
  picks = feedback.choose("random", None, (2, 3), 2, seed=5)
  assert picks == feedback.choose("random", None, (2, 3), 2, seed=5) and len(picks) == 4
  with pytest.raises(feedback.FeedbackError, match="--keep=4 must be between 1 and --per_prompt=3"):
    feedback.choose("random", None, (2, 3), 4, 0)


def test_clip_feedback_keeps_each_prompts_best_scored_picture(amused_dir, clip_dir, tmp_path):
  adapter = round1_adapter(amused_dir, tmp_path)
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("a house\na cat on a mat\n")
  selected = feedback.run_feedback(
    str(adapter),
    tmp_path / "out",
    select_how="clip",
    base_model=str(amused_dir),
    clip_model=str(clip_dir),
    prompts_file=str(prompts),
    per_prompt=4,
  )
  pool = json.loads((tmp_path / "out" / "pool" / "pool.json").read_text())
  scores = np.asarray([e["clip_score"] for e in pool]).reshape(2, 4)
  pictures = np.stack([np.asarray(Image.open(tmp_path / "out" / "pool" / e["file"])) for e in pool])
  from muse_styledrop.clip_scores import CLIPScorer

  want = CLIPScorer(clip_dir).text_scores(pictures, [e["prompt"] for e in pool]).reshape(2, 4)
  np.testing.assert_allclose(scores, want, atol=1e-4)  # pool.json rounds to 4 places
  record = json.loads((selected / "selection.json").read_text())
  assert [e["file"] for e in record["kept"]] == [feedback.pool_file(i, int(np.argmax(scores[i]))) for i in range(2)]
  with pytest.raises(feedback.FeedbackError, match="not a CLIP model directory"):
    feedback.clip_scores(tmp_path, pictures.reshape(2, 4, *pictures.shape[1:]), ["a house", "a cat on a mat"])


def serve_pool(pool_run, tmp_path):
  """The person's page over a copy of the pool, served from a thread; saves write the copy's selected/."""
  out = tmp_path / "out"
  shutil.copytree(pool_run[0], out)
  shutil.rmtree(out / "selected")
  entries = json.loads((out / "pool" / "pool.json").read_text())
  reference = tmp_path / "round1.png"
  Image.fromarray(np.full((40, 40, 3), (200, 60, 30), np.uint8)).save(reference)
  ready, url, result = threading.Event(), {}, {}

  def on_ready(message):
    url["root"] = message.split(" at ")[1].split(" ")[0]
    ready.set()

  save = lambda names: feedback.write_selected(out, entries, names, {"select": "human"})
  thread = threading.Thread(
    target=lambda: result.update(
      files=feedback.ask_human(out, entries, "in sks style", 0, save, reference, on_ready=on_ready)
    )
  )
  thread.start()
  assert ready.wait(10)
  return out, url["root"], thread, result


def kept(out):
  record = json.loads((out / "selected" / "selection.json").read_text())
  captions = (out / "selected" / "captions.txt").read_text().splitlines()
  assert sorted(p.name for p in (out / "selected").glob("*.png")) == sorted(e["file"] for e in record["kept"])
  assert [line.split("\t")[0] for line in captions] == [e["file"] for e in record["kept"]]
  return [e["file"] for e in record["kept"]]


def test_human_selection_page_serves_the_pool_and_keeps_what_is_posted(pool_run, tmp_path):
  out, root, thread, result = serve_pool(pool_run, tmp_path)
  page = urllib.request.urlopen(root).read().decode()
  assert page.count("type=checkbox") == 6 and "a cat on a mat in sks style" in page and "reference.png" in page
  png = urllib.request.urlopen(root + "pool/p01_02.png").read()
  assert png == (out / "pool" / "p01_02.png").read_bytes()
  assert Image.open(io.BytesIO(urllib.request.urlopen(root + "reference.png").read())).size == (256, 256)
  with pytest.raises(urllib.error.HTTPError):  # only the pool's files are served
    urllib.request.urlopen(root + "pool/../selection.json")
  token = "token=" + re.search(r'name=token value="([^"]+)"', page).group(1)
  with pytest.raises(urllib.error.HTTPError):  # nothing ticked: asked again
    urllib.request.urlopen(root + "select", data=token.encode())
  urllib.request.urlopen(root + "select", data=f"{token}&keep=p00_01.png&keep=p01_02.png&keep=evil.png".encode())
  assert kept(out) == ["p00_01.png", "p01_02.png"] and thread.is_alive()  # saved; the page stays up
  urllib.request.urlopen(root + "done", data=f"{token}&keep=p01_00.png".encode())
  thread.join(10)
  assert not thread.is_alive() and result["files"] == ["p01_00.png"] and kept(out) == ["p01_00.png"]


def request(root: str, method: str, path: str, body: bytes = b"", headers: dict | None = None):
  """(status, headers, body) of one raw request to the page, with exactly the headers given (plus Host)."""
  parts = urllib.parse.urlsplit(root)
  connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
  try:
    connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for k, v in {"Host": parts.netloc, **(headers or {})}.items():
      connection.putheader(k, v)
    connection.endheaders(body or None)
    response = connection.getresponse()
    return response.status, dict(response.getheaders()), response.read()
  finally:
    connection.close()


def test_the_page_answers_only_its_own_address_needs_its_token_caps_bodies_and_takes_get_and_post(pool_run, tmp_path):
  out, root, thread, result = serve_pool(pool_run, tmp_path)
  status, _, page = request(root, "GET", "/")
  token = re.search(rb'name=token value="([^"]+)"', page).group(1).decode()
  port = urllib.parse.urlsplit(root).port
  assert request(root, "GET", "/", headers={"Host": f"localhost:{port}"})[0] == 200
  for host in (f"evil.example:{port}", "127.0.0.1", f"127.0.0.1.nip.io:{port}"):  # DNS rebinding names another host
    assert request(root, "GET", "/", headers={"Host": host})[0] == 403, host
    form = f"token={token}&keep=p00_00.png".encode()
    assert request(root, "POST", "/select", form, {"Host": host, "Content-Length": str(len(form))})[0] == 403
  for form in (b"keep=p00_00.png", b"token=guess&keep=p00_00.png"):  # a save without the page's token
    assert request(root, "POST", "/select", form, {"Content-Length": str(len(form))})[0] == 403
  assert request(root, "POST", "/select", b"", {"Content-Length": str(2**40)})[0] == 413  # refused unread
  assert request(root, "POST", "/select", b"keep=p00_00.png")[0] == 411
  for method in ("PUT", "DELETE", "OPTIONS", "PATCH"):
    status, headers, _ = request(root, method, "/select")
    assert (status, headers["Allow"]) == (405, "GET, POST"), method
  assert not (out / "selected").exists() and thread.is_alive()  # nothing above saved anything
  form = f"token={token}&keep=p00_00.png".encode()
  request(root, "POST", "/done", form, {"Content-Length": str(len(form))})
  thread.join(10)
  assert result["files"] == ["p00_00.png"] and kept(out) == ["p00_00.png"]


def test_twenty_people_clicking_at_once_leave_one_whole_selection(pool_run, tmp_path):
  """20 clients (loopback, each with its own connection) load the page and save different choices at once: every
  save is answered, and selected/ ends as exactly one of the choices, whole (its pictures, captions and record
  agree), with no temporary folder left."""
  out, root, thread, result = serve_pool(pool_run, tmp_path)
  names = [f"p{i:02d}_{j:02d}.png" for i in range(2) for j in range(3)]
  choices = [random.Random(n).sample(names, 1 + n % len(names)) for n in range(20)]
  start, answers = threading.Barrier(20), {}

  def person(n):
    page = request(root, "GET", "/")[2]
    token = re.search(rb'name=token value="([^"]+)"', page).group(1).decode()
    form = urllib.parse.urlencode([("token", token)] + [("keep", f) for f in choices[n]]).encode()
    start.wait(10)
    for _ in range(3):  # click Save three times
      answers[n] = request(root, "POST", "/select", form, {"Content-Length": str(len(form))})[0]

  people = [threading.Thread(target=person, args=(n,)) for n in range(20)]
  for p in people:
    p.start()
  for p in people:
    p.join(30)
  assert answers == dict.fromkeys(range(20), 200)
  assert sorted(kept(out)) in [sorted(c) for c in choices]
  assert not list(out.glob(".*.tmp"))
  page = request(root, "GET", "/")[2]
  token = re.search(rb'name=token value="([^"]+)"', page).group(1).decode()
  form = f"token={token}&keep=p01_01.png".encode()
  request(root, "POST", "/done", form, {"Content-Length": str(len(form))})
  thread.join(10)
  assert kept(out) == ["p01_01.png"]


def test_a_page_on_another_address_is_said_to_be_reachable_by_others(tmp_path):
  result = subprocess.run(
    [sys.executable, "-m", "muse_styledrop.feedback", "--select=human", "--host=0.0.0.0", f"--adapter={tmp_path}"],
    capture_output=True,
    text=True,
  )
  assert result.returncode == 2 and "--host=0.0.0.0: other machines that reach this address can see" in result.stderr


def chromium():
  found = shutil.which("chromium") or shutil.which("chromium-browser")
  if not found and not os.environ.get("MUSE_STYLEDROP_REQUIRE_BROWSER"):
    pytest.skip("no chromium here (.ci/run installs it; apt-get install chromium)")
  assert found, "MUSE_STYLEDROP_REQUIRE_BROWSER is set but no chromium is installed"
  return found


def test_human_selection_page_in_a_real_browser(pool_run, tmp_path):
  """A person's session in headless Chromium at phone width: a click and the keyboard tick pictures, Save writes
  selected/, a second choice replaces it whole, and Done stops the server."""
  executable = chromium()
  from playwright.sync_api import sync_playwright

  out, root, thread, result = serve_pool(pool_run, tmp_path)
  with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
    try:
      page = browser.new_page(viewport={"width": 390, "height": 844})
      page.goto(root)
      count = page.locator("#count")
      assert count.inner_text() == "0 ticked"
      assert page.evaluate("document.querySelector('header img').naturalWidth") == 256  # the style reference
      assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling on a phone
      assert page.locator("h3").all_inner_texts() == ["a house in sks style", "a cat on a mat in sks style"]
      page.locator('img[src="pool/p00_01.png"]').click()  # a click on the picture ticks it
      page.locator('input[value="p01_02.png"]').focus()
      page.keyboard.press("Space")  # and so does the keyboard
      assert count.inner_text() == "2 ticked"
      if os.environ.get("MUSE_STYLEDROP_SCREENSHOTS"):
        page.screenshot(path=os.path.join(os.environ["MUSE_STYLEDROP_SCREENSHOTS"], "feedback_page.png"))
      page.get_by_role("button", name="Save").click()
      assert "Saved 2 pictures" in page.inner_text("body")
      assert kept(out) == ["p00_01.png", "p01_02.png"]
      page.goto(root)
      page.locator('input[value="p00_02.png"]').check()
      page.get_by_role("button", name="Done").click()
      assert "Saved 1 pictures" in page.inner_text("body")
    finally:
      browser.close()
  thread.join(10)
  assert not thread.is_alive() and result["files"] == ["p00_02.png"]
  assert kept(out) == ["p00_02.png"] and not (out / "selected.tmp").exists()


def test_bad_requests_are_clear_errors_before_any_work(tmp_path):
  with pytest.raises(feedback.FeedbackError, match="--select=clip needs --clip_model"):
    feedback.run_feedback("a.safetensors", tmp_path, select_how="clip")
  with pytest.raises(feedback.FeedbackError, match="use one of random, clip, human"):
    feedback.run_feedback("a.safetensors", tmp_path, select_how="best")
  with pytest.raises(feedback.FeedbackError, match="does not exist"):
    feedback.run_feedback("a.safetensors", tmp_path, select_how="random", prompts_file=str(tmp_path / "no.txt"))
  assert not any(tmp_path.iterdir())
