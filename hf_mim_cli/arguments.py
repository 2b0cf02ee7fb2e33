"""The flags every script shares, the checks on their values, and how a script reports a bad input.

Each numeric flag is checked when it is parsed (`type=` validators below), so a bad value stops the run before
any work with one line naming the flag, the value and the allowed range. Problems found later (an empty folder,
a truncated file, a checkpoint from another run) raise `UsageError`; `run_main` prints those as one line, once
per job (on the main process) rather than as a traceback per rank."""

from __future__ import annotations

import argparse
import copy
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


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """`--help` keeps the description's layout (its command examples) and shows each flag's default: appended as
    "(default: X)" unless the help text already says its default, the flag is required, a switch, or has no value
    by default (None or "": the help says what is used instead). Flags without help text still show their default."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        says_default = "%(default)" in help_text or "default" in help_text.lower()
        no_value = action.default in (None, "", argparse.SUPPRESS) or action.nargs == 0 or not action.option_strings
        if says_default or no_value or action.required:
            return help_text
        return f"{help_text} (default: %(default)s)".strip()

    def _format_action(self, action):
        if not action.help and self._get_help_string(action):
            action = copy.copy(action)
            action.help = self._get_help_string(action)
        return super()._format_action(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors ("pretrain.py: error: argument --logging_steps: got 0; need an integer >= 1"),
    printed by the main process only: under `accelerate launch` every rank parses the same flags and exits. Its
    `--help` shows defaults (`HelpFormatter`, also where a script asks for argparse's plain or raw formatter)."""

    def __init__(self, *args, formatter_class=HelpFormatter, **kwargs):
        if formatter_class in (argparse.HelpFormatter, argparse.RawDescriptionHelpFormatter):
            formatter_class = HelpFormatter
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (--help lists every flag)\n" if is_main_process() else None)


def say_recipe_defaults(parser: argparse.ArgumentParser, recipe_class, source: str) -> None:
    """Flags named like a field of `recipe_class` whose default is None take the recipe's value: say so in
    `--help` (`source` names where that value comes from), unless their help already says its default."""
    import dataclasses

    fields = {field.name for field in dataclasses.fields(recipe_class)}
    for action in parser._actions:
        help_text = action.help or ""
        if action.dest in fields and action.default is None and "default" not in help_text.lower():
            action.help = f"{help_text} (default: {source})".strip()


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


def check_model_source(path: str, flag: str) -> None:
    """Stop with one line when `path` is meant as a local folder but is not one: it exists but holds no
    config.json, or it is missing and cannot be a Hub id ("org/name") or starts in a folder that exists here
    (`outputs/typo`). Hub ids pass untouched."""
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise MissingInputError(f"{flag} {path}: the folder holds no config.json; pass a folder written by "
                                    "save_pretrained (a run's --output_dir)")
        return
    parts = path.split("/")
    looks_local = (path.startswith((".", "/", "~")) or os.sep != "/" and os.sep in path or len(parts) > 2
                   or os.path.exists(path) or (len(parts) == 2 and os.path.isdir(parts[0])))
    if looks_local:
        raise MissingInputError(f"{flag} {path}: no such folder (from {os.getcwd()}); pass the --output_dir of an "
                                "earlier run, e.g. outputs/mae-pretrain after `python scripts/pretrain.py --method mae`")


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


def answer_help_early(parse_args) -> None:
    """Called at a script's top level between its light imports (this package, the standard library) and its
    heavy ones (torch, transformers, hf_mim: seconds on a CPU): with -h or --help on the command line,
    `parse_args()` prints the help and exits before those load."""
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        parse_args()


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
    check_one_process_group(accelerator)
    logging.getLogger("hf_mim.distributed").info(describe_distributed(accelerator))
    set_seed(args.seed)
    return accelerator


def describe_distributed(accelerator) -> str:
    """What runs: Accelerate's distributed type, the number of processes, mixed precision, and the sharding of
    FSDP or DeepSpeed where one is in use."""
    state = accelerator.state
    kind = "none" if state.distributed_type.value == "NO" else state.distributed_type.value
    parts = [f"distributed: {kind} ({accelerator.num_processes} process"
             f"{'es' if accelerator.num_processes > 1 else ''} on {accelerator.device.type})",
             f"mixed precision {state.mixed_precision}"]
    if getattr(state, "fsdp_plugin", None) is not None:
        parts.append(f"FSDP sharding {state.fsdp_plugin.sharding_strategy}")
    if getattr(state, "deepspeed_plugin", None) is not None:
        parts.append(f"DeepSpeed ZeRO stage {state.deepspeed_plugin.zero_stage}")
    return ", ".join(parts)


def check_one_process_group(accelerator) -> None:
    """Refuse a launch that is not what it asked for, before any work: processes started as one job of N
    (WORLD_SIZE) that each run alone (they would train apart and overwrite each other's output_dir), or FSDP or
    DeepSpeed asked of `accelerate launch` that Accelerate did not set up (on CPU, FSDP falls back to DDP)."""
    launched = int(os.environ.get("WORLD_SIZE", os.environ.get("LOCAL_WORLD_SIZE", "1")) or 1)
    kind = accelerator.state.distributed_type.value
    if launched > 1 and accelerator.num_processes == 1:
        raise UsageError(
            f"this process is one of {launched} launched together (WORLD_SIZE={launched}), but Accelerate runs it "
            f"alone (distributed type {kind}): the processes would train apart and overwrite each other's "
            "output_dir. On a machine without GPUs launch with ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu "
            "--num_processes N ...; with GPUs, check that torch sees them (torch.cuda.device_count()).")
    for engine, variable in (("FSDP", "ACCELERATE_USE_FSDP"), ("DEEPSPEED", "ACCELERATE_USE_DEEPSPEED")):
        asked = os.environ.get(variable, "false").lower() in ("1", "true", "yes")
        if asked and kind != engine:
            raise UsageError(
                f"accelerate launch asked for {engine} ({variable}=true) but Accelerate runs {kind} on "
                f"{accelerator.device.type}, not {engine}: "
                + ("FSDP needs GPUs (on CPU Accelerate falls back to plain data parallel). Drop --use_fsdp to train "
                   "data-parallel on CPU (ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu ...), or run on GPUs."
                   if engine == "FSDP" else
                   "check that deepspeed is installed and the launch's DeepSpeed config, or drop --use_deepspeed."))
