import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# Eight fake CPU devices for the sharding tests. LLVM's optimisation level 0: the tests' models are tiny, so
# compiling costs far more than running (the suite takes about 30% less time); subprocesses inherit it.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
# The commands the tests run keep no compilation cache: each test compiles as a first run would, and nothing is
# written to the user's ~/.cache.
os.environ["MUSE_STYLEDROP_XLA_CACHE"] = ""


@pytest.fixture(scope="session")
def amused_dir(tmp_path_factory):
  """A tiny random aMUSEd directory written by diffusers itself."""
  import reference

  return reference.amused_dir(tmp_path_factory.mktemp("models") / "amused-tiny")


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
