#!/usr/bin/env python
"""Train the visual tokenizer of BEiT and CAE (a DALL-E-style dVAE) on your own images, with Accelerate.

    accelerate launch scripts/train_tokenizer.py --train_dir IMAGES --output_dir outputs/tokenizer
    python scripts/train_tokenizer.py        # CPU demo: a small dVAE on the embedded Fashion-MNIST sample

DALL-E's objective and schedules: Gumbel-softmax relaxation in forward and backward, temperature annealed
1 -> 1/16 (cosine), KL weight to the uniform prior rising linearly 0 -> 6.6, Adam with lr warm-up and cosine decay.
Against codebook collapse (a few codes doing all the work makes poor BEiT/CAE targets), codes no cell of a batch
picks are re-seeded by splitting used ones (`--reseed_dead_codes_every`; the demo size does it every 10 updates up
to 90% of the run), and the config's `codebook_diversity_weight` adds -I(cell; code): cells confident in one code,
codes used evenly (the demo config sets it; DALL-E's size leaves it 0). Codes in use, perplexity and PSNR are
measured on held-out images (the sample's test split) for the card. The folder (weights, config, image
processor, card) loads with `AutoModel.from_pretrained` and feeds `scripts/pretrain.py --tokenizer_name_or_path`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from hf_mim_cli.arguments import (ArgumentParser, UsageError, add_data_arguments, add_loop_arguments,
                                  answer_help_early, apply_config_overrides, check_loop_arguments, fraction,
                                  image_checks, make_accelerator, non_negative_float, non_negative_int, positive_int,
                                  run_main)

logger = logging.getLogger("hf_mim.train_tokenizer")

# Small enough for 2 CPU cores; 64 px views give the 8x8 token grid of the demo BEiT/CAE (32 px, patch 4).
# Measured on the embedded sample's default run (held-out codes in use of 512 / perplexity / PSNR; the mean image
# scores 10.77 dB). Width 16: diversity weight 0 -> 41 / 17.7 / 14.82 dB, 0.5 -> 161 / 122.9 / 15.06, 0.75 -> 254 /
# 217.1 / 14.01, 1 -> 288 / 232.7 / 13.85: more codes cost PSNR at that width. Width 32: 0.75 -> 245 / 190.5 /
# 15.71, 0.85 -> 359 / 282.1 / 14.54, 1 -> 330 / 253.2 / 14.51.
DEMO_CONFIG = dict(vocab_size=512, hidden_size=32, num_blocks_per_group=1, decoder_init_size=32, image_size=64,
                   codebook_diversity_weight=0.85)


@dataclass(frozen=True)
class TokenizerRecipe:
    """A run's settings; every field is also a flag of the same name, which replaces it when given.
    None schedules are set from the run's length (DALL-E's 5k KL warm-up and 150k temperature anneal compressed
    into it): lr warm-up a tenth of the run (at most 200), KL warm-up a quarter, temperature anneal three quarters."""

    learning_rate: float
    num_train_epochs: int
    per_device_train_batch_size: int = 64
    weight_decay: float = 0.0
    final_learning_rate_ratio: float = 0.0125  # the cosine floor (DALL-E: 1.25e-6 / 1e-4)
    warmup_steps: int | None = None
    kl_warmup_steps: int | None = None
    temperature_anneal_steps: int | None = None
    reseed_dead_codes_every: int = 0  # updates between re-seeds of dead codes; 0 = never
    reseed_dead_codes_until: float = 0.75  # share of the run after which the codebook is left to settle


RECIPES = {
    # The small demo dVAE needs a larger step than DALL-E's 1e-4: at 3e-4 its logits stay under the Gumbel noise
    # and the decoder learns to ignore the codes.
    "demo": TokenizerRecipe(learning_rate=1e-3, num_train_epochs=30, reseed_dead_codes_every=10,
                            reseed_dead_codes_until=0.9),
    "dalle": TokenizerRecipe(learning_rate=1e-4, num_train_epochs=100),
}
SUMMARY = ("Its encoder maps each {f}x{f} pixel cell to one of {vocab} visual tokens: the "
           "prediction targets of BEiT and CAE.")
PAPER = "Ramesh et al., Zero-Shot Text-to-Image Generation (the DALL-E dVAE), ICML 2021"


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_size", choices=sorted(RECIPES), default=None,
                   help="demo: small dVAE at 64 px; dalle: DALL-E's architecture at 112 px. Default: demo on the sample")
    p.add_argument("--config_overrides", default="", help='dVAE config fields, "k=v,k=v" (vocab_size, image_size, '
                   "codebook_diversity_weight, ...)")
    add_data_arguments(p)
    p.add_argument("--output_dir", default="outputs/tokenizer")
    p.add_argument("--per_device_train_batch_size", type=positive_int, default=None, help="recipe: 64")
    p.add_argument("--learning_rate", type=non_negative_float, default=None, help="peak Adam step size "
                   f"(recipe: {RECIPES['demo'].learning_rate:g} demo, {RECIPES['dalle'].learning_rate:g} dalle)")
    p.add_argument("--final_learning_rate_ratio", type=fraction, default=None, help="cosine floor / peak (0.0125)")
    p.add_argument("--weight_decay", type=non_negative_float, default=None, help="recipe: 0")
    p.add_argument("--num_train_epochs", type=positive_int, default=None, help="recipe: 30 demo, 100 dalle")
    p.add_argument("--max_train_steps", type=positive_int, default=None)
    p.add_argument("--warmup_steps", type=non_negative_int, default=None, help="default: a tenth of the run, <= 200")
    p.add_argument("--kl_warmup_steps", type=non_negative_int, default=None,
                   help="KL weight 0 -> kl_weight over these updates (default: a quarter of the run)")
    p.add_argument("--temperature_anneal_steps", type=non_negative_int, default=None,
                   help="Gumbel temperature 1 -> 1/16 over these (default: three quarters of the run)")
    p.add_argument("--reseed_dead_codes_every", type=non_negative_int, default=None,
                   help="split used codes into those no cell of the batch picks, every N updates; 0 = never "
                        "(recipe: 10 demo, 0 dalle)")
    p.add_argument("--reseed_dead_codes_until", type=fraction, default=None,
                   help="stop re-seeding after this share of the run (recipe: 0.9 demo, 0.75 dalle)")
    add_loop_arguments(p)
    args = p.parse_args(argv)
    check_loop_arguments(p, args)
    return args


if __name__ == "__main__":
    answer_help_early(parse_args)

# Below the parser: these load torch and transformers, which `--help` does not wait for.
import torch
from hf_mim.data import SeededImageDataset, Augmentation, collate, load_image_dataset
from hf_mim.hub import push_folder, write_tokenizer_card
from hf_mim.modeling.configuration_dvae import MimDvaeConfig
from hf_mim.modeling.image_processing_dvae import MimDvaeImageProcessor
from hf_mim.modeling.modeling_dvae import (MimDvaeModel, codebook_statistics, gumbel_temperature, kl_weight_schedule,
                                           unmap_pixels)
from hf_mim.planning import command_line, plan_schedule, with_overrides
from hf_mim.training import (TrainingLoop, build_optimizer, build_scheduler, describe_run, end_training_together,
                             resolve_checkpoint, save_pretrained_atomically)


def build_tokenizer(args) -> tuple[MimDvaeModel, str, TokenizerRecipe]:
    """The dVAE (the demo shape on the embedded sample, DALL-E's otherwise; `--config_overrides` on top), its size
    name and the recipe with the flags applied."""
    size = args.model_size or ("demo" if not (args.dataset_name or args.train_dir) else "dalle")
    config = MimDvaeConfig(**(DEMO_CONFIG if size == "demo" else {}))
    if args.config_overrides:
        config = MimDvaeConfig(**apply_config_overrides(config, args.config_overrides).to_dict())
    return MimDvaeModel(config), size, with_overrides(RECIPES[size], args)


class TokenizerObjective:
    """The loop's `forward` (DALL-E's schedules of temperature and KL weight by update) and `on_update` (the
    re-seeding of dead codes from the last batch, the same on every process: the main one's, broadcast)."""

    def __init__(self, accelerator, model, recipe: TokenizerRecipe, max_steps: int, seed: int):
        self.accelerator, self.model, self.config = accelerator, model, model.config
        self.kl_warmup = (recipe.kl_warmup_steps if recipe.kl_warmup_steps is not None
                          else max(1, min(self.config.kl_warmup_steps, max_steps // 4)))
        self.anneal = (recipe.temperature_anneal_steps if recipe.temperature_anneal_steps is not None
                       else min(self.config.temperature_anneal_steps, max(1, max_steps * 3 // 4)))
        self.reseed_every, self.reseed_until = recipe.reseed_dead_codes_every, recipe.reseed_dead_codes_until * max_steps
        self.seed, self.step, self.last_pixels = seed, 0, None

    def forward(self, model, batch):
        temperature = gumbel_temperature(self.step, self.config.temperature_start, self.config.temperature_end,
                                         self.anneal)
        kl_weight = kl_weight_schedule(self.step, self.config.kl_weight, self.kl_warmup)
        self.last_pixels = batch["pixel_values"]
        out = model(batch["pixel_values"], temperature=temperature, kl_weight=kl_weight)
        logs = {"reconstruction_loss": out.reconstruction_loss.detach(), "kl_loss": out.kl_loss.detach(),
                "diversity_loss": out.diversity_loss.detach(), "codebook_perplexity": out.codebook_perplexity,
                "codebook_usage": out.codebook_usage, "temperature": temperature, "kl_weight": kl_weight}
        return out.loss, logs

    def on_update(self, step: int) -> None:
        self.step = step
        if not self.reseed_every or step % self.reseed_every or step >= self.reseed_until:
            return
        dvae = self.accelerator.unwrap_model(self.model)
        dead = dvae.reseed_dead_codes(self.last_pixels, torch.Generator().manual_seed(self.seed * 1_000_003 + step))
        if self.accelerator.num_processes > 1:
            from accelerate.utils import broadcast

            for weight in (dvae.encoder.blocks.output.conv.w, dvae.encoder.blocks.output.conv.b,
                           dvae.decoder.blocks.input.w):
                weight.data.copy_(broadcast(weight.data, from_process=0))
        logger.debug("step %d: re-seeded %d dead codes", step, dead)


def held_out_images(args, processor, limit: int = 512) -> tuple[torch.Tensor, str]:
    """(map_pixels'd images, what they are) to measure the tokenizer on: the 'test' split of the data (the
    embedded sample has one), else the training images without augmentation."""
    try:
        data, what = load_image_dataset(args.dataset_name, args.train_dir, "test", args.image_column), "held-out"
    except (UsageError, ValueError, FileNotFoundError, KeyError):
        data, what = load_image_dataset(args.dataset_name, args.train_dir, "train", args.image_column), "training"
    dataset = SeededImageDataset(data, processor, replace_unreadable=False)
    examples = [dataset[i] for i in range(min(len(dataset), limit))]
    images = torch.stack([e["pixel_values"] for e in examples if "skipped" not in e])
    return images, f"{len(images)} {what} images of {data.source}"


@torch.no_grad()
def measure_tokenizer(model: MimDvaeModel, pixel_values: torch.Tensor, batch_size: int = 64) -> dict:
    """Codes in use (of vocab_size), perplexity (exp entropy of the code histogram: the effective number of codes)
    and PSNR of the decoding from the hard (argmax) codes, next to the PSNR of the mean image (what a tokenizer
    that carries no information would match), over map_pixels'd `pixel_values`; plus `decoded` images in [0, 1]."""
    device = next(model.parameters()).device
    codes = torch.cat([model.get_codebook_indices(chunk.to(device)).cpu() for chunk in pixel_values.split(batch_size)])
    decoded = torch.cat([model.decode(chunk.to(device)).clamp(0, 1).cpu() for chunk in codes.split(batch_size)])
    images = unmap_pixels(pixel_values.float())
    perplexity, _ = codebook_statistics(codes, model.config.vocab_size)
    return {"codes_in_use": int(codes.unique().numel()), "vocab_size": model.config.vocab_size,
            "perplexity": float(perplexity), "psnr": psnr(decoded, images),
            "mean_image_psnr": psnr(images.mean(dim=0, keepdim=True).expand_as(images), images),
            "images": images, "decoded": decoded}


def psnr(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1]."""
    mse = torch.mean((prediction.float() - target.float()) ** 2).clamp_min(1e-10)
    return float(10 * torch.log10(1.0 / mse))


def build_loader(args, data, processor, recipe: TokenizerRecipe):
    dataset = SeededImageDataset(data, processor, Augmentation(crop_scale=(0.5, 1.0)), seed=args.seed)
    batch_size = recipe.per_device_train_batch_size
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collate,
                                         num_workers=args.dataloader_num_workers, drop_last=len(dataset) > batch_size)
    return dataset, loader


def main(argv=None) -> dict:
    args = parse_args(argv)
    accelerator = make_accelerator(args)
    model, size, recipe = build_tokenizer(args)
    config = model.config
    processor = MimDvaeImageProcessor.for_model_config(config)
    data = load_image_dataset(args.dataset_name, args.train_dir, "train", args.image_column, **image_checks(args))
    dataset, loader = build_loader(args, data, processor, recipe)
    plan = plan_schedule(batches_per_epoch=len(loader), per_device_batch_size=recipe.per_device_train_batch_size,
                         num_processes=accelerator.num_processes,
                         gradient_accumulation_steps=args.gradient_accumulation_steps,
                         num_epochs=recipe.num_train_epochs, max_steps=args.max_train_steps,
                         warmup_steps=recipe.warmup_steps if recipe.warmup_steps is not None
                         else (lambda total: min(200, total // 10)), learning_rate=recipe.learning_rate)
    logger.info("tokenizer %s config (%d codes, %d px), data: %s (%d images), %d updates, effective batch %d, lr %.3g, "
                "dead codes re-seeded every %s updates", size, config.vocab_size, config.image_size, data.source,
                len(dataset), plan.max_steps, plan.effective_batch, plan.learning_rate,
                recipe.reseed_dead_codes_every or "no")
    optimizer = build_optimizer(model, plan.learning_rate, recipe.weight_decay, (0.9, 0.999))
    scheduler = build_scheduler(optimizer, plan.learning_rate, plan.warmup_steps, plan.max_steps,
                                plan.learning_rate * recipe.final_learning_rate_ratio)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    if accelerator.is_main_process and args.report_to != "none":
        accelerator.init_trackers("hf-mim-tokenizer", config={k: str(v) for k, v in vars(args).items()})
    objective = TokenizerObjective(accelerator, model, recipe, plan.max_steps, args.seed)
    loop = TrainingLoop(
        accelerator, model, optimizer, scheduler, loader, dataset, output_dir=args.output_dir,
        max_train_steps=plan.max_steps, num_epochs=plan.epochs, checkpointing_steps=args.checkpointing_steps,
        checkpoints_total_limit=args.checkpoints_total_limit, max_nonfinite_skips=args.max_nonfinite_skips,
        logging_steps=args.logging_steps, forward=objective.forward, on_update=objective.on_update,
        progress_desc="tokenizer", run_descriptor=describe_run("dvae", config, plan.effective_batch, args.seed,
                                                               data.source),
        allow_resume_changes=args.allow_resume_changes, max_weight_magnitude=args.max_weight_magnitude,
    )
    if args.resume_from_checkpoint:
        loop.resume(resolve_checkpoint(args.output_dir, args.resume_from_checkpoint))
        objective.step = loop.global_step
    history = loop.run()
    accelerator.wait_for_everyone()
    summary = {"steps": loop.global_step, "final_loss": history[-1]["loss"] if history else None,
               "learning_rate": plan.learning_rate, "effective_batch": plan.effective_batch}
    if accelerator.is_main_process:
        save_outputs(args, accelerator.unwrap_model(model), processor, data.source, summary,
                     command_line("scripts/train_tokenizer.py", argv))
    end_training_together(accelerator)
    return summary


def save_outputs(args, model, processor, data_source: str, summary: dict, command: str) -> None:
    """Weights, config, processor, the card with the held-out measurement, its picture and training_summary.json."""
    from hf_mim.visualize import image_grid

    out_dir = Path(args.output_dir)
    save_pretrained_atomically(out_dir, model, processor)
    images, held_out = held_out_images(args, processor)
    stats = measure_tokenizer(model, images)
    shown = slice(0, 8)
    image_grid([stats.pop("images")[shown], stats.pop("decoded")[shown]], ["input", "decoded"]).save(
        out_dir / "reconstruction.png")
    summary.update(stats, evaluation=held_out)
    (out_dir / "training_summary.json").write_text(json.dumps(summary, indent=2))
    f = model.config.downsample_factor
    write_tokenizer_card(out_dir, model_name=args.hub_model_id or out_dir.name, config=model.config, stats=summary,
                         paper=PAPER, summary=SUMMARY.format(f=f, vocab=model.config.vocab_size),
                         data_source=data_source, command=command, picture="reconstruction.png")
    logger.info("saved tokenizer, processor, card and picture to %s: %d of %d codes in use, perplexity %.1f, PSNR %.2f "
                "dB (mean image %.2f dB) on %s", out_dir, stats["codes_in_use"], stats["vocab_size"],
                stats["perplexity"], stats["psnr"], stats["mean_image_psnr"], held_out)
    if args.push_to_hub:
        logger.info("pushed to %s (%s)", args.hub_model_id, push_folder(out_dir, args.hub_model_id))


if __name__ == "__main__":
    run_main(main)
