"""Every command in the README's ```bash blocks runs as written, in README order, from a fresh folder.

The folder holds what a clone gives a user (`scripts/`, the package importable); later commands use what earlier
ones wrote (the fine-tuning command reads `outputs/mae-pretrain` from the demo command). Each script gets flags
appended that shrink its budget (`BUDGET_FLAGS`: the last value of a flag wins in argparse), nothing else. Not run:
`pip install ...` (the test runs in the installed environment) and the test-suite command itself. Commands that
cannot run as written on a CPU machine (placeholders, several GPUs) belong in ```text blocks.

Deselect with `-m "not readme"` (it runs the README's training commands, about a minute)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"

BUDGET_FLAGS = {
    "scripts/pretrain.py": ["--max_train_steps", "2", "--per_device_train_batch_size", "8"],
    "scripts/finetune.py": ["--max_train_steps", "2", "--per_device_train_batch_size", "8"],
    "scripts/probe.py": ["--epochs", "1"],
    "scripts/train_tokenizer.py": ["--max_train_steps", "2"],
    "scripts/finetune_segmentation.py": ["--max_train_steps", "2", "--per_device_train_batch_size", "4"],
    "scripts/benchmark.py": ["--sizes", "tiny", "--batch_size", "2", "--warmup", "0", "--repeats", "1",
                             "--methods", "mae"],
    "scripts/benchmark_fashion_mnist.py": ["--methods", "mae", "--train_subset", "100", "--test_subset", "50",
                                           "--pretrain_steps", "2", "--finetune_steps", "2", "--probe_epochs", "1"],
}
NOT_RUN = ("pip install", "python -m pytest")


def readme_commands(text: str) -> list[str]:
    """The shell commands of the ```bash blocks, in order: continuation lines joined, comments dropped, `&&`
    chains split."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        joined = re.sub(r"\s*\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #")[0].strip() if not line.lstrip().startswith("#") else ""
            commands += [part.strip() for part in line.split("&&") if part.strip()]
    return commands


def with_budget(command: str) -> list[str]:
    argv = shlex.split(command)
    script = next((token for token in argv if token in BUDGET_FLAGS), None)
    return argv + BUDGET_FLAGS[script] if script else argv


def test_readme_blocks_are_parsed_as_a_user_would_type_them():
    text = "```bash\n# comment\npip install x && python scripts/pretrain.py --a 1 \\\n    --b 2  # note\n```\n"
    assert readme_commands(text) == ["pip install x", "python scripts/pretrain.py --a 1 --b 2"]
    assert with_budget("accelerate launch scripts/finetune.py --x 'a b'") == [
        "accelerate", "launch", "scripts/finetune.py", "--x", "a b", *BUDGET_FLAGS["scripts/finetune.py"]]


@pytest.mark.readme
def test_every_readme_command_runs_as_written(tmp_path):
    commands = readme_commands(README.read_text())
    runnable = [c for c in commands if not c.startswith(NOT_RUN)]
    assert any("scripts/pretrain.py" in c for c in runnable) and any("scripts/finetune.py" in c for c in runnable)
    work = tmp_path / "clone"
    work.mkdir()
    (work / "scripts").symlink_to(REPO_ROOT / "scripts")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
           "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for command in runnable:
        argv = with_budget(command)
        if argv[0] == "python":
            argv[0] = sys.executable
        started = time.monotonic()
        result = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"README command failed: {command}\n{result.stderr[-3000:]}"
        print(f"{time.monotonic() - started:6.1f} s  {shlex.join(argv)}")  # shown with -s
