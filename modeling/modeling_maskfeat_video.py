"""MaskFeat on video (Wei et al. 2022, its Kinetics half) with a ViT: cube masking over space-time tubelets, all
tubelets through the encoder with masked ones replaced by a mask token, a linear head regressing at each masked
tubelet the HOG of every frame it covers (the image MaskFeat HOG, frame by frame, concatenated), MSE on the
masked tubelets.

Three classes share one layout (`vit` = `VideoViTEncoder`), so weights move between them without renaming:
`MimMaskFeatVideoModel` (features, AutoModel), `MimMaskFeatVideoForPreTraining`, and
`MimMaskFeatVideoForVideoClassification` (mean-pooled tokens, fc_norm, linear; `pipeline("video-classification")`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import initialization as init

from .configuration_maskfeat_video import MimMaskFeatVideoConfig
from .hog import HOGTarget
from .mim_base import PictureView
from .modeling_maskfeat import MimMaskFeatForPreTraining, MimMaskFeatPreTrainedModel, MimMaskFeatPreTrainingOutput
from .task_heads import EncoderModelMixin, ImageClassificationMixin
from .video_vit import TubeletEmbed, VideoViTEncoder
from .vit import init_conv_as_pytorch_default


class TubeletHOGTarget(HOGTarget):
    """The image MaskFeat `HOGTarget` applied frame by frame: (B, T, C, H, W) -> (B, t*h*w, tubelet_size * K),
    each token's vector the image targets (K per patch) of its tubelet's frames concatenated in frame order.
    Tokens in (t, h, w) order, t = T / tubelet_size. Frozen, fp32, no grad, no state-dict keys, as its base."""

    def __init__(self, tubelet_size: int, **kwargs):
        super().__init__(**kwargs)
        self.tubelet_size = tubelet_size

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        batch, frames = pixel_values.shape[:2]
        per_frame = super().forward(pixel_values.flatten(0, 1))  # (B*T, h*w, K)
        length, dim = per_frame.shape[1:]
        temporal = frames // self.tubelet_size
        per_frame = per_frame.reshape(batch, temporal, self.tubelet_size, length, dim)
        return per_frame.permute(0, 1, 3, 2, 4).reshape(batch, temporal * length, self.tubelet_size * dim)


@dataclass
class MimMaskFeatVideoPreTrainingOutput(MimMaskFeatPreTrainingOutput):
    """The image MaskFeat output over tubelets:
    loss: mean squared error over the masked tubelets and all target_dim values of each.
    logits: (B, L, target_dim) the head's HOG prediction at every tubelet (only masked ones are scored).
    hog_targets: (B, L, target_dim) fp32 per-frame HOG targets of every tubelet, from pixel_values without grad.
    bool_masked_pos: (B, L) True = masked (replaced by the mask token); L = t*h*w in (t, h, w) order.
    """


class MimMaskFeatVideoPreTrainedModel(MimMaskFeatPreTrainedModel):
    """The image MaskFeat base on video: clips (B, T, C, H, W), the tubelet encoder, the video Auto classes."""

    config_class = MimMaskFeatVideoConfig
    input_modalities = ("video",)
    encoder_class = VideoViTEncoder
    auto_classes = {
        "AutoModel": "MimMaskFeatVideoModel",
        "AutoModelForPreTraining": "MimMaskFeatVideoForPreTraining",
        "AutoModelForVideoClassification": "MimMaskFeatVideoForVideoClassification",
        # transformers' AutoVideoProcessor takes only BaseVideoProcessor subclasses (torchvision); the
        # video-classification pipeline loads an image processor as well
        "AutoImageProcessor": "video_processing_maskfeat.MimMaskFeatVideoProcessor",
    }

    def _init_weights(self, module: nn.Module) -> None:
        """The image MaskFeat init carried to video: the tubelet Conv3d keeps PyTorch's default as the image
        model's Conv2d, and the separable position tables are trunc-normal(0.02) as its joint table."""
        if isinstance(module, TubeletEmbed):
            init_conv_as_pytorch_default(module.proj)
            return
        super()._init_weights(module)
        if isinstance(module, VideoViTEncoder):
            for table in (module.pos_embed_spatial, module.pos_embed_temporal, module.pos_embed_class):
                if table is not None:
                    init.trunc_normal_(table, std=self.config.initializer_range)

    def no_weight_decay_parameters(self) -> list[nn.Parameter]:
        """The separable position tables and the cls token (rank >= 2, not decayed)."""
        encoder = self.encoder
        tables = (encoder.pos_embed_spatial, encoder.pos_embed_temporal, encoder.pos_embed_class, encoder.cls_token)
        return [p for p in tables if p is not None]

    def layer_ids(self) -> dict[int, int]:
        """The ViT rule (embeddings 0, block i -> i + 1, the rest L + 1), the position tables counted as embeddings."""
        ids = super().layer_ids()
        ids.update({id(p): 0 for p in self.no_weight_decay_parameters()})
        return ids


class MimMaskFeatVideoModel(EncoderModelMixin, MimMaskFeatVideoPreTrainedModel):
    """The video encoder over all tubelets, for features: `AutoModel.from_pretrained(...)` on (B, T, C, H, W).
    `bool_masked_pos` (B, L) optionally replaces tubelets by the mask token, as in pretraining."""


class MimMaskFeatVideoForPreTraining(MimMaskFeatVideoPreTrainedModel, MimMaskFeatForPreTraining):
    """The image MaskFeat pipeline over tubelets: `encode` (all tubelets, masked ones -> mask token, space + time
    positions, final LayerNorm) -> `pred_head` (Linear D -> target_dim) -> MSE against the frozen per-frame `hog`
    targets at the masked tubelets. pixel_values (B, T, C, H, W); bool_masked_pos (B, t*h*w), True = masked."""

    output_class = MimMaskFeatVideoPreTrainingOutput

    @staticmethod
    def build_hog_target(config) -> TubeletHOGTarget:
        return TubeletHOGTarget(
            config.tubelet_size, nbins=config.hog_nbins, cell_size=config.hog_cell_size, patch_size=config.patch_size,
            gaussian_window=config.hog_gaussian_window, num_channels=config.num_channels,
        )

    def frame_view(self, vectors: torch.Tensor, frames: int) -> torch.Tensor:
        """Token vectors (B, t*h*w, tubelet_size * K) -> the first frame of each tubelet as images, (B*t, h*w, K)."""
        batch, length, _ = vectors.shape
        temporal = frames // self.config.tubelet_size
        per_frame = vectors.reshape(batch, temporal, length // temporal, self.config.tubelet_size, -1)
        return per_frame[:, :, :, 0].flatten(0, 1)

    def picture_view(self, batch: dict, outputs) -> PictureView:
        """"hog" over frames: the first frame of every tubelet of every clip (clip-major), each shown as image
        MaskFeat shows an image (its patch mask, predicted and true HOG); `cell_histograms` lays the vectors out."""
        pixel_values = batch["pixel_values"]
        frames = pixel_values.shape[1]
        temporal = frames // self.config.tubelet_size
        mask = outputs.bool_masked_pos.reshape(pixel_values.shape[0] * temporal, -1)
        return PictureView("hog", mask, self.frame_view(outputs.logits.detach(), frames),
                           self.frame_view(outputs.hog_targets, frames),
                           frames=pixel_values[:, :: self.config.tubelet_size].flatten(0, 1))


class MimMaskFeatVideoForVideoClassification(ImageClassificationMixin, MimMaskFeatVideoPreTrainedModel):
    """Video encoder + mean pooling of the tubelet tokens + a new LayerNorm (fc_norm) + linear head (MaskFeat
    fine-tuning), or the cls token after the final norm with pooling="cls". Returns `logits` (B, num_labels);
    `labels` may be class ids or mixup/cutmix soft targets. No mask token (nothing is masked in fine-tuning)."""
