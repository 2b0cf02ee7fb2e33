"""SimMIM (Xie et al. 2022): coarse random masking (32-px cells), all patches through the encoder with masked ones
replaced by a mask token, a one-layer head (1x1 conv + PixelShuffle) regressing the normalised pixels, L1 on the
masked pixels only. Layout of the pipeline as microsoft/SimMIM `models/simmim.py`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import initialization as init
from transformers.utils import ModelOutput

from .beit_init import SharedToPerLayerBiasMixin, init_relative_bias_and_layer_scale, residual_depth_scale
from .configuration_simmim import MimSimMIMConfig
from .losses import masked_l1_loss
from .mim_base import MimPreTrainedModel, PictureView, required_mask
from .task_heads import EncoderModelMixin, ImageClassificationMixin, run_encoder
from .vit import ViTEncoder, init_conv_as_pytorch_default, init_layer_norm, zero_bias

# SimMIM's fine-tuning ViT starts the classifier near zero: trunc-normal(0.02), then x 0.001 (init_scale).
HEAD_INIT_SCALE = 1e-3


@dataclass
class MimSimMIMPreTrainingOutput(ModelOutput):
    """
    loss: L1 between reconstruction and input over the masked pixels, divided by (masked pixels x channels).
    reconstruction: (B, C, H, W) the head's prediction of the whole (normalised) image.
    bool_masked_pos: (B, L) True = masked (replaced by the mask token).
    """

    loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    bool_masked_pos: torch.BoolTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


def pixel_shuffle_head(in_channels: int, encoder_stride: int, num_channels: int) -> nn.Sequential:
    """SimMIM's one-layer head: 1x1 conv to stride**2 * channels, then PixelShuffle(stride) back to pixels.
    An `nn.Sequential`, so its keys (`decoder.0.*`) are those of the official SimMIM and of transformers."""
    return nn.Sequential(nn.Conv2d(in_channels, encoder_stride**2 * num_channels, kernel_size=1),
                         nn.PixelShuffle(encoder_stride))


def reconstruction_output(reconstruction: torch.Tensor, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor,
                          grid: tuple[int, int], patch_size: int, hidden_states, return_dict: bool | None):
    """The loss and output of a SimMIM head's (B, C, H, W) `reconstruction` of `pixel_values`, the patch mask laid
    out on `grid` with `patch_size` px patches."""
    pixel_mask = patch_mask_to_pixels(bool_masked_pos, grid, patch_size)
    # L1 on masked pixels only, per masked pixel-channel
    loss = masked_l1_loss(reconstruction, pixel_values, pixel_mask)
    out = MimSimMIMPreTrainingOutput(loss=loss, reconstruction=reconstruction, bool_masked_pos=bool_masked_pos,
                                     hidden_states=hidden_states)
    return out if return_dict is not False else out.to_tuple()


class ReconstructionPictureMixin:
    """The card's picture of a SimMIM pretraining model, whatever its encoder."""

    def picture_view(self, batch: dict, outputs: MimSimMIMPreTrainingOutput) -> PictureView:
        """"pixels": the reconstruction is already in the input's normalised pixel space."""
        return PictureView("pixels", outputs.bool_masked_pos, outputs.reconstruction)

    def reconstruct_pixels(self, batch: dict, out: MimSimMIMPreTrainingOutput):
        """(reconstruction (B, C, H, W), patch mask (B, L)): the older picture entry point, `picture_view`'s data."""
        view = self.picture_view(batch, out)
        return view.predicted, view.bool_masked_pos


def patch_mask_to_pixels(bool_masked_pos: torch.Tensor, grid: tuple[int, int], patch_size: int) -> torch.Tensor:
    """(B, L) patch mask, row-major over `grid` -> (B, 1, H, W) float pixel mask, each patch repeated p x p."""
    mask = bool_masked_pos.reshape(-1, *grid).float()
    return mask.repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2).unsqueeze(1)


class MimSimMIMPreTrainedModel(SharedToPerLayerBiasMixin, MimPreTrainedModel):
    config_class = MimSimMIMConfig

    def _init_weights(self, module: nn.Module) -> None:
        """Official SimMIM ViT init (BEiT-style): Linear and patch-conv weights, cls token
        and learned positions trunc-normal(0.02) with timm's default (+-2 absolute) bounds; the mask token
        trunc-normal(0.02) cut at +-1 std; biases 0, LayerNorm (1, 0), relative position tables 0, q/v biases 0,
        layer scales at `layer_scale_init_value`. The residual output projections of block l are drawn at
        std 0.02/sqrt(2 l) (the official draw-then-divide in one draw, so loading never applies it twice).
        The head's 1x1 conv keeps PyTorch's default Conv2d init, as the official SimMIM module builds it
        after the encoder's init. The classifier head is trunc-normal(0.02) x 0.001 (official init_scale)."""
        if init_relative_bias_and_layer_scale(module, self.config.grid_size, self.config.layer_scale_init_value):
            return
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if module is getattr(self, "head", None):
                scale = HEAD_INIT_SCALE
            else:
                scale = residual_depth_scale(self.vit, module)
            init.trunc_normal_(module.weight, std=std * scale, a=-2.0 * scale, b=2.0 * scale)
            zero_bias(module)
        elif isinstance(module, nn.Conv2d):
            decoder = getattr(self, "decoder", None)
            if decoder is not None and module is decoder[0]:
                init_conv_as_pytorch_default(module)
            else:
                init.trunc_normal_(module.weight, std=std)
                zero_bias(module)
        elif isinstance(module, nn.LayerNorm):
            init_layer_norm(module)
        elif isinstance(module, ViTEncoder):
            init.trunc_normal_(module.cls_token, std=std)
            if module.pos_embed is not None:
                init.trunc_normal_(module.pos_embed, std=std)
            if module.mask_token is not None:
                init.trunc_normal_(module.mask_token, std=std, a=-std, b=std)


class MimSimMIMModel(EncoderModelMixin, MimSimMIMPreTrainedModel):
    """SimMIM encoder over all patches, for features: `AutoModel.from_pretrained(...)`. `bool_masked_pos` (B, L)
    optionally replaces patches by the mask token, as in pretraining."""


class MimSimMIMForPreTraining(ReconstructionPictureMixin, MimSimMIMPreTrainedModel):
    """`encode` (all patches, masked ones -> mask token) -> drop cls, (B, D, h, w) -> `decoder` (1x1 conv to
    stride^2 * C channels, PixelShuffle(stride)) -> (B, C, H, W) -> L1 on the masked pixels.

    `decoder` is an `nn.Sequential(conv, PixelShuffle)` so its keys (`decoder.0.*`) are those of the official
    SimMIM and of transformers' ViTForMaskedImageModeling.
    """

    def __init__(self, config: MimSimMIMConfig):
        super().__init__(config)
        self.vit = ViTEncoder(config)
        self.decoder = pixel_shuffle_head(config.hidden_size, config.encoder_stride, config.num_channels)
        self.post_init()

    def encode(self, pixel_values, bool_masked_pos, interpolate_pos_encoding=False, output_hidden_states=None):
        """Returns the patch tokens as a feature map (B, D, h, w) and the hidden states."""
        hidden, all_hidden = run_encoder(self, pixel_values, output_hidden_states, bool_masked_pos=bool_masked_pos,
                                         interpolate_pos_encoding=interpolate_pos_encoding)
        grid = self.grid_of(pixel_values)
        patches = hidden[:, 1:]
        return patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[-1], *grid), all_hidden

    def grid_of(self, pixel_values: torch.Tensor) -> tuple[int, int]:
        patch = self.config.patch_size
        return pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch

    def forward(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None,
                interpolate_pos_encoding: bool = False, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, **kwargs) -> MimSimMIMPreTrainingOutput:
        """
        pixel_values: (B, C, H, W) the normalised image; it is also the reconstruction target.
        bool_masked_pos: (B, L) or (B, h, w), True = masked (the processor's `return_bool_masked_pos=True`).
        """
        bool_masked_pos = required_mask(self, bool_masked_pos)
        features, all_hidden = self.encode(
            pixel_values, bool_masked_pos, interpolate_pos_encoding, output_hidden_states
        )
        return reconstruction_output(self.decoder(features), pixel_values, bool_masked_pos, self.grid_of(pixel_values),
                                     self.config.patch_size, all_hidden, return_dict)



class MimSimMIMForImageClassification(ImageClassificationMixin, MimSimMIMPreTrainedModel):
    """SimMIM encoder + mean pooling + fc_norm + linear head (SimMIM fine-tuning), or cls pooling.

    The classifier has no mask token (nothing is masked in fine-tuning; an unused trainable parameter would also
    break DDP). With mean pooling the pretrained final norm is not loaded and fc_norm starts fresh, as the
    official fine-tuning ViT does. Built with `relative_position_bias="per_layer"` from a pretraining checkpoint,
    each block's table starts as a copy of the shared one (see `after_loading`).
    """

