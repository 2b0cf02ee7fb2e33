"""Smoke tests of scripts/probe.py (every flag, the feature cache across protocols) and of
scripts/benchmark_fashion_mnist.py on idx files written by the test."""

import json

import pytest
import torch

from helpers import load_script, write_image_folder
from hf_mim.modeling.configuration_mae import MimMaeConfig
from hf_mim.modeling.modeling_mae import MimMaeForPreTraining

probe = load_script("probe")

TINY = dict(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
            decoder_intermediate_size=32)


@pytest.fixture(scope="module")
def tiny_mae(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "mae"
    torch.manual_seed(0)
    MimMaeForPreTraining(MimMaeConfig(**TINY)).save_pretrained(folder)
    return folder


def test_knn_then_linear_on_the_sample_reuse_the_cached_features(tmp_path, tiny_mae, monkeypatch, capsys):
    import hf_mim.evaluation as evaluation

    out = tmp_path / "probe"
    knn = probe.main(["--model_name_or_path", str(tiny_mae), "--protocol", "knn", "--output_dir", str(out),
                      "--k", "5", "--temperature", "0.1"])
    assert knn["train_examples"] == 800 and knn["eval_examples"] == 200 and knn["num_classes"] == 10
    assert 0.0 <= knn["top1"] <= knn["top5"] <= 1.0 and knn["feature"] == "cls" and knn["weights"] == "pretrained"
    assert json.loads((out / "probe_knn.json").read_text())["top1"] == knn["top1"]
    assert "| knn |" in capsys.readouterr().out
    cached = sorted(p.name for p in (out / "features").iterdir())
    assert len(cached) == 2 and all("-cls-" in name for name in cached)

    def no_encoder(*args, **kwargs):
        raise AssertionError("features should come from the cache")

    monkeypatch.setattr(evaluation, "encode_batches", no_encoder)
    args = ["--model_name_or_path", str(tiny_mae), "--protocol", "linear", "--output_dir", str(out),
            "--epochs", "3", "--batch_size", "64", "--learning_rate", "0.05", "--weight_decay", "1e-4",
            "--warmup_epochs", "1", "--seed", "1"]
    linear = probe.main(args)
    assert linear["learning_rate"] == 0.05 and linear["epochs"] == 3 and 0.0 <= linear["top1"] <= 1.0
    assert probe.main(args)["top1"] == linear["top1"]  # seeded: the same numbers again
    assert (out / "probe_linear.json").is_file()


def test_attentive_probe_of_a_random_init_encoder_on_image_folders(tmp_path, tiny_mae):
    train = write_image_folder(tmp_path / "train", per_class=6)
    val = write_image_folder(tmp_path / "val", per_class=3, seed=1)
    cache = tmp_path / "cache"
    result = probe.main([
        "--model_name_or_path", str(tiny_mae), "--protocol", "attentive", "--random_init", "--train_dir", str(train),
        "--validation_dir", str(val), "--image_column", "image", "--label_column", "label",
        "--output_dir", str(tmp_path / "out"), "--feature_cache_dir", str(cache), "--feature_batch_size", "4",
        "--dataloader_num_workers", "0", "--device", "cpu", "--epochs", "2", "--batch_size", "4", "--seed", "2",
    ])
    assert result["feature"] == "patch tokens" and result["weights"] == "random init (seed 2)"
    assert result["train_examples"] == 12 and result["eval_examples"] == 6 and result["num_classes"] == 2
    assert "top5" not in result  # two classes: top-5 means nothing
    assert all("-random-" in p.name and "-tokens-" in p.name for p in cache.iterdir())


def test_saved_dataset_with_named_splits_and_mean_pooling(tmp_path, tiny_mae):
    import datasets

    from hf_mim.data import load_image_dataset

    sample = load_image_dataset(split="test").dataset
    saved = tmp_path / "dd"
    datasets.DatasetDict({"train": sample.select(range(60)), "holdout": sample.select(range(60, 90))}).save_to_disk(str(saved))
    result = probe.main(["--model_name_or_path", str(tiny_mae), "--protocol", "knn", "--dataset_name", str(saved),
                         "--train_split", "train", "--eval_split", "holdout", "--pooling", "mean",
                         "--output_dir", str(tmp_path / "out")])
    assert result["feature"] == "mean" and result["train_examples"] == 60 and result["eval_examples"] == 30


@pytest.mark.parametrize("bad", [
    ["--protocol", "attentive", "--pooling", "mean"],
    ["--protocol", "knn", "--train_dir", "x"],
    ["--protocol", "knn", "--k", "0"],
])
def test_contradictory_flags_are_refused(bad, tiny_mae):
    with pytest.raises(SystemExit):
        probe.parse_args(["--model_name_or_path", str(tiny_mae)] + bad)
