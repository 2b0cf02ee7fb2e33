"""The Swin Transformer encoder (Liu et al. 2021), SimMIM's hierarchical backbone, built from `vit.py`'s pieces.

A Swin block is `vit.Block` (pre-norm, drop path, MLP) whose attention runs inside non-overlapping windows of
the token map, cyclically shifted by half a window in every second block, with one learned relative position
bias table per block. Stages are joined by patch merging (2x2 neighbours -> LayerNorm -> Linear to twice the
width), so the patch grid halves and the width doubles at each stage.

Parameter names follow the official Swin/SimMIM layout (`patch_embed.norm`, `layers.{i}.blocks.{j}.attn.qkv`,
`layers.{i}.downsample.reduction`, `absolute_pos_embed`, `mask_token`), so converting an official checkpoint is a
prefix change.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from .vit import (Attention, Block, PatchEmbed, biased_attention, init_conv_as_pytorch_default, relative_position_index,
                  substitute_mask_token)

# The official shifted-window mask: logits between tokens of different regions get -100, not -inf, so a window
# whose tokens all come from one region still softmaxes over real numbers.
SHIFT_MASK_VALUE = -100.0


def window_relative_position_index(window_size: int) -> torch.Tensor:
    """(N, N) index, N = window_size**2, into a ((2w-1)^2, heads) table: BEiT's index without its cls rows."""
    return relative_position_index(window_size, window_size)[1:, 1:].contiguous()


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * windows, window_size**2, C), windows in row-major order, tokens row-major inside."""
    batch, height, width, channels = x.shape
    x = x.view(batch, height // window_size, window_size, width // window_size, window_size, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, channels)


def window_reverse(windows: torch.Tensor, window_size: int, height: int, width: int) -> torch.Tensor:
    """Inverse of `window_partition`: (B * windows, window_size**2, C) -> (B, H, W, C)."""
    channels = windows.shape[-1]
    x = windows.view(-1, height // window_size, width // window_size, window_size, window_size, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, channels)


def shifted_window_mask(grid_size: int, window_size: int, shift_size: int) -> torch.Tensor | None:
    """(windows, N, N) additive mask for attention in windows of a map rolled by -shift_size: 0 between tokens
    that were neighbours before the roll, -100 between tokens the roll brought together. None without a shift."""
    if shift_size == 0:
        return None
    index = torch.arange(grid_size)
    region = (index >= grid_size - window_size).long() + (index >= grid_size - shift_size).long()
    labels = (region[:, None] * 3 + region[None, :]).reshape(1, grid_size, grid_size, 1).float()
    labels = window_partition(labels, window_size).squeeze(-1)  # (windows, N)
    different = labels[:, None, :] != labels[:, :, None]
    return torch.zeros(different.shape).masked_fill(different, SHIFT_MASK_VALUE)


class WindowAttention(Attention):
    """`vit.Attention` run inside windows: (B, grid**2, C) tokens -> roll by -shift -> windows -> attention with
    this block's relative position bias (+ the shift mask) -> windows back -> roll back.

    In shifted blocks the windows fold into the head axis, (B, windows * heads, N, d), so the per-window shift
    mask plus the bias broadcast over the batch as one (windows * heads, N, N) tensor through SDPA.
    """

    def __init__(self, dim: int, num_heads: int, grid_size: int, window_size: int, shift_size: int = 0,
                 qkv_bias: str = "full", attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.grid_size, self.window_size, self.shift_size = grid_size, window_size, shift_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        for name, value in self.fresh_buffers().items():
            self.register_buffer(name, value, persistent=False)

    def fresh_buffers(self) -> dict[str, torch.Tensor | None]:
        """The derived, never-saved buffers: the bias index and the shift mask (rebuilt on init and on load)."""
        return {
            "relative_position_index": window_relative_position_index(self.window_size),
            "shift_mask": shifted_window_mask(self.grid_size, self.window_size, self.shift_size),
        }

    def forward(self, x: torch.Tensor, shared_bias: torch.Tensor | None = None,
                grid: tuple[int, int] | None = None) -> torch.Tensor:
        """(B, grid**2, C) -> same. `shared_bias` and `grid` are unused (Swin has a table per block at a fixed
        grid): `vit.Block` passes them."""
        batch, length, dim = x.shape
        grid, shift = self.grid_size, self.shift_size
        x = x.view(batch, grid, grid, dim)
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        x = window_reverse(self.attend_in_windows(window_partition(x, self.window_size), batch), self.window_size,
                           grid, grid)
        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        return x.reshape(batch, length, dim)

    def attend_in_windows(self, windows: torch.Tensor, batch: int) -> torch.Tensor:
        """(B * windows, N, C) -> same: multi-head attention within each window, then the output projection."""
        batch_windows, length, dim = windows.shape
        qkv = F.linear(windows, self.qkv.weight, self.qkv_bias_vector())
        q, k, v = qkv.reshape(batch_windows, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        bias = self.own_relative_bias().to(q.dtype)
        if self.shift_mask is not None:  # windows differ: fold them into the heads so the mask broadcasts
            bias = (bias.unsqueeze(0) + self.shift_mask.unsqueeze(1).to(q.dtype)).flatten(0, 1)
            num_windows = batch_windows // batch
            q, k, v = (t.reshape(batch, num_windows * self.num_heads, length, self.head_dim) for t in (q, k, v))
        out = biased_attention(q, k, v, bias, self.attn_drop if self.training else 0.0)
        out = out.reshape(batch_windows, self.num_heads, length, self.head_dim).transpose(1, 2)
        return self.proj_drop(self.proj(out.reshape(batch_windows, length, dim)))


class SwinBlock(Block):
    """`vit.Block` with window attention (shifted by `shift_size`) and no layer scale. The plain attention that
    `Block.__init__` builds is replaced before any weight is drawn or loaded."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, grid_size: int, window_size: int,
                 shift_size: int = 0, *, qkv_bias: str = "full", drop_path: float = 0.0, eps: float = 1e-5,
                 act: str = "gelu", drop: float = 0.0, attn_drop: float = 0.0, layer_id: int = 0):
        super().__init__(dim, num_heads, mlp_dim, qkv_bias=qkv_bias, drop_path=drop_path, eps=eps, act=act,
                         drop=drop, attn_drop=attn_drop, layer_id=layer_id)
        self.attn = WindowAttention(dim, num_heads, grid_size, window_size, shift_size, qkv_bias, attn_drop, drop)


class NormedPatchEmbed(PatchEmbed):
    """Swin's stem: `vit.PatchEmbed` (stride = patch size, 4) followed by a LayerNorm."""

    def __init__(self, patch_size: int, num_channels: int, hidden_size: int, eps: float = 1e-5):
        super().__init__(patch_size, num_channels, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(pixel_values))


class PatchMerging(nn.Module):
    """(B, g*g, C) -> (B, g/2 * g/2, 2C): each 2x2 neighbourhood concatenated as (0,0), (1,0), (0,1), (1,1)
    (row, col offsets), normalised, then projected without bias."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=eps)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor, grid_size: int) -> torch.Tensor:
        batch, _, channels = x.shape
        x = x.view(batch, grid_size, grid_size, channels)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.reshape(batch, -1, 4 * channels)))


class SwinStage(nn.Module):
    """The blocks of one resolution, then patch merging to the next (none after the last stage)."""

    def __init__(self, blocks: list[SwinBlock], grid_size: int, dim: int, downsample: bool, eps: float):
        super().__init__()
        self.grid_size = grid_size
        self.blocks = nn.ModuleList(blocks)
        self.downsample = PatchMerging(dim, eps) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x, self.grid_size)


def build_stages(config) -> nn.ModuleList:
    """Stages with drop-path rates rising linearly from 0 to `drop_path_rate` over all blocks of all stages.
    Every second block of a stage shifts its windows by window_size // 2, except where one window covers the
    stage's whole grid (nothing to shift across)."""
    depths, window = list(config.depths), config.window_size
    rates = torch.linspace(0, config.drop_path_rate, sum(depths)).tolist()
    stages, layer_id = [], 0
    for stage, depth in enumerate(depths):
        dim, grid = config.embed_dim * 2**stage, config.grid_size // 2**stage
        blocks = []
        for index in range(depth):
            shift = window // 2 if index % 2 and grid > window else 0
            blocks.append(SwinBlock(
                dim, config.num_heads[stage], int(dim * config.mlp_ratio), grid, window, shift,
                qkv_bias="full" if config.qkv_bias else "none", drop_path=rates[layer_id], eps=config.layer_norm_eps,
                act=config.hidden_act, drop=config.hidden_dropout_prob,
                attn_drop=config.attention_probs_dropout_prob, layer_id=layer_id,
            ))
            layer_id += 1
        stages.append(SwinStage(blocks, grid, dim, stage < len(depths) - 1, config.layer_norm_eps))
    return nn.ModuleList(stages)


class SwinEncoder(nn.Module):
    """Patch embedding (stride `patch_size`, + LayerNorm) -> optional mask-token blend -> optional absolute
    positions -> stages -> final LayerNorm. Tokens stay in row-major order of each stage's grid; no cls token."""

    def __init__(self, config, use_mask_token: bool = True):
        super().__init__()
        self.config = config
        dim = config.embed_dim
        self.patch_embed = NormedPatchEmbed(config.patch_size, config.num_channels, dim, config.layer_norm_eps)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim)) if use_mask_token else None
        self.absolute_pos_embed = (
            nn.Parameter(torch.zeros(1, config.num_patches, dim)) if config.use_absolute_embeddings else None
        )
        self.pos_drop = nn.Dropout(config.hidden_dropout_prob)
        self.layers = build_stages(config)
        self.norm = nn.LayerNorm(config.num_features, eps=config.layer_norm_eps)

    @property
    def num_blocks(self) -> int:
        return sum(len(stage.blocks) for stage in self.layers)

    def check_image_size(self, pixel_values: torch.Tensor) -> None:
        size, channels = self.config.image_size, self.config.num_channels
        if pixel_values.ndim != 4 or pixel_values.shape[1] != channels:
            raise ValueError(
                f"pixel_values must be (batch, {channels}, height, width), got {tuple(pixel_values.shape)}"
            )
        if tuple(pixel_values.shape[-2:]) != (size, size):
            height, width = pixel_values.shape[-2:]
            raise ValueError(
                f"input image size ({height}x{width}) doesn't match the model ({size}x{size}): resize it with the "
                "model's image processor (Swin's windows and shift masks are laid out for config.image_size)"
            )

    def patch_tokens(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) -> (B, L, D) stride-`patch_size` embeddings, masked ones replaced by `mask_token`."""
        self.check_image_size(pixel_values)
        x = self.patch_embed(pixel_values.to(self.patch_embed.proj.weight.dtype))
        if bool_masked_pos is not None:
            x = substitute_mask_token(x, bool_masked_pos, self.mask_token)
        if self.absolute_pos_embed is not None:
            x = x + self.absolute_pos_embed
        return x

    def forward(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None,
                output_hidden_states: bool = False):
        """Returns the normalised last-stage tokens (B, L_last, num_features) and, if asked, the embeddings plus
        every stage's output (after its patch merging), each (B, L_i, D_i)."""
        x = self.pos_drop(self.patch_tokens(pixel_values, bool_masked_pos))
        hidden_states = [x] if output_hidden_states else None
        for stage in self.layers:
            x = stage(x)
            if output_hidden_states:
                hidden_states.append(x)
        return self.norm(x), (tuple(hidden_states) if output_hidden_states else None)

    @staticmethod
    def feature_map(tokens: torch.Tensor) -> torch.Tensor:
        """(B, h*w, C) row-major tokens of a square grid -> (B, C, h, w)."""
        batch, length, channels = tokens.shape
        side = math.isqrt(length)
        return tokens.transpose(1, 2).reshape(batch, channels, side, side)

    def layer_ids(self) -> dict[int, int]:
        """Layer ids for layer-wise lr decay (SimMIM's Swin rule), by parameter identity: patch embedding and
        mask token 0; block j of stage i is sum(depths[:i]) + j + 1; a stage's patch merging shares the id of
        that stage's last block; everything else here (absolute positions, final norm) is num_blocks + 1, as in
        the official fine-tuning code. The lr scale is decay ** (num_blocks + 1 - id)."""
        ids = {id(p): 0 for p in self.patch_embed.parameters()}
        if self.mask_token is not None:
            ids[id(self.mask_token)] = 0
        for stage in self.layers:
            for block in stage.blocks:
                ids.update({id(p): block.layer_id + 1 for p in block.parameters()})
            if stage.downsample is not None:
                ids.update({id(p): stage.blocks[-1].layer_id + 1 for p in stage.downsample.parameters()})
        top = self.num_blocks + 1
        return {id(p): ids.get(id(p), top) for p in self.parameters()}

    def no_weight_decay_parameters(self) -> list[nn.Parameter]:
        """Rank >= 2 tensors the official recipe keeps out of weight decay: mask token, absolute positions and
        the relative position bias tables (1-D parameters are exempt by rank anyway)."""
        found = [p for p in (self.mask_token, self.absolute_pos_embed) if p is not None]
        return found + [m.relative_position_bias_table for m in self.modules() if isinstance(m, WindowAttention)]


def init_swin_module(module: nn.Module, std: float) -> None:
    """Official Swin/SimMIM init for one module: Linear weights trunc-normal(std) (+-2 absolute bounds), biases
    0; LayerNorm (1, 0); convolutions as PyTorch draws them; relative position tables, mask token and absolute
    positions trunc-normal(std); the derived window buffers rebuilt."""
    if isinstance(module, nn.Linear):
        init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        init.ones_(module.weight)
        init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        init_conv_as_pytorch_default(module)
    elif isinstance(module, WindowAttention):
        init.trunc_normal_(module.relative_position_bias_table, std=std)
        for name, value in module.fresh_buffers().items():
            if value is not None:
                init.copy_(getattr(module, name), value)
    elif isinstance(module, SwinEncoder):
        for param in (module.mask_token, module.absolute_pos_embed):
            if param is not None:
                init.trunc_normal_(param, std=std)
