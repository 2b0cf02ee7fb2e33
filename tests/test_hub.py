"""Offline Hub behaviour: a seeded hub cache serves AutoModel and the image-classification pipeline by repo id."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from huggingface_hub import ModelCard

from hf_mim.hub import LocalHubApi, push_folder, seed_hub_cache
from hf_mim.modeling.configuration_mae import MimMaeConfig
from hf_mim.modeling.image_processing_mae import MimMaeImageProcessor
from hf_mim.modeling.modeling_mae import MimMaeForImageClassification, MimMaeForPreTraining

TINY = dict(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
            decoder_intermediate_size=32)


def test_from_pretrained_and_pipeline_by_repo_id_from_a_seeded_cache(tmp_path):
    torch.manual_seed(0)
    encoder_dir, classifier_dir = tmp_path / "enc", tmp_path / "cls"
    MimMaeForPreTraining(MimMaeConfig(**TINY)).save_pretrained(encoder_dir)
    labels = {0: "coat", 1: "shoe", 2: "bag"}
    MimMaeForImageClassification(MimMaeConfig(**TINY, num_labels=3, id2label=labels)).save_pretrained(classifier_dir)
    for folder in (encoder_dir, classifier_dir):
        MimMaeImageProcessor(size={"height": 32, "width": 32}, patch_size=4).save_pretrained(folder)
    cache = tmp_path / "hub"
    seed_hub_cache(encoder_dir, "org/mae-vit-tiny", cache)
    seed_hub_cache(classifier_dir, "org/mae-vit-tiny-ft", cache)
    script = textwrap.dedent("""
        import hf_mim
        from PIL import Image
        from transformers import AutoModel, pipeline
        model = AutoModel.from_pretrained("org/mae-vit-tiny")
        classifier = pipeline("image-classification", model="org/mae-vit-tiny-ft")
        out = classifier(Image.new("RGB", (40, 30), "red"))
        print(type(model).__name__, sorted(p["label"] for p in out))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path,
                            stdin=subprocess.DEVNULL, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[0] == "MimMaeModel ['bag', 'coat', 'shoe']"
    assert "Do you wish to run the custom code" not in result.stdout + result.stderr


def test_push_folder_creates_repo_and_uploads_without_checkpoints(tmp_path):
    folder = tmp_path / "out"
    (folder / "checkpoints" / "step_1").mkdir(parents=True)
    (folder / "checkpoints" / "step_1" / "x.bin").write_text("state")
    (folder / "config.json").write_text(json.dumps({"model_type": "mim_mae"}))
    api = LocalHubApi(tmp_path / "cache")
    commit = push_folder(folder, "org/name", api=api)
    snapshot = tmp_path / "cache" / "models--org--name" / "snapshots" / commit
    assert api.created == ["org/name"] and (snapshot / "config.json").exists()
    assert not (snapshot / "checkpoints").exists()
    assert len(commit) == 40


def test_model_card_has_model_index_results(tmp_path):
    import hf_mim
    from hf_mim.hub import write_model_card

    write_model_card(tmp_path, model_name="org/mae-vit-tiny", method=hf_mim.get_method("mae"),
                     config=MimMaeConfig(**TINY), data_source="sample", steps=10, effective_batch=8,
                     learning_rate=1e-3, final_loss=0.5, command="python scripts/pretrain.py --method mae",
                     results=[{"metric": "accuracy", "value": 0.75, "protocol": "kNN top-1"}])
    card = ModelCard.load(tmp_path / "README.md")
    index = card.data.to_dict()["model-index"]
    assert index[0]["name"] == "org/mae-vit-tiny"
    assert index[0]["results"][0]["metrics"][0]["value"] == 0.75
    assert "| kNN top-1 | accuracy | 0.7500 |" in card.text


def test_push_script_checks_the_folder_then_uploads(tmp_path, monkeypatch):
    import hf_mim.hub as hub
    from helpers import load_script

    push = load_script("push_to_hub")
    cache = tmp_path / "cache"
    monkeypatch.setattr(hub, "HfApi", lambda: hub.LocalHubApi(cache))
    folder = tmp_path / "model"
    MimMaeForPreTraining(MimMaeConfig(**TINY)).save_pretrained(folder)
    MimMaeImageProcessor().save_pretrained(folder)
    import pytest

    with pytest.raises(FileNotFoundError, match="README.md"):
        push.main(["--model_dir", str(folder), "--hub_model_id", "org/x"])
    (folder / "README.md").write_text("card")
    (folder / "extra.bin").write_text("pickle")
    with pytest.raises(ValueError, match="safetensors only"):
        push.main(["--model_dir", str(folder), "--hub_model_id", "org/x"])
    (folder / "extra.bin").unlink()
    commit = push.main(["--model_dir", str(folder), "--hub_model_id", "org/x", "--private", "--commit_message", "v1"])
    assert (cache / "models--org--x" / "snapshots" / commit / "modeling_mae.py").exists()


def test_benchmark_results_merge_into_a_card_without_duplicates(tmp_path):
    import hf_mim
    from hf_mim.hub import add_eval_results, write_model_card

    write_model_card(tmp_path, model_name="org/mae-vit-tiny", method=hf_mim.get_method("mae"),
                     config=MimMaeConfig(**TINY), data_source="sample", steps=10, effective_batch=8,
                     learning_rate=1e-3, final_loss=0.5, command="python scripts/pretrain.py --method mae",
                     results=[{"metric": "accuracy", "value": 0.75, "protocol": "kNN top-1"}])
    for knn in (0.61, 0.62):  # a re-run replaces the entry and the section
        add_eval_results(tmp_path, [{"metric": "accuracy", "value": knn, "protocol": "kNN top-1"},
                                    {"metric": "accuracy", "value": 0.7, "protocol": "linear probe top-1"}],
                         dataset_name="fashion_mnist", section="Fashion-MNIST benchmark", section_text="Run on a CPU.")
    card = ModelCard.load(tmp_path / "README.md")
    metrics = card.data.to_dict()["model-index"][0]["results"]
    values = sorted((m["name"], m["value"]) for result in metrics for m in result["metrics"])
    assert values == [("kNN top-1 accuracy", 0.62), ("linear probe top-1 accuracy", 0.7)]
    assert card.text.count("## Fashion-MNIST benchmark") == 1 and "| kNN top-1 | accuracy | 0.6200 |" in card.text
    assert "## Training" in card.text
    with pytest.raises(FileNotFoundError, match="write the card"):
        add_eval_results(tmp_path / "missing", [], dataset_name="x", section="y")


def test_pipeline_on_a_training_decoded_16_bit_image_scores_what_training_saw(tmp_path):
    """The README's advice: a pipeline given a 16-bit PNG's path clips it (PIL's convert), given the image that
    `hf_mim.data.decode_image` returns it scores the pixels of the training decoder."""
    import numpy as np
    from PIL import Image
    from transformers import pipeline

    from hf_mim.data import decode_image

    torch.manual_seed(0)
    folder = tmp_path / "cls"
    model = MimMaeForImageClassification(MimMaeConfig(**TINY, num_labels=3)).eval()
    model.save_pretrained(folder)
    processor = MimMaeImageProcessor(size={"height": 32, "width": 32}, patch_size=4)
    processor.save_pretrained(folder)
    path = tmp_path / "scan.png"
    Image.fromarray(np.linspace(0, 65535, 48 * 40).reshape(48, 40).astype(np.uint16)).save(path)
    with torch.no_grad():
        logits = model(**processor(decode_image(path), return_tensors="pt")).logits[0]
    expected = logits.softmax(-1).tolist()
    classifier = pipeline("image-classification", model=str(folder))
    decoded = {p["label"]: p["score"] for p in classifier(decode_image(path))}
    labels = [model.config.id2label[i] for i in range(3)]
    assert [decoded[label] for label in labels] == pytest.approx(expected, abs=1e-6)
    trained_pixels = processor(decode_image(path), return_tensors="pt")["pixel_values"]
    assert torch.equal(classifier.preprocess(decode_image(path))["pixel_values"], trained_pixels)
    clipped_pixels = classifier.preprocess(str(path))["pixel_values"]
    assert (clipped_pixels - trained_pixels).abs().max() > 1.0  # the path loses the picture


def test_push_script_dry_run_checks_and_lists_the_upload_offline(tmp_path, monkeypatch, capsys):
    """--dry_run: the same checks, then the files that would go up (checkpoints and logs stay local), no Hub call;
    a card whose base_model is a local folder stops a push until --base_model names a Hub id."""
    import hf_mim.hub as hub
    from helpers import load_script
    from hf_mim.hub import write_model_card

    push = load_script("push_to_hub")
    monkeypatch.setattr(hub, "HfApi", lambda: pytest.fail("a dry run must not reach the Hub"))
    base, folder = tmp_path / "pretrain", tmp_path / "model"
    MimMaeForPreTraining(MimMaeConfig(**TINY)).save_pretrained(base)
    MimMaeForImageClassification(MimMaeConfig(**TINY, num_labels=2)).save_pretrained(folder)
    MimMaeImageProcessor.for_evaluation(MimMaeConfig(**TINY)).save_pretrained(folder)
    import hf_mim

    write_model_card(folder, model_name="x", method=hf_mim.get_method("mae"), config=MimMaeConfig(**TINY),
                     data_source="sample", steps=1, effective_batch=8, learning_rate=1e-3, final_loss=0.5,
                     command="python scripts/finetune.py", weights_from=str(base), is_classifier=True)
    (folder / "checkpoints" / "step_1").mkdir(parents=True)
    (folder / "checkpoints" / "step_1" / "model.safetensors").write_text("state")
    (folder / "train_log.jsonl").write_text("{}\n")
    args = ["--model_dir", str(folder), "--hub_model_id", "org/x", "--dry_run"]
    with pytest.raises(ValueError, match="a local folder, and the Hub accepts only model ids: push that model first"):
        push.main(args)
    assert push.main(args + ["--base_model", "org/mae-pretrain"]) is None
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    everything = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
    assert listed == [name for name in everything if name not in ("checkpoints/step_1/model.safetensors",
                                                                  "train_log.jsonl")]
    assert {"README.md", "config.json", "preprocessor_config.json", "model.safetensors"} <= set(listed)
    assert ModelCard.load(folder / "README.md").data.base_model == str(base)  # a dry run changes nothing
