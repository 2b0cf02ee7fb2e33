"""The table of methods: everything the scripts and tools know about each `--method`.

A method's entry holds its classes per backbone family, its recipes, what it predicts, what its card's picture
shows, the checkpoints it converts from and the `transformers` peer it is benchmarked against. Adding a method is
its files in `modeling/` and one entry here; no script or tool names a method.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from . import checkpoint_sources as sources
from .benchmarking import (BenchmarkPeer, beit_size_overrides, build_beit_pairs, build_mae_pairs, build_simmim_pairs,
                           build_swin_simmim_pairs, build_videomae_pairs, mae_forward_flops, pixel_head_forward_flops,
                           simmim_size_overrides, swin_config_kwargs, swin_forward_flops, token_head_forward_flops,
                           video_hog_head_forward_flops, video_size_overrides)
from .convert_swin import HF_SWIN
from .convert import (BEIT_UNILM, CAE_MMPRETRAIN, CAE_OFFICIAL, HF_BEIT, HF_VIT_MAE, HF_VIT_MIM, MAE_OFFICIAL,
                      MASKFEAT_MMPRETRAIN, MASKFEAT_SLOWFAST, SIMMIM_OFFICIAL)
from .modeling.configuration_beit import MimBeitConfig
from .modeling.configuration_cae import MimCaeConfig
from .modeling.configuration_mae import MimMaeConfig
from .modeling.configuration_maskfeat import MimMaskFeatConfig
from .modeling.configuration_maskfeat_video import MimMaskFeatVideoConfig
from .modeling.configuration_simmim import MimSimMIMConfig
from .modeling.configuration_simmim_swin import MimSimMIMSwinConfig
from .modeling.image_processing_beit import MimBeitImageProcessor
from .modeling.image_processing_cae import MimCaeImageProcessor
from .modeling.image_processing_mae import MimMaeImageProcessor
from .modeling.image_processing_maskfeat import MimMaskFeatImageProcessor
from .modeling.image_processing_simmim import MimSimMIMImageProcessor
from .modeling.image_processing_simmim_swin import MimSimMIMSwinImageProcessor
from .modeling.video_processing_maskfeat import MimMaskFeatVideoProcessor
from .modeling.modeling_beit import MimBeitForImageClassification, MimBeitForPreTraining, MimBeitModel
from .modeling.modeling_cae import MimCaeForImageClassification, MimCaeForPreTraining, MimCaeModel
from .modeling.modeling_mae import MimMaeForImageClassification, MimMaeForPreTraining, MimMaeModel
from .modeling.modeling_maskfeat import MimMaskFeatForImageClassification, MimMaskFeatForPreTraining, MimMaskFeatModel
from .modeling.modeling_maskfeat_video import (MimMaskFeatVideoForPreTraining, MimMaskFeatVideoForVideoClassification,
                                               MimMaskFeatVideoModel)
from .modeling.modeling_simmim import MimSimMIMForImageClassification, MimSimMIMForPreTraining, MimSimMIMModel
from .modeling.modeling_simmim_swin import (MimSimMIMSwinForImageClassification, MimSimMIMSwinForPreTraining,
                                            MimSimMIMSwinModel)
from hf_mim_cli import catalog
from hf_mim_cli.recipes import DEMO_BACKBONE, FinetuneRecipe, PretrainRecipe

DEFAULT_BACKBONE = "vit"


@dataclass(frozen=True)
class Backbone:
    """One encoder family of a method: its classes, the config fields of the CPU-sized demo model, and the
    modality its inputs are ("image": (B, C, H, W); "video": (B, T, C, H, W) clips)."""

    config_class: type
    image_processor_class: type
    model_class: type
    pretraining_class: type
    classification_class: type
    demo_config: dict = field(default_factory=dict, hash=False)
    modality: str = "image"
    # where the family trains by another recipe or is timed against another peer than the method's ViT
    pretrain_recipe: PretrainRecipe | None = None
    finetune_recipe: FinetuneRecipe | None = None
    benchmark_peer: BenchmarkPeer | None = None
    title: str = "ViT"  # what the model card calls the encoder


@dataclass(frozen=True)
class Method:
    name: str
    paper: str
    summary: str
    backbones: dict[str, Backbone] = field(hash=False)
    pretrain_recipe: PretrainRecipe
    finetune_recipe: FinetuneRecipe
    # what the head can predict, the default first: "pixels", "tokens" (a frozen tokenizer's ids) or "hog"
    targets: tuple[str, ...]
    # what the rows of the card's picture show, by the kind of the model's picture view ("pixels", "hog", "tokens")
    picture_captions: dict[str, str] = field(hash=False)
    conversion_sources: dict[str, sources.Source] = field(default_factory=dict, hash=False)
    benchmark_peer: BenchmarkPeer | None = None

    def backbone(self, family: str | None = None, modality: str | None = None) -> Backbone:
        """The backbone `family` (`--backbone`; checked against `modality` when one is given), or the method's
        first one of `modality` (`--modality`, image by default)."""
        if family is None:
            modality = modality or "image"
            of_modality = [name for name, backbone in self.backbones.items() if backbone.modality == modality]
            if not of_modality:
                raise ValueError(f"{self.name} has no {modality} backbone; its backbones take "
                                 f"{', '.join(sorted({b.modality for b in self.backbones.values()}))}")
            family = DEFAULT_BACKBONE if DEFAULT_BACKBONE in of_modality else of_modality[0]
        if family not in self.backbones:
            raise ValueError(f"{self.name} has no {family!r} backbone; it has {', '.join(sorted(self.backbones))}")
        backbone = self.backbones[family]
        if modality is not None and backbone.modality != modality:
            raise ValueError(f"the {self.name} {family!r} backbone takes {backbone.modality}, not {modality}; "
                             f"drop --modality {modality} or pick another --backbone")
        return backbone

    @property
    def can_use_tokenizer(self) -> bool:
        """Some configuration predicts visual tokens (whether a given config does: `config.needs_tokenizer`)."""
        return "tokens" in self.targets

    def pretraining_recipe(self, size: str, backbone: Backbone | None = None) -> PretrainRecipe:
        """The recipe for `--model_size` demo (the tiny CPU model) or base (the canonical one), the backbone
        family's own where it has one."""
        recipe = (backbone.pretrain_recipe if backbone else None) or self.pretrain_recipe
        return recipe.for_demo() if size == "demo" else recipe

    def finetuning_recipe(self, backbone: Backbone | None = None) -> FinetuneRecipe:
        return (backbone.finetune_recipe if backbone else None) or self.finetune_recipe

    def peer(self, backbone: Backbone | None = None) -> BenchmarkPeer | None:
        """The transformers model the backbone family is timed against (`scripts/benchmark.py`)."""
        return (backbone.benchmark_peer if backbone else None) or self.benchmark_peer

    # The default backbone's classes, as every caller that does not choose a family reads them.
    config_class = property(lambda self: self.backbone().config_class)
    image_processor_class = property(lambda self: self.backbone().image_processor_class)
    model_class = property(lambda self: self.backbone().model_class)
    pretraining_class = property(lambda self: self.backbone().pretraining_class)
    classification_class = property(lambda self: self.backbone().classification_class)


def vit_backbone(config, processor, model, pretraining, classification, **demo_overrides) -> dict[str, Backbone]:
    return {"vit": Backbone(config, processor, model, pretraining, classification, {**DEMO_BACKBONE, **demo_overrides})}


MASKFEAT_FINETUNE = FinetuneRecipe(1e-3, 256, warmup_epochs=20)  # 8e-3 at batch 2048

# MaskFeat on video: a ViT over tubelets of 2 frames x 16x16 px of 16-frame clips (VideoMAE's ViT-B layout), cube
# masks of 40% of the tokens. Pretraining as MaskFeat's Kinetics runs: AdamW 8e-4 at batch 512, warm-up 30 of 300
# epochs, gradient clip 0.02, relative random-resized crops (area 0.5-1). Fine-tuning keeps the image recipe with
# mixup/cutmix over whole clips (one box for all frames); RandAugment and random erasing are off, as the clip
# loader applies only the spatial crop and flip (one draw for all frames).
VIDEO_VIT = Backbone(
    MimMaskFeatVideoConfig, MimMaskFeatVideoProcessor, MimMaskFeatVideoModel, MimMaskFeatVideoForPreTraining,
    MimMaskFeatVideoForVideoClassification,
    # 8 frames of the embedded 16-frame 32 px clips: 4 x 4 x 4 = 64 tubelets of 2 frames x 8x8 px, 4-px HOG cells
    demo_config={**DEMO_BACKBONE, "patch_size": 8, "hog_cell_size": 4, "num_frames": 8, "tubelet_size": 2,
                 "min_num_patches": 2},
    modality="video",
    pretrain_recipe=PretrainRecipe(8e-4, 512, (0.9, 0.999), 0.05, 30, 1e-6, 0.02, (0.5, 1.0), num_train_epochs=300),
    finetune_recipe=dataclasses.replace(MASKFEAT_FINETUNE, rand_augment="", random_erasing=0.0),
    benchmark_peer=BenchmarkPeer("VideoMAEForPreTraining / VideoMAEModel (other target: pixels)", build_videomae_pairs,
                                 None, video_hog_head_forward_flops, video_size_overrides),
)


# SimMIM's official pretraining values, the same for ViT-B and Swin-B
SIMMIM_PRETRAIN = PretrainRecipe(1e-4, 512, (0.9, 0.999), 0.05, 10, 5e-7, 5.0, (0.67, 1.0))

# A Swin small enough for the CPU demo on the 32 px sample: 2 px patches, stages of 16x16 and 8x8 tokens (both
# shifted, window 4), widths 32 and 64; 8 px mask cells (16 cells, 10 masked), a multiple of the total stride 4.
SWIN_DEMO = dict(image_size=32, patch_size=2, embed_dim=32, depths=[2, 2], num_heads=[2, 4], window_size=4,
                 encoder_stride=4, mask_patch_size=8, drop_path_rate=0.0)


def simmim_swin_backbone() -> Backbone:
    """SimMIM's Swin: the config's defaults are the official Swin-B pretraining model (192 px, window 6, depths
    2-2-18-2, width 128), trained by the official Swin-B recipes: pretraining as the ViT-B's (AdamW, blr 1e-4 x
    batch / 512, warm-up 10 epochs, clip 5, crops (0.67, 1), no drop path); fine-tuning blr 1.25e-3 x batch / 512,
    layer decay 0.9 over the 24 blocks, warm-up 20 epochs, drop path 0.1."""
    return Backbone(
        MimSimMIMSwinConfig, MimSimMIMSwinImageProcessor, MimSimMIMSwinModel, MimSimMIMSwinForPreTraining,
        MimSimMIMSwinForImageClassification, SWIN_DEMO, title="Swin Transformer",
        pretrain_recipe=SIMMIM_PRETRAIN,
        finetune_recipe=FinetuneRecipe(1.25e-3, 512, layer_decay=0.9, warmup_epochs=20),
        benchmark_peer=BenchmarkPeer("SwinForMaskedImageModeling", build_swin_simmim_pairs, HF_SWIN, swin_forward_flops,
                                     config_kwargs=swin_config_kwargs),
    )


PIXELS_CAPTION = ("Rows: input with masked patches grey; prediction; prediction with the visible patches pasted back; "
                  "original.")
TOKENS_CAPTION = ("Rows: input with masked patches grey; the tokenizer's decoding of the true tokens at the visible "
                  "patches and of the predicted tokens at the masked ones; decoding of all true tokens.")

METHODS: dict[str, Method] = {
    "beit": Method(
        "beit",
        paper="Bao et al., BEiT: BERT Pre-Training of Image Transformers, ICLR 2022",
        summary="About 40% of the patches are masked in blocks and replaced by a mask token; the encoder sees every "
        "patch and a linear head predicts, at each masked patch, the visual token a frozen dVAE gives that patch.",
        backbones=vit_backbone(MimBeitConfig, MimBeitImageProcessor, MimBeitModel, MimBeitForPreTraining,
                               MimBeitForImageClassification, num_masking_patches=26, min_num_patches=4),
        pretrain_recipe=PretrainRecipe(1.5e-3, None, (0.9, 0.999), 0.05, 10, 1e-5, 3.0, (0.08, 1.0), color_jitter=0.4),
        finetune_recipe=FinetuneRecipe(4e-3, None, warmup_epochs=20),
        targets=("tokens",), picture_captions={"tokens": TOKENS_CAPTION},
        conversion_sources={
            # the code's default; its ImageNet-1k recipe passes --imagenet_default_mean_and_std (--normalization)
            "beit-unilm": sources.Source(BEIT_UNILM, "qv", "microsoft/unilm BEiT checkpoint (pretraining or "
                                         "fine-tuned)", sources.from_shapes(), normalization="imagenet-standard"),
            "hf-beit": sources.Source(HF_BEIT, "qv", "transformers BeitForMaskedImageModeling or "
                                      "BeitForImageClassification folder", sources.hf_fields_from_shapes,
                                      read=sources.read_hf_folder, check=sources.check_against_hf_beit,
                                      normalization="imagenet-standard"),
        },
        benchmark_peer=BenchmarkPeer("BeitForMaskedImageModeling", build_beit_pairs, HF_BEIT, token_head_forward_flops,
                                     beit_size_overrides),
    ),
    "mae": Method(
        "mae",
        paper="He et al., Masked Autoencoders Are Scalable Vision Learners, CVPR 2022",
        summary="75% of the patches are removed at random; the encoder sees only the visible ones and a light "
        "decoder regresses the (per-patch normalised) pixels of the removed patches.",
        backbones=vit_backbone(MimMaeConfig, MimMaeImageProcessor, MimMaeModel, MimMaeForPreTraining,
                               MimMaeForImageClassification, decoder_hidden_size=64, decoder_num_hidden_layers=2,
                               decoder_num_attention_heads=4, decoder_intermediate_size=256),
        pretrain_recipe=PretrainRecipe(1.5e-4, 256, (0.9, 0.95), 0.05, 40, 0.0, None, (0.2, 1.0)),
        finetune_recipe=FinetuneRecipe(5e-4, 256, warmup_epochs=5),
        targets=("pixels",), picture_captions={"pixels": PIXELS_CAPTION},
        conversion_sources={
            "mae-official": sources.Source(MAE_OFFICIAL, "full", "facebookresearch/mae checkpoint (pretraining or "
                                           "fine-tuned)", sources.mae_official_fields),
            "hf-vit-mae": sources.Source(HF_VIT_MAE, "full", "transformers ViTMAEForPreTraining folder",
                                         sources.hf_vit_mae_fields, read=sources.read_hf_folder,
                                         check=sources.check_against_hf_vit_mae,
                                         normalization="imagenet-standard"),  # transformers' ViT processor default
        },
        benchmark_peer=BenchmarkPeer("ViTMAEForPreTraining", build_mae_pairs, HF_VIT_MAE, mae_forward_flops),
    ),
    "cae": Method(
        "cae",
        paper="Chen et al., Context Autoencoder for Self-Supervised Representation Learning, IJCV 2023",
        summary="Half of the patches are masked in blocks; the encoder sees only the visible ones, a latent regressor "
        "predicts the masked patches' representations (aligned with the encoder's own stop-gradient encoding of "
        "them) and a decoder maps those predictions to the visual tokens of a frozen dVAE.",
        backbones=vit_backbone(MimCaeConfig, MimCaeImageProcessor, MimCaeModel, MimCaeForPreTraining,
                               MimCaeForImageClassification, num_masking_patches=32, min_num_patches=4,
                               regressor_num_hidden_layers=2, decoder_num_hidden_layers=2),
        pretrain_recipe=PretrainRecipe(1.5e-3, None, (0.9, 0.999), 0.05, 20, 1e-5, 3.0, (0.08, 1.0)),
        # the official script's --aa default: no RandAugment
        finetune_recipe=FinetuneRecipe(8e-3, None, warmup_epochs=5, rand_augment=""),
        targets=("tokens", "pixels"), picture_captions={"tokens": TOKENS_CAPTION, "pixels": PIXELS_CAPTION},
        conversion_sources={
            "cae-official": sources.Source(CAE_OFFICIAL, "qv", "lxtGH/CAE checkpoint (pretraining or fine-tuned)",
                                           sources.from_shapes("sincos_cae")),
            "cae-mmpretrain": sources.Source(CAE_MMPRETRAIN, "qv", "open-mmlab/mmpretrain CAE checkpoint (pretraining "
                                             "or fine-tuned)", sources.from_shapes("sincos_cae")),
        },
    ),
    "simmim": Method(
        "simmim",
        paper="Xie et al., SimMIM: A Simple Framework for Masked Image Modeling, CVPR 2022",
        summary="60% of the image is masked in random 32-pixel cells and replaced by a mask token; the encoder sees "
        "every patch and a one-layer head (1x1 conv + pixel shuffle) regresses the normalised pixels, scored by L1 on "
        "the masked pixels only.",
        backbones={**vit_backbone(MimSimMIMConfig, MimSimMIMImageProcessor, MimSimMIMModel, MimSimMIMForPreTraining,
                                  MimSimMIMForImageClassification, mask_patch_size=8),
                   "swin": simmim_swin_backbone()},
        pretrain_recipe=SIMMIM_PRETRAIN,
        finetune_recipe=FinetuneRecipe(1.25e-3, 512, warmup_epochs=20),
        targets=("pixels",), picture_captions={"pixels": PIXELS_CAPTION},
        conversion_sources={
            # one id for both official encoders: a checkpoint with Swin stages converts into the swin backbone
            "simmim-official": sources.Source(SIMMIM_OFFICIAL, "qv", "microsoft/SimMIM ViT checkpoint (pretraining "
                                              "or fine-tuned)", sources.from_shapes(),
                                              variant=sources.swin_if_swin_layout),
            "hf-swin-mim": sources.HF_SWIN_SOURCE,
            "hf-vit-mim": sources.Source(HF_VIT_MIM, "full", "transformers ViTForMaskedImageModeling folder",
                                         sources.hf_fields_from_shapes, read=sources.read_hf_folder,
                                         check=sources.check_against_hf_vit_mim, normalization="imagenet-standard"),
        },
        benchmark_peer=BenchmarkPeer("ViTForMaskedImageModeling (plain-ViT config)", build_simmim_pairs, HF_VIT_MIM,
                                     pixel_head_forward_flops, simmim_size_overrides),
    ),
    "maskfeat": Method(
        "maskfeat",
        paper="Wei et al., Masked Feature Prediction for Self-Supervised Visual Pre-Training, CVPR 2022",
        summary="About 40% of the patches are masked in blocks and replaced by a mask token; the encoder sees every "
        "patch and a linear head regresses, at each masked patch, the histograms of oriented gradients (HOG) of "
        "its pixels.",
        backbones={**vit_backbone(MimMaskFeatConfig, MimMaskFeatImageProcessor, MimMaskFeatModel,
                                  MimMaskFeatForPreTraining, MimMaskFeatForImageClassification, image_size=64,
                                  patch_size=8, hog_cell_size=4, num_masking_patches=26, min_num_patches=4),
                   "video-vit": VIDEO_VIT},
        pretrain_recipe=PretrainRecipe(2e-4, 256, (0.9, 0.999), 0.05, 30, 1e-6, 0.02, (0.5, 1.0)),
        finetune_recipe=MASKFEAT_FINETUNE,
        targets=("hog",),
        picture_captions={"hog": "Rows: input with masked patches grey; HOG target glyphs; predicted HOG glyphs "
                          "(meaningful at the masked patches)."},
        conversion_sources={
            "maskfeat-slowfast": sources.Source(MASKFEAT_SLOWFAST, "full", "facebookresearch/SlowFast MaskFeat ViT "
                                                "checkpoint (pretraining or fine-tuned)", sources.from_shapes()),
            "maskfeat-mmpretrain": sources.Source(MASKFEAT_MMPRETRAIN, "full", "open-mmlab/mmpretrain MaskFeat "
                                                  "checkpoint (pretraining or fine-tuned)",
                                                  sources.maskfeat_mmpretrain_fields),
        },
    ),
}


def backbone_families() -> list[str]:
    """Every `--backbone` some method has."""
    return sorted({family for method in METHODS.values() for family in method.backbones})


MODALITIES = catalog.MODALITIES


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]


def method_of_config(config) -> Method:
    for method in METHODS.values():
        if any(isinstance(config, backbone.config_class) for backbone in method.backbones.values()):
            return method
    raise ValueError(f"{type(config).__name__} (model_type={config.model_type!r}) is not an hf-mim model")


def backbone_of_config(config) -> Backbone:
    """The backbone (family of classes) a config belongs to."""
    method = method_of_config(config)
    return next(b for b in method.backbones.values() if isinstance(config, b.config_class))


def conversion_source(source_id: str) -> tuple[Method, sources.Source]:
    """The method that converts checkpoints of `source_id` (`--from`), and the source."""
    for method in METHODS.values():
        if source_id in method.conversion_sources:
            return method, method.conversion_sources[source_id]
    raise ValueError(f"unknown checkpoint source {source_id!r}; choose one of {', '.join(conversion_source_ids())}")


def conversion_source_ids() -> list[str]:
    return sorted(source_id for method in METHODS.values() for source_id in method.conversion_sources)


def check_catalog() -> None:
    """Refuse to load when the command line's index of names (`hf_mim_cli.catalog`) differs from this table."""
    differences = catalog.differences({name: tuple(m.backbones) for name, m in METHODS.items()},
                                      {name: tuple(m.conversion_sources) for name, m in METHODS.items()},
                                      tuple(sources.NORMALIZATIONS))
    if differences:
        raise ImportError("hf_mim_cli/catalog.py, the names the scripts' flags offer before torch loads, no longer "
                          "matches the registry in hf_mim/methods.py; set there: " + "; ".join(differences))


check_catalog()


__all__ = ["METHODS", "MODALITIES", "Backbone", "Method", "backbone_families", "backbone_of_config", "conversion_source", "get_method",
           "method_of_config"]
