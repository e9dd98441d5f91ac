import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# Eight fake CPU devices for the sharding tests. LLVM's optimisation level 0: the tests' models are tiny, so
# compiling costs far more than running (the suite takes about 30% less time); subprocesses inherit it.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")


# One compilation cache for this run of the suite, shared by its workers and the commands they start: a program
# that several tests compile (the same tiny model, the same train step) compiles once. It starts empty, so each
# program still compiles once per run as a user's first run would, and nothing is written to the user's ~/.cache.
def pytest_configure(config):
  from muse_styledrop import cli

  if hasattr(config, "workerinput"):  # a pytest-xdist worker: the controller's folder
    config.compilation_cache = config.workerinput["compilation_cache"]
  else:
    config.compilation_cache = tempfile.mkdtemp(prefix="muse_styledrop_tests_xla_")
  os.environ["MUSE_STYLEDROP_XLA_CACHE"] = config.compilation_cache
  cli.use_compilation_cache()  # the tests' in-process training and drawing too


def pytest_configure_node(node):
  node.workerinput["compilation_cache"] = node.config.compilation_cache


def pytest_unconfigure(config):
  if not hasattr(config, "workerinput"):
    shutil.rmtree(config.compilation_cache, ignore_errors=True)


@pytest.fixture(scope="session")
def amused_dir(tmp_path_factory):
  """A tiny random aMUSEd directory written by diffusers itself."""
  import reference

  return reference.amused_dir(tmp_path_factory.mktemp("models") / "amused-tiny")


@pytest.fixture(scope="session")
def style_image(tmp_path_factory):
  """A 48x40 picture of red and green stripes: the training tests' style reference."""
  import numpy as np
  from PIL import Image

  path = tmp_path_factory.mktemp("style") / "stripes.png"
  x = np.zeros((48, 40, 3), np.uint8)
  x[::4] = (255, 40, 40)
  x[:, ::3, 1] = 200
  Image.fromarray(x).save(path)
  return path


@pytest.fixture(scope="session")
def clip_dir(amused_dir, tmp_path_factory):
  """A tiny random transformers CLIPModel with both towers, saved with the tiny aMUSEd's tokenizer."""
  import reference
  from transformers import CLIPTokenizer

  folder = tmp_path_factory.mktemp("clip") / "clip"
  tok = CLIPTokenizer.from_pretrained(str(amused_dir / "tokenizer"))
  reference.clip_model(**reference.token_ids(tok)).save_pretrained(folder)
  tok.save_pretrained(folder)
  return folder
