#!/usr/bin/env python
"""Bring an existing checkpoint into hf-mim's classes and save it (weights, config, image processor, card).

    python scripts/convert_checkpoint.py --from mae-official --checkpoint mae_pretrain_vit_base.pth --output_dir out
    python scripts/convert_checkpoint.py --from beit-unilm --checkpoint beit_base_patch16_224_pt22k.pth --output_dir out
    python scripts/convert_checkpoint.py --from hf-vit-mae --checkpoint path/to/vit-mae-base --output_dir out

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
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from transformers.image_utils import (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, IMAGENET_STANDARD_MEAN,
                                      IMAGENET_STANDARD_STD)
from transformers.initialization import no_init_weights

import hf_mim
from hf_mim.arguments import ArgumentParser, apply_config_overrides, positive_int, run_main
from hf_mim.convert import (BEIT_UNILM, CAE_MMPRETRAIN, CAE_OFFICIAL, HF_BEIT, HF_VIT_MAE, HF_VIT_MIM, MAE_OFFICIAL,
                            MASKFEAT_MMPRETRAIN, MASKFEAT_SLOWFAST, SIMMIM_OFFICIAL, KeyMap, convert_state_dict,
                            dropped_keys, key_groups, load_converted, mae_config_from_official, read_state_dict,
                            recompute_fixed_position_tables, resize_position_tables, vit_config_from_converted)
from hf_mim.hub import push_folder, write_model_card
from hf_mim.modeling.relative_bias_loading import SHARED_TABLE_KEY, per_layer_tables_from_shared

logger = logging.getLogger("hf_mim.convert")


NORMALIZATIONS = {"imagenet-default": (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
                  "imagenet-standard": (IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD)}


@dataclass(frozen=True)
class Source:
    method: str
    key_map: KeyMap
    qkv_bias: str
    describe: str
    config_fields: Callable  # (source state dict, converted state dict, args) -> config kwargs
    read: Callable = read_state_dict
    check: Callable | None = None  # (args, converted_model) -> max abs difference against the source's own code
    normalization: str = "imagenet-default"  # the source's image mean/std (NORMALIZATIONS), unless --normalization


def from_shapes(position_embedding: str = "learned") -> Callable:
    """A config reader for an official layout: the shapes of the converted tensors; absolute positions, where
    present, are of the method's kind."""
    def fields(state_dict, converted, args) -> dict:
        return vit_config_from_converted(converted, args.num_attention_heads, position_embedding)
    return fields


def maskfeat_mmpretrain_fields(state_dict, converted, args) -> dict:
    """mmpretrain's HOG generator weights the gradients with a Gaussian window; its saved kernel gives the size."""
    fields = vit_config_from_converted(converted, args.num_attention_heads)
    window = state_dict.get("target_generator.gaussian_kernel")
    if window is not None:
        fields["hog_gaussian_window"] = window.shape[-1]
    return fields


HF_CONFIG_FIELDS = ("image_size", "layer_norm_eps", "hidden_act", "id2label", "label2id")


def hf_config_fields(args) -> dict:
    config = json.loads((Path(args.checkpoint) / "config.json").read_text())
    names = ("image_size", "patch_size", "num_channels", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "intermediate_size", "mask_ratio", "norm_pix_loss", "decoder_hidden_size", "decoder_num_hidden_layers",
             "decoder_num_attention_heads", "decoder_intermediate_size", "layer_norm_eps")
    return {k: config[k] for k in names if k in config}


def hf_fields_from_shapes(state_dict, converted, args) -> dict:
    """Shapes as for the official layouts, plus what only config.json says (eps, activation, labels, size)."""
    config = json.loads((Path(args.checkpoint) / "config.json").read_text())
    fields = vit_config_from_converted(converted, config.get("num_attention_heads"))
    fields.update({k: config[k] for k in HF_CONFIG_FIELDS if k in config})
    if "num_labels" not in fields:  # a pretraining model's placeholder labels
        fields = {k: v for k, v in fields.items() if k not in ("id2label", "label2id")}
    return fields


def read_hf_folder(path: str) -> dict[str, torch.Tensor]:
    folder = Path(path)
    if folder.is_dir():
        weights = folder / "model.safetensors"
        if not weights.exists():
            raise FileNotFoundError(f"{folder} has no model.safetensors; save the transformers model with save_pretrained")
        return read_state_dict(str(weights))
    raise FileNotFoundError(f"--checkpoint {path!r} must be a transformers model folder for this source")


def reference_inputs(config, masked: bool = True) -> dict:
    """Fixed random pixels, and a fixed random patch mask (BEiT, SimMIM) or MAE's masking noise, for comparing
    outputs."""
    generator = torch.Generator().manual_seed(0)
    inputs = {"pixel_values": torch.randn(2, config.num_channels, config.image_size, config.image_size,
                                          generator=generator)}
    noise = torch.rand(2, config.num_patches, generator=generator)
    return {**inputs, "bool_masked_pos": noise < 0.5} if masked else {**inputs, "noise": noise}


def check_against_hf_vit_mae(args, model) -> float:
    from transformers import ViTMAEForPreTraining

    reference = ViTMAEForPreTraining.from_pretrained(args.checkpoint).eval()
    inputs = reference_inputs(model.config, masked=False)
    with torch.no_grad():
        expected = reference(**inputs).logits
        got = model.eval()(**inputs).logits
    return (expected - got).abs().max().item()


def check_against_hf_beit(args, model) -> float:
    """Classifier: logits. Masked-image model: the encoder's normalised tokens with the same patches masked
    (our BEiT pretraining model also needs a tokenizer, so its encoder is what was converted)."""
    from transformers import BeitForImageClassification, BeitForMaskedImageModeling

    classifier = "head.weight" in model.state_dict()
    with torch.no_grad():
        if classifier:
            inputs = {"pixel_values": reference_inputs(model.config)["pixel_values"]}
            expected = BeitForImageClassification.from_pretrained(args.checkpoint).eval()(**inputs).logits
            got = model.eval()(**inputs).logits
        else:
            inputs = reference_inputs(model.config)
            reference = BeitForMaskedImageModeling.from_pretrained(args.checkpoint).eval()
            expected = reference.layernorm(reference.beit(**inputs).last_hidden_state)
            got = model.eval()(**inputs).last_hidden_state
    return (expected - got).abs().max().item()


def check_against_hf_vit_mim(args, model) -> float:
    from transformers import ViTForMaskedImageModeling

    inputs = reference_inputs(model.config)
    with torch.no_grad():
        expected = ViTForMaskedImageModeling.from_pretrained(args.checkpoint).eval()(**inputs).reconstruction
        got = model.eval()(**inputs).reconstruction
    return (expected - got).abs().max().item()


SOURCES: dict[str, Source] = {
    "mae-official": Source(
        "mae", MAE_OFFICIAL, "full", "facebookresearch/mae checkpoint (pretraining or fine-tuned)",
        lambda sd, converted, args: mae_config_from_official(sd, args.num_attention_heads),
    ),
    "beit-unilm": Source(
        "beit", BEIT_UNILM, "qv", "microsoft/unilm BEiT checkpoint (pretraining or fine-tuned)", from_shapes(),
        # the code's default; its ImageNet-1k recipe passes --imagenet_default_mean_and_std (--normalization)
        normalization="imagenet-standard",
    ),
    "simmim-official": Source(
        "simmim", SIMMIM_OFFICIAL, "qv", "microsoft/SimMIM ViT checkpoint (pretraining or fine-tuned)", from_shapes(),
    ),
    "maskfeat-slowfast": Source(
        "maskfeat", MASKFEAT_SLOWFAST, "full", "facebookresearch/SlowFast MaskFeat ViT checkpoint (pretraining or "
        "fine-tuned)", from_shapes(),
    ),
    "maskfeat-mmpretrain": Source(
        "maskfeat", MASKFEAT_MMPRETRAIN, "full", "open-mmlab/mmpretrain MaskFeat checkpoint (pretraining or "
        "fine-tuned)", maskfeat_mmpretrain_fields,
    ),
    "cae-official": Source(
        "cae", CAE_OFFICIAL, "qv", "lxtGH/CAE checkpoint (pretraining or fine-tuned)",
        from_shapes("sincos_cae"),
    ),
    "cae-mmpretrain": Source(
        "cae", CAE_MMPRETRAIN, "qv", "open-mmlab/mmpretrain CAE checkpoint (pretraining or fine-tuned)",
        from_shapes("sincos_cae"),
    ),
    "hf-vit-mae": Source(
        "mae", HF_VIT_MAE, "full", "transformers ViTMAEForPreTraining folder",
        lambda sd, converted, args: hf_config_fields(args), read=read_hf_folder, check=check_against_hf_vit_mae,
        normalization="imagenet-standard",  # transformers' ViT image processor default
    ),
    "hf-beit": Source(
        "beit", HF_BEIT, "qv", "transformers BeitForMaskedImageModeling or BeitForImageClassification folder",
        hf_fields_from_shapes, read=read_hf_folder, check=check_against_hf_beit, normalization="imagenet-standard",
    ),
    "hf-vit-mim": Source(
        "simmim", HF_VIT_MIM, "full", "transformers ViTForMaskedImageModeling folder",
        hf_fields_from_shapes, read=read_hf_folder, check=check_against_hf_vit_mim, normalization="imagenet-standard",
    ),
}


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


def config_with_overrides(method, fields: dict, overrides: str):
    """The method's config from the fields read off the checkpoint, with --config_overrides ("k=v,k=v", typed as
    the config's defaults) applied before the config's checks run: a checkpoint at another size may need, say,
    other mask counts to be valid at all."""
    if overrides:
        parsed = method.config_class()
        parsed = apply_config_overrides(parsed, overrides, recheck=False)
        names = [pair.split("=", 1)[0].strip() for pair in overrides.split(",")]
        fields = {**fields, **{name: getattr(parsed, name) for name in names}}
    return method.config_class(**fields)


def target_class(method, converted: dict[str, torch.Tensor]) -> tuple[type, list[str]]:
    """The class that can hold the checkpoint, and the converted keys it cannot hold (left out)."""
    if "head.weight" in converted:
        return method.classification_class, []
    outside_encoder = sorted(k for k in converted if not k.startswith("vit."))
    if not outside_encoder:
        return method.model_class, []
    if method.needs_tokenizer:  # its pretraining model predicts a tokenizer's ids; no checkpoint here holds one
        return method.model_class, outside_encoder
    return method.pretraining_class, []


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source", required=True, choices=sorted([*SOURCES, "dalle-encoder"]))
    p.add_argument("--checkpoint", required=True, help="the file (.pth/.pt/.bin/.safetensors) or folder to convert")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--num_attention_heads", type=positive_int, default=None,
                   help="when the width is not a standard ViT size")
    p.add_argument("--image_size", type=positive_int, default=None, help="resample position tables to this image size")
    p.add_argument("--config_overrides", default="", help='"k=v,k=v" applied to the inferred config')
    p.add_argument("--normalization", choices=sorted(NORMALIZATIONS), default=None,
                   help="image mean/std of the saved processor: imagenet-default (0.485.../0.229...) or "
                        "imagenet-standard (0.5/0.5); default: what the source used")
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
    converted = convert_state_dict(state_dict, source.key_map, source.qkv_bias)
    try:
        fields = source.config_fields(state_dict, converted, args)
    except KeyError as error:
        raise ValueError(f"{args.checkpoint} is not a {source.describe}: after renaming it has no {error} key") from error
    resized = bool(args.image_size) and args.image_size != fields["image_size"]
    if resized:
        resize_position_tables(converted, args.image_size // fields["patch_size"])
        fields["image_size"] = args.image_size
    config = config_with_overrides(method, fields, args.config_overrides)
    if config.relative_position_bias == "per_layer":
        converted.update(per_layer_tables_from_shared(converted, config.num_hidden_layers))
        converted.pop(SHARED_TABLE_KEY, None)
    model_class, left_out = target_class(method, converted)
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
    is_classifier = model_class is method.classification_class
    out = Path(args.output_dir)
    model.save_pretrained(out)
    image_mean, image_std = image_mean_std(source, args)
    # a classifier's processor is the pipeline's: the official evaluation crop; others feed pretraining
    processors = method.image_processor_class
    processor = (processors.for_evaluation if is_classifier else processors.for_model_config)(
        config, image_mean=image_mean, image_std=image_std)
    processor.save_pretrained(out)
    write_model_card(
        out, model_name=args.hub_model_id or out.name, method=method, config=config,
        data_source="see the source checkpoint", steps=0, effective_batch=0, learning_rate=0.0, final_loss=None,
        command="python scripts/convert_checkpoint.py " + shlex.join(sys.argv[1:]) if Path(sys.argv[0]).name == "convert_checkpoint.py" else "",
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
    run_main(main)
