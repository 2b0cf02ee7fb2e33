"""Initialisation pieces BEiT and SimMIM share: both official codebases build the same BEiT-style
ViT, so their residual depth scaling and the init of relative position bias, q/v biases and layer scales are one
rule. Each model keeps its own `_init_weights` for what differs (truncation bounds, heads)."""

from __future__ import annotations

import math

from torch import nn
from transformers import initialization as init

from .relative_bias_loading import init_per_layer_tables_from_checkpoint
from .vit import Attention, Block, RelativePositionBias, ViTEncoder, relative_position_index


def residual_depth_scale(encoder: ViTEncoder, linear: nn.Linear) -> float:
    """1/sqrt(2 l) for the residual output projections (attn.proj, mlp.fc2) of block l (1-indexed), else 1:
    the official init-then-divide ("fix_init_weight") folded into the draw, so loading never applies it twice."""
    for block in encoder.blocks:
        if linear is block.attn.proj or linear is block.mlp.fc2:
            return 1.0 / math.sqrt(2.0 * (block.layer_id + 1))
    return 1.0


def init_relative_bias_and_layer_scale(module: nn.Module, grid_size: int, layer_scale_init_value: float) -> bool:
    """Relative position tables 0 (shared or per layer) with their index rebuilt (a non-persistent buffer that
    from_pretrained allocates empty), q/v biases 0, layer scales at `layer_scale_init_value`. Returns whether
    `module` was one of these kinds."""
    if isinstance(module, RelativePositionBias):
        init.zeros_(module.relative_position_bias_table)
        init.copy_(module.relative_position_index, relative_position_index(module.grid_size, module.grid_size))
    elif isinstance(module, Attention):
        if module.q_bias is not None:
            init.zeros_(module.q_bias)
            init.zeros_(module.v_bias)
        if module.relative_position_bias_table is not None:
            init.zeros_(module.relative_position_bias_table)
            init.copy_(module.relative_position_index, relative_position_index(grid_size, grid_size))
    elif isinstance(module, Block):
        if module.gamma_1 is not None:
            init.constant_(module.gamma_1, layer_scale_init_value)
            init.constant_(module.gamma_2, layer_scale_init_value)
    else:
        return False
    return True


class SharedToPerLayerBiasMixin:
    """Fine-tuning's start in BEiT and SimMIM: a model with per-layer relative position bias loaded from a
    checkpoint with pretraining's shared table starts every block's table as a copy of the shared one."""

    _keys_to_ignore_on_load_missing = [r"^vit\.blocks\.\d+\.attn\.relative_position_bias_table$"]

    def after_loading(self, pretrained_model_name_or_path, kwargs: dict) -> None:
        if self.config.relative_position_bias == "per_layer" and pretrained_model_name_or_path is not None:
            init_per_layer_tables_from_checkpoint(self, pretrained_model_name_or_path, kwargs)
