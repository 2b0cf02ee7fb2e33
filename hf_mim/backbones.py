"""Registration of the hf-mim backbones with `AutoBackbone`, and transformers' UperNet built on them.

`register_backbones()` maps each method's config class to its backbone class, so
`AutoBackbone.from_pretrained(folder, out_indices=[...])` and transformers' `load_backbone` (UperNet, ...) build
ours.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from transformers import AutoBackbone, SegformerImageProcessorPil, UperNetConfig, UperNetForSemanticSegmentation
from transformers.dynamic_module_utils import get_relative_import_files
from transformers.models.auto.auto_factory import _BaseAutoModelClass

from .modeling import upernet_adapter

from .modeling.backbone_swin import SWIN_BACKBONE_CLASSES
from .modeling.backbone_vit import BACKBONE_CLASSES, set_backbone_fields


def register_backbones() -> None:
    for backbone_class in BACKBONE_CLASSES + SWIN_BACKBONE_CLASSES:
        AutoBackbone.register(backbone_class.config_class, backbone_class, exist_ok=True)
    load_local_folders_in_auto_backbone()


def load_local_folders_in_auto_backbone() -> None:
    """transformers 5.24's `AutoBackbone.from_pretrained` asks the Hub whether the name is a repository before
    anything else, so a local folder fails (the Hub client rejects a path as a repo id) and any name needs the
    network. A local folder is sent to the ordinary Auto loader instead; every other name keeps transformers' path
    (Hub repository, or a timm model name)."""
    hub_first = AutoBackbone.from_pretrained.__func__
    if getattr(hub_first, "loads_local_folders", False):
        return

    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        if os.path.isdir(str(pretrained_model_name_or_path)):
            kwargs.pop("use_timm_backbone", None)
            return _BaseAutoModelClass.from_pretrained.__func__(cls, pretrained_model_name_or_path, *model_args, **kwargs)
        return hub_first(cls, pretrained_model_name_or_path, *model_args, **kwargs)

    from_pretrained.loads_local_folders = True
    from_pretrained.__doc__ = hub_first.__doc__
    AutoBackbone.from_pretrained = classmethod(from_pretrained)


def upernet_config(backbone_config, id2label: dict[int, str], **upernet_fields) -> UperNetConfig:
    """transformers' UperNet on an hf-mim backbone config (its out_indices/add_fpn set by `set_backbone_fields`,
    the 4-level pyramid by default). UperNet's head widths are `hidden_size` / `auxiliary_channels` here; the
    auxiliary head is on when the backbone gives the third map it reads."""
    if getattr(backbone_config, "stage_names", None) is None:  # a ViT method config no backbone has set up yet
        set_backbone_fields(backbone_config)
    id2label = {int(k): v for k, v in id2label.items()}
    # UperNet's auxiliary FCN head reads the third feature map (mmseg's in_index=2); a backbone with fewer maps
    # (the 2-stage demo Swin) trains without it, as transformers' UperNet cannot point it elsewhere.
    upernet_fields.setdefault("use_auxiliary_head", len(backbone_config.out_indices) > 2)
    return UperNetConfig(backbone_config=backbone_config, id2label=id2label,
                         label2id={v: k for k, v in id2label.items()}, **upernet_fields)


def upernet_from_pretrained_encoder(name_or_path, id2label: dict[int, str], out_indices=None, config_overrides=None,
                                    **upernet_fields) -> UperNetForSemanticSegmentation:
    """UperNet whose backbone holds the encoder weights of any hf-mim pretraining, fine-tuned or converted folder
    (the neck and heads start from their own init). `config_overrides` changes backbone fields (drop path ...)."""
    backbone = AutoBackbone.from_pretrained(name_or_path, out_indices=out_indices, **(config_overrides or {}))
    model = UperNetForSemanticSegmentation(upernet_config(backbone.config, id2label, **upernet_fields))
    model.backbone.load_state_dict(backbone.state_dict())
    return model


def segmentation_image_processor(image_size: int, image_mean, image_std) -> SegformerImageProcessorPil:
    """The processor transformers' image-segmentation pipeline uses for UperNet (resize to the training size,
    the encoder's normalisation; `post_process_semantic_segmentation` gives the label maps). PIL backend, the
    same numbers in training and in the pipeline."""
    return SegformerImageProcessorPil(size={"height": image_size, "width": image_size}, image_mean=list(image_mean),
                                      image_std=list(image_std), do_reduce_labels=False)


def save_segmentation_model(model: UperNetForSemanticSegmentation, save_directory, processor=None) -> None:
    """`save_pretrained` of a UperNet on an hf-mim backbone (and its processor) with the remote code that loads
    it where `hf_mim` is not installed: `config.auto_map` names the adapter, whose file and every sibling it
    imports are copied beside the weights. The saved `model_type` stays "upernet", so with `hf_mim` installed
    transformers' own classes load it."""
    model.config.auto_map = dict(upernet_adapter.REMOTE_AUTO_MAP)
    model.save_pretrained(save_directory)
    if processor is not None:
        processor.save_pretrained(save_directory)
    adapter_file = upernet_adapter.__file__
    for path in {adapter_file, *get_relative_import_files(adapter_file)}:
        shutil.copy(path, Path(save_directory) / Path(path).name)
