# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # StyleDrop in JAX: a style from one picture
#
# This notebook teaches the package's embedded base model (a small Muse-family transformer of a world of shapes)
# a style it never saw, from one picture, then draws with it, composes it with a subject of your own, improves it
# with a second round on the pictures you pick, measures it and exports it for PyTorch. On a Colab TPU runtime it
# installs the TPU build of JAX and trains on every chip; on a GPU or a CPU it runs as it is (a few minutes a run
# on a laptop CPU).

# %%
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

# Where pip finds the package when it is not installed yet: this repository's git URL or a folder holding it.
SOURCE = os.environ.get("MUSE_STYLEDROP_SOURCE", "")
IN_COLAB = "google.colab" in sys.modules
ON_TPU = os.path.exists("/dev/accel0") or "COLAB_TPU_ADDR" in os.environ
TEST = os.environ.get("MUSE_STYLEDROP_NOTEBOOK_TEST") == "1"  # CI: every cell, a few steps each
if importlib.util.find_spec("muse_styledrop") is None:
  if not SOURCE:
    raise SystemExit("set SOURCE above to this repository's git URL (or a folder holding it), then run again")
  extra = "[tpu]" if ON_TPU else ""
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"muse_styledrop{extra} @ {SOURCE}"], check=True)
RUNS = Path("runs/notebook")

# %%
import jax
from IPython.display import Image, display

from muse_styledrop import cli

cli.use_compilation_cache()  # compiled programs kept on disk: running the notebook again starts without compiling
print(f"{jax.device_count()} {jax.devices()[0].platform} device(s): the trainer's mesh spreads each batch over all")


def shrink(config):
  """In CI's test mode: a few steps of everything."""
  if TEST:
    config.steps, config.steps_per_call, config.checkpoint.every = 5, 5, 0
    config.sample.every, config.sample.steps = 0, 4
    config.evals = {}
  return config


# %% [markdown]
# ## Round 1: a style from one picture
#
# The default run learns the shipped mosaic picture, captioned "a large orange star in the center" with the style
# phrase "in mosaic tile style". Give your own with `config.style_images`, `config.content_prompts` and
# `config.style_descriptor`. After training, the shapes world's oracle grades 24 new prompts drawn with the adapter
# and with the base alone.

# %%
from muse_styledrop.configs import style_one_shot
from muse_styledrop.train import train_and_evaluate

style = shrink(style_one_shot.get_config())
display(Image(filename=style.style_images))
summary = train_and_evaluate(style, RUNS / "style")
for who in ("adapter", "base"):  # the oracle's grades (none in test mode)
  if who in summary:
    print(f"{who}: style {summary[who]['style_accuracy']:.0%}, shape+colour {summary[who]['content_accuracy']:.0%}")
display(Image(filename=str(RUNS / "style" / "samples.png")))

# %% [markdown]
# ## Draw with the adapter

# %%
from muse_styledrop import sample

prompts = ["a purple heart in mosaic tile style", "a small cyan cross on the left in mosaic tile style"]
sample.run("", prompts, 4, 0, RUNS / "samples", adapter=str(RUNS / "style"))
display(Image(filename=str(RUNS / "samples" / "grid.png")))

# %% [markdown]
# ## My content in my style
#
# A content adapter learns one subject from a few pictures whose captions name it by a rare word before its class
# ("sks heart") and hold no style phrase; here, the shipped green heart. Composition mixes, at every decoding
# step, the style adapter's guided logits for the full prompt with the content adapter's for the prompt without
# the style phrase, share g (`gamma`) of the content.

# %%
content = shrink(style_one_shot.get_config("content"))
train_and_evaluate(content, RUNS / "content")
display(Image(filename=str(RUNS / "content" / "samples.png")))
composed = ["a large sks heart in the center in mosaic tile style", "a sks heart on the left in mosaic tile style"]
sample.run("", composed, 4, 0, RUNS / "composed", str(RUNS / "style"), content_adapter=str(RUNS / "content"), gamma=0.5)
display(Image(filename=str(RUNS / "composed" / "grid.png")))

# %% [markdown]
# ## Round 2: train again on the pictures you pick
#
# Round 1's adapter draws a pool of new prompts. On Colab the selection page opens through Colab's proxy: tick the
# pictures that show their prompt in the style, Save, then Done. In test mode, or with `SELECT = "random"` (or
# MUSE_STYLEDROP_SELECT=random for a run without a person), the pool is picked at random, the paper's control.

# %%
from muse_styledrop import feedback

SELECT = os.environ.get("MUSE_STYLEDROP_SELECT", "random" if TEST else "human")


def ask_in_colab(out, entries, phrase, port, on_save, reference=None, host=feedback.LOOPBACK):
  from urllib.parse import urlsplit

  from google.colab.output import eval_js

  url = eval_js(f"google.colab.kernel.proxyPort({port})")  # the page answers at the proxy's name too
  show = lambda _: print("open", url)
  return feedback.ask_human(out, entries, phrase, port, on_save, reference, show, host, (urlsplit(url).netloc,))


pool = {"per_prompt": 2} if TEST else {}
if TEST:
  (RUNS / "pool.txt").write_text("a purple heart\na large green cross in the center\n")
  pool["prompts_file"] = str(RUNS / "pool.txt")
selected = feedback.run_feedback(
  str(RUNS / "style"),
  RUNS / "feedback",
  select_how=SELECT,
  ask=ask_in_colab if IN_COLAB else feedback.ask_human,
  **pool,
)
round2 = shrink(style_one_shot.get_config("round2"))
round2.style_images = str(selected)
summary2 = train_and_evaluate(round2, RUNS / "round2")
display(Image(filename=str(RUNS / "round2" / "samples.png")))

# %% [markdown]
# ## Measure: CLIP text and style scores beside the base's
#
# The evaluate command draws new prompts with the adapter and with the base given the style phrase alone, and
# scores both with the embedded base's own CLIP; on the shapes world the oracle grades them too. It writes
# scores.json and report.html.

# %%
from muse_styledrop.evaluate import evaluate

scores = evaluate(str(RUNS / "round2"), out=str(RUNS / "evaluation"), prompts=pool.get("prompts_file", ""))
for who in ("adapter", "base"):
  row = scores[who]
  print(f"{who}: CLIP text {row['clip_text']['mean']:.3f}, CLIP style {row['clip_style']['mean']:.3f}")

# %% [markdown]
# ## For PyTorch users
#
# The bottleneck adapter becomes per-module weights that forward hooks apply to diffusers' `UVit2DModel`; a LoRA
# adapter becomes the peft file diffusers loads itself (docs/pytorch.md).

# %%
from muse_styledrop import export

print(export.export(RUNS / "round2", RUNS / "pytorch"))
