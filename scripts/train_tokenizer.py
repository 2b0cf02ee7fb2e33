#!/usr/bin/env python
"""Train the visual tokenizer of BEiT and CAE (a DALL-E-style dVAE) on your own images, with Accelerate.

    accelerate launch scripts/train_tokenizer.py --train_dir IMAGES --output_dir outputs/tokenizer
    python scripts/train_tokenizer.py        # CPU demo: a small dVAE on the embedded Fashion-MNIST sample

Gumbel-softmax relaxation in forward and backward, temperature annealed 1 -> 1/16 (cosine), KL weight rising
linearly 0 -> 6.6, Adam with a cosine step size. Codebook usage (fraction of codes used,
perplexity) is logged, since a collapsed codebook makes useless BEiT targets. The result loads with
`MimDvaeModel.from_pretrained` and feeds `scripts/pretrain.py --tokenizer_name_or_path`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from transformers.image_utils import PILImageResampling

from hf_mim.arguments import (ArgumentParser, add_data_arguments, add_loop_arguments, apply_config_overrides,
                              check_loop_arguments, fraction, image_checks, make_accelerator, non_negative_float,
                              non_negative_int, positive_int, run_main)
from hf_mim.data import Augmentation, SeededImageDataset, collate, load_image_dataset
from hf_mim.hub import push_folder, write_model_card
from hf_mim.modeling.configuration_dvae import MimDvaeConfig
from hf_mim.modeling.image_processing_mim import MimImageProcessor
from hf_mim.modeling.modeling_dvae import MimDvaeModel, gumbel_temperature, kl_weight_schedule, map_pixels
from hf_mim.training import (TrainingLoop, build_optimizer, build_scheduler, describe_run, end_training_together,
                             resolve_checkpoint, save_pretrained_atomically)

logger = logging.getLogger("hf_mim.train_tokenizer")

# Small enough for 2 CPU cores; 64 px views give the 8x8 token grid of the demo BEiT/CAE (32 px, patch 4).
DEMO_CONFIG = dict(vocab_size=512, hidden_size=16, num_blocks_per_group=1, decoder_init_size=32, image_size=64)
# The small demo dVAE needs a larger step than DALL-E's 1e-4: at 3e-4 its encoder logits stay below the Gumbel
# noise for a 100-300 update run, the decoder learns to ignore the codes and argmax decoding is worse than the
# mean image (measured on the sample: PSNR 8.7 vs 9.7 dB at 3e-4; 15.4 vs 9.7 dB at 1e-3 after 300 updates).
DEMO_LEARNING_RATE = 1e-3
DALLE_LEARNING_RATE = 1e-4
TOKENIZER = SimpleNamespace(
    name="dvae", paper="Ramesh et al., Zero-Shot Text-to-Image Generation (the DALL-E dVAE), ICML 2021",
    summary="A discrete VAE whose encoder maps each 8x8 pixel cell to one of `vocab_size` visual tokens: the "
    "prediction targets of BEiT and CAE. Feed it map_pixels'd images (0.8 x + 0.1, x in [0, 1]).",
)


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_size", choices=["demo", "dalle"], default=None,
                   help="demo: small dVAE at 64 px; dalle: DALL-E's architecture at 112 px. Default: demo on the sample")
    p.add_argument("--config_overrides", default="", help='dVAE config fields, "k=v,k=v" (vocab_size, image_size, ...)')
    add_data_arguments(p)
    p.add_argument("--output_dir", default="outputs/tokenizer")
    p.add_argument("--per_device_train_batch_size", type=positive_int, default=64)
    p.add_argument("--learning_rate", type=non_negative_float, default=None,
                   help=f"peak Adam step size (default: {DEMO_LEARNING_RATE:g} for the demo size, DALL-E's 1e-4 otherwise)")
    p.add_argument("--final_learning_rate_ratio", type=fraction, default=0.0125,
                   help="cosine floor (DALL-E: 1.25e-6 / 1e-4)")
    p.add_argument("--weight_decay", type=non_negative_float, default=0.0)
    p.add_argument("--num_train_epochs", type=positive_int, default=None)
    p.add_argument("--max_train_steps", type=positive_int, default=None)
    p.add_argument("--warmup_steps", type=non_negative_int, default=None)
    p.add_argument("--kl_warmup_steps", type=non_negative_int, default=None,
                   help="KL weight 0 -> kl_weight over these updates")
    p.add_argument("--temperature_anneal_steps", type=non_negative_int, default=None,
                   help="Gumbel temperature 1 -> 1/16 over these")
    add_loop_arguments(p)
    args = p.parse_args(argv)
    check_loop_arguments(p, args)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    accelerator = make_accelerator(args)
    uses_sample = not (args.dataset_name or args.train_dir)
    size = args.model_size or ("demo" if uses_sample else "dalle")
    config = MimDvaeConfig(**(DEMO_CONFIG if size == "demo" else {}))
    if args.config_overrides:
        config = apply_config_overrides(config, args.config_overrides)
        config = MimDvaeConfig(**config.to_dict())
    model = MimDvaeModel(config)
    learning_rate = args.learning_rate or (DEMO_LEARNING_RATE if size == "demo" else DALLE_LEARNING_RATE)
    # The tokenizer view of BEiT: Lanczos resize of the crop, [0, 1], no ImageNet normalisation.
    processor = MimImageProcessor(size={"height": config.image_size, "width": config.image_size},
                                  resample=PILImageResampling.LANCZOS, do_normalize=False)
    data = load_image_dataset(args.dataset_name, args.train_dir, "train", args.image_column, **image_checks(args))
    dataset = SeededImageDataset(data, processor, Augmentation(crop_scale=(0.5, 1.0)), seed=args.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.per_device_train_batch_size, shuffle=True,
                                         collate_fn=collate, num_workers=args.dataloader_num_workers,
                                         drop_last=len(dataset) > args.per_device_train_batch_size)
    updates_per_epoch = max(1, math.ceil(len(loader) / accelerator.num_processes / args.gradient_accumulation_steps))
    max_steps = args.max_train_steps or (args.num_train_epochs or (30 if size == "demo" else 100)) * updates_per_epoch
    epochs = math.ceil(max_steps / updates_per_epoch)
    # Short runs compress DALL-E's schedules (5k KL warm-up, 150k temperature) into the run's length.
    kl_warmup = (args.kl_warmup_steps if args.kl_warmup_steps is not None
                 else max(1, min(config.kl_warmup_steps, max_steps // 4)))
    anneal = (args.temperature_anneal_steps if args.temperature_anneal_steps is not None
              else min(config.temperature_anneal_steps, max(1, max_steps * 3 // 4)))
    warmup = args.warmup_steps if args.warmup_steps is not None else min(200, max_steps // 10)
    optimizer = build_optimizer(model, learning_rate, args.weight_decay, (0.9, 0.999))
    scheduler = build_scheduler(optimizer, learning_rate, warmup, max_steps,
                                learning_rate * args.final_learning_rate_ratio)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    if accelerator.is_main_process and args.report_to != "none":
        accelerator.init_trackers("hf-mim-tokenizer", config={k: str(v) for k, v in vars(args).items()})

    def forward(model, batch):
        step = loop.global_step
        temperature = gumbel_temperature(step, config.temperature_start, config.temperature_end, anneal)
        kl_weight = kl_weight_schedule(step, config.kl_weight, kl_warmup)
        out = model(map_pixels(batch["pixel_values"]), temperature=temperature, kl_weight=kl_weight)
        logs = {"reconstruction_loss": out.reconstruction_loss.detach(), "kl_loss": out.kl_loss.detach(),
                "codebook_perplexity": out.codebook_perplexity, "codebook_usage": out.codebook_usage,
                "temperature": temperature, "kl_weight": kl_weight}
        return out.loss, logs

    loop = TrainingLoop(
        accelerator, model, optimizer, scheduler, loader, dataset, output_dir=args.output_dir,
        max_train_steps=max_steps, num_epochs=epochs, checkpointing_steps=args.checkpointing_steps,
        checkpoints_total_limit=args.checkpoints_total_limit, max_nonfinite_skips=args.max_nonfinite_skips,
        logging_steps=args.logging_steps, forward=forward, progress_desc="tokenizer",
        run_descriptor=describe_run(TOKENIZER.name, config, args.per_device_train_batch_size * accelerator.num_processes
                                    * args.gradient_accumulation_steps, args.seed, data.source),
        allow_resume_changes=args.allow_resume_changes, max_weight_magnitude=args.max_weight_magnitude,
    )
    if args.resume_from_checkpoint:
        loop.resume(resolve_checkpoint(args.output_dir, args.resume_from_checkpoint))
    history = loop.run()
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    summary = {"steps": loop.global_step, "final_loss": history[-1]["loss"] if history else None,
               "codebook_usage": history[-1].get("codebook_usage") if history else None,
               "codebook_perplexity": history[-1].get("codebook_perplexity") if history else None}
    if accelerator.is_main_process:
        out_dir = Path(args.output_dir)
        save_pretrained_atomically(out_dir, unwrapped)
        picture, stats = tokenizer_picture(unwrapped, dataset)
        picture.save(out_dir / "reconstruction.png")
        summary.update(stats)
        (out_dir / "training_summary.json").write_text(json.dumps(summary, indent=2))
        write_model_card(
            out_dir, model_name=args.hub_model_id or out_dir.name, method=TOKENIZER, config=TokenizerShape(config),
            data_source=data.source, steps=loop.global_step, effective_batch=args.per_device_train_batch_size
            * args.gradient_accumulation_steps * accelerator.num_processes, learning_rate=learning_rate,
            final_loss=summary["final_loss"], picture="reconstruction.png", picture_title="Reconstructions",
            picture_caption=f"Top: input view; bottom: decoded from the hard (argmax) tokens. Over "
            f"{stats['evaluation_images']} training views: PSNR {stats['psnr']:.2f} dB (the mean image: "
            f"{stats['mean_image_psnr']:.2f} dB); {stats['codes_used']} of {config.vocab_size} codes used "
            f"(usage {stats['evaluation_codebook_usage']:.3f}), perplexity {stats['evaluation_codebook_perplexity']:.1f}.",
            command="python scripts/train_tokenizer.py " + (shlex.join(sys.argv[1:]) if Path(sys.argv[0]).name == "train_tokenizer.py" else ""),
        )
        if args.push_to_hub:
            push_folder(out_dir, args.hub_model_id)
    end_training_together(accelerator)
    return summary


class TokenizerShape:
    """The fields the model card's architecture line reads, for a tokenizer config."""

    def __init__(self, config):
        self.model_type = config.model_type
        self.image_size, self.patch_size = config.image_size, config.downsample_factor
        self.hidden_size, self.num_hidden_layers = config.hidden_size, config.num_groups * config.num_blocks_per_group
        self.num_attention_heads = f"none (vocabulary {config.vocab_size})"


@torch.no_grad()
def tokenizer_picture(model, dataset, num_images: int = 256, batch_size: int = 64):
    """(picture, stats) over up to `num_images` views: PSNR of the decoding from the hard (argmax) tokens next to the
    PSNR of the mean image (the baseline a useless tokenizer would match), and the codebook usage and perplexity of
    all their tokens. The picture shows the first 8 inputs over their decodings."""
    from hf_mim.modeling.modeling_dvae import codebook_statistics
    from hf_mim.visualize import image_grid

    device = next(model.parameters()).device
    examples = (dataset[i] for i in range(min(len(dataset), num_images * 2)))
    images = torch.stack([e["pixel_values"] for e in examples if "skipped" not in e][:num_images]).clamp(0, 1)
    tokens = torch.cat([model.get_codebook_indices(map_pixels(chunk.to(device))) for chunk in images.split(batch_size)])
    decoded = torch.cat([model.decode(chunk).clamp(0, 1).cpu() for chunk in tokens.split(batch_size)])
    mean_image = images.mean(dim=0, keepdim=True).expand_as(images)
    perplexity, usage = codebook_statistics(tokens, model.config.vocab_size)
    stats = {"psnr": psnr(decoded, images), "mean_image_psnr": psnr(mean_image, images),
             "evaluation_images": len(images), "evaluation_codebook_usage": float(usage),
             "evaluation_codebook_perplexity": float(perplexity), "codes_used": int(tokens.unique().numel())}
    shown = slice(0, 8)
    return image_grid([images[shown], decoded[shown]], ["input", "decoded"]), stats


def psnr(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1]."""
    mse = torch.mean((prediction.float() - target.float()) ** 2).clamp_min(1e-10)
    return float(10 * torch.log10(1.0 / mse))


if __name__ == "__main__":
    run_main(main)
