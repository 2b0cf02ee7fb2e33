"""The user path of MaskFeat video, through the scripts at tiny sizes: pretrain -> remote-code load without hf_mim,
fine-tune -> AutoModelForVideoClassification and the video-classification pipeline on an .mp4, probes on clip
features, unreadable clips counted, and a SIGKILLed run resumed to the same weights bit for bit."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from helpers import REPO_ROOT, load_script
from test_reliability import pretrain_until_checkpoint_then_sigkill, same_weights, script_env

pytest.importorskip("av")

pretrain = load_script("pretrain")
finetune = load_script("finetune")
probe = load_script("probe")

TINY_VIDEO = "hidden_size=32,num_hidden_layers=1,num_attention_heads=2,intermediate_size=64,num_frames=4"
PRETRAIN = ["--method", "maskfeat", "--backbone", "video-vit", "--modality", "video", "--config_overrides", TINY_VIDEO,
            "--per_device_train_batch_size", "8", "--logging_steps", "1", "--seed", "3", "--report_to", "none"]


def reset_accelerate() -> None:
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def run_without_hf_mim(code: str, **env) -> str:
    """Run `code` in a fresh Python where `import hf_mim` fails (with `env` added to the environment); its stdout."""
    prelude = "import sys\nsys.modules['hf_mim'] = None\n"
    result = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                            env={**script_env(), **env}, cwd="/", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("video") / "pretrain"
    summary = pretrain.main(PRETRAIN + ["--max_train_steps", "3", "--output_dir", str(out)])
    reset_accelerate()
    return out, summary


def test_pretraining_on_the_embedded_clips_saves_a_folder_that_loads_without_hf_mim(pretrained, tmp_path):
    from hf_mim.hub import seed_hub_cache

    out, summary = pretrained
    assert summary["steps"] == 3 and summary["skipped_images"] == 0 and np.isfinite(summary["final_loss"])
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "mim_maskfeat_video" and config["num_frames"] == 4
    assert config["auto_map"]["AutoModelForVideoClassification"].endswith("MimMaskFeatVideoForVideoClassification")
    card = (out / "README.md").read_text()
    assert "tubelets of 2 frames x 8x8 px (2 x 4 x 4 space-time tokens)" in card and "- video" in card
    assert "Columns: the first frame of every tubelet, clip by clip" in card
    from PIL import Image

    assert Image.open(out / "reconstruction.png").size[1] > 3 * 32  # three rows: masked, HOG target, predicted
    seed_hub_cache(out, "org/maskfeat-video-tiny", tmp_path / "hub")
    printed = run_without_hf_mim(f"""
        import torch
        from transformers import AutoModel
        for name in ({str(out)!r}, "org/maskfeat-video-tiny"):  # the folder, then the offline hub cache
            model = AutoModel.from_pretrained(name, trust_remote_code=True)
            print(type(model).__name__, tuple(model(torch.randn(1, 4, 3, 32, 32)).last_hidden_state.shape))
    """, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"))
    assert printed.split("\n")[-3:-1] == ["MimMaskFeatVideoModel (1, 33, 32)"] * 2


def test_finetuned_folder_loads_as_a_video_classifier_and_runs_in_the_pipeline(pretrained, tmp_path):
    out = tmp_path / "ft"
    summary = finetune.main(["--model_name_or_path", str(pretrained[0]), "--max_train_steps", "3",
                             "--per_device_train_batch_size", "8", "--output_dir", str(out), "--report_to", "none"])
    reset_accelerate()
    assert summary["steps"] == 3 and summary["best_epoch"] == 0
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["MimMaskFeatVideoForVideoClassification"]
    assert (config["pooling"], config["drop_path_rate"], len(config["id2label"])) == ("mean", 0.1, 10)
    assert "pipeline_tag: video-classification" in (out / "README.md").read_text()
    clip = REPO_ROOT / "hf_mim" / "sample_data" / "fashion_mnist_video" / "test" / "0011_ankle_boot.mp4"
    printed = run_without_hf_mim(f"""
        from transformers import AutoModelForVideoClassification, pipeline
        model = AutoModelForVideoClassification.from_pretrained({str(out)!r}, trust_remote_code=True)
        classify = pipeline("video-classification", model={str(out)!r}, trust_remote_code=True)
        result = classify({str(clip)!r}, top_k=3)
        print(type(model).__name__, len(result), sorted(result[0]))
    """)
    assert printed.split("\n")[-2] == "MimMaskFeatVideoForVideoClassification 3 ['label', 'score']"


@pytest.mark.parametrize("protocol", ["knn", "linear"])
def test_probes_score_clip_features(pretrained, tmp_path, protocol):
    result = probe.main(["--model_name_or_path", str(pretrained[0]), "--protocol", protocol, "--epochs", "2",
                         "--output_dir", str(tmp_path)])
    assert (result["train_examples"], result["eval_examples"], result["num_classes"]) == (200, 50, 10)
    assert 0.0 <= result["top1"] <= 1.0 and "video sample" in result["train_data"]


def write_clip_folder(root, clips_per_class: int = 3) -> None:
    from hf_mim.video_data import encode_video

    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for index in range(clips_per_class):
            encode_video(root / name / f"{index}.mp4", rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8))
    (root / "a" / "broken.mp4").write_bytes(b"not a video at all")


def test_unreadable_clips_in_a_train_dir_are_skipped_and_counted(tmp_path):
    write_clip_folder(tmp_path / "clips")
    summary = pretrain.main(PRETRAIN + ["--train_dir", str(tmp_path / "clips"), "--model_size", "demo",
                                        "--max_train_steps", "2", "--per_device_train_batch_size", "7",
                                        "--output_dir", str(tmp_path / "out")])
    reset_accelerate()
    assert summary["steps"] == 2 and summary["skipped_images"] == 2  # the broken clip, once per epoch
    assert (tmp_path / "out" / "model.safetensors").exists()


def test_dataset_name_is_refused_for_video_with_the_fix(tmp_path):
    with pytest.raises(SystemExit, match="--modality video reads clips from --train_dir"):
        pretrain.main(PRETRAIN + ["--dataset_name", "some/dataset", "--output_dir", str(tmp_path)])
    reset_accelerate()


def test_sigkill_then_resume_gives_bitwise_identical_weights(tmp_path):
    steps = ["--max_train_steps", "12", "--checkpointing_steps", "3"]
    straight = tmp_path / "straight"
    pretrain.main(PRETRAIN + steps + ["--output_dir", str(straight)])
    reset_accelerate()
    killed = tmp_path / "killed"
    pretrain_until_checkpoint_then_sigkill(PRETRAIN + steps, killed, "step_6", timeout=300)
    pretrain.main(PRETRAIN + steps + ["--output_dir", str(killed), "--resume_from_checkpoint", "latest"])
    reset_accelerate()
    identical, worst = same_weights(straight, killed)
    assert identical, f"resumed weights differ by {worst}"


def test_benchmark_times_the_video_encoder_against_videomae_and_says_what_differs(tmp_path):
    benchmark = load_script("benchmark")
    report = benchmark.main(["--methods", "maskfeat", "--backbone", "video-vit", "--sizes", "custom", "--custom_size",
                             "32,1,2,32,8", "--batch_size", "2", "--warmup", "0", "--repeats", "1", "--threads", "1",
                             "--output", str(tmp_path / "speed.json")])
    entry = report["results"][0]
    assert "error" not in entry, entry.get("error")
    assert entry["peer"].startswith("VideoMAEForPreTraining / VideoMAEModel")
    assert entry["config"]["num_frames"] == 16 and entry["num_masked"] == round(0.4 * 8 * 16)
    assert any(note.startswith("targets differ") for note in entry["notes"])
    # inference: cls + 8 x 4 x 4 tokens of width 32, tubelet embedding included
    tokens = 8 * 16
    expected = 2 * tokens * 3 * 2 * 8 * 8 * 32 + (8 * 129 * 32 * 32 + 4 * 129 * 32 * 128 + 4 * 129 * 129 * 32)
    assert entry["inference"]["flops_per_image"] == expected
    assert entry["train"]["ratio"]["median"] > 0


def test_video_results_benchmark_runs_end_to_end(tmp_path):
    benchmark_video = load_script("benchmark_video")
    report = benchmark_video.main([
        "--output_dir", str(tmp_path), "--pretrain_steps", "2", "--finetune_steps", "1", "--batch_size", "8",
        "--pretrain_args", f"--config_overrides {TINY_VIDEO}", "--finetune_args", "--mixup 0 --cutmix 0",
        "--pooling", "cls", "--probe_epochs", "1", "--num_threads", "1", "--seed", "1",
    ])
    reset_accelerate()
    assert list(report["rows"]) == ["pretrained", "random init"] and report["pretrain_steps"] == 2
    assert all(0 <= value <= 1 for row in report["rows"].values() for value in row.values())
    table = (tmp_path / "results.md").read_text()
    assert "| MaskFeat video demo ViT, random init |" in table and "scripts/benchmark_video.py" in table
