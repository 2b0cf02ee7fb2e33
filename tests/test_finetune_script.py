"""Smoke tests of scripts/finetune.py: every flag, the best-model rule, the pipeline on the result."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import pipeline

from helpers import TINY_OVERRIDES, load_script, write_image_folder

pretrain = load_script("pretrain")
finetune = load_script("finetune")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    from accelerate.state import AcceleratorState, GradientState

    out = tmp_path_factory.mktemp("pretrained") / "mae"
    pretrain.main(["--method", "mae", "--config_overrides", TINY_OVERRIDES["mae"], "--output_dir", str(out),
                   "--per_device_train_batch_size", "8", "--max_train_steps", "2"])
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return out


def test_finetune_on_the_sample_then_classify_with_a_pipeline(tmp_path, pretrained):
    out = tmp_path / "ft"
    summary = finetune.main(["--model_name_or_path", str(pretrained), "--output_dir", str(out),
                             "--max_train_steps", "4", "--per_device_train_batch_size", "16",
                             "--per_device_eval_batch_size", "64", "--logging_steps", "2"])
    assert summary["steps"] == 4 and summary["best_epoch"] == 0 and 0 <= summary["best_accuracy"] <= 1
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["MimMaeForImageClassification"] and len(config["id2label"]) == 10
    assert config["id2label"]["9"] == "Ankle boot"
    assert config["train_position_embeddings"] is True  # MAE's fine-tuning switch
    card = (out / "README.md").read_text()
    assert "model-index" in card and "accuracy" in card
    saved = json.loads((out / "preprocessor_config.json").read_text())  # the pipeline's: the official eval crop
    side = config["image_size"]
    assert saved["size"] == {"height": side, "width": side} and saved["crop_pct"] == 0.875  # size: the model input
    assert saved["do_center_crop"] is True
    assert saved["crop_size"] == {"height": side, "width": side}
    assert f"fine-tune top-1 (short side {int(side / 0.875)}, centre crop {side})" in card  # how it was scored
    from PIL import Image

    classifier = pipeline("image-classification", model=str(out))
    predictions = classifier(Image.new("L", (28, 28), 128), top_k=3)
    assert len(predictions) == 3 and {p["label"] for p in predictions} <= set(config["id2label"].values())


def test_encoder_weights_and_normalisation_come_from_the_pretrained_model(tmp_path, pretrained):
    """Weights, and the image normalisation saved beside them (a converted BEiT keeps its 0.5/0.5)."""
    import shutil

    source_dir = tmp_path / "converted"
    shutil.copytree(pretrained, source_dir)
    processor_file = source_dir / "preprocessor_config.json"
    processor_file.write_text(json.dumps({**json.loads(processor_file.read_text()),
                                          "image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    out = tmp_path / "ft0"
    finetune.main(["--model_name_or_path", str(source_dir), "--output_dir", str(out), "--max_train_steps", "1",
                   "--base_learning_rate", "0", "--mixup", "0", "--cutmix", "0"])
    source, tuned = load_file(pretrained / "model.safetensors"), load_file(out / "model.safetensors")
    assert torch.equal(source["vit.blocks.1.attn.qkv.weight"], tuned["vit.blocks.1.attn.qkv.weight"])
    saved = json.loads((out / "preprocessor_config.json").read_text())
    assert saved["image_mean"] == [0.5] * 3 and saved["image_std"] == [0.5] * 3


def test_every_flag_on_image_folders_from_scratch(tmp_path, pretrained, monkeypatch):
    import hf_mim.hub as hub

    cache = tmp_path / "hub-cache"
    monkeypatch.setattr(hub, "HfApi", lambda: hub.LocalHubApi(cache))
    train = write_image_folder(tmp_path / "train", per_class=6)
    val = write_image_folder(tmp_path / "val", per_class=3, seed=1)
    out = tmp_path / "scratch"
    summary = finetune.main([
        "--model_name_or_path", str(pretrained), "--from_scratch", "--config_overrides", "pooling=cls",
        "--train_dir", str(train), "--validation_dir", str(val), "--image_column", "image", "--label_column", "label",
        "--output_dir", str(out), "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4",
        "--gradient_accumulation_steps", "2", "--learning_rate", "2e-3", "--min_learning_rate", "1e-6",
        "--crop_scale", "0.5", "1", "--gradient_checkpointing", "--rand_augment", "rand-m7-mstd0.5-inc1-n3",
        "--random_erasing", "0.5", "--eval_crop_pct", "1",
        "--layer_decay", "0.75", "--weight_decay", "0.01", "--drop_path_rate", "0.05", "--mixup", "0.2",
        "--cutmix", "0.5", "--label_smoothing", "0.1", "--max_grad_norm", "1.0", "--num_train_epochs", "2",
        "--warmup_epochs", "1", "--seed", "1", "--mixed_precision", "no", "--dataloader_num_workers", "0",
        "--logging_steps", "1", "--checkpointing_steps", "1", "--checkpoints_total_limit", "1",
        "--max_nonfinite_skips", "0", "--report_to", "none", "--push_to_hub", "--hub_model_id", "org/mae-vit-tiny-ft",
    ])
    assert summary["steps"] == 4 and len(summary["eval_history"]) == 2  # 3 batches of 4, accumulation 2
    assert summary["learning_rate"] == 2e-3  # absolute: not scaled by the batch of 8
    config = json.loads((out / "config.json").read_text())
    assert config["pooling"] == "cls" and config["drop_path_rate"] == 0.05 and config["id2label"] == {"0": "coat", "1": "shoe"}
    saved = json.loads((out / "preprocessor_config.json").read_text())
    assert saved["size"] == {"height": config["image_size"], "width": config["image_size"]}
    assert saved["crop_pct"] == 1  # --eval_crop_pct 1: the whole short side
    assert (cache / "models--org--mae-vit-tiny-ft" / "refs" / "main").exists()
    assert "random initialisation" in (out / "README.md").read_text()


def test_resume_and_explicit_splits(tmp_path, pretrained):
    import datasets

    from hf_mim.data import load_image_dataset

    sample = load_image_dataset(split="test").dataset
    saved = tmp_path / "dd"
    datasets.DatasetDict({"train": sample.select(range(64)), "holdout": sample.select(range(64, 96))}).save_to_disk(str(saved))
    out = tmp_path / "ft-resume"
    args = ["--model_name_or_path", str(pretrained), "--dataset_name", str(saved), "--train_split", "train",
            "--eval_split", "holdout", "--output_dir", str(out), "--per_device_train_batch_size", "16",
            "--max_train_steps", "4", "--checkpointing_steps", "2"]
    finetune.main(args)
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    summary = finetune.main(args + ["--resume_from_checkpoint", "latest"])
    assert summary["steps"] == 4


@pytest.mark.parametrize("flags, message", [
    (["--crop_scale", "0.9", "0.5"], "need 0 < MIN <= MAX <= 1"),
    (["--crop_scale", "0", "1"], "need 0 < MIN <= MAX <= 1"),
    (["--rand_augment", "auto-m9"], "must start with 'rand-'"),
    (["--rand_augment", "rand-m9-q3"], "cannot read 'q3'"),
    (["--random_erasing", "1.5"], "need a probability in [0, 1]"),
    (["--eval_crop_pct", "0"], "need a share of the short side in (0, 1]"),
    (["--learning_rate", "1e-3", "--base_learning_rate", "1e-3"], "not allowed with argument"),
])
def test_bad_recipe_flags_stop_before_any_work(flags, message, capsys):
    with pytest.raises(SystemExit):
        finetune.parse_args(["--model_name_or_path", "x", *flags])
    assert message in capsys.readouterr().err


def build_from(pretrained, *flags):
    from types import SimpleNamespace

    args = finetune.parse_args(["--model_name_or_path", str(pretrained), *flags])
    return finetune.build_classifier(args, SimpleNamespace(label_names=["a", "b", "c"]))[2]


def test_drop_path_and_config_overrides_win_over_the_methods_switches(pretrained, caplog):
    """The flags are applied after the fine-tuning switches, also where they equal the pretraining value (MAE
    pretrains with drop path 0 and frozen positions; its switches say 0.1 and trainable)."""
    assert json.loads((pretrained / "config.json").read_text())["drop_path_rate"] == 0.0
    with caplog.at_level("INFO", logger="hf_mim.finetune"):
        model = build_from(pretrained, "--drop_path_rate", "0", "--config_overrides",
                           "train_position_embeddings=false")
    assert ("the method's fine-tuning switches train_position_embeddings=True (was False), drop_path_rate=0.1 "
            "(was 0.0)\n") in caplog.text
    assert model.config.drop_path_rate == 0.0 and model.config.train_position_embeddings is False
    assert not model.vit.pos_embed.requires_grad
    default = build_from(pretrained)
    assert default.config.drop_path_rate == 0.1 and default.config.train_position_embeddings is True


def test_a_demo_sized_model_fine_tunes_with_the_demo_recipe(caplog):
    import hf_mim

    method = hf_mim.get_method("mae")
    demo = method.config_class(**method.backbone().demo_config)
    parse = lambda *flags: finetune.parse_args(["--model_name_or_path", "x", *flags])  # noqa: E731
    with caplog.at_level("INFO", logger="hf_mim.finetune"):
        settings = finetune.finetuning_settings(parse(), method, demo)
    assert (settings.mixup, settings.cutmix, settings.rand_augment, settings.random_erasing) == (0, 0, "none", 0)
    assert (settings.learning_rate, settings.warmup_epochs, settings.crop_scale) == (4e-3, 0.5, (0.8, 1.0))
    assert "fine-tuning recipe: demo (a demo-sized model; --recipe paper for the method's published one)" in caplog.text
    paper = finetune.finetuning_settings(parse("--recipe", "paper"), method, demo)
    assert paper == method.finetune_recipe and paper.mixup == 0.8
    assert finetune.finetuning_settings(parse(), method, method.config_class()) == method.finetune_recipe  # ViT-B
    assert finetune.finetuning_settings(parse("--mixup", "0.3"), method, demo).mixup == 0.3  # flags still win


@pytest.mark.parametrize("blocks", [0, 1])
def test_trainable_blocks_freeze_the_rest_bitwise(tmp_path, pretrained, blocks, caplog):
    """MAE's partial fine-tuning: only the last K blocks, the final norm and the head change; K = 0 is the linear
    probe, whose BatchNorm head is saved folded into the plain Linear head."""
    out = tmp_path / f"k{blocks}"
    with caplog.at_level("INFO", logger="hf_mim.finetune"):
        finetune.main(["--model_name_or_path", str(pretrained), "--output_dir", str(out), "--trainable_blocks",
                       str(blocks), "--max_train_steps", "2", "--per_device_train_batch_size", "16",
                       "--learning_rate", "1e-2", "--drop_path_rate", "0"])
    expected = ("linear probe: a BatchNorm (no affine) and the linear head train" if blocks == 0 else
                "partial fine-tuning: the last 1 of 2 blocks, the final norm and the head train")
    assert expected in caplog.text
    source, tuned = load_file(pretrained / "model.safetensors"), load_file(out / "model.safetensors")
    encoder = [k for k in tuned if k.startswith("vit.")]
    changed = {k for k in encoder if not torch.equal(source[k], tuned[k])}
    assert changed == ({k for k in encoder if k.startswith("vit.blocks.1.")} if blocks else set())
    assert "head.weight" in tuned and not any(k.startswith("head.norm") for k in tuned)
    card = (out / "README.md").read_text()
    assert ("linear probe (BatchNorm head) top-1" if blocks == 0 else "partial fine-tune (last 1 blocks) top-1") in card


def test_frozen_parameters_get_no_gradient_and_the_folded_probe_head_gives_the_same_logits(pretrained):
    model = build_from(pretrained)
    finetune.restrict_trainable(model, 0)
    model.train()
    model(pixel_values=torch.randn(4, 3, 32, 32)).logits.sum().backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {"head.linear.weight", "head.linear.bias"}
    model.eval()
    pixels = torch.randn(2, 3, 32, 32)
    folded = finetune.savable(model)
    assert isinstance(folded.head, torch.nn.Linear) and isinstance(model.head, finetune.BatchNormLinear)
    torch.testing.assert_close(folded(pixel_values=pixels).logits, model(pixel_values=pixels).logits)


def test_trainable_blocks_beyond_the_depth_is_refused(pretrained):
    from hf_mim_cli.arguments import UsageError

    with pytest.raises(UsageError, match="--trainable_blocks 3: the model has 2 blocks"):
        finetune.restrict_trainable(build_from(pretrained), 3)
