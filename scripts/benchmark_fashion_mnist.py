#!/usr/bin/env python
"""Does masked image modeling help on real images? Fashion-MNIST, every method under one budget, two baselines.

    python scripts/benchmark_fashion_mnist.py --output_dir outputs/benchmark-fmnist          # CPU recipe
    python scripts/benchmark_fashion_mnist.py --methods mae --train_subset 500 --test_subset 200 \\
        --pretrain_steps 20 --finetune_steps 20                                                # smoke run
    python scripts/benchmark_fashion_mnist.py --device cuda --train_subset 0 --test_subset 0 \\
        --pretrain_steps 20000 --finetune_steps 5000 --batch_size 256                          # GPU-sized

1. The idx files (Debian package `dataset-fashion-mnist`) become a `datasets` DatasetDict on disk, optionally a
   class-balanced subset (`--train_subset`, `--test_subset`; 0 = the full 60k / 10k).
2. Each method of `--methods` pretrains the same demo ViT (32 px, patch 4, `hf_mim_cli.recipes.DEMO_BACKBONE`) for the
   same number of updates at the same batch (`scripts/pretrain.py`). BEiT and CAE first get a visual tokenizer
   (`scripts/train_tokenizer.py`, trained once) or are skipped with the reason.
3. Its encoder is scored on the test split by kNN and a linear probe (`scripts/probe.py`, cached features) and by
   fine-tuning (`scripts/finetune.py`, `--finetune_steps`, accuracy after the last update).
4. Baselines measured in the same run: the same encoder at random init (kNN, linear probe, fine-tuning from
   scratch with the same recipe and steps) and logistic regression on the raw pixels.

Writes `results.json` and `results.md` (table, exact command, date, time per stage) into `--output_dir`.

The defaults are sized for 2 CPU cores. Single-thread seconds per update at batch 64 (data included): pretraining
MAE 0.2, SimMIM 0.5, MaskFeat 0.55, BEiT 0.7, CAE 0.75; fine-tuning 0.5; dVAE 1.4; features about 3 ms per image.
So 5 methods x 400 pretraining updates, 10 x 150 fine-tuning updates, 300 tokenizer updates and 10 x 6000 feature
images come to about 41 minutes on one thread. On cores that other jobs share, `--num_threads 1` is much faster
than torch's default of one thread per core (OpenMP waits on busy cores).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import logging
import os
import platform
import shlex
import sys
import time
import traceback
from pathlib import Path

from hf_mim_cli.arguments import (ArgumentParser, answer_help_early, non_negative_float, non_negative_int,
                                  positive_float, positive_int)
from hf_mim_cli.catalog import method_names
from hf_mim_cli.recipes import DEMO_BACKBONE

logger = logging.getLogger("hf_mim.benchmark_fashion_mnist")
SCRIPTS_DIR = Path(__file__).resolve().parent
# Short schedules: mixup, cutmix, RandAugment and random erasing regularise 100-epoch runs; in a few hundred
# updates they only slow learning, and the recipes' 5-20 warm-up epochs would take most of the run. The recipes'
# lr (batch-scaled for MAE, SimMIM and MaskFeat: ~1e-4 at batch 64) and 0.08-1 crops of 32 px images leave 150
# updates far from converged (MAE: 28.9% top-1), so every method gets one absolute lr (BEiT's 4e-3) and mild crops
# (MAE: 68.7%). The pretrained and the from-scratch runs get exactly the same fine-tuning arguments. Evaluation
# keeps the whole 28 px garment (--eval_crop_pct 1, also for the probes), not the ImageNet centre crop.
FINETUNE_DEFAULT_ARGS = ("--mixup 0 --cutmix 0 --rand_augment none --random_erasing 0 --warmup_epochs 0.5 "
                         "--learning_rate 4e-3 --crop_scale 0.8 1 --eval_crop_pct 1")


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", default="outputs/benchmark-fashion-mnist")
    p.add_argument("--methods", nargs="+", default=None,
                   help=f"rows: a method, or method:backbone for another encoder family (simmim:swin, SimMIM's demo "
                        f"Swin); default: all of {', '.join(method_names())} on the demo ViT")
    p.add_argument("--fashion_mnist_dir", default=None, help="folder of the four idx files (.gz or not); default: "
                   "where `apt-get install dataset-fashion-mnist` puts them")
    p.add_argument("--train_subset", type=non_negative_int, default=5000,
                   help="class-balanced training images (0 = all 60000)")
    p.add_argument("--test_subset", type=non_negative_int, default=1000,
                   help="class-balanced test images (0 = all 10000)")
    p.add_argument("--pretrain_steps", type=positive_int, default=400,
                   help="pretraining updates, the same for every method")
    p.add_argument("--finetune_steps", type=positive_int, default=150,
                   help="fine-tuning updates, pretrained and from scratch")
    p.add_argument("--tokenizer_steps", type=positive_int, default=300,
                   help="dVAE updates for BEiT and CAE's tokenizer")
    p.add_argument("--tokenizer_name_or_path", default=None, help="use this tokenizer instead of training one")
    p.add_argument("--batch_size", type=positive_int, default=64,
                   help="per-device batch of pretraining and fine-tuning")
    p.add_argument("--model_size", choices=["demo", "base"], default="demo",
                   help="demo: the 32 px CPU ViT; base: each method's ViT-B/16 (GPU)")
    p.add_argument("--config_overrides", default="", help='"k=v,..." for every pretrained model (e.g. hidden_size=192)')
    p.add_argument("--pretrain_args", default="", help="extra scripts/pretrain.py arguments, quoted")
    p.add_argument("--finetune_args", default=FINETUNE_DEFAULT_ARGS,
                   help=f"extra scripts/finetune.py arguments, quoted (default: {FINETUNE_DEFAULT_ARGS!r})")
    p.add_argument("--pooling", choices=["cls", "mean"], default="mean",
                   help="feature of kNN and the linear probe. Default: the mean of the patch tokens, the feature every "
                        "method's classifier uses; BEiT, SimMIM, MaskFeat and CAE put no loss on the cls token")
    p.add_argument("--k", type=positive_int, default=20)
    p.add_argument("--temperature", type=positive_float, default=0.07)
    p.add_argument("--probe_epochs", type=positive_int, default=90, help="linear-probe epochs on cached features")
    p.add_argument("--probe_batch_size", type=positive_int, default=256)
    p.add_argument("--logreg_l2", type=non_negative_float, default=1e-4, help="L2 of the raw-pixel logistic regression")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--num_threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    args = p.parse_args(argv)
    args.methods = args.methods or sorted(hf_mim.METHODS)
    args.fashion_mnist_dir = args.fashion_mnist_dir or str(DEBIAN_DIR)
    unknown = [row for row in args.methods if not is_known_row(row)]
    if unknown:
        rows = [f"{m}:{b}" for m in sorted(hf_mim.METHODS) for b in hf_mim.METHODS[m].backbones if b != "vit"]
        p.error(f"unknown methods {unknown}; registered: {sorted(hf_mim.METHODS)}, and the rows {rows}")
    for name in ("train_subset", "test_subset"):
        value = getattr(args, name)
        if value < 0 or (value and value % len(LABELS)):
            p.error(f"--{name} must be 0 (all) or a positive multiple of {len(LABELS)} (balanced classes)")
    if min(args.pretrain_steps, args.finetune_steps, args.tokenizer_steps, args.batch_size) <= 0:
        p.error("steps and batch sizes must be positive")
    return args


if __name__ == "__main__":
    answer_help_early(parse_args)

# Below the parser: these load torch and transformers, which `--help` does not wait for.
import numpy as np
import torch
import hf_mim
from hf_mim.evaluation import logistic_regression_on_pixels
from hf_mim.fashion_mnist import DEBIAN_DIR, LABELS, to_dataset_dict
from hf_mim.planning import command_line


# ----------------------------------------------------------------------------------------------- plumbing


def load_script(name: str):
    """scripts/<name>.py as a module, or None when this checkout does not have it."""
    path = SCRIPTS_DIR / f"{name}.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location(f"hf_mim_script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run_script(module, argv: list[str]) -> dict:
    """Run a script's `main(argv)` in this process with a fresh Accelerate state (a process-wide singleton)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    logger.info("running %s %s", Path(module.__file__).name, shlex.join(argv))
    return module.main(argv)


class Stopwatch:
    """Seconds per stage, in the order the stages ran."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, function, *args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            self.seconds[name] = round(time.perf_counter() - start, 1)


# ----------------------------------------------------------------------------------------------- stages


def prepare_data(args) -> Path:
    """The balanced subset as a DatasetDict on disk; rebuilt only when the source or the subset sizes change."""
    folder = Path(args.output_dir) / "data" / "fashion_mnist"
    spec = {"source": str(Path(args.fashion_mnist_dir).resolve()), "train": args.train_subset, "test": args.test_subset,
            "seed": args.seed}
    marker = folder / "benchmark_subset.json"
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        logger.info("reusing %s", folder)
        return folder
    per_class = {split: size // len(LABELS) for split, size in (("train", args.train_subset), ("test", args.test_subset))
                 if size}
    dataset = to_dataset_dict(Path(args.fashion_mnist_dir), per_class=per_class or None, seed=args.seed)
    dataset.save_to_disk(str(folder))
    marker.write_text(json.dumps(spec))
    return folder


def pixel_arrays(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The exact images the encoders see, as (N, 28, 28) uint8, read back from the saved DatasetDict."""
    import datasets

    dataset = datasets.load_from_disk(str(data_dir))[split]
    images = np.stack([np.asarray(image.convert("L"), dtype=np.uint8) for image in dataset["image"]])
    return images, np.asarray(dataset["label"])


def raw_pixel_baseline(args, data_dir: Path) -> dict:
    train_images, train_labels = pixel_arrays(data_dir, "train")
    test_images, test_labels = pixel_arrays(data_dir, "test")
    return logistic_regression_on_pixels(train_images, train_labels, test_images, test_labels, l2=args.logreg_l2,
                                         seed=args.seed, num_classes=len(LABELS), device=args.device)


def resolve_tokenizer(args, data_dir: Path, scripts: dict, watch: Stopwatch) -> tuple[str | None, str | None]:
    """(path, None) to the visual tokenizer BEiT and CAE share in this run, or (None, why there is none)."""
    if args.tokenizer_name_or_path:
        return args.tokenizer_name_or_path, None
    if scripts["train_tokenizer"] is None:
        return None, ("needs a visual tokenizer and this checkout has no scripts/train_tokenizer.py; "
                      "pass --tokenizer_name_or_path")
    folder = Path(args.output_dir) / "models" / "tokenizer"
    argv = ["--dataset_name", str(data_dir), "--output_dir", str(folder), "--max_train_steps", str(args.tokenizer_steps),
            "--per_device_train_batch_size", str(args.batch_size), "--seed", str(args.seed), "--logging_steps", "50"]
    if args.model_size == "demo":
        argv += ["--model_size", "demo"]
    try:
        watch("tokenizer", run_script, scripts["train_tokenizer"], argv)
    except Exception as error:  # noqa: BLE001 - the methods without tokens still run
        logger.error("tokenizer training failed:\n%s", traceback.format_exc())
        return None, f"tokenizer training failed ({type(error).__name__}: {error})"
    return str(folder), None


def probe_scores(args, model_dir: Path, random_init: bool, data_dir: Path, scripts: dict) -> dict:
    """kNN then linear probe of one encoder; the second reads the features the first cached."""
    name = f"{model_dir.name}-{'random' if random_init else 'pretrained'}"
    common = ["--model_name_or_path", str(model_dir), "--dataset_name", str(data_dir), "--train_split", "train",
              "--eval_split", "test", "--output_dir", str(Path(args.output_dir) / "probes" / name),
              "--feature_cache_dir", str(Path(args.output_dir) / "features"), "--pooling", args.pooling,
              "--seed", str(args.seed), "--eval_crop_pct", "1"] + (["--random_init"] if random_init else [])
    if args.device:
        common += ["--device", args.device]
    knn = scripts["probe"].main(common + ["--protocol", "knn", "--k", str(args.k), "--temperature", str(args.temperature)])
    linear = scripts["probe"].main(common + ["--protocol", "linear", "--epochs", str(args.probe_epochs),
                                             "--batch_size", str(args.probe_batch_size)])
    return {"knn": knn, "linear": linear}


def finetune_score(args, model_dir: Path, from_scratch: bool, data_dir: Path, scripts: dict) -> dict:
    out = Path(args.output_dir) / "models" / f"{model_dir.name}-finetune{'-scratch' if from_scratch else ''}"
    argv = ["--model_name_or_path", str(model_dir), "--dataset_name", str(data_dir), "--train_split", "train",
            "--eval_split", "test", "--output_dir", str(out), "--max_train_steps", str(args.finetune_steps),
            "--per_device_train_batch_size", str(args.batch_size), "--seed", str(args.seed), "--logging_steps", "50"]
    argv += (["--from_scratch"] if from_scratch else []) + shlex.split(args.finetune_args)
    summary = run_script(scripts["finetune"], argv)
    last = summary["eval_history"][-1]  # after the last update: no model selection on the test split
    return {"top1": last["accuracy"], "top5": last["top5_accuracy"], "steps": summary["steps"],
            "learning_rate": summary["learning_rate"]}


def row_spec(row: str) -> tuple[str, str | None]:
    """A --methods row, "method" or "method:backbone" (simmim:swin) -> (method, backbone family or None)."""
    method, _, backbone = row.partition(":")
    return method, backbone or None


def row_key(row: str) -> str:
    """The row's name in results and folders: "simmim", "simmim-swin"."""
    return row.replace(":", "-")


def is_known_row(row: str) -> bool:
    method, backbone = row_spec(row)
    return method in hf_mim.METHODS and (backbone is None or backbone in hf_mim.METHODS[method].backbones)


def needs_tokenizer(row: str) -> bool:
    """Whether the row's demo model predicts visual tokens (and so gets the run's tokenizer)."""
    method, family = row_spec(row)
    backbone = hf_mim.get_method(method).backbone(family)
    return backbone.config_class(**backbone.demo_config).needs_tokenizer


def benchmark_method(args, row: str, data_dir: Path, scripts: dict, watch: Stopwatch, tokenizer) -> dict:
    method, family = row_spec(row)
    pretrain_dir = Path(args.output_dir) / "models" / f"{row_key(row)}-pretrain"
    argv = ["--method", method, *(["--backbone", family] if family else []), "--dataset_name", str(data_dir),
            "--model_size", args.model_size,
            "--output_dir", str(pretrain_dir), "--max_train_steps", str(args.pretrain_steps),
            "--per_device_train_batch_size", str(args.batch_size), "--seed", str(args.seed), "--logging_steps", "50"]
    if needs_tokenizer(row):
        path, reason = tokenizer
        if path is None:
            return {"skipped": reason}
        argv += ["--tokenizer_name_or_path", path]  # pretrain.py sizes the token head to its vocabulary
    if args.config_overrides:
        argv += ["--config_overrides", args.config_overrides]
    argv += shlex.split(args.pretrain_args)
    method = row_key(row)
    pretrain = watch(f"{method} pretrain", run_script, scripts["pretrain"], argv)
    result = {"pretrain": {"steps": pretrain["steps"], "final_loss": pretrain["final_loss"],
                           "learning_rate": pretrain["learning_rate"], "effective_batch": pretrain["effective_batch"]}}
    for label, random_init in (("pretrained", False), ("random_init", True)):
        probes = watch(f"{method} probes ({label})", probe_scores, args, pretrain_dir, random_init, data_dir, scripts)
        finetune = watch(f"{method} fine-tune ({label})", finetune_score, args, pretrain_dir, random_init, data_dir,
                         scripts)
        result[label] = {"knn": pick(probes["knn"]), "linear": pick(probes["linear"]), "finetune": finetune}
    return result


def pick(probe_result: dict) -> dict:
    return {key: probe_result[key] for key in ("top1", "top5", "feature_seconds", "probe_seconds") if key in probe_result}


# ----------------------------------------------------------------------------------------------- report


def percent(entry: dict | None) -> str:
    return "–" if not entry else f"{100 * entry['top1']:.2f}"


def add_results_to_cards(report: dict, models_dir: Path) -> list[str]:
    """Each pretrained model's card gets its measured top-1s as `model-index` entries (huggingface_hub's
    EvalResult) and a section that puts them next to the random-init baseline of the same run. Returns the cards
    updated. Callable on a saved results.json, so a finished run's cards can be rewritten without re-running."""
    from hf_mim.hub import add_eval_results

    updated = []
    s = report["settings"]
    for method, result in report["methods"].items():
        folder = Path(models_dir) / f"{method}-pretrain"
        if "pretrained" not in result or not (folder / "README.md").exists():
            continue
        ours, baseline = result["pretrained"], result["random_init"]
        protocols = [("knn", f"kNN (k={s['k']}, {s['pooling']} token) top-1"),
                     ("linear", f"linear probe ({s['pooling']} token) top-1"),
                     ("finetune", f"fine-tune ({s['finetune_steps']} updates) top-1")]
        results = [{"metric": "accuracy", "value": round(ours[key]["top1"], 4), "protocol": name}
                   for key, name in protocols if ours.get(key)]
        versus = "; ".join(f"{name}: {100 * ours[key]['top1']:.2f}% vs {100 * baseline[key]['top1']:.2f}% at random "
                           "init" for key, name in protocols if ours.get(key) and baseline.get(key))
        text = (f"Measured by `{report['command']}` on {report['date']} ({report['machine']}), on the Fashion-MNIST "
                f"test split ({report['data']['test_examples']} images, {report['data']['description']}). The same "
                f"encoder at random initialisation, scored the same way in the same run: {versus}.")
        add_eval_results(folder, results, dataset_name="fashion_mnist", section="Fashion-MNIST benchmark",
                         section_text=text)
        updated.append(str(folder / "README.md"))
    return updated


def markdown_report(report: dict) -> str:
    s = report["settings"]
    lines = [
        "# Fashion-MNIST: pretrained encoders against random init and raw pixels", "",
        f"Date: {report['date']}  ",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}", "",
        f"Data: {report['data']['train_examples']} training and {report['data']['test_examples']} test images "
        f"({report['data']['description']}). Encoder: {s['encoder']}. Every method pretrains {s['pretrain_steps']} "
        f"updates at batch {s['batch_size']}; fine-tuning runs {s['finetune_steps']} updates "
        f"(`{s['finetune_args'] or 'recipe defaults'}`) and is scored after its last update. kNN: k={s['k']}, "
        f"T={s['temperature']}, {s['pooling']} feature; linear probe: BN + Linear, {s['probe_epochs']} epochs on "
        "cached features. Top-1 accuracy (%) on the test split.", "",
        "| method | encoder | kNN | linear probe | fine-tune |",
        "|---|---|---|---|---|",
    ]
    for method, result in report["methods"].items():
        if "skipped" in result or "error" in result:
            lines.append(f"| {method.upper()} | {'skipped: ' + result['skipped'] if 'skipped' in result else 'failed: ' + result['error']} | | | |")
            continue
        for label, title in (("pretrained", f"pretrained ({result['pretrain']['steps']} updates)"),
                             ("random_init", "random init")):
            row = result[label]
            lines.append(f"| {method.upper()} | {title} | {percent(row['knn'])} | {percent(row['linear'])} | "
                         f"{percent(row['finetune'])} |")
    pixels = report["baselines"].get("pixels_logistic_regression")
    lines.append(f"| raw pixels | logistic regression (L2 {s['logreg_l2']}) | – | {percent(pixels)} | – |")
    lines += ["", "Time per stage (seconds):", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {stage} | {seconds:.1f} |" for stage, seconds in report["seconds"].items()]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def run_environment(device: str, num_threads: int | None):
    """For the duration of the run only: on `cpu`, keep the training scripts' Accelerator off any GPU; with
    `num_threads`, set torch's intra-op threads (1 is often faster on cores other jobs share)."""
    previous_env, previous_threads = os.environ.get("ACCELERATE_USE_CPU"), torch.get_num_threads()
    if device == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "1"
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)
        if previous_env is None:
            os.environ.pop("ACCELERATE_USE_CPU", None)
        else:
            os.environ["ACCELERATE_USE_CPU"] = previous_env


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    with run_environment(args.device, args.num_threads):
        report = run_benchmark(args, argv)
    output_dir = Path(args.output_dir)
    (output_dir / "results.json").write_text(json.dumps(report, indent=2))
    (output_dir / "results.md").write_text(markdown_report(report))
    for card in add_results_to_cards(report, output_dir / "models"):
        logger.info("results added to %s", card)
    print(markdown_report(report))
    return report


def run_benchmark(args, argv) -> dict:
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    scripts = {name: load_script(name) for name in ("pretrain", "finetune", "probe", "train_tokenizer")}
    watch = Stopwatch()
    started = time.perf_counter()

    data_dir = watch("data", prepare_data, args)
    import datasets

    sizes = {split: len(ds) for split, ds in datasets.load_from_disk(str(data_dir)).items()}
    pixels = watch("raw-pixel logistic regression", raw_pixel_baseline, args, data_dir)
    logger.info("raw pixels, logistic regression: top-1 %.4f", pixels["top1"])

    tokenizer = (None, None)
    if any(needs_tokenizer(m) for m in args.methods):
        tokenizer = resolve_tokenizer(args, data_dir, scripts, watch)
    methods = {}
    for row in args.methods:
        method = row_key(row)
        try:
            methods[method] = benchmark_method(args, row, data_dir, scripts, watch, tokenizer)
        except Exception as error:  # noqa: BLE001 - one broken method must not cost the others' results
            logger.error("%s failed:\n%s", method, traceback.format_exc())
            methods[method] = {"error": f"{type(error).__name__}: {error}"}
        if "skipped" in methods[method]:
            logger.warning("%s skipped: %s", method, methods[method]["skipped"])
    watch.seconds["total"] = round(time.perf_counter() - started, 1)

    command = command_line("scripts/benchmark_fashion_mnist.py", argv)
    encoder = ("demo ViT (" + ", ".join(f"{k}={v}" for k, v in DEMO_BACKBONE.items()) + ")" if args.model_size == "demo"
               else "each method's ViT-B/16")
    for row in args.methods:  # rows on another encoder family
        method, family = row_spec(row)
        if family and args.model_size == "demo":
            demo = hf_mim.get_method(method).backbone(family).demo_config
            encoder += f"; {row_key(row)}: demo {family} (" + ", ".join(f"{k}={v}" for k, v in demo.items()) + ")"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
                   f"torch {torch.__version__}, device {args.device}",
        "settings": {**{k: v for k, v in vars(args).items() if k != "methods"}, "methods": args.methods,
                     "encoder": encoder + (f" with {args.config_overrides}" if args.config_overrides else "")},
        "data": {"train_examples": sizes["train"], "test_examples": sizes["test"],
                 "description": "Fashion-MNIST" + (", class-balanced subsets" if args.train_subset or args.test_subset
                                                   else ", full splits")},
        "baselines": {"pixels_logistic_regression": pixels},
        "methods": methods,
        "seconds": watch.seconds,
    }


if __name__ == "__main__":
    result = main()
    sys.exit(1 if any("error" in r for r in result["methods"].values()) else 0)
