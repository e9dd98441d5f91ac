r"""Run the notebook end to end (round 2 picked at random, no person) and write it, outputs kept, as one HTML page.

  pip install nbconvert && python notebooks/render.py --run_in=/tmp/notebook_run --out=docs/notebook.html

Finished runs already under <run_in>/runs/notebook are resumed, not retrained. For the page, each run of stream
outputs becomes one, a progress bar keeps its last state, and pictures over 200 kB are scaled to 640 px as JPEG.
"""

import argparse
import base64
import io
import os
import re
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter
from PIL import Image

NOTEBOOK = Path(__file__).with_name("styledrop.ipynb")
STYLE = (
  "body{font-family:sans-serif;max-width:960px;margin:2em auto;padding:0 1em} pre{white-space:pre-wrap;"
  "background:#f6f6f6;padding:.5em} img{max-width:100%}"
)


def last_states(text: str) -> str:
  """Stream text as a terminal shows it: each line's last carriage-return segment, a progress bar's last state."""
  out = []
  for line in (part.split("\r")[-1] for part in text.replace("\r\n", "\n").split("\n")):
    if not line.strip() or "TqdmWarning" in line or "autonotebook" in line:
      continue
    bar = re.match(r"^([\w ]+):\s+\d+%\|", line)
    if bar and out and out[-1].startswith(bar.group(1) + ":"):
      out[-1] = line
    else:
      out.append(line)
  return "\n".join(out) + "\n" if out else ""


def smaller(png: str) -> tuple[str, str]:
  raw = base64.b64decode(png)
  if len(raw) <= 200_000:
    return "image/png", png
  picture = Image.open(io.BytesIO(raw)).convert("RGB")
  scale = min(1.0, 640 / picture.width)
  picture = picture.resize((int(picture.width * scale), int(picture.height * scale)), Image.Resampling.LANCZOS)
  buffer = io.BytesIO()
  picture.save(buffer, "JPEG", quality=80)
  return "image/jpeg", base64.b64encode(buffer.getvalue()).decode()


def tidy(notebook) -> None:
  for cell in notebook.cells:
    if cell.cell_type != "code":
      continue
    merged = []
    for o in cell.outputs:
      if o.output_type == "stream" and merged and merged[-1].output_type == "stream" and merged[-1].name == o.name:
        merged[-1].text += o.text
      else:
        merged.append(o)
    for o in merged:
      if o.output_type == "stream":
        o.text = last_states(o.text)
      elif "image/png" in o.get("data", {}):
        kind, data = smaller(o.data.pop("image/png"))
        o.data[kind] = data
    cell.outputs = [o for o in merged if o.output_type != "stream" or o.text]


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--run_in", required=True, help="The folder the notebook runs in (its runs/ go there).")
  p.add_argument("--out", default="docs/notebook.html")
  args = p.parse_args()
  os.environ["MUSE_STYLEDROP_SELECT"] = "random"
  Path(args.run_in).mkdir(parents=True, exist_ok=True)
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  NotebookClient(notebook, timeout=3600, kernel_name="python3", resources={"metadata": {"path": args.run_in}}).execute()
  tidy(notebook)
  body, _ = HTMLExporter(template_name="basic").from_notebook_node(notebook)
  title = "<title>StyleDrop in JAX: the notebook, run</title>"
  Path(args.out).write_text(f"<!doctype html><meta charset=utf-8>{title}<style>{STYLE}</style>{body}")
  print("wrote", args.out)


if __name__ == "__main__":
  main()
