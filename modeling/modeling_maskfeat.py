"""MaskFeat (Wei et al. 2022), image version with a ViT: block-wise masking, all patches through the encoder with
masked ones replaced by a mask token, a linear head regressing each masked patch's histograms of oriented
gradients (HOG), MSE on the masked patches. Layout as facebookresearch/SlowFast
`slowfast/models/masked.py` (MaskMViT with PRED_HOG) and mmpretrain's MaskFeat.

The head's LayerNorm is the encoder's final norm (`vit.norm`, mmpretrain's layout) and `pred_head` is a bare
Linear; SlowFast deletes the encoder norm and puts the LayerNorm inside its head instead. The two compute the same
function, and this way the feature model (`AutoModel`) keeps the normalised tokens the head reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_maskfeat import MimMaskFeatConfig
from .hog import HOGTarget, gaussian_window_kernel, sobel_kernels
from .losses import masked_mse_loss
from .mim_base import MimPreTrainedModel, PictureView, required_mask
from .task_heads import EncoderModelMixin, ImageClassificationMixin, run_encoder
from .vit import PatchEmbed, ViTEncoder, init_conv_as_pytorch_default, init_layer_norm, zero_bias

# MaskFeat fine-tuning (SlowFast HEAD_INIT_SCALE) starts the classifier near zero: trunc-normal(0.02) x 0.001.
HEAD_INIT_SCALE = 1e-3


@dataclass
class MimMaskFeatPreTrainingOutput(ModelOutput):
    """
    loss: mean squared error over the masked patches and all target_dim values of each.
    logits: (B, L, target_dim) the head's HOG prediction at every patch (only masked ones are scored).
    hog_targets: (B, L, target_dim) fp32 HOG targets of every patch, computed from pixel_values without grad.
    bool_masked_pos: (B, L) True = masked (replaced by the mask token).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    hog_targets: torch.FloatTensor | None = None
    bool_masked_pos: torch.BoolTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


def patch_targets_to_cell_histograms(targets: torch.Tensor, grid: tuple[int, int], num_channels: int,
                                     nbins: int) -> torch.Tensor:
    """Inverse of `hog.cell_histograms_to_patch_targets`: per-patch vectors (B, h*w, C*nbins*k*k), index
    c*nbins*k*k + bin*k*k + cell_row*k + cell_col -> per-cell histograms (B, C, nbins, h*k, w*k), the layout
    `HOGTarget.cell_histograms` returns and `render_hog_glyphs` draws."""
    batch, length, dim = targets.shape
    height, width = grid
    k = math.isqrt(dim // (num_channels * nbins))
    if length != height * width or dim != num_channels * nbins * k * k:
        raise ValueError(
            f"targets of shape {tuple(targets.shape)} do not hold a {height}x{width} grid of "
            f"{num_channels} x {nbins} x k x k histograms"
        )
    cells = targets.reshape(batch, height, width, num_channels * nbins, k, k)
    # (B, patch_row, patch_col, C*nbins, cell_row, cell_col) -> (B, C*nbins, patch_row, cell_row, patch_col, cell_col)
    cells = cells.permute(0, 3, 1, 4, 2, 5)
    return cells.reshape(batch, num_channels, nbins, height * k, width * k)


def hog_regression(model, hidden: torch.Tensor, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor):
    """(logits, targets, loss): `model.pred_head` on the patch tokens of `hidden` (B, 1 + L, D), the frozen
    `model.hog` targets of `pixel_values`, and their MSE averaged over the masked patches (and the values of each)."""
    logits = model.pred_head(hidden[:, 1:])
    targets = model.hog(pixel_values)
    return logits, targets, masked_mse_loss(logits, targets, bool_masked_pos)


class MimMaskFeatPreTrainedModel(MimPreTrainedModel):
    config_class = MimMaskFeatConfig

    def _init_weights(self, module: nn.Module) -> None:
        """Official MaskFeat ViT init (SlowFast MViT in ViT mode): Linear weights (the HOG head
        too) trunc-normal(0.02) with the default +-2 absolute bounds, biases 0, LayerNorm (1, 0); cls, mask and
        position tokens trunc-normal(0.02); the patch-embedding conv keeps PyTorch's Conv2d default
        (kaiming-uniform a=sqrt(5)), which SlowFast never overrides. No depth rescale (SCALE_INIT_BY_DEPTH off).
        The classifier head is trunc-normal(0.02) x 0.001 (fine-tuning HEAD_INIT_SCALE). The frozen HOG module's
        fixed filters are rebuilt here: they are non-persistent buffers, absent from the meta-device load."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            scale = HEAD_INIT_SCALE if module is getattr(self, "head", None) else 1.0
            init.trunc_normal_(module.weight, std=std * scale, a=-2.0 * scale, b=2.0 * scale)
            zero_bias(module)
        elif isinstance(module, PatchEmbed):
            init_conv_as_pytorch_default(module.proj)
        elif isinstance(module, nn.LayerNorm):
            init_layer_norm(module)
        elif isinstance(module, ViTEncoder):
            for token in (module.cls_token, module.pos_embed, module.mask_token):
                if token is not None:
                    init.trunc_normal_(token, std=std)
        elif isinstance(module, HOGTarget):
            kernel_x, kernel_y = sobel_kernels(module.num_channels)
            init.copy_(module.kernel_x, kernel_x)
            init.copy_(module.kernel_y, kernel_y)
            if module.window is not None:
                init.copy_(module.window, gaussian_window_kernel(module.gaussian_window))


class MimMaskFeatModel(EncoderModelMixin, MimMaskFeatPreTrainedModel):
    """MaskFeat encoder over all patches, for features: `AutoModel.from_pretrained(...)`. `bool_masked_pos` (B, L)
    optionally replaces patches by the mask token, as in pretraining."""


class MimMaskFeatForPreTraining(MimMaskFeatPreTrainedModel):
    """`encode` (all patches, masked ones -> mask token, learned positions, final LayerNorm) -> `pred_head`
    (Linear D -> target_dim) on the patch tokens -> MSE against the frozen `hog` targets at the masked patches.

    `hog` is a `HOGTarget` with no parameters and only non-persistent buffers: it adds no state-dict keys, and it
    always runs in fp32 without grad, also under autocast.
    """

    output_class = MimMaskFeatPreTrainingOutput

    def __init__(self, config: MimMaskFeatConfig):
        super().__init__(config)
        self.vit = self.encoder_class(config)
        self.pred_head = nn.Linear(config.hidden_size, config.target_dim)
        self.hog = self.build_hog_target(config)
        self.post_init()

    @staticmethod
    def build_hog_target(config) -> HOGTarget:
        return HOGTarget(nbins=config.hog_nbins, cell_size=config.hog_cell_size, patch_size=config.patch_size,
                         gaussian_window=config.hog_gaussian_window, num_channels=config.num_channels)

    def forward(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None,
                interpolate_pos_encoding: bool = False, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, **kwargs) -> MimMaskFeatPreTrainingOutput:
        """
        pixel_values: (B, C, H, W) the normalised image; the HOG targets are computed from it.
        bool_masked_pos: (B, L) or (B, h, w), True = masked (the processor's `return_bool_masked_pos=True`).
        """
        bool_masked_pos = required_mask(self, bool_masked_pos)
        hidden, all_hidden = run_encoder(self, pixel_values, output_hidden_states, bool_masked_pos=bool_masked_pos,
                                         interpolate_pos_encoding=interpolate_pos_encoding)
        logits, targets, loss = hog_regression(self, hidden, pixel_values, bool_masked_pos)
        out = self.output_class(loss=loss, logits=logits, hog_targets=targets,
                                bool_masked_pos=bool_masked_pos, hidden_states=all_hidden)
        return out if return_dict is not False else out.to_tuple()

    def picture_view(self, batch: dict, outputs: MimMaskFeatPreTrainingOutput) -> PictureView:
        """"hog": predicted and target per-patch HOG vectors (B, L, target_dim); `cell_histograms` lays them out."""
        return PictureView("hog", outputs.bool_masked_pos, outputs.logits, outputs.hog_targets)

    def cell_histograms(self, patch_vectors: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Predicted (`logits`) or target per-patch vectors (B, L, target_dim) of images of `image_size` (H, W)
        -> per-cell histograms (B, C, nbins, H / cell, W / cell), e.g. for `hf_mim.hog_glyphs.render_hog_glyphs`."""
        patch = self.config.patch_size
        grid = (image_size[0] // patch, image_size[1] // patch)
        return patch_targets_to_cell_histograms(patch_vectors, grid, self.config.num_channels, self.config.hog_nbins)


class MimMaskFeatForImageClassification(ImageClassificationMixin, MimMaskFeatPreTrainedModel):
    """MaskFeat encoder + mean pooling + a new LayerNorm (fc_norm) + linear head (MaskFeat fine-tuning), or cls.

    The classifier has no mask token (nothing is masked in fine-tuning; an unused trainable parameter would also
    break DDP); the pretraining head and, with mean pooling, the final norm are not loaded.
    """

