"""Smoke tests of scripts/pretrain.py: every flag runs for a few steps on a tiny config."""

import json

import pytest
import torch
from safetensors.torch import load_file

from helpers import TINY_OVERRIDES, load_script, write_image_folder

pretrain = load_script("pretrain")


def run(tmp_path, *extra, name="run"):
    out = tmp_path / name
    argv = ["--method", "mae", "--config_overrides", TINY_OVERRIDES["mae"], "--output_dir", str(out),
            "--per_device_train_batch_size", "8", "--max_train_steps", "3", "--logging_steps", "1", *extra]
    return out, pretrain.main(argv)


def test_demo_run_writes_model_processor_card_and_picture(tmp_path):
    out, summary = run(tmp_path)
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "README.md", "reconstruction.png",
                 "train_log.jsonl", "modeling_mae.py"):
        assert (out / name).exists(), name
    assert not list(out.glob("*.bin")) and summary["steps"] == 3
    card = (out / "README.md").read_text()
    assert "reconstruction.png" in card and "MAE" in card and "embedded Fashion-MNIST sample" in card
    assert "python scripts/pretrain.py --method mae --config_overrides" in card  # the command this run was
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and all(r["loss"] > 0 for r in log)
    # warmup from 0: the first update uses lr 0, later ones more
    assert log[0]["lr"] < log[1]["lr"] or log[1]["lr"] > 0


def test_effective_lr_is_blr_times_batch_over_256(tmp_path):
    _, summary = run(tmp_path, "--base_learning_rate", "0.256", "--gradient_accumulation_steps", "2")
    assert summary["effective_batch"] == 16
    assert summary["learning_rate"] == pytest.approx(0.256 * 16 / 256)


def test_every_training_flag_on_an_image_folder(tmp_path):
    data = write_image_folder(tmp_path / "images", per_class=8)
    out, summary = run(
        tmp_path, "--train_dir", str(data), "--image_column", "image", "--model_size", "demo",
        "--num_train_epochs", "2", "--warmup_epochs", "0.5", "--weight_decay", "0.01", "--seed", "3",
        "--min_learning_rate", "1e-6", "--max_grad_norm", "1.0", "--mixed_precision", "bf16",
        "--dataloader_num_workers", "1", "--checkpointing_steps", "2", "--checkpoints_total_limit", "1",
        "--max_nonfinite_skips", "1", "--report_to", "tensorboard",
    )
    assert summary["steps"] == 3
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["README.md", "step_2"]
    assert list(out.rglob("events.out.tfevents*")), "tensorboard wrote nothing"


def test_dataset_name_as_local_saved_dataset_and_model_name_or_path(tmp_path):
    import datasets

    first, _ = run(tmp_path, name="first")
    data = write_image_folder(tmp_path / "images", per_class=4)
    saved = tmp_path / "saved"
    datasets.load_dataset("imagefolder", data_dir=str(data), split="train").save_to_disk(str(saved))
    second, summary = run(tmp_path, "--dataset_name", str(saved), "--model_name_or_path", str(first), name="second")
    before = load_file(first / "model.safetensors")
    after = load_file(second / "model.safetensors")
    assert before.keys() == after.keys() and summary["steps"] == 3
    assert not torch.equal(before["vit.blocks.0.mlp.fc1.weight"], after["vit.blocks.0.mlp.fc1.weight"])


def test_resume_latest_continues_to_the_same_weights(tmp_path):
    straight, _ = run(tmp_path, "--max_train_steps", "6", name="straight")
    partial = tmp_path / "partial"
    pretrain.main(["--method", "mae", "--config_overrides", TINY_OVERRIDES["mae"], "--output_dir", str(partial),
                   "--per_device_train_batch_size", "8", "--max_train_steps", "6", "--checkpointing_steps", "4",
                   "--logging_steps", "1"])
    resumed, _ = run(tmp_path, "--max_train_steps", "6", "--resume_from_checkpoint", str(partial / "checkpoints" / "step_4"),
                     name="resumed")
    expected = load_file(straight / "model.safetensors")
    got = load_file(resumed / "model.safetensors")
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_push_to_hub_writes_into_a_local_hub_cache(tmp_path, monkeypatch):
    import hf_mim.hub as hub

    cache = tmp_path / "hub-cache"
    monkeypatch.setattr(hub, "HfApi", lambda: hub.LocalHubApi(cache))
    out, _ = run(tmp_path, "--push_to_hub", "--hub_model_id", "org/mae-vit-tiny")
    snapshot_ref = (cache / "models--org--mae-vit-tiny" / "refs" / "main").read_text()
    snapshot = cache / "models--org--mae-vit-tiny" / "snapshots" / snapshot_ref
    assert (snapshot / "model.safetensors").exists() and (snapshot / "README.md").exists()
    assert "org/mae-vit-tiny" in (snapshot / "README.md").read_text()
    assert not (snapshot / "checkpoints").exists()


def test_push_without_hub_model_id_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        run(tmp_path, "--push_to_hub")


def test_config_overrides_that_make_no_sense_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="mask_ratio"):
        pretrain.main(["--method", "mae", "--config_overrides", "mask_ratio=1.5", "--output_dir", str(tmp_path / "x"),
                       "--max_train_steps", "1"])


def test_a_tokenizer_for_a_method_without_tokens_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run(tmp_path, "--tokenizer_name_or_path", str(tmp_path))
    assert "predicts no visual tokens" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["beit", "cae"])
def test_token_methods_with_a_tokenizer_folder(tmp_path, method):
    from helpers import save_tiny_tokenizer

    tokenizer = save_tiny_tokenizer(tmp_path / "tokenizer")
    out = tmp_path / method
    summary = pretrain.main(["--method", method, "--config_overrides", TINY_OVERRIDES[method],
                             "--tokenizer_name_or_path", str(tokenizer), "--output_dir", str(out),
                             "--per_device_train_batch_size", "8", "--max_train_steps", "2", "--logging_steps", "1"])
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert summary["steps"] == 2 and all(r["loss"] > 0 for r in log)
    if method == "beit":
        assert all(0 <= r["accuracy"] <= 1 for r in log)
    else:
        assert all(r["alignment_loss"] >= 0 and r["reconstruction_loss"] > 0 for r in log)
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 512


def test_beit_without_a_tokenizer_says_how_to_get_one(tmp_path):
    with pytest.raises(SystemExit, match="train_tokenizer.py"):
        pretrain.main(["--method", "beit", "--config_overrides", TINY_OVERRIDES["beit"], "--output_dir", str(tmp_path),
                       "--max_train_steps", "1"])


@pytest.mark.parametrize("method", ["simmim", "maskfeat"])
def test_pixel_and_hog_methods_run_the_demo_path_and_draw_a_picture(tmp_path, method):
    out = tmp_path / method
    summary = pretrain.main(["--method", method, "--config_overrides", TINY_OVERRIDES[method], "--output_dir", str(out),
                             "--per_device_train_batch_size", "8", "--max_train_steps", "2"])
    assert summary["steps"] == 2 and (out / "model.safetensors").exists()
    assert (out / "reconstruction.png").exists() and "reconstruction.png" in (out / "README.md").read_text()
