"""The flags every script shares, the checks on their values, and how a script reports a bad input.

Each numeric flag is checked when it is parsed (`type=` validators below), so a bad value stops the run before
any work with one line naming the flag, the value and the allowed range. Problems found later (an empty folder,
a truncated file, a checkpoint from another run) raise `UsageError`; `run_main` prints those as one line, once
per job (on the main process) rather than as a traceback per rank."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys

from PIL import Image


class UsageError(ValueError):
    """What the user passed cannot work: the message names the input and the fix, and is all a user needs."""


class MissingInputError(UsageError, FileNotFoundError):
    """A file or folder the user named is not there."""


# ----------------------------------------------------------------------------------------------- validators


class Bounded:
    """An argparse `type=`: converts with `kind` (int or float) and checks `low <= value <= high` (strict where
    `open_low` / `open_high`), so `--logging_steps 0` stops at parse time naming the range."""

    def __init__(self, kind: type, low: float | None = None, high: float | None = None, *, open_low: bool = False,
                 open_high: bool = False):
        self.kind, self.low, self.high, self.open_low, self.open_high = kind, low, high, open_low, open_high
        self.__name__ = self.describe()  # argparse names the type by it when the conversion itself fails

    def describe(self) -> str:
        noun = "an integer" if self.kind is int else "a number"
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.open_low else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.open_high else '<='} {self.high:g}")
        return f"{noun} {' and '.join(parts)}".strip()

    def __call__(self, text: str):
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; need {self.describe()}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not finite; need {self.describe()}")
        too_low = self.low is not None and (value <= self.low if self.open_low else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.open_high else value > self.high)
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"got {text}; need {self.describe()}")
        return value


positive_int = Bounded(int, 1)
non_negative_int = Bounded(int, 0)
positive_float = Bounded(float, 0, open_low=True)
non_negative_float = Bounded(float, 0)
fraction = Bounded(float, 0, 1)  # a probability or share, both ends allowed
open_fraction = Bounded(float, 0, 1, open_low=True)  # a share that must leave something, e.g. a crop of the side


def in_range(kind: type, low=None, high=None, **open_ends) -> Bounded:
    """A validator for a range of its own, e.g. `in_range(float, 0, 1, open_high=True)` for [0, 1)."""
    return Bounded(kind, low, high, **open_ends)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors ("pretrain.py: error: argument --logging_steps: got 0; need an integer >= 1"),
    printed by the main process only: under `accelerate launch` every rank parses the same flags and exits."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (--help lists every flag)\n" if is_main_process() else None)


# ----------------------------------------------------------------------------------------------- shared flags


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset_name", help="Hub dataset id, or a local folder saved with datasets' save_to_disk")
    parser.add_argument("--train_dir", help="an image folder (one sub-folder per class where labels matter)")
    parser.add_argument("--image_column", default=None, help="image column (default: the first Image feature)")
    parser.add_argument("--max_image_pixels", type=positive_int, default=Image.MAX_IMAGE_PIXELS,
                        help="skip (and count) images with more pixels than this, read from the file header before "
                             f"decoding (default {Image.MAX_IMAGE_PIXELS}, Pillow's own warning limit)")
    parser.add_argument("--max_bad_image_fraction", type=fraction, default=0.5,
                        help="stop before training when more than this share of a sample of up to 64 images cannot "
                             "be decoded (default 0.5)")


def add_loop_arguments(parser: argparse.ArgumentParser) -> None:
    """Seeds, precision, logging, checkpoints, resume, the non-finite guard and publishing."""
    parser.add_argument("--gradient_accumulation_steps", type=positive_int, default=1)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None,
                        help="default: what `accelerate config` / `accelerate launch --mixed_precision` says")
    parser.add_argument("--dataloader_num_workers", type=non_negative_int, default=0)
    parser.add_argument("--logging_steps", type=positive_int, default=10)
    parser.add_argument("--checkpointing_steps", type=positive_int, default=None,
                        help="save <output_dir>/checkpoints/step_<N> every N updates")
    parser.add_argument("--checkpoints_total_limit", type=positive_int, default=2)
    parser.add_argument("--resume_from_checkpoint", default=None, help="a checkpoints/step_<N> folder, or 'latest'")
    parser.add_argument("--allow_resume_changes", action="store_true",
                        help="resume even if the method, config, effective batch, seed or data differ from the "
                             "checkpoint's (the differences are logged); without it such a resume stops")
    parser.add_argument("--max_nonfinite_skips", type=non_negative_int, default=0,
                        help="skip up to N consecutive NaN/Inf losses, then stop")
    parser.add_argument("--max_weight_magnitude", type=positive_float, default=1e4,
                        help="a checkpoint is saved only while every weight is finite and below this in absolute "
                             "value; past it the run stops (default 1e4)")
    parser.add_argument("--report_to", default="none",
                        help="tensorboard, wandb, all or none (a JSONL log is always written)")
    parser.add_argument("--push_to_hub", action="store_true")
    parser.add_argument("--hub_model_id", default=None)


def check_loop_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id ORG/NAME")


def loop_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of `hf_mim.training.TrainingLoop` that `add_loop_arguments`' flags (and
    --output_dir) set."""
    return {"output_dir": args.output_dir, "checkpointing_steps": args.checkpointing_steps,
            "checkpoints_total_limit": args.checkpoints_total_limit, "max_nonfinite_skips": args.max_nonfinite_skips,
            "logging_steps": args.logging_steps, "allow_resume_changes": args.allow_resume_changes,
            "max_weight_magnitude": args.max_weight_magnitude}


def image_checks(args: argparse.Namespace) -> dict:
    """The keyword arguments of `hf_mim.data.load_image_dataset` that the data flags set."""
    return {"max_image_pixels": args.max_image_pixels, "max_bad_image_fraction": args.max_bad_image_fraction}


def apply_config_overrides(config, overrides: str, flag: str = "--config_overrides", recheck: bool = True):
    """`config.update_from_string("k=v,k=v")`: every pair is checked to be field=value of an existing field, then
    all are applied together (the config's own update parses each by its field's type and checks the result,
    naming the field); then (`recheck`) the config is re-built, which runs its checks on the combination.
    Returns the config; raises UsageError."""
    if not overrides:
        return config
    for pair in overrides.split(","):
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"{flag} {overrides!r}: {pair!r} is not field=value; write them as \"k=v,k=v\"")
        if not hasattr(config, name.strip()):
            raise UsageError(f"{flag}: {type(config).__name__} has no field {name.strip()!r}")
    try:
        config.update_from_string(",".join(pair.strip() for pair in overrides.split(",")))
    except ValueError as error:
        raise UsageError(f"{flag}: {error}") from None
    if not recheck:
        return config
    try:
        return type(config)(**config.to_dict())
    except ValueError as error:
        raise UsageError(f"{flag} {overrides!r}: {error}") from None


# ----------------------------------------------------------------------------------------------- running


def is_main_process() -> bool:
    """Rank 0 of the job, read from what launchers set (torchrun and accelerate launch: RANK; MPI: PMI_RANK or
    OMPI_COMM_WORLD_RANK): usable before any Accelerator exists."""
    for name in ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK"):
        if name in os.environ:
            return os.environ[name] == "0"
    return True


def run_main(main) -> None:
    """A script's entry point: `main()`, with a `UsageError` (or the loss guard's stop) printed as one line by
    the main process only, and a non-zero exit on every process."""
    try:
        main()
    except UsageError as error:
        if is_main_process():
            print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        sys.exit(1)


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
