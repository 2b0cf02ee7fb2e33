"""What a run says about itself at start: the model size and why, a warning when a CPU run would take hours,
the distributed setup that actually runs, and the refusal of launches whose processes do not form one group."""

from __future__ import annotations

import logging
from argparse import Namespace
from pathlib import Path

import pytest

import hf_mim

from helpers import load_script
from hf_mim_cli.arguments import MissingInputError, UsageError, check_model_source
from hf_mim.training import SlowRunWarning

REPO_ROOT = Path(__file__).resolve().parents[1]
pretrain = load_script("pretrain")


def test_the_start_line_says_which_size_and_the_flag_for_the_other():
    vit, swin = hf_mim.get_method("mae").backbone(), hf_mim.get_method("simmim").backbone("swin")
    base = pretrain.model_size_note(Namespace(model_size=None), "base", vit)
    assert base.startswith("base config (the method's ViT at 224 px, the default with --train_dir")
    assert "--model_size demo picks the 32 px demo ViT" in base
    assert "--model_size base" in pretrain.model_size_note(Namespace(model_size=None), "demo", vit)
    assert pretrain.model_size_note(Namespace(model_size="base"), "base", vit) == "base config (--model_size base)"
    assert "the 32 px demo Swin Transformer" in pretrain.model_size_note(Namespace(model_size=None), "demo", swin)
    assert "Swin Transformer at 192 px" in pretrain.model_size_note(Namespace(model_size=None), "base", swin)


@pytest.mark.parametrize("device, seconds, warns", [("cpu", 5.0, True), ("cpu", 0.01, False), ("cuda", 5.0, False)])
def test_a_cpu_run_that_would_take_hours_is_warned_from_its_measured_pace(caplog, device, seconds, warns):
    ticks = iter([100.0, 100.0 + 3 * seconds])
    hook = SlowRunWarning(device, max_steps=7200, advice="pass --model_size demo", clock=lambda: next(ticks))
    with caplog.at_level(logging.WARNING, logger="hf_mim.training"):
        for step in range(1, 10):
            hook(step)
    expected = "at 5.0 s per update on the CPU, the 7200 updates take about 10 hours: pass --model_size demo"
    assert (expected in caplog.text) == warns


def test_processes_launched_together_that_each_run_alone_are_refused(tmp_path, monkeypatch):
    """`accelerate launch --multi_gpu --num_processes 2` on a machine without GPUs (and without
    ACCELERATE_USE_CPU=1) starts 2 processes with WORLD_SIZE=2 that each run alone."""
    for name in ("WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.setenv(name, "2")
    with pytest.raises(UsageError) as error:
        pretrain.main(["--method", "mae", "--output_dir", str(tmp_path / "out"), "--max_train_steps", "1"])
    assert str(error.value) == (
        "this process is one of 2 launched together (WORLD_SIZE=2), but Accelerate runs it alone (distributed "
        "type NO): the processes would train apart and overwrite each other's output_dir. On a machine without GPUs "
        "launch with ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N ...; with GPUs, check that "
        "torch sees them (torch.cuda.device_count()).")
    assert not (tmp_path / "out").exists()


def test_fsdp_or_deepspeed_asked_but_not_set_up_is_refused(monkeypatch):
    from accelerate import Accelerator

    from hf_mim_cli.arguments import check_one_process_group, describe_distributed

    accelerator = Accelerator(cpu=True)
    assert describe_distributed(accelerator) == "distributed: none (1 process on cpu), mixed precision no"
    check_one_process_group(accelerator)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch --use_fsdp` sets
    with pytest.raises(UsageError, match=r"asked for FSDP \(ACCELERATE_USE_FSDP=true\) but Accelerate runs NO on "
                                         r"cpu, not FSDP: FSDP needs GPUs \(on CPU Accelerate falls back"):
        check_one_process_group(accelerator)
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(UsageError, match="asked for DEEPSPEED"):
        check_one_process_group(accelerator)


def test_a_local_model_path_that_is_not_there_is_one_line_before_any_hub_call(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    with pytest.raises(MissingInputError, match=r"--model_name_or_path outputs/nothing: no such folder \(from "):
        check_model_source("outputs/nothing", "--model_name_or_path")
    for path in ("./mae", "a/b/c", str(tmp_path / "gone")):
        with pytest.raises(MissingInputError, match="no such folder"):
            check_model_source(path, "--flag")
    with pytest.raises(MissingInputError, match="outputs: the folder holds no config.json"):
        check_model_source("outputs", "--model_name_or_path")
    check_model_source("org/mae-vit-base", "--model_name_or_path")  # a Hub id: left to the Hub


def test_finetune_from_a_missing_folder_or_an_unreachable_hub_id_is_one_line(tmp_path, monkeypatch):
    finetune = load_script("finetune")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    monkeypatch.setattr(finetune, "make_accelerator", None)  # the check comes before any work
    with pytest.raises(MissingInputError, match="--model_name_or_path outputs/nothing: no such folder"):
        finetune.main(["--model_name_or_path", "outputs/nothing"])
    with pytest.raises(UsageError, match="--model_name_or_path org/not-here: no local folder of that name, and the "
                                         "Hub gave no model"):
        finetune.load_model_config("org/not-here")  # HF_HUB_OFFLINE=1 in the tests


def test_the_saved_line_names_the_picture_only_when_one_was_drawn(tmp_path, monkeypatch, caplog):
    import hf_mim.visualize

    from helpers import TINY_OVERRIDES

    monkeypatch.setattr(hf_mim.visualize, "pretraining_picture", lambda *args, **kwargs: None)
    with caplog.at_level(logging.INFO, logger="hf_mim.pretrain"):
        pretrain.main(["--method", "mae", "--config_overrides", TINY_OVERRIDES["mae"], "--output_dir",
                       str(tmp_path / "out"), "--max_train_steps", "1", "--per_device_train_batch_size", "4"])
    assert "saved model, processor and card to" in caplog.text and "no picture: the model has nothing to draw" in caplog.text
    assert not (tmp_path / "out" / "reconstruction.png").exists()


@pytest.mark.parametrize("script, argv", [
    ("pretrain", ["--method", "mae", "--model_name_or_path", "./nothing"]),
    ("pretrain", ["--method", "beit", "--tokenizer_name_or_path", "./nothing"]),
    ("probe", ["--model_name_or_path", "./nothing", "--protocol", "knn"]),
])
def test_every_model_path_flag_checks_a_local_path_before_any_work(script, argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingInputError, match=r"--\w+_name_or_path ./nothing: no such folder"):
        load_script(script).main(argv)
    assert list(tmp_path.iterdir()) == []
