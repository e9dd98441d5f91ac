import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")


@pytest.fixture(scope="session")
def amused_dir(tmp_path_factory):
  """A tiny random aMUSEd directory written by diffusers itself."""
  import reference

  return reference.amused_dir(tmp_path_factory.mktemp("models") / "amused-tiny")
