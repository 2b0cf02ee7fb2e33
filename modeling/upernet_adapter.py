"""The smallest adapter that lets transformers' own UperNet load an hf-mim backbone through remote code.

`UperNetConfig` resolves its `backbone_config` by `model_type` in transformers' static config mapping, and
`UperNetForSemanticSegmentation` builds the backbone with `AutoBackbone`; in a process without `hf_mim` neither
knows the hf-mim types. Importing this file registers them; the two classes below are transformers' UperNet
config and model unchanged, named so `config.auto_map` can point at this file (`trust_remote_code=True`).
With `hf_mim` installed none of this runs: the saved `model_type` is transformers' "upernet".
"""

from transformers import AutoBackbone, AutoConfig, UperNetConfig, UperNetForSemanticSegmentation

from .backbone_swin import SWIN_BACKBONE_CLASSES
from .backbone_vit import BACKBONE_CLASSES


def register_hf_mim_backbones() -> None:
    for backbone_class in BACKBONE_CLASSES + SWIN_BACKBONE_CLASSES:
        config_class = backbone_class.config_class
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoBackbone.register(config_class, backbone_class, exist_ok=True)


register_hf_mim_backbones()


class MimUperNetConfig(UperNetConfig):
    """transformers' UperNetConfig; importing its file makes the hf-mim backbone configs resolvable."""


class MimUperNetForSemanticSegmentation(UperNetForSemanticSegmentation):
    """transformers' UperNetForSemanticSegmentation; importing its file registers the hf-mim backbones."""

    config_class = MimUperNetConfig


REMOTE_AUTO_MAP = {"AutoConfig": "upernet_adapter.MimUperNetConfig",
                   "AutoModelForSemanticSegmentation": "upernet_adapter.MimUperNetForSemanticSegmentation"}
