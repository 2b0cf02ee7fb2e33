"""Issue 9: a killed run resumes to bitwise-identical weights, 2 processes equal 1, bad images and NaN losses
lose nothing."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import hf_mim

from helpers import REPO_ROOT, TINY_OVERRIDES, load_script, needs_tokenizer, run_launcher, write_odd_images

pretrain = load_script("pretrain")
BASE = ["--method", "mae", "--config_overrides", TINY_OVERRIDES["mae"], "--per_device_train_batch_size", "8",
        "--logging_steps", "1", "--seed", "7"]


def script_env():
    """Same thread count as this process: kernels reduce in another order with another count."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(torch.get_num_threads())}


def free_port() -> int:
    """A port nobody listens on now: a fixed one can meet a stale rendezvous and hang."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def same_weights(a, b, atol=0.0):
    first, second = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert first.keys() == second.keys()
    worst = max((first[k].float() - second[k].float()).abs().max().item() for k in first)
    return worst <= atol, worst


def pretrain_until_checkpoint_then_sigkill(argv: list[str], output_dir, checkpoint: str, timeout: float = 120,
                                          script: str = "pretrain.py") -> None:
    """scripts/`script` (pretrain.py) `argv` in a subprocess writing to `output_dir`, SIGKILLed once `checkpoint`
    exists."""
    process = subprocess.Popen([sys.executable, str(REPO_ROOT / "scripts" / script), *argv,
                                "--output_dir", str(output_dir)], env=script_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not (output_dir / "checkpoints" / checkpoint).exists():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (output_dir / "model.safetensors").exists(), "the run finished before the kill"


def test_sigkill_at_an_arbitrary_step_then_resume_gives_bitwise_identical_weights(tmp_path):
    steps = ["--max_train_steps", "40", "--checkpointing_steps", "5"]
    straight = tmp_path / "straight"
    pretrain.main(BASE + steps + ["--output_dir", str(straight)])

    killed = tmp_path / "killed"
    pretrain_until_checkpoint_then_sigkill(BASE + steps, killed, "step_10")

    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    pretrain.main(BASE + steps + ["--output_dir", str(killed), "--resume_from_checkpoint", "latest"])
    identical, worst = same_weights(straight, killed)
    assert identical, f"resumed weights differ by {worst}"


def test_half_written_checkpoints_are_never_picked(tmp_path):
    from hf_mim.training import checkpoint_dirs, resolve_checkpoint

    root = tmp_path / "checkpoints"
    (root / "step_4").mkdir(parents=True)
    (root / "step_4" / "trainer_state.json").write_text(json.dumps({"step": 4}))
    (root / "step_8").mkdir()  # killed before its state file was written
    (root / ".partial_step_12").mkdir()  # killed during save_state
    assert [step for step, _ in checkpoint_dirs(tmp_path)] == [4]
    assert resolve_checkpoint(tmp_path, "latest").name == "step_4"
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        resolve_checkpoint(tmp_path, str(root / "step_8"))


@pytest.mark.parametrize("method", sorted(hf_mim.METHODS))
def test_two_processes_train_the_same_weights_as_one_with_the_same_global_batch(tmp_path, method):
    """The frozen tokenizer (BEiT, CAE) and CAE's stop-gradient encoder pass must not break gradient
    synchronisation either."""
    from helpers import save_tiny_tokenizer

    common = ["--method", method, "--config_overrides", TINY_OVERRIDES[method], "--max_train_steps", "4", "--seed", "3"]
    if needs_tokenizer(method):
        common += ["--tokenizer_name_or_path", str(save_tiny_tokenizer(tmp_path / "tokenizer"))]
    one = tmp_path / "one"
    pretrain.main(common + ["--per_device_train_batch_size", "16", "--output_dir", str(one)])
    two = tmp_path / "two"
    env = {**script_env(), "ACCELERATE_USE_CPU": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), str(REPO_ROOT / "scripts" / "pretrain.py"), *common,
               "--per_device_train_batch_size", "8", "--output_dir", str(two)]
    run_launcher(command, env, timeout=420)
    summary = json.loads((two / "training_summary.json").read_text())
    assert summary["effective_batch"] == 16
    close, worst = same_weights(one, two, atol=1e-5)
    assert close, f"2-process weights differ from 1-process by {worst}"


def test_odd_and_broken_images_train_and_unreadable_ones_are_counted(tmp_path):
    folder = tmp_path / "odd" / "things"
    write_odd_images(folder)
    out = tmp_path / "out"
    summary = pretrain.main(BASE + ["--train_dir", str(tmp_path / "odd"), "--max_train_steps", "2",
                                    "--per_device_train_batch_size", "9", "--output_dir", str(out)])
    assert summary["steps"] == 2
    assert summary["skipped_images"] == 4  # corrupt + truncated, in each of the 2 epochs
    assert (out / "model.safetensors").exists()
    # counted on the host per step, summed into the log and the checkpoint: a resumed run keeps the count
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    logged = [json.loads(line)["skipped_images"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert logged == [2, 4]
    resumed = tmp_path / "resumed"
    pretrain.main(BASE + ["--train_dir", str(tmp_path / "odd"), "--max_train_steps", "1", "--checkpointing_steps", "1",
                          "--per_device_train_batch_size", "9", "--output_dir", str(resumed)])
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    summary = pretrain.main(BASE + ["--train_dir", str(tmp_path / "odd"), "--max_train_steps", "2",
                                    "--per_device_train_batch_size", "9", "--output_dir", str(resumed),
                                    "--resume_from_checkpoint", "latest"])
    assert summary["skipped_images"] == 4


def poison_mae_losses(monkeypatch, is_bad, factor: float) -> None:
    """Multiply MAE's loss by `factor` (nan, inf) on the forward calls `is_bad(call number)` picks (from 1)."""
    from hf_mim.modeling.modeling_mae import MimMaeForPreTraining

    original = MimMaeForPreTraining.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls["n"] += 1
        if is_bad(calls["n"]):
            out.loss = out.loss * factor
        return out

    monkeypatch.setattr(MimMaeForPreTraining, "forward", poisoned)


def test_nan_loss_stops_with_the_last_good_checkpoint_intact(tmp_path, monkeypatch):
    from hf_mim.training import NonFiniteLossError

    poison_mae_losses(monkeypatch, lambda call: call >= 4, float("nan"))
    out = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError, match="resume with --resume_from_checkpoint latest") as error:
        pretrain.main(BASE + ["--max_train_steps", "10", "--checkpointing_steps", "2", "--output_dir", str(out)])
    assert "step_2" in str(error.value)
    state = load_file(out / "checkpoints" / "step_2" / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in state.values())
    assert not (out / "model.safetensors").exists()


def test_deferred_guard_reports_the_update_range_only_when_checked():
    from accelerate import Accelerator

    from hf_mim.training import NonFiniteGuard, NonFiniteLossError

    accelerator, guard = Accelerator(cpu=True), NonFiniteGuard(max_consecutive_skips=0)
    for loss in (1.0, 2.0):
        guard.note(torch.tensor(loss))
    guard.check(accelerator, step=2, last_checkpoint=None)  # clean: no error, window moves on
    for loss in (1.0, float("nan"), 3.0):  # a NaN in the middle of a window is not forgotten by later finite losses
        guard.note(torch.tensor(loss))
    with pytest.raises(NonFiniteLossError, match=r"between updates 3 and 5\. Nothing was saved after the last good "
                                                 r"checkpoint \(ckpt/step_2\)"):
        guard.check(accelerator, step=5, last_checkpoint="ckpt/step_2")


def test_isolated_nan_losses_are_skipped_when_allowed(tmp_path, monkeypatch):
    poison_mae_losses(monkeypatch, lambda call: call == 2, float("inf"))
    out = tmp_path / "skip"
    summary = pretrain.main(BASE + ["--max_train_steps", "3", "--max_nonfinite_skips", "1", "--output_dir", str(out)])
    weights = load_file(out / "model.safetensors")
    assert summary["steps"] == 3 and all(torch.isfinite(v).all() for v in weights.values())


def test_missing_folder_and_missing_tokenizer_messages(tmp_path):
    with pytest.raises(FileNotFoundError, match="--train_dir"):
        pretrain.main(BASE + ["--train_dir", str(tmp_path / "nope"), "--output_dir", str(tmp_path / "o")])
