r"""StyleDrop round 2: a pool of the round-1 adapter's own pictures, the good ones kept for a new adapter.

  python -m muse_styledrop.feedback --adapter=runs/style_one_shot --select=random|clip|human [--out=runs/feedback]
  python -m muse_styledrop.train --config=configs/style_one_shot.py:round2   # the command it prints

The pool (docs/method.md): --per_prompt pictures of each content
prompt, the adapter's style phrase appended, drawn with the sampling settings
the adapter records (--lambda_a overrides its weight), at token temperature 1
and confidence noise 2 -> 0 for variety. The content prompts are the set the
adapter's training config names (`feedback_prompts`: the paper's 30, or 30
shapes-world scenes for the embedded base), or one per line of
--prompts_file. The selection keeps --keep pictures of each prompt:
- random: drawn at random (the paper's control);
- clip: the highest CLIP cosine between the picture and its prompt
  (--clip_model: a transformers CLIPModel directory with both towers);
- human: a local web page shows the pool and a person ticks the good ones.

Writes pool/ (every picture and pool.json with its prompt and score),
pool.png, and selected/: the kept pictures with a captions.txt (file<TAB>content
text), a style set the trainer reads as a folder, plus selected.png and
selection.json. selected/ is written whole or not at all.
"""

from __future__ import annotations

import hmac
import html
import json
import secrets
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from absl import flags, logging

from muse_styledrop import data, files, images
from muse_styledrop.clip_scores import CLIPModelError, CLIPScorer
from muse_styledrop.pipeline import Pipeline, check_model_dir, resolve_base_model, resolve_dtype
from muse_styledrop.prompts import prompt_set
from muse_styledrop.sampling import SamplingSettings

SELECTIONS = ("random", "clip", "human")


class FeedbackError(ValueError):
  """A round-2 request that cannot be carried out as given."""


def pool_file(prompt: int, n: int) -> str:
  return f"p{prompt:02d}_{n:02d}.png"


def draw_pool(
  pipe: Pipeline,
  contents: list[str],
  style_phrase: str,
  per_prompt: int,
  settings: SamplingSettings,
  seed: int,
  batch: int = 32,
) -> np.ndarray:
  """uint8 pictures [prompt, n, H, W, 3]: `per_prompt` of each content + style phrase, drawn with the loaded
  adapter (bank entry 0) and `settings`."""
  prompts = [data.join_prompt(c, style_phrase) for c in contents for _ in range(per_prompt)]
  pictures = pipe.draw(prompts, settings, seed=seed, adapter=0, batch=batch, progress="pool")
  return pictures.reshape(len(contents), per_prompt, *pictures.shape[1:])


def clip_scores(clip_dir: Path, pictures_PN: np.ndarray, prompts: list[str]) -> np.ndarray:
  """[prompt, n] cosine between each picture and its prompt in CLIP's embedding space (StyleDrop's text score)."""
  try:
    scorer = CLIPScorer(clip_dir)
  except CLIPModelError as e:
    raise FeedbackError(f"--clip_model: {e}") from e
  p, n = pictures_PN.shape[:2]
  flat = pictures_PN.reshape(p * n, *pictures_PN.shape[2:])
  return scorer.text_scores(flat, [prompt for prompt in prompts for _ in range(n)]).reshape(p, n)


def choose(how: str, scores_PN: np.ndarray | None, shape_PN: tuple[int, int], keep: int, seed: int) -> list[tuple]:
  """(prompt, n) pairs kept: `keep` per prompt, at random or the best-scored."""
  p, n = shape_PN
  if not 1 <= keep <= n:
    raise FeedbackError(f"--keep={keep} must be between 1 and --per_prompt={n}")
  if how == "random":
    rng = np.random.default_rng(seed)
    return [(i, int(j)) for i in range(p) for j in sorted(rng.choice(n, keep, replace=False))]
  if how == "clip":
    return [(i, int(j)) for i in range(p) for j in sorted(np.argsort(-scores_PN[i], kind="stable")[:keep])]
  raise FeedbackError(f"--select={how!r}; use one of {', '.join(SELECTIONS)}")


# ----------------------------------------------------------------------------
# Human selection: a local web page
# ----------------------------------------------------------------------------


PAGE_STYLE = (
  "body{font-family:sans-serif;margin:1em;max-width:1200px} .row{display:flex;flex-wrap:wrap;gap:8px}"
  "img{image-rendering:pixelated;border:3px solid #ddd;width:128px;height:128px;max-width:28vw;max-height:28vw}"
  "label{text-align:center;cursor:pointer} input:checked+img,label:has(input:checked) img{border-color:#2a7}"
  "header{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid #ccc;display:flex;"
  "flex-wrap:wrap;gap:1em;align-items:center} header img{width:96px;height:96px} button{font-size:1em;padding:.4em 1em}"
  "h3{margin:1em 0 .3em;font-size:1em}"
)


def selection_page(entries: list[dict], style_phrase: str, reference: bool, token: str = "") -> str:
  """The pool as one HTML form: the style reference on top, a row per prompt, a checkbox under each picture."""
  rows, prompt = [], None
  for e in entries:
    if e["prompt"] != prompt:
      prompt = e["prompt"]
      rows.append(f"</div><h3>{html.escape(prompt)}</h3><div class=row>")
    rows.append(
      f'<label><input type=checkbox name=keep value="{e["file"]}"><br>'
      f'<img src="pool/{e["file"]}" alt="{html.escape(e["prompt"])}"></label>'
    )
  judge = '<img src="reference.png" alt="the style reference">' if reference else ""
  return (
    "<!doctype html><html lang=en><meta charset=utf-8>"
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    f"<title>StyleDrop round 2</title><style>{PAGE_STYLE}</style>"
    f'<form method=post action=/select><input type=hidden name=token value="{html.escape(token)}">'
    f"<header>{judge}<div>"
    f"<b>Tick the pictures that show their prompt {html.escape(style_phrase)}"
    f"{', in the style of this picture' if reference else ''}.</b><br>"
    "The paper's people kept about 10 of a pool. Save writes your choice (save again to change it); Done ends."
    "<br><span id=count>0 ticked</span> <button type=submit>Save</button> "
    '<button type=submit formaction="/done">Done</button></div></header>'
    f"<div>{''.join(rows)}</div></form>"
    "<script>const boxes=document.querySelectorAll('input[name=keep]'),count=document.getElementById('count');"
    "const show=()=>count.textContent=[...boxes].filter(b=>b.checked).length+' ticked';"
    "boxes.forEach(b=>b.addEventListener('change',show));show();</script></html>"
  )


class PageServer(ThreadingHTTPServer):
  request_queue_size = 128  # the default 5 resets connections when many open at once (tested with 20 clients)
  daemon_threads = True


MAX_BODY = 1 << 20  # a form of every pool file name ticked is a few kilobytes
LOOPBACK = "127.0.0.1"


def ask_human(
  out: Path,
  entries: list[dict],
  style_phrase: str,
  port: int,
  on_save,
  reference: Path | None = None,
  on_ready=print,
  host: str = LOOPBACK,
  also_allow: tuple[str, ...] = (),
) -> list[str]:
  """Serve the pool at http://host:port (loopback unless asked); each Save hands the ticked file names to
  `on_save`, and Done (after a save) stops the server. Returns the last saved names.

  A request is answered only when its Host header names this server (`also_allow`: more names, such as a
  notebook proxy's), so a web page elsewhere cannot reach it through DNS rebinding; a save must carry the
  page's per-run token; bodies past MAX_BODY get 413; methods other than GET and POST get 405."""
  token = secrets.token_urlsafe(16)
  page = selection_page(entries, style_phrase, reference is not None, token).encode()
  judged = None if reference is None else images.png_bytes(images.to_uint8(images.load_image(reference, 256)))
  known = {e["file"] for e in entries}
  chosen: list[str] = []
  done, saving = threading.Event(), threading.Lock()
  allowed: set[str] = set(also_allow)

  class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # no access log on the terminal
      pass

    def _send(self, code: int, body: bytes, kind: str = "text/html; charset=utf-8", headers: dict | None = None):
      self.send_response(code)
      self.send_header("Content-Type", kind)
      self.send_header("Content-Length", str(len(body)))
      self.send_header("Cache-Control", "no-store")
      for k, v in (headers or {}).items():
        self.send_header(k, v)
      self.end_headers()
      self.wfile.write(body)

    def _host_ok(self) -> bool:
      if self.headers.get("Host", "") in allowed:
        return True
      self._send(403, b"<p>This page answers only at its own address.")
      return False

    def do_GET(self):
      if not self._host_ok():
        return
      name = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path.lstrip("/"))
      if name in ("", "index.html"):
        self._send(200, page)
      elif name.startswith("pool/") and name[5:] in known:
        self._send(200, (out / name).read_bytes(), "image/png")
      elif name == "reference.png" and judged is not None:
        self._send(200, judged, "image/png")
      else:
        self._send(404, b"not found")

    def do_POST(self):
      if not self._host_ok():
        return
      if self.path not in ("/select", "/done"):
        return self._send(404, b"not found")
      try:
        length = int(self.headers.get("Content-Length", ""))
      except ValueError:
        return self._send(411, b"<p>A save needs a Content-Length.")
      if not 0 <= length <= MAX_BODY:
        self.close_connection = True  # the body is not read
        return self._send(413, f"<p>A save is at most {MAX_BODY} bytes.".encode())
      form = urllib.parse.parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
      if not hmac.compare_digest(form.get("token", [""])[0], token):
        return self._send(403, b"<p>This save did not come from the page: reload it and save again.")
      ticked = [f for f in form.get("keep", []) if f in known]
      if not ticked:
        return self._send(400, b"<p>Nothing was ticked: go back, tick the good pictures and save again.")
      with saving:  # one save at a time; each replaces selected/ whole
        on_save(ticked)
        chosen[:] = ticked
      if self.path == "/done":
        self._send(200, f"<p>Saved {len(ticked)} pictures. You can close this page.".encode())
        done.set()
      else:
        self._send(200, f"<p>Saved {len(ticked)} pictures. <a href=/>Back</a> to change them, then Done.".encode())

    def _refuse(self):
      self._send(405, b"<p>Only GET and POST.", headers={"Allow": "GET, POST"})

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_TRACE = do_CONNECT = _refuse

  server = PageServer((host, port), Handler)
  port = server.server_address[1]
  names = {host, "localhost", LOOPBACK} if host in (LOOPBACK, "localhost") else {host}
  if host in ("0.0.0.0", "::", ""):  # every interface: the names and addresses others reach this machine by
    machine = socket.gethostname()
    names |= {machine, socket.getfqdn(), *socket.gethostbyname_ex(machine)[2], "localhost", LOOPBACK}
  allowed.update(f"{n}:{port}" for n in names)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  on_ready(f"pick the good pictures at http://{host}:{port}/ (Ctrl-C to stop)")
  try:
    done.wait()
  finally:
    server.shutdown()
    server.server_close()
  return chosen


# ----------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------


def write_pool(out: Path, pictures_PN: np.ndarray, contents: list[str], style_phrase: str, scores_PN=None) -> list:
  files.remove_stale_temps(out)  # what a killed run left of a file it was replacing
  entries = []
  for i, content in enumerate(contents):
    for j, picture in enumerate(pictures_PN[i]):
      name = pool_file(i, j)
      images.save_png(picture, out / "pool" / name)
      entry = {"file": name, "prompt": data.join_prompt(content, style_phrase), "content": content}
      if scores_PN is not None:
        entry["clip_score"] = round(float(scores_PN[i, j]), 4)
      entries.append(entry)
  files.write_json(entries, out / "pool" / "pool.json")
  p, n = pictures_PN.shape[:2]
  images.save_png(images.grid(pictures_PN.reshape(p * n, *pictures_PN.shape[2:]), columns=n), out / "pool.png")
  return entries


def write_selected(out: Path, entries: list[dict], names: list[str], meta: dict) -> Path:
  """selected/: the kept pictures, captions.txt and selection.json, swapped in whole (a killed run leaves the old)."""
  by_file = {e["file"]: e for e in entries}
  kept = [by_file[f] for f in names]
  with files.atomic_folder(out / "selected") as tmp:
    for e in kept:
      (tmp / e["file"]).write_bytes((out / "pool" / e["file"]).read_bytes())
    (tmp / "captions.txt").write_text("".join(f"{e['file']}\t{e['content']}\n" for e in kept))
    files.write_json({**meta, "kept": kept}, tmp / "selection.json")
    from PIL import Image  # noqa: PLC0415

    pictures = np.stack([np.asarray(Image.open(tmp / e["file"]).convert("RGB")) for e in kept])
  images.save_png(images.grid(pictures), out / "selected.png")
  return out / "selected"


def run_feedback(
  adapter: str,
  out: Path,
  *,
  select_how: str,
  base_model: str = "",
  prompts_file: str = "",
  per_prompt: int = 8,
  keep: int = 1,
  clip_model: str = "",
  seed: int = 0,
  port: int = 8765,
  host: str = LOOPBACK,
  token_temperature: float = 1.0,
  temperature: tuple[float, float] = (2.0, 0.0),
  lambda_a: float | None = None,
  ask=ask_human,
) -> Path:
  """Draw the pool, select, write `out`; return the selected/ style-set folder."""
  if select_how not in SELECTIONS:
    raise FeedbackError(f"--select={select_how!r}; use one of {', '.join(SELECTIONS)}")
  if select_how == "clip" and not clip_model:
    raise FeedbackError("--select=clip needs --clip_model: a transformers CLIPModel directory with both towers")
  if per_prompt < 1:
    raise FeedbackError(f"--per_prompt={per_prompt} must be at least 1")
  if len(temperature) != 2:
    raise FeedbackError(f"--temperature={','.join(map(str, temperature))}: give two numbers, start,end")
  if token_temperature <= 0:
    raise FeedbackError(f"--token_temperature={token_temperature} must be > 0 (1: diffusers' rule)")
  base = check_model_dir(resolve_base_model(base_model))
  files.check_folder(out, "--out")
  if prompts_file:
    path = files.path(prompts_file)
    if not path.is_file():
      raise FeedbackError(f"--prompts_file={path} does not exist; give a text file with one content prompt a line")
    contents = [line.strip() for line in files.read_text(path).splitlines() if line.strip()]
    if not contents:
      raise FeedbackError(f"--prompts_file={path} holds no prompts; write one content prompt a line")
  pipe = Pipeline.from_pretrained(base, resolve_dtype("auto"))
  meta = pipe.load_adapter(adapter)
  if "sampling" not in meta:
    raise FeedbackError(f"adapter {adapter} records no sampling settings; export it with muse_styledrop.train")
  if not prompts_file:  # the set its training config names: the paper's, or its world's own scenes
    contents = prompt_set(meta["config"]["feedback_prompts"] if "config" in meta else "paper")
  style_phrase = meta.get("style_phrase", "")
  # The pool needs variety (near-greedy draws repeat one picture) and may favour content over style (lambda_a).
  settings = SamplingSettings.from_dict(meta["sampling"]).replace(
    token_temperature=token_temperature, temperature=tuple(temperature)
  )
  if lambda_a is not None:
    settings = settings.replace(lambda_a=lambda_a, lambda_a_end=None)
  pictures = draw_pool(pipe, contents, style_phrase, per_prompt, settings, seed)
  scores = None
  if select_how == "clip":
    scores = clip_scores(files.path(clip_model), pictures, [data.join_prompt(c, style_phrase) for c in contents])
  entries = write_pool(out, pictures, contents, style_phrase, scores)
  record = {
    "adapter": str(adapter),
    "base_fingerprint": pipe.fingerprint,
    "select": select_how,
    "per_prompt": per_prompt,
    "keep": keep,
    "seed": seed,
    "token_temperature": token_temperature,
    "temperature": list(temperature),
    "lambda_a": settings.lambda_a,
    "style_phrase": style_phrase,
    "round1_style_images": meta.get("style_images", []),
    "round1_evals": sorted(meta.get("config", {}).get("evals", {})),
    "base_model": base_model,
  }
  if select_how == "human":
    round1 = [files.path(p) for p in meta.get("style_images", []) if files.path(p).is_file()]
    save = lambda names: write_selected(out, entries, names, record)
    ask(out, entries, style_phrase, port, save, *round1[:1], host=host)
    return out / "selected"
  pairs = choose(select_how, scores, pictures.shape[:2], keep, seed)
  return write_selected(out, entries, [pool_file(i, j) for i, j in pairs], record)


# ----------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags, defined when it runs (importing this module defines none, so it imports beside other
  commands, as the tests do)."""
  flags.DEFINE_string(
    "adapter", "", "The round-1 adapter: an exported adapter.safetensors or a finished training workdir."
  )
  flags.DEFINE_string(
    "base_model", "", "aMUSEd-layout model directory the adapter was trained on; empty = the embedded base."
  )
  flags.DEFINE_enum("select", "random", SELECTIONS, "How the pool is judged: random (the control), clip, human.")
  flags.DEFINE_string("clip_model", "", "--select=clip: a transformers CLIPModel directory (both towers + tokenizer).")
  flags.DEFINE_string(
    "prompts_file", "", "Content prompts, one a line; default: the paper's 30 (30 scenes on the embedded base)."
  )
  flags.DEFINE_integer("per_prompt", 8, "Pictures drawn per prompt (the paper: 64).")
  flags.DEFINE_integer("keep", 1, "Pictures kept per prompt by random or clip selection (the paper: 1).")
  flags.DEFINE_integer("seed", 0, "Seed of the pool's decoding and of random selection.")
  flags.DEFINE_float(
    "token_temperature",
    1.0,
    "Divides the logits the pool's tokens are drawn from (1: diffusers' rule); the adapter's other sampling settings "
    "are kept. Near 0 every picture of a prompt comes out the same, and there is nothing to select from.",
  )
  flags.DEFINE_list("temperature", ["2.0", "0.0"], "The pool's confidence noise start,end (linear annealing): variety.")
  flags.DEFINE_float("lambda_a", None, "The pool's StyleDrop adapter guidance; default: the adapter's own.")
  flags.DEFINE_integer("port", 8765, "--select=human: the local web page's port (0 = any free one).")
  flags.DEFINE_string(
    "host",
    LOOPBACK,
    "--select=human: the address the page listens on. Only this machine can reach the default; another address "
    "(0.0.0.0: every interface) lets other machines see the pool, and a warning says so.",
  )
  flags.DEFINE_string("out", "runs/feedback", "Output directory: pool/, pool.png, selected/, selected.png.")


def main(argv):
  del argv
  if not FLAGS.adapter:
    raise FeedbackError("--adapter is required: the round-1 adapter file or its training workdir")
  if FLAGS.select == "human" and FLAGS.host not in (LOOPBACK, "localhost"):
    logging.warning(
      "--host=%s: other machines that reach this address can see the pool (saving needs the page's token)", FLAGS.host
    )
  selected = run_feedback(
    FLAGS.adapter,
    files.path(FLAGS.out),
    select_how=FLAGS.select,
    base_model=FLAGS.base_model,
    prompts_file=FLAGS.prompts_file,
    per_prompt=FLAGS.per_prompt,
    keep=FLAGS.keep,
    clip_model=FLAGS.clip_model,
    seed=FLAGS.seed,
    port=FLAGS.port,
    host=FLAGS.host,
    token_temperature=FLAGS.token_temperature,
    temperature=tuple(float(t) for t in FLAGS.temperature),
    lambda_a=FLAGS.lambda_a,
  )
  record = json.loads((selected / "selection.json").read_text())
  print(f"kept {len(record['kept'])} pictures in {selected}; round 2:")
  print("  " + round2_command(record, selected))


def round2_command(record: dict, selected: Path) -> str:
  """The training command for round 2 on `selected`, on the round-1 adapter's base (and its evaluator, graded on
  round 1's picture)."""
  reference = record["round1_style_images"][:1]
  variant = "round2" if "shapes_oracle" in record["round1_evals"] else "paper,round2"
  parts = [
    f"python -m muse_styledrop.train --config=configs/style_one_shot.py:{variant}",
    f"--config.style_images={selected}",
    f"--config.style_descriptor='{record['style_phrase']}'",
  ]
  if record["base_model"]:
    parts.append(f"--config.base_model={record['base_model']}")
  if reference and "shapes_oracle" in record["round1_evals"]:
    parts.append(f"--config.evals.shapes_oracle.reference={reference[0]}")
  return " ".join(parts)


def entry():
  from muse_styledrop.cli import run_main  # noqa: PLC0415

  define_flags()
  run_main(main)


if __name__ == "__main__":
  entry()
