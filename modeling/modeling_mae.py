"""MAE (He et al. 2022): random high-ratio masking, encoder on visible patches only, light decoder, pixel MSE on
the removed patches. Layout of the pipeline as facebookresearch/mae `models_mae.py`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_mae import MimMaeConfig
from .losses import masked_mse_loss, normalize_patch_targets
from .masking import random_masking
from .mim_base import MimPreTrainedModel, PictureView, unstandardize_patches
from .task_heads import EncoderModelMixin, ImageClassificationMixin
from .vit import (ViTEncoder, build_blocks, init_layer_norm, patchify, resize_position_table, sincos_position_table,
                  unpatchify, zero_bias)


@dataclass
class MimMaePreTrainingOutput(ModelOutput):
    """
    loss: mean squared error over the removed patches (of norm-pix targets when `norm_pix_loss`).
    logits: (B, L, patch_size**2 * C) predicted patches, in original patch order.
    mask: (B, L) 1 = removed, 0 = visible (float, as transformers' ViTMAE).
    ids_restore: (B, L) indices that undo the shuffle.
    bool_masked_pos: (B, L) True = removed, the same mask as a bool tensor.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    mask: torch.FloatTensor | None = None
    ids_restore: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    bool_masked_pos: torch.BoolTensor | None = None


class MaeDecoder(nn.Module):
    """Projects encoder outputs to the decoder width, fills removed slots with one mask token, un-shuffles, adds
    the decoder's own sin-cos table and predicts the pixels of every patch."""

    def __init__(self, config: MimMaeConfig):
        super().__init__()
        dim, grid = config.decoder_hidden_size, config.image_size // config.patch_size
        self.grid_size = grid
        self.embed = nn.Linear(config.hidden_size, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, dim), requires_grad=False)
        self.blocks = build_blocks(
            config, depth=config.decoder_num_hidden_layers, dim=dim, num_heads=config.decoder_num_attention_heads,
            mlp_dim=config.decoder_intermediate_size, drop_path_rate=0.0,
        )
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.pred = nn.Linear(dim, config.patch_size**2 * config.num_channels)

    def position_table(self) -> torch.Tensor:
        return sincos_position_table(self.grid_size, self.grid_size, self.pos_embed.shape[-1], "mae").unsqueeze(0)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """latent (B, 1 + L_keep, D) -> predicted patches (B, L, p*p*C)."""
        x = self.embed(latent)
        num_removed = ids_restore.shape[1] + 1 - x.shape[1]
        patches = torch.cat([x[:, 1:], self.mask_token.to(x.dtype).expand(x.shape[0], num_removed, -1)], dim=1)
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], patches], dim=1)
        pos = self.pos_embed if grid == (self.grid_size,) * 2 else resize_position_table(self.pos_embed, grid)
        x = x + pos.to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.pred(self.norm(x))[:, 1:]


class MimMaePreTrainedModel(MimPreTrainedModel):
    config_class = MimMaeConfig

    def _init_weights(self, module: nn.Module) -> None:
        """Official MAE init: xavier-uniform Linear (the patch conv too, as a [D, C*p*p] matrix), normal(0.02)
        tokens, fixed sin-cos tables; the classifier head trunc-normal(2e-5) as MAE fine-tuning does."""
        if isinstance(module, nn.Linear):
            if module is getattr(self, "head", None):
                init.trunc_normal_(module.weight, std=2e-5)
            else:
                init.xavier_uniform_(module.weight)
            zero_bias(module)
        elif isinstance(module, nn.LayerNorm):
            init_layer_norm(module)
        elif isinstance(module, nn.Conv2d):  # the patch embedding (transformers 5 skips tensor-less containers)
            weight = module.weight
            fan_out, fan_in = weight.shape[0], weight[0].numel()
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            init.uniform_(weight, -bound, bound)
            init.zeros_(module.bias)
        elif isinstance(module, ViTEncoder):
            init.normal_(module.cls_token, std=self.config.initializer_range)
            if module.pos_embed is not None:
                if self.config.position_embedding_type == "learned":
                    init.trunc_normal_(module.pos_embed, std=self.config.initializer_range)
                else:
                    init.copy_(module.pos_embed, module.position_table())
        elif isinstance(module, MaeDecoder):
            init.normal_(module.mask_token, std=self.config.initializer_range)
            init.copy_(module.pos_embed, module.position_table())


class MimMaeModel(EncoderModelMixin, MimMaePreTrainedModel):
    """MAE encoder over all patches (no masking), for features: `AutoModel.from_pretrained(...)`."""


class MimMaeForPreTraining(MimMaePreTrainedModel):
    """`encode` (mask, visible patches only) -> `decoder` (all patches) -> `loss` on the removed ones."""

    def __init__(self, config: MimMaeConfig):
        super().__init__(config)
        self.vit = ViTEncoder(config)
        self.decoder = MaeDecoder(config)
        self.post_init()

    def encode(self, pixel_values, noise=None, interpolate_pos_encoding=False, output_hidden_states=False):
        """Returns latent (B, 1 + L_keep, D), mask (B, L), ids_restore (B, L), hidden states."""
        tokens = self.vit.patch_tokens(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        kept, mask, ids_restore = random_masking(tokens, self.config.mask_ratio, noise)
        latent, hidden_states = self.vit.transform(self.vit.prepend_cls(kept), output_hidden_states)
        return latent, mask, ids_restore, hidden_states

    def targets(self, pixel_values: torch.Tensor) -> torch.Tensor:
        target = patchify(pixel_values, self.config.patch_size)
        return normalize_patch_targets(target) if self.config.norm_pix_loss else target

    def forward(self, pixel_values: torch.Tensor, noise: torch.Tensor | None = None,
                interpolate_pos_encoding: bool = False, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, **kwargs) -> MimMaePreTrainingOutput:
        output_hidden_states = bool(output_hidden_states or self.config.output_hidden_states)
        latent, mask, ids_restore, hidden_states = self.encode(
            pixel_values, noise, interpolate_pos_encoding, output_hidden_states
        )
        grid = (pixel_values.shape[-2] // self.config.patch_size, pixel_values.shape[-1] // self.config.patch_size)
        pred = self.decoder(latent, ids_restore, grid)
        # mean loss on removed patches
        loss = masked_mse_loss(pred, self.targets(pixel_values), mask)
        out = MimMaePreTrainingOutput(loss=loss, logits=pred, mask=mask, ids_restore=ids_restore,
                                      hidden_states=hidden_states, bool_masked_pos=mask.bool())
        return out if return_dict is not False else out.to_tuple()

    def reconstruct(self, pixel_values: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Predicted patches back in the input's (normalised) pixel space, (B, C, H, W): with norm_pix_loss the
        prediction is de-standardised with each patch's own mean and std, as the official visualisation does."""
        pred = logits.float()
        if self.config.norm_pix_loss:
            pred = unstandardize_patches(pred, patchify(pixel_values.float(), self.config.patch_size))
        grid = (pixel_values.shape[-2] // self.config.patch_size, pixel_values.shape[-1] // self.config.patch_size)
        return unpatchify(pred, self.config.patch_size, self.config.num_channels, grid)

    def picture_view(self, batch: dict, outputs: MimMaePreTrainingOutput) -> PictureView:
        """"pixels": the predicted patches in the input's normalised pixel space (`reconstruct`)."""
        predicted = self.reconstruct(batch["pixel_values"], outputs.logits)
        return PictureView("pixels", outputs.bool_masked_pos, predicted)


class MimMaeForImageClassification(ImageClassificationMixin, MimMaePreTrainedModel):
    """MAE encoder + mean pooling + fc_norm + linear head (MAE fine-tuning), or cls pooling."""
