"""One run's settings and schedule, worked out once for every training script.

`with_overrides` merges a recipe with the flags (recipe defaults, then every flag given), and `plan_schedule`
turns the loader's length, the process count and the recipe into updates, warm-up steps and the peak lr. The
scripts (pretrain, finetune, train_tokenizer) then only read the result.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shlex
import sys
from dataclasses import dataclass
from typing import Callable

from .training import effective_learning_rate


def with_overrides(recipe, args: argparse.Namespace):
    """The recipe with each field replaced by the flag of the same name, where that flag was given (not None).
    The recipe's own checks run again on the merged values."""
    given = {field.name: getattr(args, field.name) for field in dataclasses.fields(recipe)
             if getattr(args, field.name, None) is not None}
    given = {name: tuple(value) if isinstance(value, list) else value for name, value in given.items()}
    return dataclasses.replace(recipe, **given)


@dataclass(frozen=True)
class Schedule:
    updates_per_epoch: int
    max_steps: int  # optimizer updates of the whole run
    epochs: int  # passes over the loader that hold max_steps updates
    effective_batch: int  # per-device batch x accumulation x processes
    warmup_steps: int
    learning_rate: float  # the peak lr


def plan_schedule(*, batches_per_epoch: int, per_device_batch_size: int, num_processes: int,
                  gradient_accumulation_steps: int, num_epochs: int, max_steps: int | None = None,
                  warmup_epochs: float | None = None, warmup_steps: int | Callable[[int], int] | None = None,
                  base_learning_rate: float | None = None, lr_batch_divisor: int | None = None,
                  learning_rate: float | None = None, max_warmup_share: float | None = None) -> Schedule:
    """Updates per epoch from the loader (each process sees 1/num_processes of it; accumulation merges batches),
    `max_steps` (else `num_epochs` x updates per epoch), warm-up from `warmup_steps` (a count, or a function of
    the run's updates, e.g. a tenth of them) or `warmup_epochs` (at most `max_warmup_share` of the run, when
    given), and the peak lr: `learning_rate` when given, else blr x effective batch / divisor (or blr itself when
    the divisor is None)."""
    updates_per_epoch = max(1, math.ceil(batches_per_epoch / num_processes / gradient_accumulation_steps))
    total = max_steps or num_epochs * updates_per_epoch
    effective_batch = per_device_batch_size * gradient_accumulation_steps * num_processes
    if callable(warmup_steps):
        warmup_steps = warmup_steps(total)
    elif warmup_steps is None:
        warmup_steps = int((warmup_epochs or 0) * updates_per_epoch)
    if max_warmup_share is not None:
        warmup_steps = min(warmup_steps, int(total * max_warmup_share))
    if learning_rate is None:
        if base_learning_rate is None:
            raise ValueError("plan_schedule needs learning_rate or base_learning_rate")
        learning_rate = effective_learning_rate(base_learning_rate, effective_batch, lr_batch_divisor)
    return Schedule(updates_per_epoch, total, math.ceil(total / updates_per_epoch), effective_batch, warmup_steps,
                    learning_rate)


def launched_by_accelerate() -> bool:
    """`accelerate launch` sets these in every process it starts (a plain `python` run has none of them)."""
    return any(name in os.environ for name in ("ACCELERATE_DYNAMO_BACKEND", "ACCELERATE_MIXED_PRECISION"))


def command_line(script: str, argv: list[str] | None = None) -> str:
    """The command that ran `script` (e.g. "scripts/pretrain.py"), for the model card: `python script args`, or
    `accelerate launch script args` when accelerate started this process. `argv` is what `main(argv)` got;
    None means the command line itself."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    launcher = "accelerate launch" if launched_by_accelerate() else "python"
    return " ".join([launcher, script, shlex.join(arguments)]).rstrip()
