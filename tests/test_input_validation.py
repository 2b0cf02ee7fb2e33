"""Issue 23: every flag is range-checked at parse time, and bad folders, files, checkpoints and resumes stop with
one line naming the input, before training (or before anything bad is saved)."""

import json
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from helpers import TINY_OVERRIDES, load_script, write_image_folder

from hf_mim_cli.arguments import UsageError, in_range, positive_int, run_main

pretrain = load_script("pretrain")
BASE = ["--method", "mae", "--config_overrides", TINY_OVERRIDES["mae"], "--per_device_train_batch_size", "8",
        "--seed", "7"]


def fresh_state():
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def write_corrupt(path, text=b"not an image at all"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text)


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# ----------------------------------------------------------------------------------------------- parse time


@pytest.mark.parametrize("flag, value, need", [
    ("--warmup_epochs", "-1", "a number >= 0"),
    ("--checkpointing_steps", "-1", "an integer >= 1"),
    ("--checkpoints_total_limit", "-1", "an integer >= 1"),
    ("--num_train_epochs", "0", "an integer >= 1"),
    ("--logging_steps", "0", "an integer >= 1"),
    ("--gradient_accumulation_steps", "0", "an integer >= 1"),
    ("--per_device_train_batch_size", "-1", "an integer >= 1"),
    ("--per_device_train_batch_size", "0", "an integer >= 1"),  # no longer silently the default 64
    ("--max_image_pixels", "0", "an integer >= 1"),
    ("--max_bad_image_fraction", "1.5", "a number >= 0 and <= 1"),
    ("--max_weight_magnitude", "0", "a number > 0"),
    ("--base_learning_rate", "nan", "a number >= 0"),
])
def test_pretrain_flag_out_of_range_is_one_line_naming_flag_value_and_range(flag, value, need, capsys):
    with pytest.raises(SystemExit) as stop:
        pretrain.main(BASE + [flag, value])
    assert stop.value.code == 2
    line = one_error_line(capsys)
    assert f"argument {flag}:" in line and value in line and need in line, line


@pytest.mark.parametrize("script, argv, flag", [
    ("finetune", ["--model_name_or_path", "x", "--label_smoothing", "1"], "--label_smoothing"),
    ("finetune", ["--model_name_or_path", "x", "--layer_decay", "0"], "--layer_decay"),
    ("probe", ["--model_name_or_path", "x", "--protocol", "knn", "--feature_batch_size", "0"], "--feature_batch_size"),
    ("train_tokenizer", ["--temperature_anneal_steps", "-5"], "--temperature_anneal_steps"),
    ("benchmark", ["--repeats", "0"], "--repeats"),
    ("convert_checkpoint", ["--from", "dalle-encoder", "--checkpoint", "x", "--output_dir", "y", "--image_size", "-1"],
     "--image_size"),
])
def test_every_script_checks_its_numeric_flags_with_the_shared_validators(script, argv, flag, capsys):
    with pytest.raises(SystemExit):
        load_script(script).main(argv)
    assert f"argument {flag}: got" in one_error_line(capsys)


def test_validator_messages_name_the_range():
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match=r"^got 0; need an integer >= 1$"):
        positive_int("0")
    assert positive_int("3") == 3
    drop = in_range(float, 0, 1, open_high=True)
    with pytest.raises(argparse.ArgumentTypeError, match=r"^got 1; need a number >= 0 and < 1$"):
        drop("1")
    with pytest.raises(argparse.ArgumentTypeError, match=r"'abc' is not a number"):
        drop("abc")


def test_config_override_that_does_not_parse_names_the_field(tmp_path):
    with pytest.raises(UsageError, match=r"--config_overrides: mask_ratio='abc' is of the wrong type: mask_ratio must be a number"):
        pretrain.main(BASE + ["--config_overrides", "mask_ratio=abc", "--output_dir", str(tmp_path)])
    with pytest.raises(UsageError, match="has no field 'mask_ratios'"):
        pretrain.main(BASE + ["--config_overrides", "mask_ratios=0.5", "--output_dir", str(tmp_path)])


# ----------------------------------------------------------------------------------------------- one line, once


def test_run_main_prints_one_line_on_the_main_process_only(capsys, monkeypatch):
    def main():
        raise UsageError("folder x holds 0 files\nand no image")

    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(SystemExit) as stop:
        run_main(main)
    assert stop.value.code == 1
    assert capsys.readouterr().err == "error: folder x holds 0 files and no image\n"
    monkeypatch.setenv("RANK", "1")  # another rank of `accelerate launch`: exits non-zero, says nothing
    with pytest.raises(SystemExit) as stop:
        run_main(main)
    assert stop.value.code == 1 and capsys.readouterr().err == ""
    with pytest.raises(SystemExit) as stop:
        pretrain.main(BASE + ["--logging_steps", "0"])
    assert stop.value.code == 2 and capsys.readouterr().err == ""


# ----------------------------------------------------------------------------------------------- folders and images


def test_a_folder_where_every_file_is_corrupt_stops_before_training(tmp_path):
    for i in range(3):
        write_corrupt(tmp_path / "data" / "things" / f"{i}.png")
    with pytest.raises(UsageError, match=r"no image in imagefolder .*data can be decoded: tried 3 files, 3 failed; "
                                         r"first reasons: 0.png: UnidentifiedImageError"):
        pretrain.main(BASE + ["--train_dir", str(tmp_path / "data"), "--output_dir", str(tmp_path / "o")])
    assert not (tmp_path / "o" / "train_log.jsonl").exists()


def test_more_than_the_allowed_share_of_bad_images_stops(tmp_path):
    write_image_folder(tmp_path / "data", per_class=2, classes=("good",))
    for i in range(3):
        write_corrupt(tmp_path / "data" / "bad" / f"{i}.png")
    argv = BASE + ["--train_dir", str(tmp_path / "data"), "--max_train_steps", "1", "--output_dir", str(tmp_path / "o")]
    with pytest.raises(UsageError, match=r"60% of the images in imagefolder .*data cannot be decoded \(more than "
                                         r"--max_bad_image_fraction 0.5\): tried 5 files, 3 failed; first reasons: "
                                         r"0.png: UnidentifiedImageError"):
        pretrain.main(argv)
    fresh_state()
    assert pretrain.main(argv + ["--max_bad_image_fraction", "0.75"])["steps"] == 1


def test_one_corrupt_file_never_ends_a_run_at_batch_size_one(tmp_path):
    write_image_folder(tmp_path / "data", per_class=4, classes=("good",))
    write_corrupt(tmp_path / "data" / "good" / "broken.png")
    out = tmp_path / "o"
    summary = pretrain.main(BASE + ["--train_dir", str(tmp_path / "data"), "--per_device_train_batch_size", "1",
                                    "--max_train_steps", "10", "--logging_steps", "5", "--output_dir", str(out)])
    assert summary["steps"] == 10  # two epochs of 5: the broken file's slot is refilled from the others
    logged = [json.loads(line)["skipped_images"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert summary["skipped_images"] == logged[-1] >= 2  # once per epoch, more when a redraw meets it again


def test_a_batch_with_no_readable_image_never_reaches_the_model():
    from hf_mim.data import collate

    batch = collate([{"skipped": 17}])
    assert batch == {"num_skipped": 17}
    refilled = collate([{"pixel_values": torch.zeros(3), "num_unreadable": 2}, {"pixel_values": torch.ones(3)}])
    assert refilled["num_skipped"] == 2 and refilled["pixel_values"].shape == (2, 3)


@pytest.mark.parametrize("contents, count", [((), 0), (("notes.txt", "a/readme.md"), 2)])
def test_an_empty_or_image_less_folder_says_what_it_holds(tmp_path, contents, count):
    folder = tmp_path / "data"
    folder.mkdir()
    for name in contents:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("hello")
    with pytest.raises(UsageError, match=rf"image folder {folder} holds {count} files and no image file; expected "
                                         r"images \(.png, .jpg"):
        pretrain.main(BASE + ["--train_dir", str(folder), "--output_dir", str(tmp_path / "o")])


def png_header_only(path, width, height):
    """A PNG that declares width x height and holds no pixel data: only a size check before decoding names it."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_an_image_over_the_pixel_budget_is_skipped_from_its_header(tmp_path, monkeypatch):
    from hf_mim.data import read_image

    png_header_only(tmp_path / "huge.png", 12000, 12000)
    image, reason = read_image(str(tmp_path / "huge.png"), max_pixels=Image.MAX_IMAGE_PIXELS)
    assert image is None
    assert reason == f"12000x12000 is 144000000 pixels, more than --max_image_pixels {Image.MAX_IMAGE_PIXELS}"

    write_image_folder(tmp_path / "data", per_class=4, classes=("small",), size=28)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "data" / "small" / "big.png")
    decoded_sizes = []
    original_load = Image.Image.load

    def load(self):
        decoded_sizes.append(self.size)
        return original_load(self)

    monkeypatch.setattr(Image.Image, "load", load)
    summary = pretrain.main(BASE + ["--train_dir", str(tmp_path / "data"), "--max_image_pixels", "1000",
                                    "--per_device_train_batch_size", "5", "--max_train_steps", "1",
                                    "--output_dir", str(tmp_path / "o")])
    assert summary["skipped_images"] >= 1
    assert (64, 64) not in decoded_sizes


def test_a_truncated_dalle_encoder_pickle_names_the_file(tmp_path):
    path = tmp_path / "encoder.pkl"
    torch.save({"blocks.input.w": torch.zeros(64, 3, 7, 7)}, path)
    path.write_bytes(path.read_bytes()[:200])
    convert = load_script("convert_checkpoint")
    with pytest.raises(UsageError, match=rf"^{path}: cannot read as a torch file, it may be truncated"):
        convert.main(["--from", "dalle-encoder", "--checkpoint", str(path), "--output_dir", str(tmp_path / "o")])


# ----------------------------------------------------------------------------------------------- checkpoints


def test_an_exploding_learning_rate_never_leaves_a_bad_last_good_checkpoint(tmp_path):
    from hf_mim.training import NonFiniteLossError

    out = tmp_path / "o"
    with pytest.raises(NonFiniteLossError) as stop:
        pretrain.main(BASE + ["--base_learning_rate", "1e30", "--max_train_steps", "6", "--checkpointing_steps", "1",
                              "--warmup_epochs", "0.05", "--output_dir", str(out)])
    message = str(stop.value)
    saved = sorted((out / "checkpoints").glob("step_*"))
    for checkpoint in saved:
        weights = load_file(checkpoint / "model.safetensors")
        assert max(v.float().abs().max().item() for v in weights.values()) < 1e4
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        assert state["max_abs_weight"] < 1e4
    assert "max |w|" in message or "NaN/Inf" in message
    assert (f"it picks {saved[-1]}" if saved else "no checkpoint was saved") in message
    assert not (out / "model.safetensors").exists()


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    from accelerate import Accelerator

    original, calls = Accelerator.save_state, {"n": 0}

    def save_state(self, output_dir=None, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return original(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", save_state)
    out = tmp_path / "o"
    with pytest.raises(UsageError, match=rf"could not save checkpoint step_2 in {out / 'checkpoints'}: \[Errno 28\] "
                                         r"No space left on device\. Nothing of it was kept; the previous checkpoint "
                                         rf"\({out / 'checkpoints' / 'step_1'}\) is intact"):
        pretrain.main(BASE + ["--max_train_steps", "3", "--checkpointing_steps", "1", "--output_dir", str(out)])
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["README.md", "step_1"]


def test_a_final_save_that_fails_leaves_no_half_folder(tmp_path, monkeypatch):
    import transformers.modeling_utils
    from safetensors import SafetensorError

    def disk_full(*args, **kwargs):
        raise SafetensorError("Error while serializing: IoError(No space left on device)")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", disk_full)
    out = tmp_path / "o"
    with pytest.raises(UsageError, match=rf"could not save the model in {out}: Error while serializing"):
        pretrain.main(BASE + ["--max_train_steps", "1", "--output_dir", str(out)])
    assert not (out / "config.json").exists() and not list(out.glob("*.py")) and not (out / ".partial_save").exists()


def test_resuming_with_another_batch_stops_listing_the_differences(tmp_path):
    out = tmp_path / "o"
    pretrain.main(BASE + ["--max_train_steps", "1", "--checkpointing_steps", "1", "--output_dir", str(out)])
    resume = ["--max_train_steps", "2", "--output_dir", str(out), "--resume_from_checkpoint", "latest",
              "--per_device_train_batch_size", "4"]
    fresh_state()
    with pytest.raises(UsageError, match=r"step_1 was saved by another run; differences \(checkpoint -> now\): "
                                         r"effective_batch: 8 -> 4\. Pass the checkpoint's flags again, or "
                                         r"--allow_resume_changes"):
        pretrain.main(BASE + resume)
    fresh_state()
    assert pretrain.main(BASE + resume + ["--allow_resume_changes"])["steps"] == 2
    run = json.loads((out / "checkpoints" / "step_1" / "run.json").read_text())
    assert run["method"] == "mae" and run["seed"] == 7 and run["config"]["hidden_size"] == 32


def test_under_accelerate_launch_the_error_prints_once_and_every_rank_fails(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    from helpers import REPO_ROOT

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "empty").mkdir()
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               str(port), str(REPO_ROOT / "scripts" / "pretrain.py"), "--method", "mae", "--train_dir",
               str(tmp_path / "empty"), "--output_dir", str(tmp_path / "o")]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    said = (done.stdout + done.stderr).count(f"error: image folder {tmp_path / 'empty'} holds 0 files")
    assert said == 1, done.stderr[-2000:]


HELP_ENTRY = {"push_to_hub": "main"}  # scripts whose parser is built in main()
HELP_EXAMPLES = {  # one defaulted flag per script, as --help prints it (whitespace collapsed)
    "pretrain": "--seed SEED (default: 0)",
    "finetune": "--num_train_epochs NUM_TRAIN_EPOCHS (default: 10)",
    "probe": "--k K kNN neighbours (default: 20)",
    "train_tokenizer": "--seed SEED (default: 0)",
    "convert_checkpoint": None,
    "push_to_hub": "--commit_message COMMIT_MESSAGE (default: Upload with hf-mim)",
    "benchmark": "--repeats REPEATS timed rounds (each steps ours and the peer once) (default: 10)",
    "benchmark_fashion_mnist": "--pretrain_steps PRETRAIN_STEPS pretraining updates, the same for every method "
                               "(default: 400)",
    "make_video_sample": "--num_frames NUM_FRAMES frames per clip (default: 16)",
    "finetune_segmentation": "--seed SEED (default: 0)",
    "benchmark_video": "--seed SEED (default: 0)",
    "benchmark_segmentation": "--seed SEED (default: 0)",
    "make_segmentation_sample": "--seed SEED (default: 0)",
}


@pytest.mark.parametrize("script", sorted(HELP_EXAMPLES))
def test_every_scripts_help_shows_defaults_and_cites_only_what_users_have(script, capsys):
    from helpers import REPO_ROOT

    assert {path.stem for path in (REPO_ROOT / "scripts").glob("*.py")} == set(HELP_EXAMPLES)
    module = load_script(script)
    with pytest.raises(SystemExit) as exit_:
        getattr(module, HELP_ENTRY.get(script, "parse_args"))(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "default: " in text  # convert_checkpoint's flags all default to "what the checkpoint says"
    if HELP_EXAMPLES[script]:
        assert HELP_EXAMPLES[script] in text
    for private in ("method_spec", "§", "design.md", "../shared"):
        assert private not in text


HELP_WITHOUT_HEAVY_IMPORTS = """
import runpy, sys
sys.argv = [sys.argv[1], "--help"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exit_:
    assert exit_.code == 0, exit_.code
else:
    raise AssertionError("--help did not exit")
heavy = {"torch", "transformers", "hf_mim", "accelerate", "datasets", "huggingface_hub"}
print("loaded:", *sorted({name.split(".")[0] for name in sys.modules} & heavy))
"""


@pytest.mark.parametrize("script", sorted(HELP_EXAMPLES))
def test_every_scripts_help_answers_before_torch_and_transformers_load(script):
    """`--help` is the parser alone: no torch, transformers or hf_mim (seconds of imports on a CPU)."""
    from helpers import REPO_ROOT

    done = subprocess.run([sys.executable, "-c", HELP_WITHOUT_HEAVY_IMPORTS, str(REPO_ROOT / "scripts" / f"{script}.py")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    *help_text, loaded = done.stdout.rstrip("\n").split("\n")
    assert help_text[0].startswith("usage:")
    assert loaded == "loaded:", f"--help imported {loaded.split()[1:]}"


def test_finetune_help_recipe_flags_say_where_their_default_comes_from_and_the_pipeline_example_runs(capsys):
    with pytest.raises(SystemExit):
        load_script("finetune").parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--weight_decay WEIGHT_DECAY (default: the recipe's, see --recipe)" in text
    assert "python -c 'import hf_mim; from transformers import pipeline;" in text
