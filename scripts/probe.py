#!/usr/bin/env python
"""Evaluate a frozen hf-mim encoder: kNN, linear probe or attentive probe on labelled images.

    python scripts/probe.py --model_name_or_path outputs/mae-pretrain --protocol knn      # the embedded sample
    python scripts/probe.py --model_name_or_path outputs/mae-pretrain --protocol linear --dataset_name DIR
    python scripts/probe.py --model_name_or_path outputs/mae-pretrain --protocol knn --random_init   # baseline
    python scripts/probe.py --model_name_or_path outputs/maskfeat-video --protocol knn   # video: the embedded clips

Features are computed once per (model, split, pooling) and cached under `--feature_cache_dir`, so running the
other protocols, k values or seeds afterwards does not touch the images again. Results go to
`<output_dir>/probe_<protocol>.json` and are printed as a table.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from hf_mim_cli.arguments import (ArgumentParser, answer_help_early, check_model_source, non_negative_float,
                                  non_negative_int, positive_float, positive_int, run_main)

logger = logging.getLogger("hf_mim.probe")
PROTOCOL_POOLING = {"knn": "cls", "linear": "cls", "attentive": "tokens"}


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_name_or_path", required=True, help="an hf-mim folder or Hub id (pretrained or fine-tuned)")
    p.add_argument("--protocol", required=True, choices=sorted(PROTOCOL_POOLING))
    p.add_argument("--random_init", action="store_true", help="same architecture, random weights (the baseline)")
    p.add_argument("--dataset_name", help="Hub dataset id or a save_to_disk folder (default: the embedded sample)")
    p.add_argument("--train_dir", help="an image folder with one sub-folder per class")
    p.add_argument("--validation_dir", help="the evaluation image folder (with --train_dir)")
    p.add_argument("--train_split", default="train")
    p.add_argument("--eval_split", default="test")
    p.add_argument("--image_column", default=None)
    p.add_argument("--label_column", default=None)
    p.add_argument("--output_dir", default="outputs/probe")
    p.add_argument("--feature_cache_dir", default=None, help="default: <output_dir>/features")
    p.add_argument("--pooling", choices=["cls", "mean"], default=None,
                   help="feature of kNN and the linear probe: cls token (MAE's protocol, default) or mean of the "
                        "patch tokens. The attentive probe always attends over the patch tokens")
    p.add_argument("--k", type=positive_int, default=20, help="kNN neighbours")
    p.add_argument("--temperature", type=positive_float, default=0.07, help="kNN vote weight exp(similarity / T)")
    p.add_argument("--epochs", type=positive_int, default=90, help="probe training epochs (MAE and CAE: 90)")
    p.add_argument("--learning_rate", type=non_negative_float, default=None,
                   help="probe SGD lr (default 0.1 * batch / 256)")
    p.add_argument("--batch_size", type=positive_int, default=256, help="probe training batch")
    p.add_argument("--weight_decay", type=non_negative_float, default=0.0)
    p.add_argument("--warmup_epochs", type=non_negative_float, default=None,
                   help="default: a ninth of --epochs (MAE: 10 of 90)")
    p.add_argument("--eval_crop_pct", type=float, default=None,
                   help="both splits: resize the short side to image_size / eval_crop_pct, centre-crop image_size. "
                        "Default: the official rule, 0.875 up to 224 px, else 1 (the whole short side)")
    p.add_argument("--feature_batch_size", type=positive_int, default=256, help="images per encoder forward pass")
    p.add_argument("--dataloader_num_workers", type=non_negative_int, default=0)
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--seed", type=non_negative_int, default=0, help="probe init and shuffling; random-init weights")
    args = p.parse_args(argv)
    if args.dataset_name and args.train_dir:
        p.error("pass either --dataset_name or --train_dir, not both")
    if args.validation_dir and not args.train_dir:
        p.error("--validation_dir goes with --train_dir")
    if args.train_dir and not args.validation_dir:
        p.error("--train_dir needs --validation_dir: a probe is scored on held-out images")
    if args.protocol == "attentive" and args.pooling:
        p.error("the attentive probe attends over all patch tokens; drop --pooling")
    if args.k <= 0 or args.temperature <= 0 or args.epochs <= 0 or args.batch_size <= 0:
        p.error("--k, --temperature, --epochs and --batch_size must be positive")
    if args.eval_crop_pct is not None and not 0 < args.eval_crop_pct <= 1:
        p.error(f"--eval_crop_pct {args.eval_crop_pct}: need a share of the short side in (0, 1], e.g. 0.875 or 1")
    return args


if __name__ == "__main__":
    answer_help_early(parse_args)

# Below the parser: these load torch and transformers, which `--help` does not wait for.
import torch
from hf_mim.data import load_image_dataset
from hf_mim.evaluation import (attentive_probe, classification_metrics, extract_features, feature_cache_key,
                               knn_classify, linear_probe, load_encoder)
from hf_mim.planning import command_line
from hf_mim.video_data import as_feature_dataset, is_video_model, video_finetune_splits


def load_splits(args):
    """(train, evaluation) ImageDatasets with labels, from the sample, a datasets folder/Hub id or image folders
    (video clips for a video model: hf_mim.video_data)."""
    if is_video_model(args.model_name_or_path):
        train, evaluation = video_finetune_splits(args)
    elif args.train_dir:
        train = load_image_dataset(train_dir=args.train_dir, image_column=args.image_column, label_column=args.label_column)
        evaluation = load_image_dataset(train_dir=args.validation_dir, image_column=args.image_column,
                                        label_column=args.label_column)
    else:
        train = load_image_dataset(args.dataset_name, None, args.train_split, args.image_column, args.label_column)
        evaluation = load_image_dataset(args.dataset_name, None, args.eval_split, args.image_column, args.label_column)
    for data in (train, evaluation):
        if data.label_column is None:
            raise ValueError(f"{data.source} has no label column; pass --label_column")
    if train.label_names and evaluation.label_names and train.label_names != evaluation.label_names:
        raise ValueError(f"train and evaluation classes differ: {train.label_names} vs {evaluation.label_names}")
    return train, evaluation


def features_of(args, model, processor, data, split: str, pooling: str, device):
    key = feature_cache_key(
        args.model_name_or_path, split, pooling, random_init=args.random_init, seed=args.seed,
        data_source=f"{data.source}:{getattr(data.dataset, '_fingerprint', '')}", num_examples=len(data.dataset),
        preprocessing=processor.to_json_string(),
    )
    return extract_features(model, as_feature_dataset(data, processor), pooling, args.feature_batch_size, device, processor=processor,
                            cache_dir=args.feature_cache_dir, cache_key=key, num_workers=args.dataloader_num_workers)


def run_protocol(args, train_features, train_labels, eval_features, eval_labels, num_classes, num_heads, device):
    probe_kwargs = dict(epochs=args.epochs, lr=args.learning_rate, batch_size=args.batch_size, seed=args.seed,
                        weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs, num_classes=num_classes,
                        device=device)
    if args.protocol == "knn":
        scores = knn_classify(train_features, train_labels, eval_features, k=args.k, temperature=args.temperature,
                              num_classes=num_classes)
        return {**classification_metrics(scores, eval_labels), "k": args.k, "temperature": args.temperature}
    if args.protocol == "linear":
        return linear_probe(train_features, train_labels, eval_features, eval_labels, **probe_kwargs)
    return attentive_probe(train_features, train_labels, eval_features, eval_labels, num_heads=num_heads,
                           **probe_kwargs)


def results_table(result: dict) -> str:
    top5 = f"{100 * result['top5']:.2f}" if "top5" in result else "-"
    return ("| protocol | model | weights | feature | train | eval | top-1 % | top-5 % |\n"
            "|---|---|---|---|---|---|---|---|\n"
            f"| {result['protocol']} | {result['model']} | {result['weights']} | {result['feature']} | "
            f"{result['train_examples']} | {result['eval_examples']} | {100 * result['top1']:.2f} | {top5} |")


def main(argv=None) -> dict:
    args = parse_args(argv)
    check_model_source(args.model_name_or_path, "--model_name_or_path")
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    output_dir = Path(args.output_dir)
    args.feature_cache_dir = args.feature_cache_dir or str(output_dir / "features")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    pooling = PROTOCOL_POOLING[args.protocol] if args.protocol == "attentive" else (args.pooling or "cls")

    train, evaluation = load_splits(args)
    model, processor = load_encoder(args.model_name_or_path, random_init=args.random_init, seed=args.seed,
                                    crop_pct=args.eval_crop_pct)
    if pooling == "cls" and not model.has_cls_token:  # a Swin: its pooled feature is the mean of its tokens
        logger.info("%s has no cls token: pooling the mean of its last tokens", type(model).__name__)
        pooling = "mean"
    start = time.perf_counter()
    train_features, train_labels = features_of(args, model, processor, train, args.train_split, pooling, device)
    eval_features, eval_labels = features_of(args, model, processor, evaluation, args.eval_split, pooling, device)
    feature_seconds = time.perf_counter() - start
    num_classes = len(train.label_names) if train.label_names else int(max(train_labels.max(), eval_labels.max()) + 1)

    start = time.perf_counter()
    metrics = run_protocol(args, train_features, train_labels, eval_features, eval_labels, num_classes,
                           model.config.num_attention_heads, device)
    result = {
        "protocol": args.protocol, "model": args.model_name_or_path,
        "weights": f"random init (seed {args.seed})" if args.random_init else "pretrained",
        "feature": "patch tokens" if pooling == "tokens" else pooling, **metrics,
        "train_examples": len(train_labels), "eval_examples": len(eval_labels), "num_classes": num_classes,
        "train_data": f"{train.source} [{args.train_split}]", "eval_data": f"{evaluation.source} [{args.eval_split}]",
        "seed": args.seed, "feature_seconds": round(feature_seconds, 2),
        "probe_seconds": round(time.perf_counter() - start, 2),
        "command": command_line("scripts/probe.py", argv),
    }
    if args.protocol != "knn":
        result.update(epochs=args.epochs, batch_size=args.batch_size, weight_decay=args.weight_decay)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / f"probe_{args.protocol}.json").write_text(json.dumps(result, indent=2))
    print(results_table(result))
    return result


if __name__ == "__main__":
    run_main(main)
