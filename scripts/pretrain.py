#!/usr/bin/env python
"""Pretrain a Masked Image Modeling ViT with Accelerate.

    accelerate launch scripts/pretrain.py --method mae --dataset_name DIR_OR_HUB_ID --output_dir outputs/mae
    python scripts/pretrain.py --method mae          # CPU demo: tiny ViT on the embedded Fashion-MNIST sample
    python scripts/pretrain.py --method maskfeat --modality video    # video: the embedded Fashion-MNIST clips

The script knows nothing method-specific beyond the classes and recipe picked by `--method`; masking, targets
and losses live in the model and its image processor.
"""

from __future__ import annotations

import argparse
import json
import logging
from functools import partial
from pathlib import Path

from hf_mim_cli.arguments import (ArgumentParser, add_data_arguments, add_loop_arguments, answer_help_early,
                                  apply_config_overrides, check_loop_arguments, check_model_source, image_checks,
                                  make_accelerator, non_negative_float, positive_int, run_main, say_recipe_defaults)
from hf_mim_cli.catalog import MODALITIES, backbone_families, method_names
from hf_mim_cli.recipes import PretrainRecipe

logger = logging.getLogger("hf_mim.pretrain")


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", required=True, choices=method_names())
    p.add_argument("--backbone", choices=backbone_families(), default=None,
                   help="encoder family (default: the method's first of --modality, a ViT)")
    p.add_argument("--modality", choices=MODALITIES, default="image", help="what the model takes: images or video clips")
    p.add_argument("--model_name_or_path", help="start from these weights (a folder or Hub id) instead of random init")
    p.add_argument("--config_overrides", default="", help='config fields, "k=v,k=v", e.g. "hidden_size=384,mask_ratio=0.6"')
    p.add_argument("--model_size", choices=["demo", "base"], default=None,
                   help="demo: tiny 32 px model for CPU; base: the method's canonical ViT-B/16 (with --backbone swin: "
                        "SimMIM's Swin-B, 192 px, window 6). "
                        "Default: demo on the embedded sample, base otherwise")
    p.add_argument("--tokenizer_name_or_path", help="visual tokenizer of the methods that predict tokens: a folder from "
                   "scripts/train_tokenizer.py or scripts/convert_checkpoint.py --from dalle-encoder")
    add_data_arguments(p)
    p.add_argument("--output_dir", default=None, help="default: outputs/<method>-pretrain")
    p.add_argument("--per_device_train_batch_size", type=positive_int, default=None)
    p.add_argument("--base_learning_rate", type=non_negative_float, default=None,
                   help="blr; the lr is blr * effective batch / the recipe's divisor (256 or 512), or blr itself where the recipe gives an absolute lr")
    p.add_argument("--min_learning_rate", type=non_negative_float, default=None)
    p.add_argument("--weight_decay", type=non_negative_float, default=None)
    p.add_argument("--max_grad_norm", type=non_negative_float, default=None,
                   help="gradient clip (method default; 0 disables)")
    p.add_argument("--num_train_epochs", type=positive_int, default=None)
    p.add_argument("--max_train_steps", type=positive_int, default=None, help="optimizer updates; overrides epochs")
    p.add_argument("--warmup_epochs", type=non_negative_float, default=None)
    p.add_argument("--augment_on_device", action="store_true",
                   help="crop, flip, jitter, resize and normalise on the accelerator (same random choices as the CPU "
                        "path, bicubic resampling); loader workers only decode and resize to --augmentation_source_size")
    p.add_argument("--augmentation_source_size", type=positive_int, default=None,
                   help="side of the square each image is resized to before the device crops it (default 1.5 x image size)")
    p.add_argument("--gradient_checkpointing", action="store_true",
                   help="recompute each block in the backward pass: less activation memory, about one more forward")
    add_loop_arguments(p)
    say_recipe_defaults(p, PretrainRecipe, "the method's recipe for the --model_size")
    args = p.parse_args(argv)
    check_loop_arguments(p, args)
    if args.augmentation_source_size is not None and not args.augment_on_device:
        p.error("--augmentation_source_size only applies with --augment_on_device; add it or drop the size")
    method = hf_mim.get_method(args.method)
    if args.tokenizer_name_or_path and not method.can_use_tokenizer:
        p.error(f"--method {args.method} predicts no visual tokens; drop --tokenizer_name_or_path")
    try:
        method.backbone(args.backbone, args.modality)
    except ValueError as error:
        p.error(str(error))
    for flag in ("model_name_or_path", "tokenizer_name_or_path"):
        if getattr(args, flag):
            check_model_source(getattr(args, flag), f"--{flag}")
    return args


if __name__ == "__main__":
    answer_help_early(parse_args)

# Below the parser: these load torch and transformers, which `--help` does not wait for.
import torch
from transformers import AutoConfig
import hf_mim
from hf_mim.data import Augmentation, SeededImageDataset, collate, load_image_dataset
from hf_mim.device_augmentation import DeviceAugmentation, DeviceAugmentedImageDataset
from hf_mim.hub import push_folder, write_model_card
from hf_mim.video_data import video_pretraining_data
from hf_mim.planning import command_line, plan_schedule, with_overrides
from hf_mim.training import (SlowRunWarning, TrainingLoop, build_optimizer, build_scheduler,
                             enable_activation_checkpointing, describe_run, end_training_together, resolve_checkpoint,
                             save_pretrained_atomically)


def build_config(args, method, backbone):
    """Canonical config (or the demo one), then the pretrained folder's, then `--config_overrides`."""
    uses_sample = not (args.dataset_name or args.train_dir)
    size = args.model_size or ("demo" if uses_sample else "base")
    if args.model_name_or_path:
        config = AutoConfig.from_pretrained(args.model_name_or_path)
        if not isinstance(config, backbone.config_class):
            raise ValueError(f"{args.model_name_or_path} holds a {config.model_type} model, not --method "
                             f"{method.name} on a {backbone.config_class.model_type} backbone")
    else:
        config = backbone.config_class(**(backbone.demo_config if size == "demo" else {}))
    if args.tokenizer_name_or_path:
        # the token head predicts the tokenizer's vocabulary
        tokenizer_config = AutoConfig.from_pretrained(args.tokenizer_name_or_path)
        config.vocab_size = tokenizer_config.vocab_size
        known = type(tokenizer_config)().to_dict()
        config.tokenizer_config = {k: v for k, v in tokenizer_config.to_diff_dict().items()
                                   if k in known and k not in ("architectures", "auto_map", "transformers_version")}
    if args.config_overrides:
        config = apply_config_overrides(config, args.config_overrides)
    config = backbone.config_class(**config.to_dict())  # re-validate the combination
    return config, size


def model_size_note(args, size: str, backbone) -> str:
    """The start line's model size: which one, and why (the flag, or the data's default) with the flag for the
    other."""
    if args.model_size:
        return f"{size} config (--model_size {size})"
    base = backbone.config_class()  # the config's defaults are the family's canonical model
    base_name = f"{backbone.title} at {base.image_size} px"
    demo_name = f"the {backbone.demo_config.get('image_size', base.image_size)} px demo {backbone.title}"
    if size == "base":
        return (f"base config (the method's {base_name}, the default with --train_dir or --dataset_name; "
                f"--model_size demo picks {demo_name} that trains in minutes on a CPU)")
    return f"demo config ({demo_name}, the default on the embedded sample; --model_size base for the {base_name})"


def build_model(args, method, backbone, config):
    if args.model_name_or_path:
        model = backbone.pretraining_class.from_pretrained(args.model_name_or_path, config=config)
    else:
        model = backbone.pretraining_class(config)
    if config.needs_tokenizer:
        if not args.tokenizer_name_or_path and not args.model_name_or_path:
            raise SystemExit(
                f"--method {method.name} predicts visual tokens and needs --tokenizer_name_or_path. Get one by training "
                "it on your images (python scripts/train_tokenizer.py --output_dir outputs/tokenizer) or by converting "
                "DALL-E's encoder (python scripts/convert_checkpoint.py --from dalle-encoder --checkpoint encoder.pkl "
                "--output_dir outputs/dalle-tokenizer)."
            )
        if args.tokenizer_name_or_path:
            from hf_mim.modeling.modeling_dvae import MimDvaeModel

            model.load_tokenizer(MimDvaeModel.from_pretrained(args.tokenizer_name_or_path))
    return model


def main(argv=None) -> dict:
    args = parse_args(argv)
    method = hf_mim.get_method(args.method)
    args.output_dir = args.output_dir or f"outputs/{method.name}-pretrain"
    accelerator = make_accelerator(args)

    backbone = method.backbone(args.backbone, args.modality)
    config, size = build_config(args, method, backbone)
    settings = with_overrides(method.pretraining_recipe(size, backbone), args)
    model = build_model(args, method, backbone, config)
    if args.gradient_checkpointing:
        enable_activation_checkpointing(model)
    data, processor, dataset, train_dataset, on_device = pretraining_data(args, backbone, settings, config)
    batch_size = settings.per_device_train_batch_size
    loader = torch.utils.data.DataLoader(train_dataset, batch_size=batch_size, shuffle=True, collate_fn=collate,
                                         num_workers=args.dataloader_num_workers, drop_last=len(dataset) > batch_size)
    plan = plan_schedule(batches_per_epoch=len(loader), per_device_batch_size=batch_size,
                         num_processes=accelerator.num_processes,
                         gradient_accumulation_steps=args.gradient_accumulation_steps,
                         num_epochs=settings.num_train_epochs, max_steps=args.max_train_steps,
                         warmup_epochs=settings.warmup_epochs, base_learning_rate=settings.base_learning_rate,
                         lr_batch_divisor=settings.lr_batch_divisor)
    logger.info("method %s, %s, data: %s (%d images), %d updates, effective batch %d, lr %.3g (blr %.3g)",
                method.name, model_size_note(args, size, backbone), data.source, len(dataset), plan.max_steps,
                plan.effective_batch, plan.learning_rate, settings.base_learning_rate)
    slow_run = SlowRunWarning(accelerator.device.type, plan.max_steps, advice="pass --model_size demo (the 32 px "
                              "demo ViT), fewer --max_train_steps, or run on a GPU")

    optimizer = build_optimizer(model, plan.learning_rate, settings.weight_decay, settings.betas)
    scheduler = build_scheduler(optimizer, plan.learning_rate, plan.warmup_steps, plan.max_steps,
                                settings.min_learning_rate)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    if accelerator.is_main_process and args.report_to != "none":
        accelerator.init_trackers(f"hf-mim-{method.name}", config={k: str(v) for k, v in vars(args).items()})

    unwrapped = accelerator.unwrap_model(model)
    loop = TrainingLoop(
        accelerator, model, optimizer, scheduler, loader, train_dataset, output_dir=args.output_dir,
        max_train_steps=plan.max_steps, num_epochs=plan.epochs, checkpointing_steps=args.checkpointing_steps,
        checkpoints_total_limit=args.checkpoints_total_limit, max_grad_norm=settings.max_grad_norm or None,
        max_nonfinite_skips=args.max_nonfinite_skips, logging_steps=args.logging_steps,
        forward=partial(pretraining_forward, augmentation=on_device),
        on_update=lambda step: (unwrapped.after_optimizer_step(), slow_run(step)), progress_desc=f"pretrain {method.name}",
        run_descriptor=describe_run(method.name, config, plan.effective_batch, args.seed, data.source),
        allow_resume_changes=args.allow_resume_changes, max_weight_magnitude=args.max_weight_magnitude,
    )
    if args.resume_from_checkpoint:
        loop.resume(resolve_checkpoint(args.output_dir, args.resume_from_checkpoint))
    history = loop.run()

    accelerator.wait_for_everyone()
    summary = {"steps": loop.global_step, "final_loss": history[-1]["loss"] if history else None,
               "skipped_images": loop.skipped_images, "learning_rate": plan.learning_rate,
               "effective_batch": plan.effective_batch}
    if accelerator.is_main_process:
        save_outputs(args, method, unwrapped, processor, dataset, data, summary, command_line("scripts/pretrain.py", argv))
    end_training_together(accelerator)
    return summary


def pretraining_data(args, backbone, settings, config):
    """(data, processor, dataset, train_dataset, on_device): clips for a video backbone (hf_mim.video_data), else
    images (`build_datasets`)."""
    if backbone.modality == "video":
        data, processor, dataset = video_pretraining_data(args, backbone, config, settings)
        return data, processor, dataset, dataset, None
    processor = backbone.image_processor_class.for_model_config(config)
    data = load_image_dataset(args.dataset_name, args.train_dir, "train", args.image_column, **image_checks(args))
    return (data, processor, *build_datasets(args, settings, data, processor, config))


def build_datasets(args, settings, data, processor, config):
    """(dataset, train_dataset, on_device): the CPU dataset (it also makes the card's reconstruction picture),
    the one the loader reads (the same, or the one that leaves the augmentation to the device) and the device
    augmentation (or None)."""
    augmentation = Augmentation(crop_scale=settings.crop_scale, color_jitter=settings.color_jitter)
    kwargs = processor.pretraining_kwargs()
    dataset = SeededImageDataset(data, processor, augmentation, seed=args.seed, processor_kwargs=kwargs)
    if not args.augment_on_device:
        return dataset, dataset, None
    source_size = args.augmentation_source_size or round(1.5 * config.image_size)
    train_dataset = DeviceAugmentedImageDataset(data, processor, augmentation, source_size, seed=args.seed,
                                                processor_kwargs=kwargs)
    return dataset, train_dataset, DeviceAugmentation.for_processor(processor, kwargs)


def pretraining_forward(model, batch, augmentation=None):
    """Loss plus whatever scalar diagnostics the method's output carries (token accuracy, loss parts).
    `augmentation` (a DeviceAugmentation) first turns the loader's uint8 images into the model's inputs."""
    if augmentation is not None:
        batch = augmentation(batch)
    out = model(**batch)
    logs = {name: value.detach() for name, value in out.items()
            if name != "loss" and isinstance(value, torch.Tensor) and value.ndim == 0}
    return out.loss, logs


def save_outputs(args, method, model, processor, dataset, data, summary, command: str) -> None:
    from hf_mim.visualize import pretraining_picture

    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_pretrained_atomically(out_dir, model, processor)
    # a video picture shows every tubelet's first frame: two clips make a row as wide as eight images
    num_images = 2 if "video" in model.input_modalities else 8
    picture = pretraining_picture(model, dataset, processor, method.picture_captions, num_images=num_images)
    picture_name = None
    if picture is not None:
        picture_name = "reconstruction.png"
        picture[0].save(out_dir / picture_name)
    (out_dir / "training_summary.json").write_text(json.dumps(summary, indent=2))
    write_model_card(
        out_dir, model_name=args.hub_model_id or out_dir.name, method=method, config=model.config,
        data_source=data.source, steps=summary["steps"], effective_batch=summary["effective_batch"],
        learning_rate=summary["learning_rate"], final_loss=summary["final_loss"],
        command=command,
        weights_from=args.model_name_or_path or "random initialisation, pretrained by this run",
        picture=picture_name, picture_caption=picture[1] if picture else "",
    )
    if picture_name:
        logger.info("saved model, processor, card and picture to %s", out_dir)
    else:
        logger.info("saved model, processor and card to %s; no picture: the model has nothing to draw (a tokenizer "
                    "without a trained decoder, e.g. DALL-E's converted encoder, cannot decode tokens)", out_dir)
    if args.push_to_hub:
        commit = push_folder(out_dir, args.hub_model_id)
        logger.info("pushed to %s (%s)", args.hub_model_id, commit)


if __name__ == "__main__":
    run_main(main)
