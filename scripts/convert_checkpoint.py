#!/usr/bin/env python
"""Bring an existing checkpoint into hf-mim's classes and save it (weights, config, image processor, card).

    python scripts/convert_checkpoint.py --from mae-official --checkpoint mae_pretrain_vit_base.pth --output_dir out
    python scripts/convert_checkpoint.py --from hf-vit-mae --checkpoint path/to/vit-mae-base --output_dir out

Foreign files are read without executing code (safetensors, or torch.load(weights_only=True)). Each source is a
declarative key map (hf_mim/convert.py); every key must be mapped, and the converted model loads strictly, with
a report of missing, unexpected and mis-shaped keys. Where the source's own implementation runs here (the
transformers sources), the converted model's outputs are checked against it before saving.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

import hf_mim
from hf_mim.convert import (HF_VIT_MAE, MAE_OFFICIAL, KeyMap, convert_state_dict, interpolate_position_embeddings,
                            load_converted, mae_config_from_official, read_state_dict, rename_keys)
from hf_mim.hub import push_folder, write_model_card

logger = logging.getLogger("hf_mim.convert")


@dataclass(frozen=True)
class Source:
    method: str
    key_map: KeyMap
    qkv_bias: str
    describe: str
    config_fields: Callable  # (state_dict, args) -> config kwargs, read off the source
    read: Callable = read_state_dict
    check: Callable | None = None  # (args, converted_model) -> max abs difference against the source's own code
    position_keys: tuple[str, ...] = ()  # source keys of position tables to resample for --image_size


def hf_config_fields(args) -> dict:
    config = json.loads((Path(args.checkpoint) / "config.json").read_text())
    names = ("image_size", "patch_size", "num_channels", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "intermediate_size", "mask_ratio", "norm_pix_loss", "decoder_hidden_size", "decoder_num_hidden_layers",
             "decoder_num_attention_heads", "decoder_intermediate_size", "layer_norm_eps")
    return {k: config[k] for k in names if k in config}


def read_hf_folder(path: str) -> dict[str, torch.Tensor]:
    folder = Path(path)
    if folder.is_dir():
        weights = folder / "model.safetensors"
        if not weights.exists():
            raise FileNotFoundError(f"{folder} has no model.safetensors; save the transformers model with save_pretrained")
        return read_state_dict(str(weights))
    raise FileNotFoundError(f"--checkpoint {path!r} must be a transformers model folder for this source")


def check_against_hf_vit_mae(args, model) -> float:
    from transformers import ViTMAEForPreTraining

    reference = ViTMAEForPreTraining.from_pretrained(args.checkpoint).eval()
    config = model.config
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, config.num_channels, config.image_size, config.image_size, generator=generator)
    noise = torch.rand(2, config.num_patches, generator=generator)
    with torch.no_grad():
        expected = reference(pixel_values=pixels, noise=noise).logits
        got = model.eval()(pixel_values=pixels, noise=noise).logits
    return (expected - got).abs().max().item()


SOURCES: dict[str, Source] = {
    "mae-official": Source(
        "mae", MAE_OFFICIAL, "full", "facebookresearch/mae checkpoint (pretraining or fine-tuned)",
        lambda sd, args: mae_config_from_official(sd, args.num_attention_heads), position_keys=("pos_embed",),
    ),
    "hf-vit-mae": Source(
        "mae", HF_VIT_MAE, "full", "transformers ViTMAEForPreTraining folder",
        lambda sd, args: hf_config_fields(args), read=read_hf_folder, check=check_against_hf_vit_mae,
    ),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source", required=True, choices=sorted([*SOURCES, "dalle-encoder"]))
    p.add_argument("--checkpoint", required=True, help="the file (.pth/.pt/.bin/.safetensors) or folder to convert")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--num_attention_heads", type=int, default=None, help="when the width is not a standard ViT size")
    p.add_argument("--image_size", type=int, default=None, help="resample position tables to this image size")
    p.add_argument("--config_overrides", default="", help='"k=v,k=v" applied to the inferred config')
    p.add_argument("--push_to_hub", action="store_true")
    p.add_argument("--hub_model_id", default=None)
    args = p.parse_args(argv)
    if args.push_to_hub and not args.hub_model_id:
        p.error("--push_to_hub needs --hub_model_id ORG/NAME")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if args.source == "dalle-encoder":
        return convert_dalle_encoder(args)
    source = SOURCES[args.source]
    method = hf_mim.get_method(source.method)
    state_dict = source.read(args.checkpoint)
    try:
        fields = source.config_fields(state_dict, args)
    except KeyError as error:
        raise ValueError(f"{args.checkpoint} is not a {source.describe}: it has no {error} key") from error
    if args.image_size:
        patch = fields["patch_size"]
        for key in source.position_keys:
            interpolate_position_embeddings(state_dict, key, args.image_size // patch)
        fields["image_size"] = args.image_size
    config = method.config_class(**fields)
    if args.config_overrides:
        config.update_from_string(args.config_overrides)
        config = method.config_class(**config.to_dict())
    converted = convert_state_dict(state_dict, source.key_map, source.qkv_bias)
    is_classifier = any(k.startswith("head.") for k in converted)
    model = (method.classification_class if is_classifier else method.pretraining_class)(config)
    load_converted(model, converted)
    difference = source.check(args, model) if source.check else None
    if difference is not None:
        if difference > 1e-4:
            raise AssertionError(f"converted model differs from the source implementation by {difference:.2e}")
        logger.info("outputs match the source implementation (max abs difference %.2e)", difference)
    out = Path(args.output_dir)
    model.save_pretrained(out)
    method.image_processor_class.for_model_config(config).save_pretrained(out)
    write_model_card(
        out, model_name=args.hub_model_id or out.name, method=method, config=config,
        data_source="see the source checkpoint", steps=0, effective_batch=0, learning_rate=0.0, final_loss=None,
        command="python scripts/convert_checkpoint.py " + shlex.join(sys.argv[1:]) if Path(sys.argv[0]).name == "convert_checkpoint.py" else "",
        weights_from=f"converted from {source.describe}: {Path(args.checkpoint).name} (--from {args.source})",
        is_classifier=is_classifier,
    )
    if args.push_to_hub:
        push_folder(out, args.hub_model_id)
    summary = {"source": args.source, "keys": len(converted), "classifier": is_classifier, "max_abs_difference": difference}
    logger.info("converted %d tensors into %s", len(converted), out)
    return summary


def convert_dalle_encoder(args) -> dict:
    """OpenAI's published `encoder.pkl` (a pickled module) -> our tokenizer, through an allow-listed unpickler
    that maps the dall_e classes to inert stand-ins and never runs other pickled code."""
    from hf_mim.dalle_pickle import dvae_from_dalle_encoder

    model, report = dvae_from_dalle_encoder(args.checkpoint)
    out = Path(args.output_dir)
    model.save_pretrained(out)
    (out / "README.md").write_text(
        "---\nlibrary_name: transformers\ntags: [hf-mim, dvae, visual-tokenizer]\n---\n\n"
        f"# DALL-E dVAE encoder as an hf-mim tokenizer\n\nConverted from `{Path(args.checkpoint).name}` "
        "(OpenAI DALL-E, `encoder.pkl`) by `scripts/convert_checkpoint.py --from dalle-encoder`. Only the encoder "
        "is pretrained (`decoder_trained: false`); use it as BEiT's or CAE's tokenizer: "
        "`scripts/pretrain.py --method beit --tokenizer_name_or_path <this folder>`.\n"
    )
    if args.push_to_hub:
        push_folder(out, args.hub_model_id)
    logger.info("converted the DALL-E encoder (%d tensors) into %s", len(report.loaded), out)
    return {"source": "dalle-encoder", "keys": len(report.loaded), "classifier": False, "max_abs_difference": None}


if __name__ == "__main__":
    main()
