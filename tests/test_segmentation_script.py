"""scripts/finetune_segmentation.py end to end on every method's encoder, the remote-code load, exact resume after
SIGKILL, the flags of a folder dataset, and the embedded sample's script."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoBackbone, AutoModelForSemanticSegmentation, UperNetForSemanticSegmentation, pipeline

import hf_mim
from hf_mim.backbones import upernet_config
from helpers import load_script
from test_backbone import tiny_config
from test_reliability import pretrain_until_checkpoint_then_sigkill, same_weights, script_env

finetune_segmentation = load_script("finetune_segmentation")
make_sample = load_script("make_segmentation_sample")
FAST = ["--image_size", "32", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "50",
        "--logging_steps", "1", "--head_hidden_size", "16"]


@pytest.fixture(scope="module")
def encoder_folders(tmp_path_factory):
    """A saved pretraining model of every method (tiny ViT, 4 blocks, random weights)."""
    folders = {}
    for method in hf_mim.METHODS:
        torch.manual_seed(0)
        folders[method] = tmp_path_factory.mktemp(f"{method}-pretrained")
        hf_mim.METHODS[method].pretraining_class(tiny_config(method)).save_pretrained(folders[method])
    return folders


@pytest.fixture(scope="module")
def swin_folder(tmp_path_factory):
    """A saved SimMIM Swin pretraining model: the registry's 2-stage demo Swin, narrower, random weights."""
    swin = hf_mim.METHODS["simmim"].backbones["swin"]
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("simmim-swin-pretrained")
    swin.pretraining_class(swin.config_class(**{**swin.demo_config, "embed_dim": 16})).save_pretrained(folder)
    return folder


def garment_image():
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8))


@pytest.mark.parametrize("method", list(hf_mim.METHODS))
def test_three_steps_give_a_model_the_auto_class_and_the_pipeline_load(method, encoder_folders, tmp_path):
    out = tmp_path / "seg"
    summary = finetune_segmentation.main(["--model_name_or_path", str(encoder_folders[method]), "--max_train_steps",
                                          "3", "--output_dir", str(out), *FAST])
    assert summary["steps"] == 3 and 0 <= summary["best_mean_iou"] <= 1
    model = AutoModelForSemanticSegmentation.from_pretrained(out).eval()
    assert type(model) is UperNetForSemanticSegmentation
    assert type(model.backbone).__name__ == f"{hf_mim.METHODS[method].model_class.__name__[:-5]}Backbone"
    assert model.config.id2label[0] == "background" and model.config.num_labels == 11
    with torch.no_grad():
        assert tuple(model(torch.zeros(1, 3, 32, 32)).logits.shape) == (1, 11, 32, 32)
    masks = pipeline("image-segmentation", model=str(out))(garment_image())
    assert masks and all(m["mask"].size == (40, 48) and m["label"] in model.config.id2label.values() for m in masks)
    card = (out / "README.md").read_text()
    assert "pipeline_tag: image-segmentation" in card and "type: mean_iou" in card


def test_a_swin_encoder_fine_tunes_on_its_stages_without_the_auxiliary_head(swin_folder, tmp_path):
    """UperNet's auxiliary head reads a third feature map; the 2-stage demo Swin has two, so the head is left out
    (it used to fail with an IndexError inside UperNet) and the stages feed the decode head."""
    out = tmp_path / "seg"
    summary = finetune_segmentation.main(["--model_name_or_path", str(swin_folder), "--max_train_steps", "3",
                                          "--output_dir", str(out), *FAST])
    assert summary["steps"] == 3
    model = AutoModelForSemanticSegmentation.from_pretrained(out).eval()
    assert type(model.backbone).__name__ == "MimSimMIMSwinBackbone" and model.auxiliary_head is None
    assert [model.config.backbone_config.stage_names[i] for i in model.config.backbone_config.out_indices] == \
        ["stage1", "stage2"]
    with torch.no_grad():
        assert tuple(model(torch.zeros(1, 3, 32, 32)).logits.shape) == (1, 11, 32, 32)
    masks = pipeline("image-segmentation", model=str(out))(garment_image())
    assert masks and all(m["mask"].size == (40, 48) for m in masks)


def test_a_four_level_vit_keeps_the_auxiliary_head(encoder_folders):
    backbone = AutoBackbone.from_pretrained(encoder_folders["mae"])
    assert UperNetForSemanticSegmentation(upernet_config(backbone.config, {0: "a", 1: "b"})).auxiliary_head is not None


def test_remote_code_loads_without_hf_mim(encoder_folders, tmp_path):
    out = tmp_path / "seg"
    finetune_segmentation.main(["--model_name_or_path", str(encoder_folders["beit"]), "--max_train_steps", "2",
                                "--output_dir", str(out), *FAST])
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = AutoModelForSemanticSegmentation.from_pretrained(out).eval()(pixels).logits
    torch.save({"pixels": pixels, "expected": expected}, tmp_path / "io.pt")
    code = f"""
import sys
sys.modules["hf_mim"] = None  # make `import hf_mim` fail in this process
import torch
from transformers import AutoModelForSemanticSegmentation, pipeline
model = AutoModelForSemanticSegmentation.from_pretrained({str(out)!r}, trust_remote_code=True).eval()
assert type(model).__name__ == "MimUperNetForSemanticSegmentation", type(model)
assert type(model.backbone).__name__ == "MimBeitBackbone", type(model.backbone)
saved = torch.load({str(tmp_path / "io.pt")!r})
with torch.no_grad():
    torch.testing.assert_close(model(saved["pixels"]).logits, saved["expected"], rtol=0, atol=0)
from PIL import Image
masks = pipeline("image-segmentation", model={str(out)!r}, trust_remote_code=True)(Image.new("RGB", (40, 30)))
assert masks and masks[0]["mask"].size == (40, 30)
print("remote ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                            env=script_env(), timeout=300)
    assert "remote ok" in result.stdout, result.stderr[-3000:]


def test_sigkill_then_resume_gives_bitwise_identical_weights(encoder_folders, tmp_path):
    base = ["--model_name_or_path", str(encoder_folders["mae"]), "--max_train_steps", "8", "--checkpointing_steps",
            "2", "--seed", "3", *FAST]
    straight = tmp_path / "straight"
    finetune_segmentation.main(base + ["--output_dir", str(straight)])
    killed = tmp_path / "killed"
    pretrain_until_checkpoint_then_sigkill(base, killed, "step_4", timeout=240, script="finetune_segmentation.py")
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    finetune_segmentation.main(base + ["--output_dir", str(killed), "--resume_from_checkpoint", "latest"])
    identical, worst = same_weights(straight, killed)
    assert identical, f"resumed weights differ by {worst}"


def write_pairs(root, names, size=(40, 36), classes=3):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for name in names:
        labels = np.kron(rng.integers(0, classes + 1, (9, 10)), np.ones((4, 4), dtype=np.uint8)).astype(np.uint8)
        Image.fromarray((labels * 60).astype(np.uint8)).convert("RGB").save(root / "images" / f"{name}.png")
        Image.fromarray(labels).save(root / "masks" / f"{name}.png")
    return root / "images", root / "masks"


def test_folder_dataset_with_every_flag(encoder_folders, tmp_path):
    """Image + mask folders, ADE-style reduced labels named by --id2label, sliding evaluation, a random-init
    encoder, and each recipe flag set to a non-default value."""
    train_images, train_masks = write_pairs(tmp_path / "train", [f"t{i}" for i in range(6)])
    val_images, val_masks = write_pairs(tmp_path / "val", ["v0", "v1"])
    (tmp_path / "labels.json").write_text(json.dumps({"0": "red", "1": "green", "2": "blue"}))
    out = tmp_path / "seg"
    summary = finetune_segmentation.main([
        "--model_name_or_path", str(encoder_folders["cae"]), "--from_scratch", "--train_dir", str(train_images),
        "--mask_dir", str(train_masks), "--validation_dir", str(val_images), "--validation_mask_dir",
        str(val_masks), "--reduce_labels", "--id2label", str(tmp_path / "labels.json"), "--out_indices", "1", "2",
        "3", "4", "--eval_mode", "slide", "--eval_stride", "8", "--max_train_steps", "2", "--output_dir", str(out),
        "--poly_power", "0.9", "--warmup_ratio", "0.5", "--ratio_range", "0.75", "1.5", "--cat_max_ratio", "0.9",
        "--photometric", "0.1", "--layer_decay", "0.75", "--drop_path_rate", "0.05", "--weight_decay", "0.01",
        "--learning_rate", "5e-4", "--min_learning_rate", "1e-6", "--num_train_epochs", "1",
        "--annotation_column", "annotation", "--train_split", "train", "--eval_split", "validation",
        "--max_grad_norm", "1.0", *FAST])
    assert summary["steps"] == 2 and len(summary["eval_history"][0]["per_category_iou"]) == 3
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "red", "1": "green", "2": "blue"}
    assert config["backbone_config"]["out_indices"] == [1, 2, 3, 4]
    assert config["backbone_config"]["drop_path_rate"] == 0.05
    assert "random initialisation" in (out / "README.md").read_text()


def test_sliding_logits_average_overlapping_windows():
    class Echo(torch.nn.Module):  # logits = the pixels themselves: the average of overlapping copies is the input
        def forward(self, pixel_values):
            return type("Out", (), {"logits": pixel_values})()

    pixels = torch.arange(2 * 10 * 13, dtype=torch.float32).reshape(1, 2, 10, 13)
    out = finetune_segmentation.sliding_logits(Echo(), pixels, window=6, stride=4, num_labels=2)
    torch.testing.assert_close(out, pixels)


def test_sample_script_is_deterministic_and_labels_follow_silhouettes(tmp_path):
    flags = ["--num_train", "6", "--num_validation", "3", "--size", "48", "--min_side", "16", "--max_side", "24",
             "--max_garments", "3", "--threshold", "30", "--seed", "4"]
    first = make_sample.main(flags + ["--output_dir", str(tmp_path / "a")])
    second = make_sample.main(flags + ["--output_dir", str(tmp_path / "b")])
    for name in ("train.parquet", "validation.parquet", "id2label.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    from hf_mim.segmentation_data import decode_label_map, read_id2label
    from hf_mim.data import decode_image

    assert read_id2label(first)[1] == "T-shirt/top" and len(read_id2label(first)) == 11
    import datasets

    rows = datasets.load_dataset("parquet", data_files=str(first / "train.parquet"), split="train")
    assert len(rows) == 6
    for row in rows:
        image = np.asarray(decode_image(row["image"]).convert("L"))
        labels = decode_label_map(row["annotation"])
        assert image.shape == labels.shape == (48, 48) and labels.max() <= 10
        assert (image[labels == 0] == 0).all() and (image[labels > 0] >= 30).all()


def test_benchmark_reuses_or_pretrains_encoders_and_tables_both_inits(encoder_folders, tmp_path):
    benchmark = load_script("benchmark_segmentation")
    root = tmp_path / "root"
    root.mkdir()
    (root / "simmim-pretrain").symlink_to(encoder_folders["simmim"], target_is_directory=True)
    report = benchmark.main([
        "--output_dir", str(tmp_path / "bench"), "--methods", "simmim", "mae", "--pretrained_root", str(root),
        "--pretrain_steps", "1", "--pretrain_batch_size", "4", "--finetune_steps", "2", "--batch_size", "4",
        "--tokenizer_steps", "1", "--tokenizer_name_or_path", str(tmp_path / "no-tokenizer-needed"), "--seed", "1",
        "--finetune_args", "--image_size 32 --head_hidden_size 16 --per_device_eval_batch_size 50"])
    assert report["methods"]["simmim"]["encoder"] == str(root / "simmim-pretrain")
    assert (tmp_path / "bench" / "models" / "mae-pretrain" / "config.json").is_file()  # pretrained by the run
    for method in ("simmim", "mae"):
        for label in ("pretrained", "random_init"):
            entry = report["methods"][method][label]
            assert entry["steps"] == 2 and 0 <= entry["mean_iou"] <= 1
    table = (tmp_path / "bench" / "results.md").read_text()
    assert table.startswith("| method | mIoU pretrained | mIoU random init |") and "| mae |" in table
