"""Test-wide isolation: no network, a private HF_HOME, and the repo root importable for `scripts/`."""

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="hf_mim_test_home_"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Tiny models gain nothing from a second thread, and on a busy 2-core machine two threads per process thrash;
# subprocesses (script runs, the 2-process test) inherit the same single thread.
os.environ["OMP_NUM_THREADS"] = "1"

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "readme: runs the README's commands at a tiny budget (-m 'not readme' skips)")


@pytest.fixture
def one_thread():
    """Tiny models: one torch thread avoids OpenMP waits when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Accelerate keeps a process-wide singleton; each in-process script run needs a clean one."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
