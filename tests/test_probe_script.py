"""Smoke tests of scripts/probe.py (every flag, the feature cache across protocols) and of
scripts/benchmark_fashion_mnist.py on idx files written by the test."""

import json

import pytest
import torch

from helpers import TINY_MAE_16PX, load_script, write_image_folder
from hf_mim.modeling.configuration_mae import MimMaeConfig
from hf_mim.modeling.modeling_mae import MimMaeForPreTraining

probe = load_script("probe")

TINY = TINY_MAE_16PX
pytestmark = pytest.mark.usefixtures("one_thread")


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
    common = ["--model_name_or_path", str(tiny_mae), "--protocol", "knn", "--dataset_name", str(saved),
              "--train_split", "train", "--eval_split", "holdout", "--pooling", "mean",
              "--output_dir", str(tmp_path / "out")]
    result = probe.main(common)
    assert result["feature"] == "mean" and result["train_examples"] == 60 and result["eval_examples"] == 30
    cached = set((tmp_path / "out" / "features").iterdir())
    whole = probe.main(common + ["--eval_crop_pct", "1"])  # other pixels: new features, not the cached ones
    assert len(set((tmp_path / "out" / "features").iterdir()) - cached) == 2 and whole["top1"] >= 0


@pytest.mark.parametrize("bad", [
    ["--protocol", "attentive", "--pooling", "mean"],
    ["--protocol", "knn", "--train_dir", "x"],
    ["--protocol", "knn", "--k", "0"],
    ["--protocol", "knn", "--eval_crop_pct", "1.2"],
])
def test_contradictory_flags_are_refused(bad, tiny_mae):
    with pytest.raises(SystemExit):
        probe.parse_args(["--model_name_or_path", str(tiny_mae)] + bad)


# ----------------------------------------------------------------------------------------------- benchmark


def write_fashion_idx(folder, per_class={"train": 2, "t10k": 1}, seed=0):
    """The four Fashion-MNIST idx files (gzipped), with a few 28x28 images per class whose brightness says the class."""
    import gzip
    import struct

    import numpy as np

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, count in per_class.items():
        labels = np.repeat(np.arange(10, dtype=np.uint8), count)
        images = (rng.integers(0, 10, (len(labels), 28, 28)) + labels[:, None, None] * 25).astype(np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
            with gzip.open(folder / f"{prefix}-{kind}-ubyte.gz", "wb") as f:
                f.write(header + array.tobytes())
    return folder


TINY_DEMO_MAE = ("hidden_size=32,num_hidden_layers=1,num_attention_heads=2,intermediate_size=64,decoder_hidden_size=16,"
                 "decoder_num_hidden_layers=1,decoder_num_attention_heads=2,decoder_intermediate_size=32")


def test_benchmark_runs_a_method_and_both_baselines(tmp_path):
    benchmark = load_script("benchmark_fashion_mnist")
    idx = write_fashion_idx(tmp_path / "idx")
    out = tmp_path / "bench"
    argv = ["--methods", "mae", "--fashion_mnist_dir", str(idx), "--train_subset", "20", "--test_subset", "10",
            "--pretrain_steps", "2", "--finetune_steps", "2", "--tokenizer_steps", "1", "--batch_size", "8",
            "--model_size", "demo", "--config_overrides", TINY_DEMO_MAE, "--pretrain_args", "--warmup_epochs 0",
            "--finetune_args", "--mixup 0 --cutmix 0 --layer_decay 0.75", "--pooling", "mean", "--k", "3",
            "--temperature", "0.1", "--probe_epochs", "2", "--probe_batch_size", "8", "--logreg_l2", "0.01",
            "--device", "cpu", "--num_threads", "1", "--seed", "0", "--output_dir", str(out)]
    report = benchmark.main(argv)
    assert report["data"] == {"train_examples": 20, "test_examples": 10,
                              "description": "Fashion-MNIST, class-balanced subsets"}
    mae = report["methods"]["mae"]
    assert mae["pretrain"]["steps"] == 2
    for label in ("pretrained", "random_init"):
        assert set(mae[label]) == {"knn", "linear", "finetune"}
        assert all(0.0 <= mae[label][protocol]["top1"] <= 1.0 for protocol in ("knn", "linear", "finetune"))
        assert mae[label]["finetune"]["steps"] == 2
    assert report["baselines"]["pixels_logistic_regression"]["top1"] == 1.0  # brightness is linearly separable
    saved = json.loads((out / "results.json").read_text())
    assert saved["methods"]["mae"]["pretrained"]["knn"] == mae["pretrained"]["knn"]
    table = (out / "results.md").read_text()
    assert "| MAE | pretrained (2 updates) |" in table and "| MAE | random init |" in table
    assert "| raw pixels |" in table and "--pretrain_steps 2" in table and report["date"] in table
    assert (out / "models" / "mae-pretrain-finetune-scratch" / "config.json").is_file()
    assert json.loads((out / "models" / "mae-pretrain" / "config.json").read_text())["hidden_size"] == 32
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "models" / "mae-pretrain" / "README.md")
    entries = {m["name"]: m["value"] for r in card.data.to_dict()["model-index"][0]["results"] for m in r["metrics"]}
    assert entries["kNN (k=3, mean token) top-1 accuracy"] == round(mae["pretrained"]["knn"]["top1"], 4)
    assert entries["fine-tune (2 updates) top-1 accuracy"] == round(mae["pretrained"]["finetune"]["top1"], 4)
    assert "## Fashion-MNIST benchmark" in card.text and "at random init" in card.text


def test_benchmark_skips_or_reports_methods_it_cannot_run(tmp_path, monkeypatch):
    benchmark = load_script("benchmark_fashion_mnist")
    real_load = benchmark.load_script
    monkeypatch.setattr(benchmark, "load_script", lambda name: None if name == "train_tokenizer" else real_load(name))
    monkeypatch.setattr(benchmark, "raw_pixel_baseline", lambda args, data_dir: {"top1": 0.5})  # tested above
    idx = write_fashion_idx(tmp_path / "idx")
    common = ["--methods", "cae", "--fashion_mnist_dir", str(idx), "--train_subset", "10", "--test_subset", "10",
              "--output_dir", str(tmp_path / "bench")]
    skipped = benchmark.main(common)["methods"]["cae"]
    assert "no scripts/train_tokenizer.py" in skipped["skipped"]
    failed = benchmark.main(common + ["--tokenizer_name_or_path", str(tmp_path / "missing")])["methods"]["cae"]
    assert "error" in failed  # recorded, and the run still writes its report
    assert "| CAE | failed:" in (tmp_path / "bench" / "results.md").read_text()
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--train_subset", "15"])  # not class-balanced
