#!/usr/bin/env python
"""Does MaskFeat video pretraining help? The embedded Fashion-MNIST clips, the CPU demo video ViT, one budget.

    python scripts/benchmark_video.py --output_dir outputs/benchmark-video    # CPU: about 25 minutes on 2 busy cores
    python scripts/benchmark_video.py --pretrain_steps 3 --finetune_steps 3 --probe_epochs 2  # smoke run

1. `scripts/pretrain.py --method maskfeat --modality video` pretrains the demo video ViT (8 frames of 32 px in
   tubelets of 2 frames x 8x8 px, 4 blocks of width 128) on the 200 training clips for `--pretrain_steps` updates.
2. Its encoder is scored on the 50 test clips by kNN and a linear probe (`scripts/probe.py`) and by fine-tuning
   (`scripts/finetune.py`, `--finetune_steps`, accuracy after the last update: no selection on the test clips).
3. The baseline, measured in the same run with the same arguments: the same encoder at random init (kNN, linear
   probe, fine-tuning from scratch).

Writes `results.json` and `results.md` (table, exact command, time per stage) into `--output_dir`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import shlex
import sys
import time
from pathlib import Path

from hf_mim_cli.arguments import ArgumentParser, answer_help_early, non_negative_int, positive_int

logger = logging.getLogger("hf_mim.benchmark_video")
SCRIPTS_DIR = Path(__file__).resolve().parent
# Short schedules, as the image benchmark: no mixing or erasing, one absolute lr, mild crops, whole frames.
FINETUNE_DEFAULT_ARGS = ("--mixup 0 --cutmix 0 --rand_augment none --random_erasing 0 --warmup_epochs 0.5 "
                         "--learning_rate 2e-3 --crop_scale 0.8 1 --eval_crop_pct 1")


def image_benchmark():
    """scripts/benchmark_fashion_mnist.py, whose plumbing (script loading and running, stopwatch, CPU threads) this
    benchmark shares."""
    spec = importlib.util.spec_from_file_location("hf_mim_script_benchmark_fashion_mnist",
                                                  SCRIPTS_DIR / "benchmark_fashion_mnist.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", default="outputs/benchmark-video")
    p.add_argument("--pretrain_steps", type=positive_int, default=300, help="pretraining updates")
    p.add_argument("--finetune_steps", type=positive_int, default=90,
                   help="fine-tuning updates, pretrained and from scratch")
    p.add_argument("--batch_size", type=positive_int, default=32, help="clips per update (pretraining, fine-tuning)")
    p.add_argument("--pretrain_args", default="", help="extra scripts/pretrain.py arguments, quoted")
    p.add_argument("--finetune_args", default=FINETUNE_DEFAULT_ARGS,
                   help=f"extra scripts/finetune.py arguments, quoted (default: {FINETUNE_DEFAULT_ARGS!r})")
    p.add_argument("--pooling", choices=["cls", "mean"], default="mean", help="feature of kNN and the linear probe")
    p.add_argument("--probe_epochs", type=positive_int, default=90, help="linear-probe epochs on cached features")
    p.add_argument("--num_threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    return p.parse_args(argv)


if __name__ == "__main__":
    answer_help_early(parse_args)

# Below the parser: these load torch and transformers, which `--help` does not wait for.
from hf_mim.planning import command_line


def probe_scores(args, scripts: dict, model_dir: Path, random_init: bool) -> dict:
    name = "random" if random_init else "pretrained"
    common = ["--model_name_or_path", str(model_dir), "--output_dir", str(Path(args.output_dir) / "probes" / name),
              "--pooling", args.pooling, "--seed", str(args.seed), "--eval_crop_pct", "1", "--device", "cpu"]
    common += ["--random_init"] if random_init else []
    knn = scripts["probe"].main(common + ["--protocol", "knn"])
    linear = scripts["probe"].main(common + ["--protocol", "linear", "--epochs", str(args.probe_epochs)])
    return {"knn": knn["top1"], "linear": linear["top1"]}


def finetune_score(args, shared, scripts: dict, model_dir: Path, from_scratch: bool) -> float:
    out = Path(args.output_dir) / "models" / ("finetune-scratch" if from_scratch else "finetune")
    argv = ["--model_name_or_path", str(model_dir), "--output_dir", str(out), "--max_train_steps",
            str(args.finetune_steps), "--per_device_train_batch_size", str(args.batch_size), "--seed", str(args.seed),
            "--report_to", "none", "--logging_steps", "20"]
    argv += (["--from_scratch"] if from_scratch else []) + shlex.split(args.finetune_args)
    summary = shared.run_script(scripts["finetune"], argv)
    return summary["eval_history"][-1]["accuracy"]  # after the last update


def run_benchmark(args, shared, argv) -> dict:
    scripts = {name: shared.load_script(name) for name in ("pretrain", "probe", "finetune")}
    watch = shared.Stopwatch()
    model_dir = Path(args.output_dir) / "models" / "pretrain"
    pretrain_argv = ["--method", "maskfeat", "--modality", "video", "--output_dir", str(model_dir),
                     "--max_train_steps", str(args.pretrain_steps), "--per_device_train_batch_size",
                     str(args.batch_size), "--seed", str(args.seed), "--report_to", "none", "--logging_steps", "20"]
    summary = watch("pretrain", shared.run_script, scripts["pretrain"], pretrain_argv + shlex.split(args.pretrain_args))
    rows = {}
    for weights, random_init in (("pretrained", False), ("random init", True)):
        scores = watch(f"probes ({weights})", probe_scores, args, scripts, model_dir, random_init)
        scores["finetune"] = watch(f"fine-tune ({weights})", finetune_score, args, shared, scripts, model_dir,
                                   random_init)
        rows[weights] = scores
    return {"rows": rows, "pretrain_loss": summary["final_loss"], "pretrain_steps": summary["steps"],
            "seconds": watch.seconds, "command": command_line("scripts/benchmark_video.py", argv),
            "date": time.strftime("%Y-%m-%d"), "settings": {k: v for k, v in vars(args).items()}}


def markdown_report(report: dict) -> str:
    lines = ["| encoder | kNN top-1 % | linear top-1 % | fine-tune top-1 % |", "|---|---|---|---|"]
    for weights, scores in report["rows"].items():
        lines.append(f"| MaskFeat video demo ViT, {weights} | {100 * scores['knn']:.1f} | "
                     f"{100 * scores['linear']:.1f} | {100 * scores['finetune']:.1f} |")
    settings = report["settings"]
    lines += ["", f"200 training / 50 test clips of the embedded Fashion-MNIST video sample; pretraining "
              f"{report['pretrain_steps']} updates (final loss {report['pretrain_loss']:.4f}), fine-tuning "
              f"{settings['finetune_steps']} updates, batch {settings['batch_size']}, {settings['pooling']}-pooled "
              f"features for the probes. Seconds per stage: "
              + ", ".join(f"{name} {seconds}" for name, seconds in report["seconds"].items()) + ".",
              "", f"`{report['command']}` ({report['date']})"]
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    shared = image_benchmark()
    with contextlib.ExitStack() as stack:
        stack.enter_context(shared.run_environment("cpu", args.num_threads))
        report = run_benchmark(args, shared, argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2))
    table = markdown_report(report)
    (out / "results.md").write_text(table + "\n")
    print(table)
    return report


if __name__ == "__main__":
    main()
