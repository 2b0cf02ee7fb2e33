"""Accelerate pieces the scripts share: parameter groups, the lr schedule, checkpoints that survive a kill,
and the guard against non-finite losses."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError

from hf_mim_cli.arguments import UsageError

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)$")
STATE_FILE = "trainer_state.json"
RUN_FILE = "run.json"  # what defines the run that saved a checkpoint; a resume must match it
SAVE_ERRORS = (OSError, SafetensorError)  # a full disk, a read-only or vanished folder


# ----------------------------------------------------------------------------------------------- optimiser


def parameter_groups(model: torch.nn.Module, weight_decay: float, layer_decay: float | None = None,
                     encoder_model: torch.nn.Module | None = None) -> list[dict]:
    """AdamW groups: weight decay on tensors of rank >= 2 except those the model names (position tables, the cls
    token); with `layer_decay`, lr scale decay ** (L + 1 - layer id) by the model's own `layer_ids` (embeddings 0,
    block i is i + 1, heads L + 1). Frozen parameters (targets, teachers) are left out. `encoder_model`: the
    part of `model` that names layer ids and no-decay parameters when `model` itself does not (a UperNet's
    backbone); the rest of `model` (its heads) gets the top id."""
    surface = model if encoder_model is None else encoder_model
    no_decay_ids = {id(p) for p in surface.no_weight_decay_parameters()} if hasattr(surface, "layer_ids") else set()
    ids = surface.layer_ids() if (layer_decay and hasattr(surface, "layer_ids")) else {}
    top = max(ids.values()) if ids else 0
    groups: dict[tuple, dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = param.ndim >= 2 and id(param) not in no_decay_ids
        scale = layer_decay ** (top - ids.get(id(param), top)) if ids else 1.0
        key = (decay, scale)
        group = groups.setdefault(key, {"params": [], "names": [], "weight_decay": weight_decay if decay else 0.0,
                                        "lr_scale": scale})
        group["params"].append(param)
        group["names"].append(name)
    return list(groups.values())


def end_training_together(accelerator) -> None:
    """End a run on every rank at once. The main rank still writes the model, card and picture when the others
    finish; a rank that destroyed its process group and left meanwhile leaves gloo threads on the main rank
    waiting for it, and that rank's exit then hangs in the process group's destructor (seen in the 2-process
    tests). So all ranks meet first, then destroy the group together."""
    accelerator.wait_for_everyone()
    accelerator.end_training()


def build_optimizer(model, lr: float, weight_decay: float, betas=(0.9, 0.999), layer_decay=None, encoder_model=None):
    groups = parameter_groups(model, weight_decay, layer_decay, encoder_model)
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
        del group["names"]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), fused=fused_adamw_supported(model))


FUSED_ADAMW_DEVICES = ("cpu", "cuda", "xpu")


def fused_adamw_supported(model: torch.nn.Module) -> bool | None:
    """True where torch has a fused AdamW kernel for every trainable tensor: one kernel per step instead of a
    dozen per tensor (4x faster on CPU for a ViT-Tiny MAE). The scripts build the optimizer before
    `accelerator.prepare` moves the model, so this looks at the device type the tensors can move between (CPU to
    CUDA both qualify), not at "is the model on a GPU yet"."""
    params = [p for p in model.parameters() if p.requires_grad]
    ok = bool(params) and all(p.is_floating_point() and p.device.type in FUSED_ADAMW_DEVICES for p in params)
    return True if ok else None


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> float:
    """Linear warmup from 0, then half-cycle cosine to `min_lr` (the MAE/BEiT per-iteration schedule)."""
    if step < warmup_steps:
        return base_lr * step / max(warmup_steps, 1)
    progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def poly_lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0,
               power: float = 1.0) -> float:
    """Linear warmup from 0, then polynomial decay to `min_lr` (the BEiT/MAE segmentation schedule, power 1)."""
    if step < warmup_steps:
        return base_lr * step / max(warmup_steps, 1)
    progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    return min_lr + (base_lr - min_lr) * (1.0 - progress) ** power


def build_scheduler(optimizer, base_lr, warmup_steps, total_steps, min_lr=0.0, schedule=lr_at):
    """LambdaLR scaling each group's initial lr (which carries its layer-decay scale) by `schedule / base_lr`
    (`lr_at`, warmup + cosine, by default; `poly_lr_at` for segmentation)."""
    if base_lr == 0:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.0)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: schedule(step, base_lr, warmup_steps, total_steps, min_lr) / base_lr
    )


def enable_activation_checkpointing(model) -> None:
    """Recompute every transformer block in the backward pass (transformers' own switch; results unchanged, memory
    for activations traded for about one more forward)."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()


def effective_learning_rate(base_lr: float, effective_batch: int, divisor: int | None) -> float:
    """lr = blr * batch / divisor (MAE, MaskFeat: 256; SimMIM: 512); BEiT and CAE pass an absolute lr."""
    return base_lr if divisor is None else base_lr * effective_batch / divisor


# ----------------------------------------------------------------------------------------------- checkpoints


def checkpoint_dirs(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first. A folder counts only once its state file exists, which is written
    before the atomic rename, so a kill during a save never yields a half-written checkpoint."""
    root = Path(output_dir) / "checkpoints"
    found = []
    if root.is_dir():
        for path in root.iterdir():
            match = CHECKPOINT_PATTERN.match(path.name)
            if match and (path / STATE_FILE).exists():
                found.append((int(match.group(1)), path))
    return sorted(found)


def resolve_checkpoint(output_dir: str | Path, resume_from: str) -> Path | None:
    if resume_from == "latest":
        found = checkpoint_dirs(output_dir)
        if not found:
            logger.warning("--resume_from_checkpoint latest: no checkpoint in %s/checkpoints; starting fresh", output_dir)
            return None
        return found[-1][1]
    path = Path(resume_from)
    if not (path / STATE_FILE).exists():
        raise FileNotFoundError(
            f"{resume_from} is not a complete checkpoint (no {STATE_FILE}); pass a checkpoints/step_<N> folder or 'latest'"
        )
    return path


CHECKPOINTS_README = f"""# Checkpoints

Each `step_N` folder is an Accelerate training state (`accelerator.save_state`: model, optimizer, scheduler,
random generators, plus `{STATE_FILE}` with the data position), written atomically every
`--checkpointing_steps` updates. It resumes a run; it is not a `from_pretrained` folder: the loadable model is the
output folder above, written at the end of the run.

Resume with the same command plus `--resume_from_checkpoint latest` (or `--resume_from_checkpoint
checkpoints/step_N`); the resumed run ends with the weights an uninterrupted one would have.
"""


def save_checkpoint(accelerator, output_dir: str | Path, step: int, state: dict, total_limit: int | None,
                    run: dict | None = None) -> Path:
    """`accelerator.save_state` into a temporary folder (with the state file and `run`, the run descriptor), then
    one atomic rename to `checkpoints/step_<N>`; older checkpoints beyond `total_limit` are removed afterwards. A
    failed write (a full disk) removes the temporary folder and raises UsageError naming the folder: the
    previous checkpoints stay as they were."""
    root = Path(output_dir) / "checkpoints"
    final = root / f"step_{step}"
    partial = root / f".partial_step_{step}"
    try:
        if accelerator.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True, exist_ok=True)
            if not (root / "README.md").exists():
                (root / "README.md").write_text(CHECKPOINTS_README)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(partial))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (partial / RUN_FILE).write_text(json.dumps(run or {}, indent=2))
            (partial / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=2))
            _fsync_dir(partial)
            if final.exists():
                shutil.rmtree(final)
            os.replace(partial, final)
            _fsync_dir(root)
    except SAVE_ERRORS as error:
        shutil.rmtree(partial, ignore_errors=True)
        kept = checkpoint_dirs(output_dir)
        raise UsageError(
            f"could not save checkpoint step_{step} in {root}: {error}. Nothing of it was kept; the previous "
            f"checkpoint ({kept[-1][1] if kept else 'none'}) is intact. Free space there, or pass another "
            "--output_dir, then resume with --resume_from_checkpoint latest"
        ) from None
    if accelerator.is_main_process:
        if total_limit:
            for _, old in checkpoint_dirs(output_dir)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def restored_loss_window(saved: dict | None, accelerator) -> tuple:
    """A checkpoint's open logging window as this process's (loss sum, batches): its own sum, or the mean of the
    saved ones when the run resumes on another number of processes (the logged mean is the same)."""
    if not saved or not saved["count"]:
        return 0.0, 0
    sums = saved["sums"]
    own = sums[accelerator.process_index] if len(sums) == accelerator.num_processes else sum(sums) / len(sums)
    return torch.tensor(own, dtype=torch.float32, device=accelerator.device), saved["count"]


def read_checkpoint_state(path: Path) -> dict:
    return json.loads((Path(path) / STATE_FILE).read_text())


def save_pretrained_atomically(output_dir: str | Path, *savables) -> None:
    """`save_pretrained` of each (model, processor) into a temporary folder, then the files renamed into
    `output_dir`: a save that fails (a full disk) leaves no config without weights. Raises UsageError."""
    out = Path(output_dir)
    partial = out / ".partial_save"
    try:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for savable in savables:
            savable.save_pretrained(partial)
        for path in sorted(partial.iterdir()):
            os.replace(path, out / path.name)
    except SAVE_ERRORS as error:
        raise UsageError(f"could not save the model in {out}: {error}. Nothing of it was written there; free "
                         "space or pass another --output_dir (checkpoints/ keeps the run's last checkpoint)") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def describe_run(method: str, config, effective_batch: int, seed: int, data_source: str) -> dict:
    """What defines a run, as JSON: a resume from a checkpoint of another run is refused unless allowed."""
    fields = {k: v for k, v in config.to_dict().items() if k not in ("transformers_version", "_name_or_path")}
    described = {"method": method, "config": fields, "effective_batch": effective_batch, "seed": seed,
                 "data": data_source}
    return json.loads(json.dumps(described, default=str))


def run_differences(saved: dict, current: dict) -> list[str]:
    """'name: saved -> current' for every entry (config fields one by one) that differs."""
    differences = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            differences += [f"{key}.{d}" for d in run_differences(old, new)]
        elif old != new:
            differences.append(f"{key}: {old!r} -> {new!r}")
    return differences


def weight_magnitude(model: torch.nn.Module) -> float:
    """The largest |w| over the model's floating-point parameters: nan or inf when any is not finite."""
    peaks = [p.detach().abs().amax().float() for p in model.parameters() if p.is_floating_point() and p.numel()]
    return float(torch.stack(peaks).max()) if peaks else 0.0


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass


# ----------------------------------------------------------------------------------------------- loss guard


class NonFiniteLossError(UsageError, FloatingPointError):
    """The loss or the weights left the finite, bounded range: the run stops before anything bad is saved."""


class NonFiniteGuard:
    """Stops a run on a NaN/Inf loss with a message, or skips up to `max_consecutive_skips` such steps.

    Skipping needs the verdict before the optimizer step, so it reads the loss every update (a device sync and a
    collective). Stopping does not: with no skips allowed (the default), each update only ORs a flag on the device
    (`note`) and `check` reads it before anything is logged or saved, so a bad update still never reaches a
    checkpoint or the final weights."""

    def __init__(self, max_consecutive_skips: int = 0):
        self.max_consecutive_skips = max_consecutive_skips
        self.consecutive = 0
        self.total_skipped = 0
        self.pending: torch.Tensor | None = None
        self.checked_step = 0

    @property
    def defers(self) -> bool:
        return self.max_consecutive_skips == 0

    def note(self, loss: torch.Tensor) -> None:
        bad = ~torch.isfinite(loss.detach()).all()
        self.pending = bad if self.pending is None else self.pending | bad

    def check(self, accelerator, step: int, last_checkpoint: str | None) -> None:
        """Raise if any process saw a non-finite loss since the last check (all processes call this together)."""
        if not self.defers:
            return
        flag = self.pending if self.pending is not None else torch.zeros((), dtype=torch.bool, device=accelerator.device)
        bad = accelerator.reduce(flag.float().reshape(1), "sum").item() > 0
        first_unchecked, self.checked_step, self.pending = self.checked_step + 1, step, None
        if bad:
            raise NonFiniteLossError(
                f"loss became NaN/Inf between updates {first_unchecked} and {step}. "
                + self.advice(last_checkpoint)
            )

    def should_skip(self, loss: torch.Tensor, step: int, last_checkpoint: str | None) -> bool:
        if bool(torch.isfinite(loss.detach()).all()):
            self.consecutive = 0
            return False
        self.consecutive += 1
        self.total_skipped += 1
        if self.consecutive > self.max_consecutive_skips:
            raise NonFiniteLossError(
                f"loss is {loss.item()} at step {step} ({self.consecutive} non-finite in a row). "
                + self.advice(last_checkpoint)
            )
        logger.warning("non-finite loss at step %d: skipping this update (%d in a row)", step, self.consecutive)
        return True

    @staticmethod
    def advice(last_checkpoint: str | None) -> str:
        resume = (f"resume with --resume_from_checkpoint latest (it picks {last_checkpoint})" if last_checkpoint
                  else "no checkpoint was saved, so start again")
        return (
            f"Nothing was saved after the last good checkpoint ({last_checkpoint or 'none yet'}). Lower the learning "
            "rate, use bf16 rather than fp16, check the data, or pass --max_nonfinite_skips N to skip such steps; "
            f"{resume}"
        )


# ----------------------------------------------------------------------------------------------- the loop


class SlowRunWarning:
    """An `on_update` hook: on a CPU, time updates 2 to 1 + `timed_updates` (the first one warms up) and warn once
    when the whole run would take more than `hours` at that pace, naming the ways to a shorter run."""

    def __init__(self, device_type: str, max_steps: int, advice: str = "pass fewer --max_train_steps, or run on a GPU",
                 hours: float = 1.0, timed_updates: int = 3, clock=None):
        import time

        self.device_type, self.max_steps, self.hours, self.timed_updates = device_type, max_steps, hours, timed_updates
        self.advice = advice
        self.clock = clock or time.monotonic
        self.started = None

    def __call__(self, step: int) -> None:
        if self.device_type != "cpu" or step > 1 + self.timed_updates:
            return
        if step == 1:
            self.started = self.clock()
        elif step == 1 + self.timed_updates and self.started is not None:
            per_update = (self.clock() - self.started) / self.timed_updates
            hours = per_update * self.max_steps / 3600
            if hours > self.hours:
                logger.warning("at %.1f s per update on the CPU, the %d updates take about %.0f hours: %s",
                               per_update, self.max_steps, hours, self.advice)


def without_torch_draws(batches):
    """`batches`, with the CPU torch generator put back as it was before the first batch was fetched. Starting
    an iterator draws a base seed from that generator; an uninterrupted run drew it at the epoch's start, before
    its checkpoint saved the generator, so a resumed run must not draw it again, or every random op after the
    resume (drop path) would differ from the uninterrupted run's."""
    state = torch.random.get_rng_state()
    iterator = iter(batches)
    first = next(iterator, None)
    torch.random.set_rng_state(state)
    if first is not None:
        yield first
        yield from iterator


class BestModelKeeper:
    """An `on_epoch_end` hook: evaluate, log (one line and the trackers), and save the model when `metric` is the
    best so far. `evaluate()` gives the metrics, `describe(metrics)` the log line's figures, `save()` saves."""

    def __init__(self, accelerator, evaluate, save, metric: str, describe, has_eval: bool = True):
        self.accelerator, self.evaluate, self.save, self.metric, self.describe = (accelerator, evaluate, save, metric,
                                                                                   describe)
        self.has_eval = has_eval
        self.best = {metric: -1.0, "epoch": None}
        self.results: list[dict] = []
        self.loop = None

    def __call__(self, epoch: int) -> None:
        if not self.has_eval:
            return
        metrics = self.evaluate()
        self.results.append({"epoch": epoch, **metrics})
        logger.info("epoch %d: eval %s", epoch, self.describe(metrics))
        self.accelerator.log({f"eval/{k}": v for k, v in metrics.items() if not isinstance(v, (list, dict))},
                             step=self.loop.global_step)
        if metrics[self.metric] > self.best[self.metric]:
            self.best.update(metrics, epoch=epoch)
            self.save()


class TrainingLoop:
    """The one training skeleton of pretraining, fine-tuning and tokenizer training (run_mim_no_trainer's):
    `accumulate` -> backward -> clip -> step, per-update lr schedule, atomic checkpoints every N updates, exact
    resume (`load_state` + `skip_first_batches` over a seedable sampler and seed-keyed samples).

    `forward(model, batch) -> (loss, logs)` is the only task-specific part; `on_epoch_end(epoch)` may evaluate.
    `run_descriptor` (`describe_run`) goes into every checkpoint, and a resume from a checkpoint of another run
    stops unless `allow_resume_changes`; a checkpoint is saved only while every weight is finite and below
    `max_weight_magnitude`.
    """

    def __init__(self, accelerator, model, optimizer, scheduler, loader, dataset, *, output_dir, max_train_steps,
                 num_epochs, checkpointing_steps=None, checkpoints_total_limit=None, max_grad_norm=None,
                 max_nonfinite_skips=0, logging_steps=10, forward=None, on_update=None, on_epoch_end=None,
                 progress_desc="train", run_descriptor=None, allow_resume_changes=False, max_weight_magnitude=1e4):
        self.accelerator = accelerator
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.loader, self.dataset = loader, dataset
        self.output_dir = Path(output_dir)
        self.max_train_steps, self.num_epochs = max_train_steps, num_epochs
        self.checkpointing_steps = checkpointing_steps
        self.checkpoints_total_limit = checkpoints_total_limit
        self.max_grad_norm = max_grad_norm
        self.guard = NonFiniteGuard(max_nonfinite_skips)
        self.logging_steps = logging_steps
        self.forward = forward or (lambda model, batch: (model(**batch).loss, {}))
        self.on_update = on_update
        self.on_epoch_end = on_epoch_end
        self.progress_desc = progress_desc
        self.run_descriptor, self.allow_resume_changes = run_descriptor or {}, allow_resume_changes
        self.max_weight_magnitude = max_weight_magnitude
        self.global_step, self.start_epoch, self.resume_batches = 0, 0, 0
        self.last_checkpoint: str | None = None
        self.skipped_images = 0  # over all processes, as of the last sync_skipped()
        self.unsynced_skips = 0  # this process's, since then: counted on the host, summed only when logged or saved
        self.history: list[dict] = []
        # (loss sum, batches) since the last log, checkpointed: a resumed run logs the means an uninterrupted one does
        self.open_window: tuple = (0.0, 0)
        accelerator.register_for_checkpointing(scheduler)

    def resume(self, checkpoint: Path | None) -> None:
        if checkpoint is None:
            return
        self.check_same_run(checkpoint)
        self.accelerator.load_state(str(checkpoint))
        state = read_checkpoint_state(checkpoint)
        self.global_step = state["step"]
        self.start_epoch = state["epoch"]
        self.resume_batches = state["batches_in_epoch"]
        self.skipped_images = state.get("skipped_images", 0)
        self.open_window = restored_loss_window(state.get("loss_window"), self.accelerator)
        self.last_checkpoint = str(checkpoint)
        logger.info("resumed from %s at update %d (epoch %d, batch %d)", checkpoint, self.global_step,
                    self.start_epoch, self.resume_batches)

    def check_same_run(self, checkpoint: Path) -> None:
        """Stop (UsageError) when the checkpoint was saved by a run defined otherwise (another method, config,
        effective batch, seed or data); with `allow_resume_changes`, log the differences and go on."""
        run_file = Path(checkpoint) / RUN_FILE
        if not run_file.exists() or not self.run_descriptor:
            logger.warning("%s records no run description; resuming without checking it is the same run", checkpoint)
            return
        differences = run_differences(json.loads(run_file.read_text()), self.run_descriptor)
        if not differences:
            return
        if not self.allow_resume_changes:
            raise UsageError(f"{checkpoint} was saved by another run; differences (checkpoint -> now): "
                             f"{'; '.join(differences)}. Pass the checkpoint's flags again, or "
                             "--allow_resume_changes to continue with the new ones")
        logger.warning("resuming %s with changes (--allow_resume_changes): %s", checkpoint, "; ".join(differences))

    def check_weights(self) -> float:
        """Stop (NonFiniteLossError) before saving weights that are not finite or over `max_weight_magnitude`: a
        checkpoint kept as the last good one must be one a resume can start from."""
        peak = weight_magnitude(self.accelerator.unwrap_model(self.model))
        if not peak < self.max_weight_magnitude:  # also catches nan
            raise NonFiniteLossError(
                f"weights reached max |w| = {peak:.3g} at update {self.global_step} (bound: --max_weight_magnitude "
                f"{self.max_weight_magnitude:g}); they were not saved. " + self.guard.advice(self.last_checkpoint))
        return peak

    def sync_skipped(self) -> None:
        """Add every process's unreadable-image count to the total: one collective per log or checkpoint rather
        than per step (all processes reach those at the same update)."""
        new = int(self.accelerator.gather(torch.tensor([self.unsynced_skips], device=self.accelerator.device)).sum())
        self.unsynced_skips = 0
        if new:
            self.skipped_images += new
            logger.warning("%d unreadable images skipped so far", self.skipped_images)

    def checkpoint(self, epoch: int, batches_in_epoch: int) -> None:
        self.guard.check(self.accelerator, self.global_step, self.last_checkpoint)
        peak = self.check_weights()
        self.sync_skipped()
        running, count = self.open_window
        sums = self.accelerator.gather(torch.as_tensor(running, dtype=torch.float32, device=self.accelerator.device)
                                       .reshape(1))
        state = {"epoch": epoch, "batches_in_epoch": batches_in_epoch, "skipped_images": self.skipped_images,
                 "max_abs_weight": peak, "loss_window": {"sums": sums.tolist(), "count": count}}
        path = save_checkpoint(self.accelerator, self.output_dir, self.global_step, state, self.checkpoints_total_limit,
                               self.run_descriptor)
        self.last_checkpoint = str(path)

    def run(self) -> list[dict]:
        from tqdm.auto import tqdm

        accelerator = self.accelerator
        progress = tqdm(total=self.max_train_steps, initial=self.global_step, desc=self.progress_desc,
                        disable=not accelerator.is_local_main_process)
        running, count = self.open_window
        for epoch in range(self.start_epoch, self.num_epochs):
            if self.global_step >= self.max_train_steps:
                break
            self.dataset.set_epoch(epoch)
            self.loader.set_epoch(epoch)
            skip = self.resume_batches if epoch == self.start_epoch else 0
            batches = without_torch_draws(accelerator.skip_first_batches(self.loader, skip)) if skip else self.loader
            batches_in_epoch = skip
            self.model.train()
            for batch in batches:
                batches_in_epoch += 1
                self.unsynced_skips += batch.pop("num_skipped")
                if not batch:  # every image of it unreadable, even after the dataset's replacements
                    self.skip_empty_batch()
                    continue
                with accelerator.accumulate(self.model):
                    loss, logs = self.forward(self.model, batch)
                    if self.guard.defers:
                        self.guard.note(loss)
                    elif self.guard.should_skip(accelerator.reduce(loss.detach(), "mean"), self.global_step,
                                                self.last_checkpoint):
                        self.optimizer.zero_grad(set_to_none=True)
                        continue
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and self.max_grad_norm:
                        accelerator.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                running += loss.detach().float()
                count += 1
                if not accelerator.sync_gradients:
                    continue
                self.scheduler.step()
                self.global_step += 1
                progress.update(1)
                if self.on_update is not None:
                    self.on_update(self.global_step)
                if self.global_step % self.logging_steps == 0 or self.global_step == self.max_train_steps:
                    self.log_update(epoch, running / count, logs, progress)
                    running, count = 0.0, 0
                if self.checkpointing_steps and self.global_step % self.checkpointing_steps == 0:
                    self.open_window = (running, count)
                    self.checkpoint(epoch, batches_in_epoch)
                if self.global_step >= self.max_train_steps:
                    break
            if self.on_epoch_end is not None:
                self.guard.check(accelerator, self.global_step, self.last_checkpoint)  # before any best-model save
                self.on_epoch_end(epoch)
        progress.close()
        self.guard.check(accelerator, self.global_step, self.last_checkpoint)
        self.check_weights()
        self.sync_skipped()
        return self.history

    def skip_empty_batch(self) -> None:
        """A batch with no readable image never reaches the model. One process just moves on (the images were
        counted); several cannot, as the others would wait for its gradients, so the run stops instead."""
        if self.accelerator.num_processes > 1:
            raise UsageError(f"a batch held no readable image, even after replacements, at update {self.global_step}: "
                             "most files of the dataset cannot be decoded; fix or remove them")
        logger.warning("a batch held no readable image; skipped it (update %d)", self.global_step)

    def log_update(self, epoch: int, mean_loss: torch.Tensor, logs: dict, progress) -> None:
        """One record (loss over the updates since the last, lr, unreadable images so far, the forward's scalars)
        to the history, the progress bar, the trackers and train_log.jsonl."""
        self.guard.check(self.accelerator, self.global_step, self.last_checkpoint)
        self.sync_skipped()
        loss = self.accelerator.reduce(mean_loss, "mean").item()
        record = {"step": self.global_step, "epoch": epoch, "loss": loss, "lr": self.scheduler.get_last_lr()[-1],
                  "skipped_images": self.skipped_images, **{k: float(v) for k, v in logs.items()}}
        self.history.append(record)
        progress.set_postfix(loss=f"{loss:.4f}", skipped_images=self.skipped_images)
        self.accelerator.log(record, step=self.global_step)
        self.write_log(record)

    def write_log(self, record: dict) -> None:
        if self.accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            with open(self.output_dir / "train_log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
