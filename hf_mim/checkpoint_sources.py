"""The foreign checkpoints each method converts from: key map, qkv layout, config reader and, where the source's
own implementation runs here, an output check. Each method's entry in `hf_mim.methods` lists its sources by id
(`scripts/convert_checkpoint.py --from ID`)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from transformers.image_utils import (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, IMAGENET_STANDARD_MEAN,
                                      IMAGENET_STANDARD_STD)

from .convert import KeyMap, mae_config_from_official, read_state_dict, vit_config_from_converted
from .convert_swin import (HF_SWIN, SIMMIM_SWIN_OFFICIAL, check_against_hf_swin, hf_swin_fields, read_hf_swin_folder,
                           resize_swin_tables, simmim_official_swin_fields)


NORMALIZATIONS = {"imagenet-default": (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
                  "imagenet-standard": (IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD)}


@dataclass(frozen=True)
class Source:
    """A foreign checkpoint layout: how its keys map to ours and how to read its config; the method that holds
    this source in `hf_mim.methods` is the one it converts into."""

    key_map: KeyMap
    qkv_bias: str
    describe: str
    config_fields: Callable  # (source state dict, converted state dict, args) -> config kwargs
    read: Callable = read_state_dict
    check: Callable | None = None  # (args, converted_model) -> max abs difference against the source's own code
    normalization: str = "imagenet-default"  # the source's image mean/std (NORMALIZATIONS), unless --normalization
    backbone: str = "vit"  # the encoder family of the method it converts into
    # (converted, config) -> keys changed: resample the position tables to the config built from the checkpoint and
    # the flags; None: the ViT rule (tables follow --image_size's patch grid)
    resize_tables: Callable | None = None
    # (source state dict) -> the Source of the layout actually found (one id for an official repo's ViT and Swin)
    variant: Callable | None = None

    def for_checkpoint(self, state_dict: dict[str, torch.Tensor]) -> "Source":
        return (self.variant(state_dict) if self.variant else None) or self


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


def mae_official_fields(state_dict, converted, args) -> dict:
    """facebookresearch/mae: the decoder's shapes too (`mae_config_from_official`)."""
    return mae_config_from_official(state_dict, args.num_attention_heads)


HF_CONFIG_FIELDS = ("image_size", "layer_norm_eps", "hidden_act", "id2label", "label2id")


def hf_config_fields(args) -> dict:
    config = json.loads((Path(args.checkpoint) / "config.json").read_text())
    names = ("image_size", "patch_size", "num_channels", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "intermediate_size", "mask_ratio", "norm_pix_loss", "decoder_hidden_size", "decoder_num_hidden_layers",
             "decoder_num_attention_heads", "decoder_intermediate_size", "layer_norm_eps")
    return {k: config[k] for k in names if k in config}


def hf_vit_mae_fields(state_dict, converted, args) -> dict:
    return hf_config_fields(args)


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
            raise FileNotFoundError(f"{folder} has no model.safetensors; save the transformers model with "
                                    "save_pretrained")
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


# ----------------------------------------------------------------------------------------------- Swin sources

HF_SWIN_SOURCE = Source(HF_SWIN, "full", "transformers SwinForMaskedImageModeling, SwinModel or "
                        "SwinForImageClassification folder", hf_swin_fields, read=read_hf_swin_folder,
                        check=check_against_hf_swin, backbone="swin", resize_tables=resize_swin_tables)
SIMMIM_SWIN_OFFICIAL_SOURCE = Source(SIMMIM_SWIN_OFFICIAL, "full", "microsoft/SimMIM Swin checkpoint (pretraining or "
                                     "fine-tuned)", simmim_official_swin_fields, backbone="swin",
                                     resize_tables=resize_swin_tables)


def swin_if_swin_layout(state_dict: dict[str, torch.Tensor]) -> Source | None:
    """The official SimMIM Swin source where the weights hold Swin stages (`[encoder.]layers.i.blocks.j.`)."""
    if any(re.match(r"^(encoder\.)?layers\.\d+\.blocks\.\d+\.", key) for key in state_dict):
        return SIMMIM_SWIN_OFFICIAL_SOURCE
    return None
