#!/usr/bin/env python
"""Fine-tune a pretrained hf-mim encoder for image classification with Accelerate.

    accelerate launch scripts/finetune.py --model_name_or_path outputs/mae-pretrain --output_dir outputs/mae-ft
    python -c 'import hf_mim; from transformers import pipeline; print(pipeline("image-classification", model="outputs/mae-ft")("shoe.png"))'
    python scripts/finetune.py --model_name_or_path outputs/maskfeat-video --output_dir outputs/maskfeat-video-ft
    python -c 'import hf_mim; from transformers import pipeline; print(pipeline("video-classification", model="outputs/maskfeat-video-ft")("clip.mp4"))'

(`import hf_mim` registers the classes with transformers' Auto classes, which the pipeline uses; without the
package installed, pass `trust_remote_code=True` instead.) A demo-sized model (the 32 px ViT that
`scripts/pretrain.py` trains on the embedded sample) fine-tunes with a short-run recipe, a full-sized one with the
method's published recipe (`--recipe`).

Loading a pretraining checkpoint applies the method's fine-tuning switches (`config.finetune_overrides`:
e.g. trainable positions for MAE, per-layer relative position bias for BEiT) and the method's fine-tuning recipe:
layer-wise lr decay, drop path, RandAugment, random erasing, mixup/cutmix, label smoothing, warmup + cosine. The
best model on the evaluation split is what `--output_dir` holds.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
from pathlib import Path

from hf_mim_cli.arguments import (ArgumentParser, UsageError, add_data_arguments, add_loop_arguments,
                                  answer_help_early, apply_config_overrides, check_loop_arguments, check_model_source,
                                  image_checks, in_range, make_accelerator, non_negative_float, non_negative_int,
                                  open_fraction, positive_int, run_main, say_recipe_defaults)
from hf_mim_cli.recipes import FinetuneRecipe, check_values

logger = logging.getLogger("hf_mim.finetune")


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_name_or_path", required=True, help="a pretrained hf-mim folder or Hub id")
    p.add_argument("--from_scratch", action="store_true", help="same architecture, random init (the baseline)")
    p.add_argument("--config_overrides", default="", help='"k=v,k=v" applied after the fine-tuning switches')
    add_data_arguments(p)
    p.add_argument("--validation_dir", help="evaluation image folder (with --train_dir)")
    p.add_argument("--train_split", default="train")
    p.add_argument("--eval_split", default=None, help="default: 'test' for the sample, else 'validation'")
    p.add_argument("--label_column", default=None)
    p.add_argument("--output_dir", default="outputs/finetune")
    p.add_argument("--per_device_train_batch_size", type=positive_int, default=64)
    p.add_argument("--per_device_eval_batch_size", type=positive_int, default=128)
    lr_choice = p.add_mutually_exclusive_group()
    lr_choice.add_argument("--base_learning_rate", type=non_negative_float, default=None,
                           help="default: the method's recipe, scaled by batch / the recipe's divisor where it has one")
    lr_choice.add_argument("--learning_rate", type=non_negative_float, default=None,
                   help="absolute peak lr; replaces base_learning_rate x batch / divisor (one lr for every method)")
    p.add_argument("--min_learning_rate", type=non_negative_float, default=None)
    p.add_argument("--layer_decay", type=open_fraction, default=None,
                   help="layer-wise lr decay (0.65 in the recipes; 1 = off)")
    p.add_argument("--weight_decay", type=non_negative_float, default=None)
    p.add_argument("--drop_path_rate", type=in_range(float, 0, 1, open_high=True), default=None)
    p.add_argument("--mixup", type=non_negative_float, default=None, help="mixup alpha (0 = off)")
    p.add_argument("--cutmix", type=non_negative_float, default=None, help="cutmix alpha (0 = off)")
    p.add_argument("--label_smoothing", type=in_range(float, 0, 1, open_high=True), default=None)
    p.add_argument("--crop_scale", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="random-resized-crop area range (0.08 1 in the recipes; milder for short runs on small images)")
    p.add_argument("--rand_augment", default=None,
                   help='timm RandAugment spec, e.g. "rand-m9-mstd0.5-inc1"; "none" = off (default: the recipe\'s)')
    p.add_argument("--random_erasing", type=float, default=None,
                   help="probability of erasing one random box (0.25 in the recipes; 0 = off)")
    p.add_argument("--eval_crop_pct", type=float, default=None,
                   help="evaluation and the saved (pipeline) processor: resize the short side to image_size / "
                        "eval_crop_pct, centre-crop image_size. Default: the official rule, 0.875 up to 224 px, "
                        "else 1 (the whole short side)")
    p.add_argument("--max_grad_norm", type=non_negative_float, default=0.0)
    p.add_argument("--num_train_epochs", type=positive_int, default=10)
    p.add_argument("--max_train_steps", type=positive_int, default=None)
    p.add_argument("--warmup_epochs", type=non_negative_float, default=None)
    p.add_argument("--gradient_checkpointing", action="store_true",
                   help="recompute each block in the backward pass: less activation memory, about one more forward")
    p.add_argument("--recipe", choices=["demo", "paper"], default=None,
                   help="demo: the short-run recipe for the 32 px demo ViT (no mixup/cutmix/RandAugment/erasing, "
                        "lr 4e-3, 0.8-1 crops); paper: the method's published recipe. Default: demo for a demo-sized "
                        "model, paper otherwise. Flags given replace either's values")
    p.add_argument("--trainable_blocks", type=non_negative_int, default=None,
                   help="partial fine-tuning (MAE): train only the last K blocks, the final norm and the head; 0 = "
                        "linear probe (a BatchNorm without affine before the linear head, folded into it on save). "
                        "Default: train everything")
    add_loop_arguments(p)
    say_recipe_defaults(p, FinetuneRecipe, "the recipe's, see --recipe")
    args = p.parse_args(argv)
    check_loop_arguments(p, args)
    try:
        check_values(vars(args))
    except ValueError as error:
        p.error(str(error))
    return args


if __name__ == "__main__":
    answer_help_early(parse_args)

# Below the parser: these load torch and transformers, which `--help` does not wait for.
import numpy as np
import torch
from transformers import AutoConfig
import hf_mim
from hf_mim.data import Augmentation, SeededImageDataset, collate, load_image_dataset, mixup_cutmix
from hf_mim.rand_augment import RandomErasing, parse_rand_augment
from hf_mim.hub import demo_note, push_folder, write_model_card
from hf_mim.metrics import load_metric
from hf_mim.planning import command_line, plan_schedule, with_overrides
from hf_mim.video_data import SeededVideoDataset, is_video_model, video_finetune_splits
from hf_mim.training import (BestModelKeeper, SlowRunWarning, TrainingLoop, build_optimizer, build_scheduler,
                             enable_activation_checkpointing, describe_run, end_training_together,
                             resolve_checkpoint, save_pretrained_atomically)


def load_splits(args):
    if is_video_model(args.model_name_or_path):
        return video_finetune_splits(args)
    if args.train_dir:
        train = load_image_dataset(train_dir=args.train_dir, image_column=args.image_column,
                                   label_column=args.label_column, **image_checks(args))
        evaluation = (load_image_dataset(train_dir=args.validation_dir, image_column=args.image_column,
                                         label_column=args.label_column) if args.validation_dir else None)
        return train, evaluation
    eval_split = args.eval_split or ("validation" if args.dataset_name else "test")
    train = load_image_dataset(args.dataset_name, None, args.train_split, args.image_column, args.label_column,
                               **image_checks(args))
    try:
        evaluation = load_image_dataset(args.dataset_name, None, eval_split, args.image_column, args.label_column)
    except (ValueError, KeyError) as error:
        logger.warning("no evaluation split %r (%s); the final model is kept", eval_split, error)
        evaluation = None
    return train, evaluation


def build_classifier(args, train):
    """(method, settings, model): the method's classifier with the fine-tuning switches applied to a pretraining
    checkpoint, and the recipe with the flags given."""
    config = load_model_config(args.model_name_or_path)
    method = hf_mim.method_of_config(config)
    settings = finetuning_settings(args, method, config)
    cls = hf_mim.backbone_of_config(config).classification_class
    is_pretraining = any(not a.endswith("Classification") for a in (config.architectures or ["?"]))
    if is_pretraining:  # the switches now, so that the flags below win over them (the config then names the classifier)
        switches = cls.finetune_config(config)
        logger.info("pretraining checkpoint: the method's fine-tuning switches %s",
                    ", ".join(f"{field}={new!r} (was {old!r})" for field, (old, new) in switches.items()) or "(none)")
    names = train.label_names or sorted({str(v) for v in train.dataset[train.label_column]})
    config.num_labels = len(names)
    config.id2label = {i: name for i, name in enumerate(names)}
    config.label2id = {name: i for i, name in enumerate(names)}
    config.drop_path_rate = settings.drop_path_rate
    if args.config_overrides:
        config = apply_config_overrides(config, args.config_overrides)
    config = type(config)(**config.to_dict())
    if args.from_scratch:
        model = cls(config)
    else:
        model = cls.from_pretrained(args.model_name_or_path, config=config, ignore_mismatched_sizes=not is_pretraining)
    return method, settings, model


class BatchNormLinear(torch.nn.Module):
    """MAE's linear-probe head: BatchNorm without affine parameters, then the linear classifier. Saved folded into
    one Linear (`folded`), so the saved model is the method's plain classifier and gives the same logits."""

    def __init__(self, linear: torch.nn.Linear, eps: float = 1e-6):
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(linear.in_features, affine=False, eps=eps)
        self.linear = linear

    def forward(self, x):
        return self.linear(self.norm(x))

    def folded(self) -> torch.nn.Linear:
        """W (x - mean) / sd + b as one Linear, with the running statistics (what evaluation uses)."""
        scale = (self.norm.running_var + self.norm.eps).rsqrt()
        linear = torch.nn.Linear(self.linear.in_features, self.linear.out_features)
        with torch.no_grad():
            linear.weight.copy_(self.linear.weight * scale)
            linear.bias.copy_(self.linear.bias - linear.weight @ self.norm.running_mean)
        return linear.to(self.linear.weight.device)


def restrict_trainable(model, trainable_blocks: int) -> str:
    """MAE's partial fine-tuning: freeze everything but the last `trainable_blocks` encoder blocks, the final norm
    (the encoder's, or the pooled features' under mean pooling) and the head; 0 is the linear probe (the head alone,
    behind a BatchNorm). Returns the log line."""
    blocks = getattr(model.encoder, "blocks", None)
    if blocks is None or not isinstance(getattr(model, "head", None), torch.nn.Linear):
        raise UsageError(f"--trainable_blocks: {type(model).__name__} is not a ViT classifier with encoder blocks "
                         "and a linear head; drop the flag")
    if trainable_blocks > len(blocks):
        raise UsageError(f"--trainable_blocks {trainable_blocks}: the model has {len(blocks)} blocks; "
                         "pass at most that")
    model.requires_grad_(False)
    if trainable_blocks == 0:
        model.head = BatchNormLinear(model.head)
    else:
        for module in [*blocks[len(blocks) - trainable_blocks:], model.encoder.norm, getattr(model, "fc_norm", None)]:
            if module is not None:
                module.requires_grad_(True)
    model.head.requires_grad_(True)
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    what = ("linear probe: a BatchNorm (no affine) and the linear head" if trainable_blocks == 0 else
            f"partial fine-tuning: the last {trainable_blocks} of {len(blocks)} blocks, the final norm and the head")
    return f"{what} train ({count:,} of {sum(p.numel() for p in model.parameters()):,} parameters); the rest is frozen"


def savable(model):
    """The model to save: itself, or a copy whose linear-probe head is folded into one Linear."""
    if not isinstance(getattr(model, "head", None), BatchNormLinear):
        return model
    folded = copy.deepcopy(model)
    folded.head = model.head.folded()
    return folded


def finetuning_settings(args, method, config):
    """The method's fine-tuning recipe, its demo variant for a demo-sized model (or as `--recipe` says), with the
    flags given; logged."""
    demo_sized = demo_note(method, config) is not None
    recipe_name = args.recipe or ("demo" if demo_sized else "paper")
    recipe = method.finetuning_recipe(hf_mim.backbone_of_config(config))
    if recipe_name == "demo":
        recipe = recipe.for_demo()
    reason = "" if args.recipe else (" (a demo-sized model; --recipe paper for the method's published one)"
                                      if demo_sized else " (--recipe demo for the short-run one)")
    logger.info("fine-tuning recipe: %s%s", recipe_name, reason)
    return with_overrides(recipe, args)


def load_model_config(path: str):
    """The config of `--model_name_or_path`; a local path that is not there, or a folder without config.json,
    stops with one line before any Hub call."""
    check_model_source(path, "--model_name_or_path")
    try:
        return AutoConfig.from_pretrained(path)
    except OSError as error:
        raise UsageError(f"--model_name_or_path {path}: no local folder of that name, and the Hub gave no model "
                         f"({str(error).splitlines()[0]})") from None


def build_loaders(args, settings, model, train, evaluation):
    """(train_set, train_loader, eval_processor, eval_loader or None). Training sees the recipe's augmentation;
    evaluation and the saved model see whole images as the official evaluation does (short side, centre crop)."""
    processors = hf_mim.backbone_of_config(model.config).image_processor_class
    normalization = processors.normalization_saved_with(args.model_name_or_path)
    train_processor = processors.for_model_config(model.config, **normalization)
    rand_augment = parse_rand_augment(settings.rand_augment, train_processor.image_mean)
    erasing = settings.random_erasing
    dataset_class = SeededVideoDataset if "video" in model.input_modalities else SeededImageDataset
    train_set = dataset_class(train, train_processor, Augmentation(crop_scale=settings.crop_scale), seed=args.seed,
                              with_labels=True, rand_augment=rand_augment,
                              random_erasing=RandomErasing(erasing) if erasing > 0 else None)
    logger.info("augmentation: crop scale %s, RandAugment %s, random erasing %.2f, mixup %.2f, cutmix %.2f%s",
                settings.crop_scale, rand_augment, erasing, settings.mixup, settings.cutmix,
                " (clips: one crop, flip and cutmix box for all frames)" if dataset_class is SeededVideoDataset else "")
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_size=args.per_device_train_batch_size, shuffle=True, collate_fn=collate,
        num_workers=args.dataloader_num_workers, drop_last=len(train_set) > args.per_device_train_batch_size,
    )
    eval_processor = processors.for_evaluation(model.config, crop_pct=args.eval_crop_pct, **normalization)
    logger.info("evaluation: short side to %d px, centre crop %d px", *eval_processor.evaluation_sides())
    eval_loader = None
    if evaluation is not None:
        eval_set = dataset_class(evaluation, eval_processor, None, seed=args.seed, with_labels=True,
                                 replace_unreadable=False)
        eval_loader = torch.utils.data.DataLoader(eval_set, batch_size=args.per_device_eval_batch_size,
                                                  collate_fn=collate, num_workers=args.dataloader_num_workers)
    return train_set, train_loader, eval_processor, eval_loader


def classification_forward(settings, num_labels: int, rng):
    """The loss of one batch: mixup/cutmix with smoothed soft labels where the recipe mixes, else cross-entropy
    with label smoothing."""
    smoothing = settings.label_smoothing

    def forward(model, batch):
        if settings.mixup > 0 or settings.cutmix > 0:
            batch = mixup_cutmix(batch, num_labels, rng, settings.mixup, settings.cutmix, label_smoothing=smoothing)
            return model(**batch).loss, {}
        out = model(**batch)
        return torch.nn.functional.cross_entropy(out.logits.float(), batch["labels"], label_smoothing=smoothing), {}

    return forward


def main(argv=None) -> dict:
    args = parse_args(argv)
    check_model_source(args.model_name_or_path, "--model_name_or_path")
    accelerator = make_accelerator(args)
    train, evaluation = load_splits(args)
    method, settings, model = build_classifier(args, train)
    if args.trainable_blocks is not None:
        logger.info(restrict_trainable(model, args.trainable_blocks))
    if args.gradient_checkpointing:
        enable_activation_checkpointing(model)
    train_set, train_loader, eval_processor, eval_loader = build_loaders(args, settings, model, train, evaluation)
    plan = plan_schedule(batches_per_epoch=len(train_loader), per_device_batch_size=args.per_device_train_batch_size,
                         num_processes=accelerator.num_processes,
                         gradient_accumulation_steps=args.gradient_accumulation_steps,
                         num_epochs=args.num_train_epochs, max_steps=args.max_train_steps,
                         warmup_epochs=settings.warmup_epochs, base_learning_rate=settings.base_learning_rate,
                         lr_batch_divisor=settings.lr_batch_divisor, learning_rate=settings.learning_rate,
                         max_warmup_share=0.5)
    layer_decay = settings.layer_decay
    optimizer = build_optimizer(model, plan.learning_rate, settings.weight_decay, (0.9, 0.999),
                                layer_decay if layer_decay < 1 else None)
    scheduler = build_scheduler(optimizer, plan.learning_rate, plan.warmup_steps, plan.max_steps,
                                settings.min_learning_rate)
    num_labels = model.config.num_labels
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    if eval_loader is not None:
        eval_loader = accelerator.prepare(eval_loader)
    logger.info("fine-tuning %s (%s) on %s: %d classes, %d updates, lr %.3g, layer decay %s",
                args.model_name_or_path, "random init" if args.from_scratch else "pretrained", train.source,
                num_labels, plan.max_steps, plan.learning_rate, layer_decay)
    forward = classification_forward(settings, num_labels, np.random.default_rng(args.seed + accelerator.process_index))
    keeper = BestModelKeeper(
        accelerator, lambda: evaluate_model(accelerator, model, eval_loader),
        lambda: save_model(args, accelerator, model, eval_processor), "accuracy",
        lambda m: f"top-1 {m['accuracy']:.4f}, top-5 {m['top5_accuracy']:.4f}", has_eval=eval_loader is not None)
    keeper.loop = loop = TrainingLoop(
        accelerator, model, optimizer, scheduler, train_loader, train_set, output_dir=args.output_dir,
        max_train_steps=plan.max_steps, num_epochs=plan.epochs, checkpointing_steps=args.checkpointing_steps,
        checkpoints_total_limit=args.checkpoints_total_limit, max_grad_norm=args.max_grad_norm or None,
        max_nonfinite_skips=args.max_nonfinite_skips, logging_steps=args.logging_steps, forward=forward,
        on_epoch_end=keeper, progress_desc="finetune",
        on_update=SlowRunWarning(accelerator.device.type, plan.max_steps),
        run_descriptor=describe_run(method.name, accelerator.unwrap_model(model).config, plan.effective_batch, args.seed,
                                    train.source),
        allow_resume_changes=args.allow_resume_changes, max_weight_magnitude=args.max_weight_magnitude,
    )
    if args.resume_from_checkpoint:
        loop.resume(resolve_checkpoint(args.output_dir, args.resume_from_checkpoint))
    history = loop.run()
    if eval_loader is None:
        save_model(args, accelerator, model, eval_processor)
    best = keeper.best
    summary = {"steps": loop.global_step, "best_epoch": best["epoch"], "best_accuracy": best.get("accuracy"),
               "best_top5_accuracy": best.get("top5_accuracy"), "eval_history": keeper.results,
               "final_loss": history[-1]["loss"] if history else None, "learning_rate": plan.learning_rate}
    if accelerator.is_main_process:
        write_outputs(args, method, accelerator.unwrap_model(model).config, train, plan, summary, best,
                      eval_processor, command_line("scripts/finetune.py", argv))
    end_training_together(accelerator)
    return summary


def write_outputs(args, method, config, train, plan, summary, best, eval_processor, command: str) -> None:
    """finetune_results.json and the model card (with the best epoch's accuracy), then the push."""
    out_dir = Path(args.output_dir)
    (out_dir / "finetune_results.json").write_text(json.dumps(summary, indent=2))
    card_results = []
    if best["epoch"] is not None:
        crop = "short side {}, centre crop {}".format(*eval_processor.evaluation_sides())
        protocol = {None: "fine-tune", 0: "linear probe (BatchNorm head)"}.get(
            args.trainable_blocks, f"partial fine-tune (last {args.trainable_blocks} blocks)")
        card_results = [{"metric": "accuracy", "value": best["accuracy"], "protocol": f"{protocol} top-1 ({crop})"},
                        {"metric": "top5_accuracy", "value": best["top5_accuracy"],
                         "protocol": f"{protocol} top-5 ({crop})"}]
    write_model_card(
        out_dir, model_name=args.hub_model_id or out_dir.name, method=method, config=config,
        data_source=train.source, steps=summary["steps"], effective_batch=plan.effective_batch,
        learning_rate=plan.learning_rate, final_loss=summary["final_loss"], command=command,
        weights_from="random initialisation (baseline)" if args.from_scratch else args.model_name_or_path,
        results=card_results, is_classifier=True,
    )
    if args.push_to_hub:
        push_folder(out_dir, args.hub_model_id)


@torch.no_grad()
def evaluate_model(accelerator, model, loader) -> dict:
    """Top-1 and top-5 over the whole evaluation split (gathered across processes) with the local metrics."""
    model.eval()
    all_logits, all_labels = [], []
    for batch in loader:
        batch.pop("num_skipped")
        logits = model(pixel_values=batch["pixel_values"]).logits
        logits, labels = accelerator.gather_for_metrics((logits.float(), batch["labels"]))
        all_logits.append(logits.cpu())
        all_labels.append(labels.cpu())
    model.train()
    logits, labels = torch.cat(all_logits), torch.cat(all_labels)
    top1 = load_metric("accuracy").compute(predictions=logits.argmax(-1).tolist(), references=labels.tolist())
    top5 = load_metric("top_k_accuracy").compute(predictions=logits.tolist(), references=labels.tolist(), k=5)
    return {"accuracy": top1["accuracy"], "top5_accuracy": top5["top_k_accuracy"]}


def save_model(args, accelerator, model, processor) -> None:
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_pretrained_atomically(args.output_dir, savable(accelerator.unwrap_model(model)), processor)


if __name__ == "__main__":
    run_main(main)
