"""scripts/benchmark.py: smoke runs on a tiny custom size (JSON structure, positive finite ratios, the peer really
is the same network) and the pure helpers (FLOP counts, round-robin order, paired ratios). Timings are never
asserted: they depend on the machine."""

import json
import math

import pytest

import hf_mim
from hf_mim.benchmarking import (SIZES, BackboneSize, inference_flops, paired_ratio, parse_custom_size,
                                 round_robin, training_flops)
from helpers import load_script

benchmark = load_script("benchmark")

TINY = ["--sizes", "custom", "--custom_size", "32,2,2,32,4", "--batch_size", "2", "--warmup", "1", "--repeats", "2",
        "--device", "cpu", "--threads", "1", "--seed", "0",
        "--config_overrides", "decoder_hidden_size=16,decoder_num_hidden_layers=1,decoder_num_attention_heads=2,"
                              "decoder_intermediate_size=32"]
WITH_PEERS = [name for name, method in hf_mim.METHODS.items() if method.benchmark_peer is not None]


def finite_positive(value):
    return isinstance(value, float) and math.isfinite(value) and value > 0


def check_phase(phase, batch_size=2, repeats=2):
    assert finite_positive(phase["flops_per_image"])
    ratio = phase["ratio"]
    assert len(ratio["per_round"]) == repeats
    assert all(finite_positive(r) for r in ratio["per_round"] + [ratio["median"], ratio["min"], ratio["max"]])
    cpu = phase["cpu_time_ratio"]  # CPU device: the ratio of process CPU seconds too
    assert len(cpu["per_round"]) == repeats and all(finite_positive(r) for r in cpu["per_round"])
    for side in ("ours", "peer"):
        stats = phase[side]
        assert len(stats["times_s"]) == repeats and all(finite_positive(t) for t in stats["times_s"])
        assert all(finite_positive(t) for t in stats["cpu_time"]["times_s"])
        assert stats["min_s"] <= stats["median_s"] <= stats["max_s"]
        assert stats["images_per_s"] == pytest.approx(batch_size / stats["median_s"])


@pytest.mark.parametrize("method", WITH_PEERS)
def test_every_method_with_a_peer_times_train_and_inference(tmp_path, method, capsys):
    out = tmp_path / "results.json"
    report = benchmark.main(["--methods", method, *TINY, "--dtype", "fp32", "--output", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["environment"]["device"] == "cpu" and report["environment"]["threads"] == 1
    (entry,) = report["results"]
    assert "error" not in entry, entry.get("error")
    assert entry["method"] == method and entry["size"] == "custom-32x2" and entry["batch_size"] == 2
    assert entry["dims"] == {"name": "custom-32x2", "hidden_size": 32, "num_hidden_layers": 2,
                             "num_attention_heads": 2, "image_size": 32, "patch_size": 4, "mlp": 128}
    assert entry["trainable_params"]["ours"] == entry["trainable_params"]["peer"]
    if entry["weights"].startswith("shared"):  # same weights, same inputs: the same network, to float tolerance
        assert entry["eval_loss"]["abs_diff"] < 1e-4
    check_phase(entry["train"])
    check_phase(entry["inference"])
    assert entry["train"]["ours"]["peak_memory_bytes"] is None  # CUDA only
    table = capsys.readouterr().out
    assert f"| {method} | custom-32x2 | train | 2 |" in table and "ratio peer/ours" in table


def test_mae_weights_are_shared_through_the_key_map(tmp_path):
    report = benchmark.main(["--methods", "mae", *TINY, "--phases", "inference"])
    (entry,) = report["results"]
    assert entry["weights"] == "shared (hf_mim.convert.HF_VIT_MAE)"
    assert "train" not in entry and "inference" in entry


def test_bf16_autocast_compile_profile_and_mfu(tmp_path, capsys):
    report = benchmark.main(["--methods", "mae", *TINY, "--phases", "train", "--dtype", "bf16", "--compile",
                             "--compile_backend", "eager", "--profile", "--peak_tflops", "1.0"])
    env = report["environment"]
    assert env["dtype"] == "bf16" and env["compile"] and env["compile_backend"] == "eager"
    train = report["results"][0]["train"]
    check_phase(train)
    assert finite_positive(train["ours"]["mfu"]) and finite_positive(train["peer"]["mfu"])
    assert "Self CPU" in train["profile"]["ours"] and "Self CPU" in train["profile"]["peer"]
    assert "### mae custom-32x2 train: ours" in capsys.readouterr().out


def test_data_mode_measures_the_input_pipeline(tmp_path, capsys):
    out = tmp_path / "data.json"
    report = benchmark.main(["--data", "--methods", "mae", "--sizes", "custom", "--custom_size", "32,2,2,32,4",
                             "--data_samples", "4", "--repeats", "2", "--warmup", "1", "--output", str(out)])
    (entry,) = json.loads(out.read_text())["data"]
    assert entry == json.loads(json.dumps(report["data"][0]))
    assert entry["method"] == "mae" and entry["image_size"] == 32 and entry["samples_per_round"] == 4
    assert entry["outputs"] == ["noise", "pixel_values"]  # MAE's processor draws the masking noise
    rates = entry["images_per_s"]
    assert len(rates["per_round"]) == 2 and all(finite_positive(r) for r in rates["per_round"])
    assert len(entry["vs_plain_backend"]["per_round"]) == 2 and finite_positive(entry["plain_backend_images_per_s"])
    assert set(entry["stage_us_per_image"]) == {"fetch", "decode", "augment", "processor"}
    device_path = entry["device_path"]
    assert device_path["source_size"] == 48 and device_path["device"] == "cpu"
    assert finite_positive(device_path["loader_images_per_s"]) and finite_positive(device_path["device_us_per_image"])
    printed = capsys.readouterr().out
    assert "img/s per worker" in printed and "(source 48 px)" in printed


def test_data_mode_reads_an_image_folder(tmp_path):
    import numpy as np
    from PIL import Image

    folder = tmp_path / "photos" / "any"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((300, 400, 3), 40 * i, dtype=np.uint8)).save(folder / f"{i}.jpg")
    report = benchmark.main(["--data", "--methods", "simmim", "--sizes", "custom", "--custom_size", "32,2,2,32,4",
                             "--data_samples", "3", "--repeats", "1", "--warmup", "0",
                             "--train_dir", str(tmp_path / "photos")])
    (entry,) = report["data"]
    assert entry["samples_per_round"] == 3 and entry["outputs"] == ["bool_masked_pos", "pixel_values"]


def test_flop_counts_match_the_published_vit_b_numbers():
    config = hf_mim.METHODS["mae"].config_class()  # canonical MAE ViT-B/16, decoder 512 x 8
    assert training_flops(hf_mim.METHODS["mae"], config, num_masked=147) / 1e9 == pytest.approx(58.7, abs=0.1)
    assert inference_flops(SIZES["base"]) / 1e9 == pytest.approx(35.1, abs=0.1)
    # the encoder grows with width squared; tiny and small are far cheaper than base
    assert inference_flops(SIZES["tiny"]) < inference_flops(SIZES["small"]) < inference_flops(SIZES["base"])


def test_round_robin_alternates_the_order_and_pairs_the_ratios():
    calls = []
    fns = {"ours": lambda: calls.append("ours"), "peer": lambda: calls.append("peer")}
    import torch

    times = round_robin(fns, warmup=1, repeats=3, device=torch.device("cpu"))
    assert calls == ["ours", "peer", "ours", "peer", "peer", "ours", "ours", "peer"]
    assert [len(v) for v in times.values()] == [3, 3]
    ratio = paired_ratio([1.0, 2.0, 4.0], [2.0, 2.0, 2.0])
    assert ratio["per_round"] == [2.0, 1.0, 0.5] and ratio["median"] == 1.0


def test_sizes_and_flags_are_checked():
    assert parse_custom_size("64,3,4,48,8") == BackboneSize("custom-64x3", 64, 3, 4, 48, 8)
    args = benchmark.parse_args(["--sizes", "tiny,base", "--batch_size", "16,4", "--device", "cpu"])
    assert [s.name for s in args.sizes] == ["tiny", "base"] and args.batch_sizes == [16, 4]
    assert args.methods == WITH_PEERS and args.peak_tflops is None
    for bad in (["--sizes", "huge"], ["--sizes", "custom"], ["--custom_size", "30,2,4,32,4"],
                ["--sizes", "tiny,base", "--batch_size", "1,2,3"], ["--phases", "backward"],
                ["--methods", "nope"]):
        with pytest.raises(SystemExit):
            benchmark.parse_args([*bad, "--device", "cpu"])
