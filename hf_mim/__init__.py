"""hf-mim: Masked Image Modeling (BEiT, MAE, SimMIM, MaskFeat, CAE) as Hugging Face `transformers` models.

`import hf_mim` registers every config, model and image (or video) processor with the Auto classes (video models
with `AutoModelForVideoClassification`), so
`AutoModel.from_pretrained(folder_or_hub_id)` works without `trust_remote_code`.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForMaskedImageModeling,
    AutoModelForPreTraining,
    AutoModelForVideoClassification,
)

from .backbones import register_backbones
from .methods import METHODS, Backbone, Method, backbone_of_config, get_method, method_of_config
from .modeling.configuration_dvae import MimDvaeConfig
from .modeling.image_processing_dvae import MimDvaeImageProcessor
from .modeling.modeling_dvae import MimDvaeModel


def _register(backbone: Backbone) -> None:
    config_class = backbone.config_class
    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModel.register(config_class, backbone.model_class, exist_ok=True)
    AutoModelForPreTraining.register(config_class, backbone.pretraining_class, exist_ok=True)
    if backbone.modality == "video":
        AutoModelForVideoClassification.register(config_class, backbone.classification_class, exist_ok=True)
    else:
        AutoModelForMaskedImageModeling.register(config_class, backbone.pretraining_class, exist_ok=True)
        AutoModelForImageClassification.register(config_class, backbone.classification_class, exist_ok=True)
    AutoImageProcessor.register(config_class, image_processor_classes={"pil": backbone.image_processor_class},
                                exist_ok=True)


for _method in METHODS.values():
    for _backbone in _method.backbones.values():
        _register(_backbone)

# The visual tokenizer of BEiT and CAE is a model of its own.
AutoConfig.register(MimDvaeConfig.model_type, MimDvaeConfig, exist_ok=True)
AutoModel.register(MimDvaeConfig, MimDvaeModel, exist_ok=True)
AutoImageProcessor.register(MimDvaeConfig, image_processor_classes={"pil": MimDvaeImageProcessor}, exist_ok=True)

# Every ViT encoder is also a transformers backbone: `AutoBackbone.from_pretrained(folder, out_indices=[...])`.
register_backbones()

__all__ = ["METHODS", "Backbone", "Method", "backbone_of_config", "get_method", "method_of_config"]
__version__ = "0.1.0"
