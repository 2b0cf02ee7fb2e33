"""Registration of the hf-mim backbones with `AutoBackbone`.

`register_backbones()` maps each method's config class to its backbone class, so
`AutoBackbone.from_pretrained(folder, out_indices=[...])` and transformers' `load_backbone` (UperNet, ...) build
ours.
"""

from __future__ import annotations

import os

from transformers import AutoBackbone
from transformers.models.auto.auto_factory import _BaseAutoModelClass

from .modeling.backbone_vit import BACKBONE_CLASSES


def register_backbones() -> None:
    for backbone_class in BACKBONE_CLASSES:
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
