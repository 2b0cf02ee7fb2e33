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


# ----------------------------------------------------------------------------------------------- conversion

convert = load_script("convert_checkpoint")
TINY_SWIN_FIELDS = dict(image_size=32, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4,
                        encoder_stride=4)


def official_swin_checkpoint(path, classifier: bool = False):
    """A fake microsoft/SimMIM Swin checkpoint from a random model of ours: our names under `encoder.` (pretraining)
    or at the top level (fine-tuned), plus the derived buffers the official code saves (bias index, shift masks)."""
    from hf_mim.modeling.configuration_simmim_swin import MimSimMIMSwinConfig
    from hf_mim.modeling.modeling_simmim_swin import MimSimMIMSwinForImageClassification, MimSimMIMSwinForPreTraining
    from hf_mim.modeling.swin import WindowAttention

    torch.manual_seed(0)
    config = MimSimMIMSwinConfig(**TINY_SWIN_FIELDS, mask_patch_size=8, num_labels=3)
    model = (MimSimMIMSwinForImageClassification if classifier else MimSimMIMSwinForPreTraining)(config).eval()
    prefix = "" if classifier else "encoder."
    state_dict = {(prefix + k.removeprefix("swin.") if k.startswith("swin.") else k): v.clone()
                  for k, v in model.state_dict().items()}
    for name, module in model.named_modules():
        if isinstance(module, WindowAttention):
            block = prefix + name.removeprefix("swin.").removesuffix(".attn")
            state_dict[f"{block}.attn.relative_position_index"] = module.relative_position_index.clone()
            if module.shift_mask is not None:
                state_dict[f"{block}.attn_mask"] = module.shift_mask.clone()
    torch.save({"model": state_dict}, path)
    return model


@pytest.mark.parametrize("classifier", [False, True], ids=["pretraining", "fine-tuned"])
def test_official_swin_checkpoint_is_detected_and_round_trips_exactly(tmp_path, classifier):
    from safetensors.torch import load_file

    model = official_swin_checkpoint(tmp_path / "swin.pth", classifier)
    summary = convert.main(["--from", "simmim-official", "--checkpoint", str(tmp_path / "swin.pth"),
                            "--output_dir", str(tmp_path / "out"), "--config_overrides", "mask_patch_size=8"])
    expected = "MimSimMIMSwinForImageClassification" if classifier else "MimSimMIMSwinForPreTraining"
    assert summary["model_class"] == expected and summary["dropped"] == []  # index and shift masks: rebuilt
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert {k: config[k] for k in TINY_SWIN_FIELDS} == TINY_SWIN_FIELDS  # image size read off the shift masks
    saved = load_file(tmp_path / "out" / "model.safetensors")
    assert saved.keys() == model.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


def test_official_swin_bias_tables_resample_for_another_window_and_image_size(tmp_path):
    from safetensors.torch import load_file

    from hf_mim.convert_swin import resize_window_bias_tables

    model = official_swin_checkpoint(tmp_path / "swin.pth")
    convert.main(["--from", "simmim-official", "--checkpoint", str(tmp_path / "swin.pth"), "--output_dir",
                  str(tmp_path / "out"), "--image_size", "64", "--config_overrides", "mask_patch_size=8,window_size=8"])
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["image_size"], config["window_size"]) == (64, 8)
    saved = load_file(tmp_path / "out" / "model.safetensors")
    expected = dict(model.state_dict())
    resize_window_bias_tables(expected, 8)
    key = "swin.layers.1.blocks.1.attn.relative_position_bias_table"
    assert saved[key].shape == (15 * 15, 4) and torch.equal(saved[key], expected[key])
    with pytest.raises(ValueError, match="window_size"):  # 64 px at window 6: stage grids 32 and 16 do not tile
        convert.main(["--from", "simmim-official", "--checkpoint", str(tmp_path / "swin.pth"), "--output_dir",
                      str(tmp_path / "bad"), "--config_overrides", "mask_patch_size=8,window_size=6"])


@pytest.mark.parametrize("architecture", ["SwinForMaskedImageModeling", "SwinModel", "SwinForImageClassification"])
def test_transformers_swin_folders_convert_with_equal_outputs(tmp_path, architecture):
    import transformers
    from transformers import SwinConfig

    torch.manual_seed(0)
    reference = getattr(transformers, architecture)(SwinConfig(**TINY_SWIN_FIELDS, num_labels=3))
    reference.save_pretrained(tmp_path / "hf")
    summary = convert.main(["--from", "hf-swin-mim", "--checkpoint", str(tmp_path / "hf"), "--output_dir",
                            str(tmp_path / "out"), "--config_overrides", "mask_patch_size=8"])
    expected = {"SwinForMaskedImageModeling": "MimSimMIMSwinForPreTraining", "SwinModel": "MimSimMIMSwinModel",
                "SwinForImageClassification": "MimSimMIMSwinForImageClassification"}[architecture]
    assert summary["model_class"] == expected and summary["max_abs_difference"] < 1e-5
    if architecture != "SwinForImageClassification":  # transformers' SwinModel has no mask token by default
        config = json.loads((tmp_path / "out" / "config.json").read_text())
        assert config["use_mask_token"] is (architecture == "SwinForMaskedImageModeling")


# ----------------------------------------------------------------------------------------------- benchmark

benchmark = load_script("benchmark")


def test_swin_flop_count_matches_the_published_swin_t_s_b_numbers():
    from hf_mim.benchmarking import SWIN_SIZES, swin_forward_flops, swin_head_flops
    from hf_mim.modeling.configuration_simmim_swin import MimSimMIMSwinConfig

    published_gmacs = {"tiny": 4.5, "small": 8.7, "base": 15.4}  # Swin-T/S/B at 224 px, window 7 (Liu et al.)
    for name, fields in SWIN_SIZES.items():
        config = MimSimMIMSwinConfig(**fields, image_size=224, window_size=7)
        encoder = swin_forward_flops(config) - swin_head_flops(config)
        assert encoder / 2e9 == pytest.approx(published_gmacs[name], abs=0.05), name


def test_benchmark_times_simmim_swin_against_transformers_swin_with_shared_weights(tmp_path, capsys):
    report = benchmark.main(["--methods", "simmim", "--backbone", "swin", "--sizes", "tiny", "--batch_size", "1",
                             "--config_overrides", "embed_dim=24,image_size=64,window_size=2", "--warmup", "0",
                             "--repeats", "1", "--device", "cpu", "--threads", "1", "--output",
                             str(tmp_path / "b.json")])
    (entry,) = report["results"]
    assert entry["peer"] == "SwinForMaskedImageModeling" and entry["backbone"] == "swin"
    assert entry["weights"] == "shared (hf_mim.convert_swin.HF_SWIN)"
    assert entry["trainable_params"]["ours"] == entry["trainable_params"]["peer"]
    assert entry["eval_loss"]["abs_diff"] < 1e-5
    assert entry["config"]["depths"] == [2, 2, 6, 2] and entry["dims"] is None and entry["train"]["ratio"]["median"] > 0
    assert "| simmim-swin | tiny | train | 1 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # MAE has no Swin
        benchmark.parse_args(["--methods", "mae", "--backbone", "swin"])


# ----------------------------------------------------------------------------------------------- Fashion-MNIST


def test_fashion_mnist_benchmark_runs_a_simmim_swin_row(tmp_path):
    from test_probe_script import write_fashion_idx

    fmnist = load_script("benchmark_fashion_mnist")
    out = tmp_path / "bench"
    report = fmnist.main(["--methods", "simmim:swin", "--fashion_mnist_dir", str(write_fashion_idx(tmp_path / "idx")),
                          "--train_subset", "20", "--test_subset", "10", "--pretrain_steps", "2", "--finetune_steps",
                          "2", "--batch_size", "8", "--config_overrides", TINY_SWIN, "--probe_epochs", "2",
                          "--probe_batch_size", "8", "--k", "3", "--device", "cpu", "--output_dir", str(out)])
    row = report["methods"]["simmim-swin"]
    assert row["pretrain"]["steps"] == 2
    for label in ("pretrained", "random_init"):
        assert all(0.0 <= row[label][protocol]["top1"] <= 1.0 for protocol in ("knn", "linear", "finetune"))
    assert json.loads((out / "models" / "simmim-swin-pretrain" / "config.json").read_text())["embed_dim"] == 16
    table = (out / "results.md").read_text()
    assert "| SIMMIM-SWIN | pretrained (2 updates) |" in table and "simmim-swin: demo swin (" in table
    with pytest.raises(SystemExit):
        fmnist.parse_args(["--methods", "mae:swin"])
