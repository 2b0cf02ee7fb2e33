"""DeepSpeed ZeRO-2, one process on CPU: the run says it runs DeepSpeed, saves a loadable model, and a resume from
its checkpoint ends with the weights of the uninterrupted run, bitwise. Skipped where deepspeed is not installed
(it is no test dependency: `pip install deepspeed` to run it; several minutes)."""

from __future__ import annotations

import os
import shutil
import sys

import pytest
import torch

from helpers import REPO_ROOT, TINY_OVERRIDES, run_launcher

pytest.importorskip("deepspeed")


def launch_zero2(output_dir, *flags) -> str:
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}  # with it, Accelerate skips DeepSpeed
    command = [sys.executable, "-m", "accelerate.commands.launch", "--use_deepspeed", "--zero_stage", "2",
               "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               str(REPO_ROOT / "scripts" / "pretrain.py"), "--method", "mae", "--config_overrides",
               TINY_OVERRIDES["mae"], "--per_device_train_batch_size", "8", "--max_train_steps", "4",
               "--checkpointing_steps", "2", "--seed", "5", "--output_dir", str(output_dir), *flags]
    return run_launcher(command, env, timeout=900)


def test_zero2_saves_resumes_bitwise_and_reloads(tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForPreTraining

    import hf_mim  # noqa: F401

    straight = tmp_path / "straight"
    log = launch_zero2(straight)
    assert "distributed: DEEPSPEED (1 process on cpu), mixed precision no, DeepSpeed ZeRO stage 2" in log
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(straight / "checkpoints" / "step_2", resumed / "checkpoints" / "step_2")
    launch_zero2(resumed, "--resume_from_checkpoint", "latest")
    first, second = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    model = AutoModelForPreTraining.from_pretrained(resumed)
    assert all(torch.equal(t, first[k]) for k, t in model.state_dict().items() if k in first)
