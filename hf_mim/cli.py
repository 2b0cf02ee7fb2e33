"""The flags every training script shares, so they read (and are checked) the same in pretrain, finetune and
train_tokenizer; and the Accelerator they all build from them."""

from __future__ import annotations

import argparse
import logging


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset_name", help="Hub dataset id, or a local folder saved with datasets' save_to_disk")
    parser.add_argument("--train_dir", help="an image folder (one sub-folder per class where labels matter)")
    parser.add_argument("--image_column", default=None, help="image column (default: the first Image feature)")


def add_loop_arguments(parser: argparse.ArgumentParser) -> None:
    """Seeds, precision, logging, checkpoints, resume, the non-finite guard and publishing."""
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None,
                        help="default: what `accelerate config` / `accelerate launch --mixed_precision` says")
    parser.add_argument("--dataloader_num_workers", type=int, default=0)
    parser.add_argument("--logging_steps", type=int, default=10)
    parser.add_argument("--checkpointing_steps", type=int, default=None,
                        help="save <output_dir>/checkpoints/step_<N> every N updates")
    parser.add_argument("--checkpoints_total_limit", type=int, default=2)
    parser.add_argument("--resume_from_checkpoint", default=None, help="a checkpoints/step_<N> folder, or 'latest'")
    parser.add_argument("--max_nonfinite_skips", type=int, default=0,
                        help="skip up to N consecutive NaN/Inf losses, then stop")
    parser.add_argument("--report_to", default="none",
                        help="tensorboard, wandb, all or none (a JSONL log is always written)")
    parser.add_argument("--push_to_hub", action="store_true")
    parser.add_argument("--hub_model_id", default=None)


def check_loop_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id ORG/NAME")
    if getattr(args, "max_train_steps", None) is not None and args.max_train_steps <= 0:
        parser.error("--max_train_steps must be positive")


def make_accelerator(args: argparse.Namespace):
    """An Accelerator with a seedable sampler (exact resume) and the scripts' logging set up."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed

    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_dir=args.output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger("hf_mim").setLevel(logging.INFO if accelerator.is_main_process else logging.WARNING)
    set_seed(args.seed)
    return accelerator
