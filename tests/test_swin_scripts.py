"""The user path of SimMIM on a Swin (`--method simmim --backbone swin`): pretrain, load without hf_mim, fine-tune,
classify with a pipeline, probe."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from helpers import load_script

pretrain = load_script("pretrain")
finetune = load_script("finetune")
probe = load_script("probe")

# the demo Swin at half width: stages of 16x16 and 8x8 tokens, widths 16 and 32
TINY_SWIN = "embed_dim=16"


def reset_accelerate():
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("swin") / "simmim-swin"
    summary = pretrain.main(["--method", "simmim", "--backbone", "swin", "--config_overrides", TINY_SWIN,
                             "--output_dir", str(out), "--per_device_train_batch_size", "8", "--max_train_steps", "3"])
    reset_accelerate()
    assert summary["steps"] == 3
    return out


def run_without_hf_mim(tmp_path, script: str) -> str:
    """Run `script` in a fresh interpreter that cannot import hf_mim (remote code only); returns its stdout."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    env.pop("PYTHONPATH", None)
    guard = "import sys\nsys.modules['hf_mim'] = None  # importing it fails\n"
    result = subprocess.run([sys.executable, "-c", guard + textwrap.dedent(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_pretraining_writes_a_swin_folder_with_card_and_picture(pretrained):
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "README.md", "reconstruction.png",
                 "swin.py", "modeling_simmim_swin.py", "image_processing_simmim_swin.py"):
        assert (pretrained / name).exists(), name
    config = json.loads((pretrained / "config.json").read_text())
    assert config["model_type"] == "mim_simmim_swin" and config["architectures"] == ["MimSimMIMSwinForPreTraining"]
    assert (config["patch_size"], config["embed_dim"], config["depths"], config["window_size"]) == (2, 16, [2, 2], 4)
    assert config["auto_map"]["AutoImageProcessor"] == "image_processing_simmim_swin.MimSimMIMSwinImageProcessor"
    card = (pretrained / "README.md").read_text()
    assert "A Swin Transformer encoder pretrained with **SIMMIM**" in card
    assert "Swin stages [2, 2] of widths [16, 32], heads [2, 4], window 4" in card
    assert "reconstruction.png" in card and "--backbone swin" in card


def test_finetune_then_pretraining_and_classifier_folders_run_without_hf_mim(tmp_path, pretrained):
    import hf_mim  # noqa: F401 (registers the classes for the reference runs here)
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForMaskedImageModeling, pipeline

    out = tmp_path / "ft"
    summary = finetune.main(["--model_name_or_path", str(pretrained), "--output_dir", str(out),
                             "--max_train_steps", "3", "--per_device_train_batch_size", "8",
                             "--per_device_eval_batch_size", "100"])
    reset_accelerate()
    assert summary["steps"] == 3
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["MimSimMIMSwinForImageClassification"] and len(config["id2label"]) == 10
    assert config["drop_path_rate"] == 0.1  # the Swin-B fine-tuning recipe's
    Image.new("L", (28, 28), 100).save(tmp_path / "image.png")
    predictions = pipeline("image-classification", model=str(out))(str(tmp_path / "image.png"), top_k=3)
    assert len(predictions) == 3 and {p["label"] for p in predictions} <= set(config["id2label"].values())

    batch = AutoImageProcessor.from_pretrained(pretrained)(Image.open(tmp_path / "image.png"), mask_seed=0,
                                                          return_bool_masked_pos=True, return_tensors="pt")
    expected = AutoModelForMaskedImageModeling.from_pretrained(pretrained).eval()(**batch).reconstruction
    torch.save(expected, tmp_path / "expected.pt")
    remote = run_without_hf_mim(tmp_path, f"""
        import torch
        from PIL import Image
        from transformers import AutoImageProcessor, AutoModelForMaskedImageModeling, pipeline
        model = AutoModelForMaskedImageModeling.from_pretrained({str(pretrained)!r}, trust_remote_code=True).eval()
        processor = AutoImageProcessor.from_pretrained({str(pretrained)!r}, trust_remote_code=True)
        batch = processor(Image.open("image.png"), return_bool_masked_pos=True, return_tensors="pt", mask_seed=0)
        out = model(**batch)
        torch.testing.assert_close(out.reconstruction, torch.load("expected.pt"), rtol=0, atol=1e-6)
        print(type(model).__name__, type(processor).__name__, tuple(out.reconstruction.shape), bool(out.loss > 0))
        classifier = pipeline("image-classification", model={str(out)!r}, trust_remote_code=True)
        print(type(classifier.model).__name__, [p["label"] for p in classifier("image.png", top_k=3)])
    """).splitlines()
    assert remote[0] == "MimSimMIMSwinForPreTraining MimSimMIMSwinImageProcessor (1, 3, 32, 32) True"
    assert remote[1] == f"MimSimMIMSwinForImageClassification {[p['label'] for p in predictions]}"


def test_finetune_uses_swins_layer_decay_over_all_stages(pretrained):
    import hf_mim
    from hf_mim.training import parameter_groups
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(pretrained, num_labels=3)
    model = hf_mim.backbone_of_config(config).classification_class(config)
    groups = parameter_groups(model, weight_decay=0.05, layer_decay=0.9)
    scales = {round(g["lr_scale"], 6) for g in groups}
    # 4 blocks over two stages: ids 0 (embedding) .. 5 (final norm, head), scale 0.9 ** (5 - id)
    assert scales == {round(0.9**k, 6) for k in range(6)}
    head = next(g for g in groups if any(p is model.head.weight for p in g["params"]))
    assert head["lr_scale"] == 1.0


@pytest.mark.parametrize("protocol", ["knn", "linear", "attentive"])
def test_probes_run_on_swin_features(tmp_path, pretrained, protocol):
    result = probe.main(["--model_name_or_path", str(pretrained), "--protocol", protocol, "--epochs", "1",
                         "--output_dir", str(tmp_path)])
    assert result["train_examples"] == 800 and result["eval_examples"] == 200 and 0 <= result["top1"] <= 1
    assert result["feature"] == ("patch tokens" if protocol == "attentive" else "mean")  # no cls token to take
