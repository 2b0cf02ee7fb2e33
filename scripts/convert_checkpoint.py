#!/usr/bin/env python
"""Bring an existing checkpoint into hf-mim's classes and save it (weights, config, image processor, card).

    python scripts/convert_checkpoint.py --from mae-official --checkpoint mae_pretrain_vit_base.pth --output_dir out
    python scripts/convert_checkpoint.py --from beit-unilm --checkpoint beit_base_patch16_224_pt22k.pth --output_dir out
    python scripts/convert_checkpoint.py --from hf-vit-mae --checkpoint path/to/vit-mae-base --output_dir out
    python scripts/convert_checkpoint.py --from simmim-official --checkpoint simmim_pretrain__swin_base__img192_window6__800ep.pth \
        --config_overrides window_size=7 --image_size 224 --output_dir out   # a Swin, bias tables resampled to 7x7

Foreign files are read without executing code (safetensors, or torch.load(weights_only=True)). Each source is a
declarative key map (hf_mim/convert.py); every key must be mapped or deliberately dropped, and the converted model
loads strictly, with a report of missing, unexpected and mis-shaped keys. The config is read off the tensors'
shapes. The target class follows the checkpoint: a classifier when it has a head; the pretraining model when it
holds that model's head and the model needs nothing else; otherwise the encoder (`AutoModel`), and the summary
names what was left out (BEiT's token head and CAE's neck: their pretraining models also need a tokenizer, which
these checkpoints do not hold). Where the source's own implementation runs here (the transformers sources), the
converted model's outputs are checked against it before saving.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from hf_mim_cli.arguments import ArgumentParser, answer_help_early, apply_config_overrides, positive_int, run_main
from hf_mim_cli.catalog import NORMALIZATIONS as NORMALIZATION_NAMES, conversion_source_ids

logger = logging.getLogger("hf_mim.convert")


def image_mean_std(source: Source, args) -> tuple[list[float], list[float]]:
    """--normalization, else a transformers folder's preprocessor_config.json, else the source's default."""
    if args.normalization:
        return NORMALIZATIONS[args.normalization]
    processor_file = Path(args.checkpoint) / "preprocessor_config.json"
    if processor_file.is_file():
        saved = json.loads(processor_file.read_text())
        if "image_mean" in saved and "image_std" in saved:
            return saved["image_mean"], saved["image_std"]
    return NORMALIZATIONS[source.normalization]


def config_with_overrides(config_class, fields: dict, overrides: str):
    """The backbone's config from the fields read off the checkpoint, with --config_overrides ("k=v,k=v", typed as
    the config's defaults) applied before the config's checks run: a checkpoint at another size may need, say,
    other mask counts to be valid at all."""
    if overrides:
        parsed = config_class()
        parsed = apply_config_overrides(parsed, overrides, recheck=False)
        names = [pair.split("=", 1)[0].strip() for pair in overrides.split(",")]
        fields = {**fields, **{name: getattr(parsed, name) for name in names}}
    return config_class(**fields)


def fitted_config(args, source: Source, backbone, fields: dict, converted: dict[str, torch.Tensor]):
    """(config, whether tables were resampled): the backbone's config from the checkpoint's fields, --image_size and
    --config_overrides, with the position tables of `converted` resampled in place to fit it (a ViT's to the new
    patch grid; a Swin's window bias tables to the config's window size)."""
    resized = bool(args.image_size) and args.image_size != fields["image_size"]
    if resized and source.resize_tables is None:
        resize_position_tables(converted, args.image_size // fields["patch_size"])
    fields["image_size"] = args.image_size or fields["image_size"]
    config = config_with_overrides(backbone.config_class, fields, args.config_overrides)
    for key in source.resize_tables(converted, config) if source.resize_tables else []:
        resized = True
        logger.info("%s: resampled (bicubic) for the config's window or grid", key)
    return config, resized


def target_class(backbone, config, converted: dict[str, torch.Tensor]) -> tuple[type, list[str]]:
    """The class of the method's `backbone` family that can hold the checkpoint, and the converted keys it cannot
    hold (left out)."""
    if "head.weight" in converted:
        return backbone.classification_class, []
    prefix = backbone.model_class.base_model_prefix + "."
    outside_encoder = sorted(k for k in converted if not k.startswith(prefix))
    if not outside_encoder:
        return backbone.model_class, []
    if config.needs_tokenizer:  # its pretraining model predicts a tokenizer's ids; no checkpoint here holds one
        return backbone.model_class, outside_encoder
    return backbone.pretraining_class, []


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source", required=True, choices=sorted([*conversion_source_ids(), "dalle-encoder"]))
    p.add_argument("--checkpoint", required=True, help="the file (.pth/.pt/.bin/.safetensors) or folder to convert")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--num_attention_heads", type=positive_int, default=None,
                   help="when the width is not a standard ViT size")
    p.add_argument("--image_size", type=positive_int, default=None, help="convert to this image size: a ViT's position tables are resampled to its grid; a Swin's weights "
                        "need it when they do not say it (its bias tables follow --config_overrides window_size=N)")
    p.add_argument("--config_overrides", default="", help='"k=v,k=v" applied to the inferred config')
    p.add_argument("--normalization", choices=sorted(NORMALIZATION_NAMES), default=None,
                   help="image mean/std of the saved processor: imagenet-default (0.485.../0.229...) or "
                        "imagenet-standard (0.5/0.5); default: what the source used")
    p.add_argument("--push_to_hub", action="store_true")
    p.add_argument("--hub_model_id", default=None)
    args = p.parse_args(argv)
    if args.push_to_hub and not args.hub_model_id:
        p.error("--push_to_hub needs --hub_model_id ORG/NAME")
    return args


if __name__ == "__main__":
    answer_help_early(parse_args)

# Below the parser: these load torch and transformers, which `--help` does not wait for.
import torch
from transformers.initialization import no_init_weights
from hf_mim.checkpoint_sources import NORMALIZATIONS, Source
from hf_mim.convert import (convert_state_dict, dropped_keys, key_groups, load_converted,
                            recompute_fixed_position_tables, resize_position_tables)
from hf_mim.hub import push_folder, write_model_card
from hf_mim.methods import conversion_source
from hf_mim.planning import command_line
from hf_mim.modeling.relative_bias_loading import SHARED_TABLE_KEY, per_layer_tables_from_shared


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if args.source == "dalle-encoder":
        return convert_dalle_encoder(args)
    method, source = conversion_source(args.source)
    state_dict = source.read(args.checkpoint)
    source = source.for_checkpoint(state_dict)  # e.g. an official SimMIM checkpoint of a Swin
    backbone = method.backbone(source.backbone)
    converted = convert_state_dict(state_dict, source.key_map, source.qkv_bias)
    try:
        fields = source.config_fields(state_dict, converted, args)
    except KeyError as error:
        raise ValueError(f"{args.checkpoint} is not a {source.describe}: after renaming it has no {error} key") from error
    config, resized = fitted_config(args, source, backbone, fields, converted)
    if getattr(config, "relative_position_bias", None) == "per_layer":
        converted.update(per_layer_tables_from_shared(converted, config.num_hidden_layers))
        converted.pop(SHARED_TABLE_KEY, None)
    model_class, left_out = target_class(backbone, config, converted)
    with no_init_weights():  # every weight is loaded below
        model = model_class(config)
    load_converted(model, {k: v for k, v in converted.items() if k not in left_out})
    if resized:
        for name in recompute_fixed_position_tables(model):
            logger.info("%s: fixed sin-cos table recomputed for %d px (not resampled)", name, args.image_size)
    # the source's own model runs at its own size only
    difference = source.check(args, model) if source.check and not resized else None
    if difference is not None:
        if difference > 1e-4:
            raise AssertionError(f"converted model differs from the source implementation by {difference:.2e}")
        logger.info("outputs match the source implementation (max abs difference %.2e)", difference)
    dropped = key_groups(dropped_keys(state_dict, source.key_map)) + key_groups(left_out)
    if dropped:
        logger.info("left out (no place in %s): %s", model_class.__name__, ", ".join(dropped))
    is_classifier = model_class is backbone.classification_class
    out = Path(args.output_dir)
    model.save_pretrained(out)
    image_mean, image_std = image_mean_std(source, args)
    # a classifier's processor is the pipeline's: the official evaluation crop; others feed pretraining
    processors = backbone.image_processor_class
    processor = (processors.for_evaluation if is_classifier else processors.for_model_config)(
        config, image_mean=image_mean, image_std=image_std)
    processor.save_pretrained(out)
    write_model_card(
        out, model_name=args.hub_model_id or out.name, method=method, config=config,
        data_source="see the source checkpoint", steps=0, effective_batch=0, learning_rate=0.0, final_loss=None,
        command=command_line("scripts/convert_checkpoint.py", argv),
        weights_from=f"converted from {source.describe}: {Path(args.checkpoint).name} (--from {args.source})"
        + (f"; left out: {', '.join(dropped)}" if dropped else ""),
        is_classifier=is_classifier,
    )
    if args.push_to_hub:
        push_folder(out, args.hub_model_id)
    summary = {"source": args.source, "keys": len(converted), "classifier": is_classifier, "max_abs_difference": difference,
               "model_class": model_class.__name__, "dropped": dropped, "image_mean": list(image_mean),
               "image_std": list(image_std)}
    logger.info("converted %d tensors into %s", len(converted), out)
    return summary


def convert_dalle_encoder(args) -> dict:
    """OpenAI's published `encoder.pkl` (a pickled module) -> our tokenizer, through an allow-listed unpickler
    that maps the dall_e classes to inert stand-ins and never runs other pickled code."""
    from hf_mim.dalle_pickle import dvae_from_dalle_encoder
    from hf_mim.modeling.image_processing_dvae import MimDvaeImageProcessor

    model, report = dvae_from_dalle_encoder(args.checkpoint)
    out = Path(args.output_dir)
    model.save_pretrained(out)
    MimDvaeImageProcessor.for_model_config(model.config).save_pretrained(out)
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
    run_main(main)
