#!/usr/bin/env python
"""Does masked image modeling help dense prediction? Every method's encoder against the same encoder at random init,
fine-tuned for semantic segmentation (UperNet) on the embedded Fashion-MNIST segmentation sample.

    python scripts/benchmark_segmentation.py --output_dir outputs/benchmark-segmentation          # CPU budget
    python scripts/benchmark_segmentation.py --pretrained_root outputs/benchmark-fashion-mnist/models
        # reuse the encoders scripts/benchmark_fashion_mnist.py pretrained (<method>-pretrain folders)

1. Each method of `--methods` gets its pretrained demo ViT (32 px, patch 4): `<pretrained_root>/<method>-pretrain`
   when it exists, else `scripts/pretrain.py --method M` on the embedded Fashion-MNIST sample for
   `--pretrain_steps` updates (BEiT and CAE first get a visual tokenizer, trained once, as the classification
   benchmark does).
2. `scripts/finetune_segmentation.py` fine-tunes it and, with the same arguments and seed, the same architecture at
   random init (`--from_scratch`), for `--finetune_steps` updates; the score is the validation mean IoU (and pixel
   accuracy) after the last update (no model selection on the validation split).

Writes `results.json` and `results.md` (table, exact command, date, time per stage) into `--output_dir`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import shlex
import traceback
from pathlib import Path
from types import SimpleNamespace

from hf_mim_cli.arguments import ArgumentParser, answer_help_early, non_negative_int, positive_int
from hf_mim_cli.catalog import method_names

logger = logging.getLogger("hf_mim.benchmark_segmentation")
# 32 px: the demo encoders' own size (the 64 px canvases are resized; logits are scored at 64 px)
FINETUNE_DEFAULT_ARGS = "--image_size 32 --head_hidden_size 64 --learning_rate 1e-3 --logging_steps 50"


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", default="outputs/benchmark-segmentation")
    p.add_argument("--methods", nargs="+", choices=method_names(), default=None, help="default: all")
    p.add_argument("--pretrained_root", default=None,
                   help="a folder of <method>-pretrain encoders to reuse (default: pretrain into --output_dir)")
    p.add_argument("--pretrain_steps", type=positive_int, default=400, help="pretraining updates of missing encoders")
    p.add_argument("--tokenizer_steps", type=positive_int, default=300, help="dVAE updates for BEiT and CAE")
    p.add_argument("--tokenizer_name_or_path", default=None, help="use this tokenizer instead of training one")
    p.add_argument("--finetune_steps", type=positive_int, default=300, help="segmentation updates, both runs")
    p.add_argument("--batch_size", type=positive_int, default=16, help="per-device batch of the fine-tuning")
    p.add_argument("--pretrain_batch_size", type=positive_int, default=64)
    p.add_argument("--finetune_args", default=FINETUNE_DEFAULT_ARGS,
                   help=f"extra scripts/finetune_segmentation.py arguments (default: {FINETUNE_DEFAULT_ARGS!r})")
    p.add_argument("--seed", type=non_negative_int, default=0)
    args = p.parse_args(argv)
    args.methods = args.methods or sorted(hf_mim.METHODS)
    return args


if __name__ == "__main__":
    answer_help_early(parse_args)

# Below the parser: these load torch and transformers, which `--help` does not wait for.
import torch
import hf_mim
from hf_mim.planning import command_line


def classification_benchmark():
    """scripts/benchmark_fashion_mnist.py as a module: its script runner, stopwatch and tokenizer stage."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parent / "benchmark_fashion_mnist.py"
    spec = importlib.util.spec_from_file_location("hf_mim_script_benchmark_fashion_mnist", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def pretrained_encoder(args, method: str, bench, scripts: dict, watch, tokenizer) -> Path:
    """The method's encoder folder: reused from --pretrained_root, else pretrained now on the embedded sample."""
    if args.pretrained_root and (Path(args.pretrained_root) / f"{method}-pretrain" / "config.json").is_file():
        return Path(args.pretrained_root) / f"{method}-pretrain"
    folder = Path(args.output_dir) / "models" / f"{method}-pretrain"
    argv = ["--method", method, "--output_dir", str(folder), "--max_train_steps", str(args.pretrain_steps),
            "--per_device_train_batch_size", str(args.pretrain_batch_size), "--seed", str(args.seed),
            "--logging_steps", "50"]
    if bench.needs_tokenizer(method):
        path, reason = tokenizer
        if path is None:
            raise RuntimeError(reason)
        argv += ["--tokenizer_name_or_path", path]
    watch(f"{method} pretrain", bench.run_script, scripts["pretrain"], argv)
    return folder


def segmentation_score(args, encoder: Path, from_scratch: bool, bench, scripts: dict) -> dict:
    out = Path(args.output_dir) / "models" / f"{encoder.name}-segmentation{'-scratch' if from_scratch else ''}"
    argv = ["--model_name_or_path", str(encoder), "--output_dir", str(out), "--max_train_steps",
            str(args.finetune_steps), "--per_device_train_batch_size", str(args.batch_size), "--seed", str(args.seed)]
    argv += (["--from_scratch"] if from_scratch else []) + shlex.split(args.finetune_args)
    summary = bench.run_script(scripts["finetune_segmentation"], argv)
    last = summary["eval_history"][-1]  # after the last update: no model selection on the validation split
    return {"mean_iou": last["mean_iou"], "overall_accuracy": last["overall_accuracy"], "steps": summary["steps"]}


def tokenizer_for(args, bench, scripts, watch):
    """(path, None) or (None, why): BEiT and CAE's tokenizer, trained once on the embedded Fashion-MNIST sample."""
    if not any(bench.needs_tokenizer(m) for m in args.methods):
        return None, None
    settings = SimpleNamespace(tokenizer_name_or_path=args.tokenizer_name_or_path, output_dir=args.output_dir,
                               tokenizer_steps=args.tokenizer_steps, batch_size=args.pretrain_batch_size,
                               seed=args.seed, model_size="demo")
    from hf_mim.data import SAMPLE_DIR

    return bench.resolve_tokenizer(settings, SAMPLE_DIR, scripts, watch)


def run_benchmark(args, argv) -> dict:
    bench = classification_benchmark()
    scripts = {name: bench.load_script(name) for name in ("pretrain", "train_tokenizer", "finetune_segmentation")}
    watch = bench.Stopwatch()
    tokenizer = tokenizer_for(args, bench, scripts, watch)
    methods = {}
    for method in args.methods:
        try:
            encoder = pretrained_encoder(args, method, bench, scripts, watch, tokenizer)
            methods[method] = {"encoder": str(encoder), **{
                label: watch(f"{method} segmentation ({label})", segmentation_score, args, encoder, scratch, bench,
                             scripts)
                for label, scratch in (("pretrained", False), ("random_init", True))}}
        except Exception as error:  # noqa: BLE001 - one broken method must not cost the others' results
            logger.error("%s failed:\n%s", method, traceback.format_exc())
            methods[method] = {"error": f"{type(error).__name__}: {error}"}
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": command_line("scripts/benchmark_segmentation.py", argv),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
                       f"torch {torch.__version__}",
            "settings": {k: v for k, v in vars(args).items()}, "methods": methods, "seconds": watch.seconds}


def markdown_report(report: dict) -> str:
    rows = ["| method | mIoU pretrained | mIoU random init | pixel acc. pretrained | pixel acc. random init |",
            "|---|---|---|---|---|"]
    for method, result in report["methods"].items():
        if "error" in result:
            rows.append(f"| {method} | {result['error']} | | | |")
            continue
        pre, rand = result["pretrained"], result["random_init"]
        rows.append(f"| {method} | {pre['mean_iou']:.1%} | {rand['mean_iou']:.1%} | {pre['overall_accuracy']:.1%} | "
                    f"{rand['overall_accuracy']:.1%} |")
    seconds = ", ".join(f"{k} {v:.0f} s" for k, v in report["seconds"].items())
    return "\n".join([*rows, "", f"`{report['command']}` ({report['date']}; {report['machine']}; {seconds})", ""])


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    report = run_benchmark(args, argv)
    (output_dir / "results.json").write_text(json.dumps(report, indent=2))
    (output_dir / "results.md").write_text(markdown_report(report))
    print(markdown_report(report))
    return report


if __name__ == "__main__":
    main()
