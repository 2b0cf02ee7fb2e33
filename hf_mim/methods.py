"""The table of methods: for each `--method` name, its config, image processor and model classes.

This is the only place the scripts learn what a method is; everything else lives in the model and processor.
"""

from __future__ import annotations

from dataclasses import dataclass

from .modeling.configuration_beit import MimBeitConfig
from .modeling.configuration_cae import MimCaeConfig
from .modeling.configuration_mae import MimMaeConfig
from .modeling.configuration_maskfeat import MimMaskFeatConfig
from .modeling.configuration_simmim import MimSimMIMConfig
from .modeling.image_processing_beit import MimBeitImageProcessor
from .modeling.image_processing_cae import MimCaeImageProcessor
from .modeling.image_processing_mae import MimMaeImageProcessor
from .modeling.image_processing_maskfeat import MimMaskFeatImageProcessor
from .modeling.image_processing_simmim import MimSimMIMImageProcessor
from .modeling.modeling_beit import MimBeitForImageClassification, MimBeitForPreTraining, MimBeitModel
from .modeling.modeling_cae import MimCaeForImageClassification, MimCaeForPreTraining, MimCaeModel
from .modeling.modeling_mae import MimMaeForImageClassification, MimMaeForPreTraining, MimMaeModel
from .modeling.modeling_maskfeat import MimMaskFeatForImageClassification, MimMaskFeatForPreTraining, MimMaskFeatModel
from .modeling.modeling_simmim import MimSimMIMForImageClassification, MimSimMIMForPreTraining, MimSimMIMModel


@dataclass(frozen=True)
class Method:
    name: str
    config_class: type
    image_processor_class: type
    model_class: type
    pretraining_class: type
    classification_class: type
    paper: str
    summary: str = ""
    # predicts the visual tokens of a frozen tokenizer (scripts/pretrain.py --tokenizer_name_or_path)
    needs_tokenizer: bool = False


METHODS: dict[str, Method] = {
    "beit": Method(
        "beit", MimBeitConfig, MimBeitImageProcessor, MimBeitModel, MimBeitForPreTraining,
        MimBeitForImageClassification,
        paper="Bao et al., BEiT: BERT Pre-Training of Image Transformers, ICLR 2022",
        summary="About 40% of the patches are masked in blocks and replaced by a mask token; the encoder sees every "
        "patch and a linear head predicts, at each masked patch, the visual token a frozen dVAE gives that patch.",
        needs_tokenizer=True,
    ),
    "mae": Method(
        "mae", MimMaeConfig, MimMaeImageProcessor, MimMaeModel, MimMaeForPreTraining, MimMaeForImageClassification,
        paper="He et al., Masked Autoencoders Are Scalable Vision Learners, CVPR 2022",
        summary="75% of the patches are removed at random; the encoder sees only the visible ones and a light "
        "decoder regresses the (per-patch normalised) pixels of the removed patches.",
    ),
    "cae": Method(
        "cae", MimCaeConfig, MimCaeImageProcessor, MimCaeModel, MimCaeForPreTraining, MimCaeForImageClassification,
        paper="Chen et al., Context Autoencoder for Self-Supervised Representation Learning, IJCV 2023",
        summary="Half of the patches are masked in blocks; the encoder sees only the visible ones, a latent regressor "
        "predicts the masked patches' representations (aligned with the encoder's own stop-gradient encoding of "
        "them) and a decoder maps those predictions to the visual tokens of a frozen dVAE.",
        needs_tokenizer=True,
    ),
    "simmim": Method(
        "simmim", MimSimMIMConfig, MimSimMIMImageProcessor, MimSimMIMModel, MimSimMIMForPreTraining,
        MimSimMIMForImageClassification,
        paper="Xie et al., SimMIM: A Simple Framework for Masked Image Modeling, CVPR 2022",
        summary="60% of the image is masked in random 32-pixel cells and replaced by a mask token; the encoder sees "
        "every patch and a one-layer head (1x1 conv + pixel shuffle) regresses the normalised pixels, scored by L1 on "
        "the masked pixels only.",
    ),
    "maskfeat": Method(
        "maskfeat", MimMaskFeatConfig, MimMaskFeatImageProcessor, MimMaskFeatModel, MimMaskFeatForPreTraining,
        MimMaskFeatForImageClassification,
        paper="Wei et al., Masked Feature Prediction for Self-Supervised Visual Pre-Training, CVPR 2022",
        summary="About 40% of the patches are masked in blocks and replaced by a mask token; the encoder sees every "
        "patch and a linear head regresses, at each masked patch, the histograms of oriented gradients (HOG) of "
        "its pixels.",
    ),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]


def method_of_config(config) -> Method:
    for method in METHODS.values():
        if isinstance(config, method.config_class):
            return method
    raise ValueError(f"{type(config).__name__} (model_type={config.model_type!r}) is not an hf-mim model")
