#!/usr/bin/env python
"""Fine-tune a pretrained hf-mim encoder for semantic segmentation (transformers' UperNet) with Accelerate.

    accelerate launch scripts/finetune_segmentation.py --model_name_or_path outputs/mae-pretrain \\
        --output_dir outputs/mae-seg
    python -c 'import hf_mim, transformers; print(transformers.pipeline("image-segmentation", "outputs/mae-seg")(img))'

The encoder of any pretraining, fine-tuned or converted folder of the five methods becomes a UperNet backbone (4
blocks -> a 4-scale pyramid). The recipe is BEiT/MAE's ADE20K one scaled to the data: AdamW, layer-wise lr decay
0.65 (the encoder's layer ids; neck and heads at the top), linear warmup + poly decay, drop path 0.1, random
resize (ratio 0.5-2) / crop / flip of image and mask together plus photometric jitter, ignore index 255, auxiliary
FCN head (weight 0.4), whole-image or sliding-window evaluation. Data: the embedded Fashion-MNIST segmentation
sample (no flag), `--train_dir` images with `--mask_dir` label maps (same stems), or `--dataset_name` with
`image` / `annotation` columns (ADE20K scene-parsing layout; `--reduce_labels` for its 0 = "other").
The model with the best validation mean IoU is what `--output_dir` holds.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from hf_mim_cli.arguments import (ArgumentParser, UsageError, add_data_arguments, add_loop_arguments,
                                  answer_help_early, check_loop_arguments, fraction, image_checks, in_range,
                                  loop_options, make_accelerator, non_negative_float, open_fraction, positive_float,
                                  positive_int, run_main)

logger = logging.getLogger("hf_mim.finetune_segmentation")


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_name_or_path", required=True, help="a pretrained hf-mim folder or Hub id")
    p.add_argument("--from_scratch", action="store_true", help="same architecture, random init (the baseline)")
    add_data_arguments(p)
    p.add_argument("--mask_dir", help="label maps (PNG, one class id per pixel) named as the --train_dir images")
    p.add_argument("--validation_dir", help="evaluation images (with --validation_mask_dir)")
    p.add_argument("--validation_mask_dir")
    p.add_argument("--annotation_column", default="annotation")
    p.add_argument("--train_split", default="train")
    p.add_argument("--eval_split", default="validation")
    p.add_argument("--reduce_labels", action="store_true",
                   help="ADE20K's convention: label 0 ('other') is ignored (255), the others shift down by one")
    p.add_argument("--id2label", help="a JSON file {id: name} (default: the data's id2label.json)")
    p.add_argument("--output_dir", default="outputs/finetune_segmentation")
    p.add_argument("--image_size", type=positive_int, default=None,
                   help="training crop and evaluation side in px (default: the encoder's pretraining size; the "
                        "logits are scored at each annotation's own size)")
    p.add_argument("--out_indices", type=int, nargs=4, default=None,
                   help="the 4 encoder blocks of the pyramid (default: 1/3, 1/2, 2/3 and all of the depth)")
    p.add_argument("--head_hidden_size", type=positive_int, default=None,
                   help="UperNet's channels (512 in the recipes; default: the encoder's width)")
    p.add_argument("--per_device_train_batch_size", type=positive_int, default=16)
    p.add_argument("--per_device_eval_batch_size", type=positive_int, default=32)
    p.add_argument("--learning_rate", type=non_negative_float, default=1e-3, help="peak lr of the top layer")
    p.add_argument("--min_learning_rate", type=non_negative_float, default=0.0)
    p.add_argument("--layer_decay", type=open_fraction, default=0.65, help="layer-wise lr decay (1 = off)")
    p.add_argument("--weight_decay", type=non_negative_float, default=0.05)
    p.add_argument("--drop_path_rate", type=in_range(float, 0, 1, open_high=True), default=0.1)
    p.add_argument("--poly_power", type=positive_float, default=1.0)
    p.add_argument("--warmup_ratio", type=fraction, default=0.1, help="share of the updates spent warming up")
    p.add_argument("--ratio_range", type=positive_float, nargs=2, default=(0.5, 2.0), metavar=("MIN", "MAX"),
                   help="random resize: the short side becomes image_size x a ratio in this range")
    p.add_argument("--cat_max_ratio", type=open_fraction, default=0.75,
                   help="redraw a crop (up to 10 times) while one class covers more than this share (1 = off)")
    p.add_argument("--photometric", type=fraction, default=0.2,
                   help="brightness / contrast / saturation jitter of the image (0 = off)")
    p.add_argument("--eval_mode", choices=["whole", "slide"], default="whole",
                   help="whole: the image resized to image_size; slide: short side to image_size, windows of "
                        "image_size at --eval_stride, logits averaged")
    p.add_argument("--eval_stride", type=positive_int, default=None, help="sliding stride (default: 2/3 window)")
    p.add_argument("--max_grad_norm", type=non_negative_float, default=0.0)
    p.add_argument("--num_train_epochs", type=positive_int, default=20)
    p.add_argument("--max_train_steps", type=positive_int, default=None)
    add_loop_arguments(p)
    args = p.parse_args(argv)
    check_loop_arguments(p, args)
    if args.ratio_range[0] > args.ratio_range[1]:
        p.error(f"argument --ratio_range: {args.ratio_range[0]} > {args.ratio_range[1]}; pass MIN MAX")
    return args


if __name__ == "__main__":
    answer_help_early(parse_args)

# Below the parser: these load torch and transformers, which `--help` does not wait for.
import torch
from transformers import AutoBackbone, AutoConfig, UperNetForSemanticSegmentation
import hf_mim
from hf_mim.backbones import save_segmentation_model, segmentation_image_processor, upernet_config
from hf_mim.hub import push_folder, write_model_card
from hf_mim.metrics.mean_iou.mean_iou import confusion_matrix, scores_from_confusion
from hf_mim.planning import command_line, plan_schedule
from hf_mim.segmentation_data import (IGNORE_INDEX, SegmentationAugmentation, SegmentationDataset,
                                      collate_segmentation, load_segmentation_dataset)
from hf_mim.training import (BestModelKeeper, TrainingLoop, build_optimizer, build_scheduler, describe_run,
                             end_training_together, poly_lr_at, resolve_checkpoint)


def load_splits(args):
    """(train, evaluation or None, id2label)."""
    checks = image_checks(args)
    if args.train_dir:
        train = load_segmentation_dataset(train_dir=args.train_dir, mask_dir=args.mask_dir, **checks)
        evaluation = (load_segmentation_dataset(train_dir=args.validation_dir, mask_dir=args.validation_mask_dir)
                      if args.validation_dir else None)
    else:
        kwargs = dict(dataset_name=args.dataset_name, image_column=args.image_column,
                      annotation_column=args.annotation_column)
        train = load_segmentation_dataset(split=args.train_split, **kwargs, **checks)
        try:
            evaluation = load_segmentation_dataset(split=args.eval_split, **kwargs)
        except (UsageError, ValueError, KeyError) as error:
            logger.warning("no evaluation split %r (%s); the final model is kept", args.eval_split, error)
            evaluation = None
    if args.id2label:
        id2label = {int(k): v for k, v in json.loads(Path(args.id2label).read_text()).items()}
    elif train.label_names:
        id2label = dict(enumerate(train.label_names))
    else:
        raise UsageError(f"{train.source} names no classes: pass --id2label FILE.json ({{\"0\": \"wall\", ...}}; "
                         "after --reduce_labels, id 0 is the first real class)")
    return train, evaluation, id2label


def build_model(args, id2label):
    """(method, UperNet): the backbone loaded from the encoder folder (or the same architecture at random init)
    with the recipe's drop path, neck and heads from their own init."""
    config = AutoConfig.from_pretrained(args.model_name_or_path)
    method = hf_mim.method_of_config(config)
    backbone_fields = {"drop_path_rate": args.drop_path_rate}
    if args.from_scratch:
        config.update(backbone_fields)
        backbone = AutoBackbone.from_config(config, out_indices=args.out_indices)
    else:
        backbone = AutoBackbone.from_pretrained(args.model_name_or_path, out_indices=args.out_indices,
                                                **backbone_fields)
    width = args.head_hidden_size or backbone.config.hidden_size
    model = UperNetForSemanticSegmentation(upernet_config(backbone.config, id2label, hidden_size=width,
                                                          auxiliary_channels=max(width // 2, 1)))
    model.backbone.load_state_dict(backbone.state_dict())
    return method, model


def build_loaders(args, model, train, evaluation):
    """(processor, train_set, train_loader, eval_loader or None)."""
    normalization = hf_mim.backbone_of_config(model.config.backbone_config).image_processor_class \
        .normalization_saved_with(args.model_name_or_path)
    processor = segmentation_image_processor(args.image_size, normalization.get("image_mean", (0.5,) * 3),
                                             normalization.get("image_std", (0.5,) * 3))
    augmentation = SegmentationAugmentation(args.image_size, tuple(args.ratio_range), args.cat_max_ratio,
                                            photometric=args.photometric)
    train_set = SegmentationDataset(train, processor, augmentation, seed=args.seed, reduce_labels=args.reduce_labels)
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_size=args.per_device_train_batch_size, shuffle=True, collate_fn=collate_segmentation,
        num_workers=args.dataloader_num_workers, drop_last=len(train_set) > args.per_device_train_batch_size)
    eval_loader = None
    if evaluation is not None:
        eval_set = SegmentationDataset(evaluation, processor, None, reduce_labels=args.reduce_labels,
                                       keep_aspect=args.eval_mode == "slide")
        eval_loader = torch.utils.data.DataLoader(eval_set, batch_size=args.per_device_eval_batch_size,
                                                  collate_fn=collate_segmentation,
                                                  num_workers=args.dataloader_num_workers)
    return processor, train_set, train_loader, eval_loader


def sliding_logits(model, pixel_values: torch.Tensor, window: int, stride: int, num_labels: int) -> torch.Tensor:
    """(1, C, H, W) -> (1, K, H, W): logits of window x window crops every `stride` px (the last window flush
    with the edge), averaged where they overlap (mmsegmentation's slide inference)."""
    _, _, height, width = pixel_values.shape
    total = pixel_values.new_zeros(1, num_labels, height, width)
    count = pixel_values.new_zeros(1, 1, height, width)
    tops = sorted({min(y, max(height - window, 0)) for y in range(0, max(height - window, 0) + stride, stride)})
    lefts = sorted({min(x, max(width - window, 0)) for x in range(0, max(width - window, 0) + stride, stride)})
    for top in tops:
        for left in lefts:
            crop = pixel_values[..., top:top + window, left:left + window]
            total[..., top:top + window, left:left + window] += model(pixel_values=crop).logits
            count[..., top:top + window, left:left + window] += 1
    return total / count


@torch.no_grad()
def evaluate_segmentation(args, accelerator, model, loader, num_labels: int) -> dict:
    """Mean IoU, mean and overall accuracy over the whole evaluation split, at each annotation's own size, from
    per-image confusion matrices summed over images and processes (the local mean_iou metric's arithmetic)."""
    model.eval()
    total = torch.zeros(num_labels, num_labels, dtype=torch.int64)
    window, stride = args.image_size, args.eval_stride or max(1, 2 * args.image_size // 3)
    for batch in loader:
        batch.pop("num_skipped")
        images, labels = batch["pixel_values"], batch["labels"]
        if isinstance(images, torch.Tensor) and args.eval_mode == "whole":
            all_logits = list(model(pixel_values=images).logits)
        else:
            all_logits = [sliding_logits(model, image[None], window, stride, num_labels)[0] for image in images]
        matrices = []
        for logits, label in zip(all_logits, labels):
            logits = torch.nn.functional.interpolate(logits[None].float(), size=label.shape[-2:], mode="bilinear",
                                                     align_corners=False)
            prediction = logits.argmax(1)[0].cpu().numpy()
            matrices.append(torch.from_numpy(confusion_matrix(prediction, label.cpu().numpy(), num_labels,
                                                              IGNORE_INDEX)))
        gathered = accelerator.gather_for_metrics(torch.stack(matrices).to(accelerator.device))
        total += gathered.sum(0).cpu()
    model.train()
    scores = scores_from_confusion(total.numpy())
    return {key: scores[key] for key in ("mean_iou", "mean_accuracy", "overall_accuracy", "per_category_iou")}


def save_model(args, accelerator, model, processor) -> None:
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_segmentation_model(accelerator.unwrap_model(model), args.output_dir, processor)


def main(argv=None) -> dict:
    args = parse_args(argv)
    accelerator = make_accelerator(args)
    train, evaluation, id2label = load_splits(args)
    method, model = build_model(args, id2label)
    args.image_size = args.image_size or model.config.backbone_config.image_size
    processor, train_set, train_loader, eval_loader = build_loaders(args, model, train, evaluation)
    plan = plan_schedule(batches_per_epoch=len(train_loader), per_device_batch_size=args.per_device_train_batch_size,
                         num_processes=accelerator.num_processes,
                         gradient_accumulation_steps=args.gradient_accumulation_steps,
                         num_epochs=args.num_train_epochs, max_steps=args.max_train_steps,
                         warmup_steps=lambda total: int(total * args.warmup_ratio), learning_rate=args.learning_rate)
    layer_decay = args.layer_decay if args.layer_decay < 1 else None
    optimizer = build_optimizer(model, plan.learning_rate, args.weight_decay, (0.9, 0.999), layer_decay,
                                encoder_model=model.backbone)
    scheduler = build_scheduler(optimizer, plan.learning_rate, plan.warmup_steps, plan.max_steps,
                                args.min_learning_rate, schedule=lambda *a: poly_lr_at(*a, power=args.poly_power))
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    if eval_loader is not None:
        eval_loader = accelerator.prepare(eval_loader)
    upernet = accelerator.unwrap_model(model).config
    logger.info("segmentation fine-tuning of %s (%s) on %s: %d classes, %d updates, lr %.3g, layer decay %s, "
                "features %s, %s", args.model_name_or_path, "random init" if args.from_scratch else "pretrained",
                train.source, len(id2label), plan.max_steps, plan.learning_rate, args.layer_decay,
                "/".join(upernet.backbone_config.stage_names[i] for i in upernet.backbone_config.out_indices), "auxiliary head on the third" if
                upernet.use_auxiliary_head else "no auxiliary head (it reads a third feature map)")
    num_labels = upernet.num_labels
    keeper = BestModelKeeper(
        accelerator, lambda: evaluate_segmentation(args, accelerator, model, eval_loader, num_labels),
        lambda: save_model(args, accelerator, model, processor), "mean_iou",
        lambda m: f"mIoU {m['mean_iou']:.4f}, pixel accuracy {m['overall_accuracy']:.4f}",
        has_eval=eval_loader is not None)
    run = describe_run(method.name, accelerator.unwrap_model(model).config, plan.effective_batch, args.seed,
                       train.source)
    keeper.loop = loop = TrainingLoop(accelerator, model, optimizer, scheduler, train_loader, train_set,
                                      max_train_steps=plan.max_steps, num_epochs=plan.epochs,
                                      max_grad_norm=args.max_grad_norm or None, on_epoch_end=keeper,
                                      progress_desc="segmentation", run_descriptor=run, **loop_options(args))
    if args.resume_from_checkpoint:
        loop.resume(resolve_checkpoint(args.output_dir, args.resume_from_checkpoint))
    history = loop.run()
    if eval_loader is None:
        save_model(args, accelerator, model, processor)
    best = keeper.best
    summary = {"steps": loop.global_step, "best_epoch": best["epoch"], "best_mean_iou": best.get("mean_iou"),
               "best_overall_accuracy": best.get("overall_accuracy"), "eval_history": keeper.results,
               "final_loss": history[-1]["loss"] if history else None, "learning_rate": plan.learning_rate}
    if accelerator.is_main_process:
        write_outputs(args, method, accelerator.unwrap_model(model).config, train, plan, summary,
                      command_line("scripts/finetune_segmentation.py", argv))
    end_training_together(accelerator)
    return summary


def write_outputs(args, method, config, train, plan, summary, command: str) -> None:
    """segmentation_results.json and the model card (model-index: image-segmentation, mean_iou), then the push."""
    out_dir = Path(args.output_dir)
    (out_dir / "segmentation_results.json").write_text(json.dumps(summary, indent=2))
    protocol = f"UperNet fine-tune, {args.eval_mode}-image evaluation at {args.image_size} px"
    results = [] if summary["best_epoch"] is None else [
        {"task": "image-segmentation", "metric": metric, "value": summary[f"best_{metric}"], "protocol": protocol}
        for metric in ("mean_iou", "overall_accuracy")]
    write_model_card(
        out_dir, model_name=args.hub_model_id or out_dir.name, method=method, config=config.backbone_config,
        data_source=train.source, steps=summary["steps"], effective_batch=plan.effective_batch,
        learning_rate=plan.learning_rate, final_loss=summary["final_loss"], command=command,
        weights_from="random initialisation (baseline)" if args.from_scratch else args.model_name_or_path,
        results=results, dataset_name="fashion_mnist_segmentation" if not (args.dataset_name or args.train_dir)
        else (args.dataset_name or Path(args.train_dir).name), tags=["image-segmentation", "upernet"],
        template="segmentation.md", pipeline_tag="image-segmentation",
    )
    if args.push_to_hub:
        push_folder(out_dir, args.hub_model_id)


if __name__ == "__main__":
    run_main(main)
