"""MaskFeat on video (Wei et al. 2022, its Kinetics half) with a ViT: cube masking over space-time tubelets, all
tubelets through the encoder with masked ones replaced by a mask token, a linear head regressing at each masked
tubelet the HOG of every frame it covers (the image MaskFeat HOG, frame by frame, concatenated), MSE on the
masked tubelets.

Three classes share one layout (`vit` = `VideoViTEncoder`), so weights move between them without renaming:
`MimMaskFeatVideoModel` (features, AutoModel), `MimMaskFeatVideoForPreTraining`, and
`MimMaskFeatVideoForVideoClassification` (mean-pooled tokens, fc_norm, linear; `pipeline("video-classification")`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_maskfeat_video import MimMaskFeatVideoConfig
from .hog import HOGTarget
from .losses import masked_mse_loss
from .modeling_maskfeat import MimMaskFeatPreTrainedModel, patch_targets_to_cell_histograms
from .remote_code import RemoteCodeMixin
from .task_heads import EncoderModelMixin, ImageClassificationMixin
from .video_vit import TubeletEmbed, VideoViTEncoder


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
class MimMaskFeatVideoPreTrainingOutput(ModelOutput):
    """
    loss: mean squared error over the masked tubelets and all target_dim values of each.
    logits: (B, L, target_dim) the head's HOG prediction at every tubelet (only masked ones are scored).
    hog_targets: (B, L, target_dim) fp32 per-frame HOG targets of every tubelet, from pixel_values without grad.
    bool_masked_pos: (B, L) True = masked (replaced by the mask token); L = t*h*w in (t, h, w) order.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    hog_targets: torch.FloatTensor | None = None
    bool_masked_pos: torch.BoolTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class VideoHogPictureView:
    """What a picture of video pretraining shows, frame by frame as images: kind "hog", and per shown frame
    (the first frame of every tubelet of every clip, clip-major) its patch mask (N, h*w), predicted and target
    HOG vectors (N, h*w, K) in the image MaskFeat layout (`cell_histograms` turns them into cells), and the frames
    (N, C, H, W) themselves. Stands in for the shared PictureView until the two are merged."""

    kind: str
    bool_masked_pos: torch.Tensor
    predicted: torch.Tensor
    target: torch.Tensor | None = None
    frames: torch.Tensor | None = None


class MimMaskFeatVideoPreTrainedModel(RemoteCodeMixin, PreTrainedModel):
    config_class = MimMaskFeatVideoConfig
    base_model_prefix = "vit"
    main_input_name = "pixel_values"
    input_modalities = ("video",)
    _no_split_modules = ["Block"]
    _supports_sdpa = True
    supports_gradient_checkpointing = True
    auto_classes = {
        "AutoModel": "MimMaskFeatVideoModel",
        "AutoModelForPreTraining": "MimMaskFeatVideoForPreTraining",
        "AutoModelForVideoClassification": "MimMaskFeatVideoForVideoClassification",
        "AutoImageProcessor": "video_processing_maskfeat.MimMaskFeatVideoProcessor",
    }

    def _init_weights(self, module: nn.Module) -> None:
        """The image MaskFeat init (`MimMaskFeatPreTrainedModel._init_weights`: Linear trunc-normal(0.02), the
        classifier x 0.001, LayerNorm (1, 0), cls and mask tokens trunc-normal(0.02), the HOG filters rebuilt),
        carried to video: the tubelet Conv3d keeps PyTorch's default (kaiming-uniform a=sqrt(5)) as the image
        model's Conv2d, and the separable position tables are trunc-normal(0.02) as its joint table."""
        if isinstance(module, TubeletEmbed):
            weight = module.proj.weight
            init.kaiming_uniform_(weight, a=math.sqrt(5))
            bound = 1.0 / math.sqrt(weight[0].numel())
            init.uniform_(module.proj.bias, -bound, bound)
            return
        MimMaskFeatPreTrainedModel._init_weights(self, module)
        if isinstance(module, VideoViTEncoder):
            for table in (module.pos_embed_spatial, module.pos_embed_temporal, module.pos_embed_class):
                if table is not None:
                    init.trunc_normal_(table, std=self.config.initializer_range)


class MimMaskFeatVideoModel(EncoderModelMixin, MimMaskFeatVideoPreTrainedModel):
    """The video encoder over all tubelets, for features: `AutoModel.from_pretrained(...)` on (B, T, C, H, W).
    `bool_masked_pos` (B, L) optionally replaces tubelets by the mask token, as in pretraining."""

    def __init__(self, config: MimMaskFeatVideoConfig):
        super().__init__(config)
        self.vit = VideoViTEncoder(config)
        self.post_init()


class MimMaskFeatVideoForPreTraining(MimMaskFeatVideoPreTrainedModel):
    """`encode` (all tubelets, masked ones -> mask token, space + time positions, final LayerNorm) -> `pred_head`
    (Linear D -> target_dim) -> MSE against the frozen per-frame `hog` targets at the masked tubelets."""

    def __init__(self, config: MimMaskFeatVideoConfig):
        super().__init__(config)
        self.vit = VideoViTEncoder(config)
        self.pred_head = nn.Linear(config.hidden_size, config.target_dim)
        self.hog = TubeletHOGTarget(
            config.tubelet_size, nbins=config.hog_nbins, cell_size=config.hog_cell_size, patch_size=config.patch_size,
            gaussian_window=config.hog_gaussian_window, num_channels=config.num_channels,
        )
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None,
                interpolate_pos_encoding: bool = False, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, **kwargs) -> MimMaskFeatVideoPreTrainingOutput:
        """
        pixel_values: (B, T, C, H, W) the normalised clip; the HOG targets are computed from it.
        bool_masked_pos: (B, L) or (B, t, h, w), True = masked (the processor's `return_bool_masked_pos=True`).
        """
        if bool_masked_pos is None:
            raise ValueError(
                "MimMaskFeatVideoForPreTraining needs bool_masked_pos (batch, t*h*w), True = masked: call the video "
                "processor with return_bool_masked_pos=True"
            )
        bool_masked_pos = bool_masked_pos.flatten(1).bool()
        output_hidden_states = bool(output_hidden_states or self.config.output_hidden_states)
        hidden, all_hidden = self.vit(
            pixel_values, bool_masked_pos=bool_masked_pos, interpolate_pos_encoding=interpolate_pos_encoding,
            output_hidden_states=output_hidden_states,
        )
        logits = self.pred_head(hidden[:, 1:])
        targets = self.hog(pixel_values)
        # mean over the masked tubelets (and over the target_dim values of each)
        loss = masked_mse_loss(logits, targets, bool_masked_pos)
        out = MimMaskFeatVideoPreTrainingOutput(loss=loss, logits=logits, hog_targets=targets,
                                                bool_masked_pos=bool_masked_pos, hidden_states=all_hidden)
        return out if return_dict is not False else out.to_tuple()

    def frame_view(self, vectors: torch.Tensor, frames: int) -> torch.Tensor:
        """Token vectors (B, t*h*w, tubelet_size * K) -> the first frame of each tubelet as images, (B*t, h*w, K)."""
        batch, length, _ = vectors.shape
        temporal = frames // self.config.tubelet_size
        per_frame = vectors.reshape(batch, temporal, length // temporal, self.config.tubelet_size, -1)
        return per_frame[:, :, :, 0].flatten(0, 1)

    def picture_view(self, batch: dict, outputs) -> VideoHogPictureView:
        """The first frame of every tubelet of every clip, shown as image MaskFeat shows an image."""
        pixel_values = batch["pixel_values"]
        frames = pixel_values.shape[1]
        temporal = frames // self.config.tubelet_size
        mask = outputs.bool_masked_pos.reshape(pixel_values.shape[0] * temporal, -1)
        return VideoHogPictureView(
            kind="hog", bool_masked_pos=mask, predicted=self.frame_view(outputs.logits.detach(), frames),
            target=self.frame_view(outputs.hog_targets, frames),
            frames=pixel_values[:, :: self.config.tubelet_size].flatten(0, 1),
        )

    def cell_histograms(self, patch_vectors: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """One frame's per-patch vectors (N, h*w, K) (from `picture_view`) of frames of `image_size` (H, W)
        -> per-cell histograms (N, C, nbins, H / cell, W / cell), e.g. for `hf_mim.hog_glyphs.render_hog_glyphs`."""
        patch = self.config.patch_size
        grid = (image_size[0] // patch, image_size[1] // patch)
        return patch_targets_to_cell_histograms(patch_vectors, grid, self.config.num_channels, self.config.hog_nbins)

    def after_optimizer_step(self) -> None:
        """Nothing to update after an optimizer step (no teacher); training scripts call it unconditionally."""


class MimMaskFeatVideoForVideoClassification(ImageClassificationMixin, MimMaskFeatVideoPreTrainedModel):
    """Video encoder + mean pooling of the tubelet tokens + a new LayerNorm (fc_norm) + linear head (MaskFeat
    fine-tuning), or the cls token after the final norm with pooling="cls". Returns `logits` (B, num_labels);
    `labels` may be class ids or mixup/cutmix soft targets. No mask token (nothing is masked in fine-tuning)."""

    _keys_to_ignore_on_load_unexpected = ImageClassificationMixin._keys_to_ignore_on_load_unexpected + [
        r"^vit\.mask_token$", r"^vit\.norm\.",
    ]

    def __init__(self, config: MimMaskFeatVideoConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        mean_pooling = config.pooling == "mean"
        self.vit = VideoViTEncoder(config, add_final_norm=not mean_pooling)
        self.vit.mask_token = None
        self.fc_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if mean_pooling else None
        self.head = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()
