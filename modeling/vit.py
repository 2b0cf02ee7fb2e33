"""The one ViT backbone of the five methods: patch embedding, SDPA attention, pre-norm blocks with layer scale and
drop path, relative position bias, fixed sin-cos tables.

It is a vocabulary with switches (see `configuration_vit.MimViTConfig`), not a model: each method's modeling file
composes these pieces into `encode -> predict -> loss`. Parameter names follow the official timm/BEiT layouts
(`patch_embed.proj`, `blocks.{i}.attn.qkv`, `gamma_1`, ...) so checkpoint conversion is a short key map.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer


def sincos_position_table(grid_height: int, grid_width: int, dim: int, order: str = "mae") -> torch.Tensor:
    """Fixed 2-D sin-cos position table with a leading all-zero row for the cls token.

    Returns (1 + H*W, dim), patch rows in row-major order. Channel quarters are
    [sin(col), cos(col), sin(row), cos(row)] for order="mae" and [sin(row), cos(row), sin(col), cos(col)] for "cae".
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embeddings need a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(
        torch.arange(grid_height, dtype=torch.float64), torch.arange(grid_width, dtype=torch.float64), indexing="ij"
    )
    row_angles = rows.reshape(-1, 1) * omega
    col_angles = cols.reshape(-1, 1) * omega
    if order == "mae":
        halves = [col_angles.sin(), col_angles.cos(), row_angles.sin(), row_angles.cos()]
    elif order == "cae":
        halves = [row_angles.sin(), row_angles.cos(), col_angles.sin(), col_angles.cos()]
    else:
        raise ValueError(f"unknown sin-cos order {order!r}; use 'mae' or 'cae'")
    table = torch.cat(halves, dim=1)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), table]).float()


def resize_position_table(table: torch.Tensor, new_grid: tuple[int, int]) -> torch.Tensor:
    """Bicubically resample the patch part of a (1, 1 + L, D) table to another grid; the cls row is kept."""
    cls_row, patch_rows = table[:, :1], table[:, 1:]
    old = int(math.isqrt(patch_rows.shape[1]))
    if tuple(new_grid) == (old, old):
        return table
    grid = patch_rows.reshape(1, old, old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=new_grid, mode="bicubic", align_corners=False).to(table.dtype)
    return torch.cat([cls_row, grid.permute(0, 2, 3, 1).reshape(1, -1, table.shape[-1])], dim=1)


def relative_position_index(grid_height: int, grid_width: int) -> torch.Tensor:
    """BEiT's (1 + L, 1 + L) index into a ((2H-1)(2W-1) + 3)-row bias table.

    Patch pairs index by their (row, col) offset; the last three rows are cls->patch, patch->cls and cls->cls.
    """
    coords = torch.stack(
        torch.meshgrid(torch.arange(grid_height), torch.arange(grid_width), indexing="ij")
    ).flatten(1)  # (2, L)
    offsets = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # (L, L, 2)
    offsets[..., 0] += grid_height - 1
    offsets[..., 1] += grid_width - 1
    num_pair_rows = (2 * grid_height - 1) * (2 * grid_width - 1)
    length = grid_height * grid_width
    index = torch.zeros(length + 1, length + 1, dtype=torch.long)
    index[1:, 1:] = offsets[..., 0] * (2 * grid_width - 1) + offsets[..., 1]
    index[0, :] = num_pair_rows
    index[:, 0] = num_pair_rows + 1
    index[0, 0] = num_pair_rows + 2
    return index


class RelativePositionBias(nn.Module):
    """A learned (num_pairs + 3, heads) table turned into the (heads, 1+L, 1+L) bias added to attention logits,
    resampled for another patch grid when one is given (`interpolate_pos_encoding=True`)."""

    def __init__(self, grid_size: int, num_heads: int):
        super().__init__()
        self.grid_size = grid_size
        num_rows = (2 * grid_size - 1) ** 2 + 3
        self.relative_position_bias_table = nn.Parameter(torch.zeros(num_rows, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(grid_size, grid_size), persistent=False)

    def forward(self, grid: tuple[int, int] | None = None) -> torch.Tensor:
        return relative_bias_for_grid(self.relative_position_bias_table, self.relative_position_index, grid)


def gather_relative_bias(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(rows, heads) table and (N, N) index -> (heads, N, N) additive attention bias."""
    length = index.shape[0]
    return table[index.reshape(-1)].reshape(length, length, -1).permute(2, 0, 1)


def relative_bias_for_grid(table: torch.Tensor, index: torch.Tensor, grid: tuple[int, int] | None) -> torch.Tensor:
    """The (heads, 1+L, 1+L) bias of a table trained on the square grid `index` was built for, on `grid` (h, w):
    the table itself at its own grid (or grid None), else the table resampled bicubically on the offset grid
    (`resize_relative_position_table`) and gathered with the index of the new grid, as transformers' BEiT does."""
    side = int(math.isqrt(index.shape[0] - 1))
    if grid is None or tuple(grid) == (side, side):
        return gather_relative_bias(table, index)
    new_index = relative_position_index(*grid).to(index.device)
    return gather_relative_bias(resize_relative_position_table(table, tuple(grid)), new_index)


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample, rescaling the survivors."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class PatchEmbed(nn.Module):
    """Non-overlapping patches by a strided conv: (B, C, H, W) -> (B, H/p * W/p, D)."""

    def __init__(self, patch_size: int, num_channels: int, hidden_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(num_channels, hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.proj(pixel_values).flatten(2).transpose(1, 2)


def qv_biases(dim: int, qkv_bias: str) -> tuple[nn.Parameter | None, nn.Parameter | None]:
    """(q_bias, v_bias) for qkv_bias "qv" (BEiT: learnable query and value biases, the key bias fixed at zero),
    else (None, None)."""
    if qkv_bias == "qv":
        return nn.Parameter(torch.zeros(dim)), nn.Parameter(torch.zeros(dim))
    return None, None


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection, run by `scaled_dot_product_attention`.

    qkv_bias "full" keeps the Linear's own bias; "qv" stores q_bias and v_bias and fixes the key bias at zero
    (BEiT), which is the same as a split layout whose key projection has no bias.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: str = "full", attn_drop: float = 0.0,
                 proj_drop: float = 0.0, relative_grid_size: int | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias == "full")
        self.q_bias, self.v_bias = qv_biases(dim, qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if relative_grid_size is not None:  # per-layer relative position bias (BEiT fine-tuning)
            num_rows = (2 * relative_grid_size - 1) ** 2 + 3
            self.relative_position_bias_table = nn.Parameter(torch.zeros(num_rows, num_heads))
            self.register_buffer(
                "relative_position_index",
                relative_position_index(relative_grid_size, relative_grid_size),
                persistent=False,
            )
        else:
            self.relative_position_bias_table = None

    def qkv_bias_vector(self) -> torch.Tensor | None:
        if self.q_bias is None:
            return self.qkv.bias
        return torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])

    def own_relative_bias(self, grid: tuple[int, int] | None = None) -> torch.Tensor | None:
        if self.relative_position_bias_table is None:
            return None
        return relative_bias_for_grid(self.relative_position_bias_table, self.relative_position_index, grid)

    def forward(self, x: torch.Tensor, shared_bias: torch.Tensor | None = None,
                grid: tuple[int, int] | None = None) -> torch.Tensor:
        """x (B, 1+L, D); `grid` (h, w) is the patch grid of x when it differs from the trained one."""
        batch, length, dim = x.shape
        qkv = F.linear(x, self.qkv.weight, self.qkv_bias_vector())
        q, k, v = qkv.reshape(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.own_relative_bias(grid)
        if shared_bias is not None:
            bias = shared_bias if bias is None else bias + shared_bias
        if bias is not None:
            if bias.shape[-1] != length:
                raise ValueError(
                    f"relative position bias covers {bias.shape[-1]} tokens but the sequence has {length}: "
                    "relative position bias needs the full patch grid (no token dropping); at another image size "
                    "pass interpolate_pos_encoding=True"
                )
            bias = bias.to(q.dtype)
        out = biased_attention(q, k, v, bias, self.attn_drop if self.training else 0.0)
        out = out.transpose(1, 2).reshape(batch, length, dim)
        return self.proj_drop(self.proj(out))


def biased_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None,
                     dropout: float = 0.0) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v for (B, H, N, d) x3 and an optional (H, N, N) bias: SDPA, or
    `attention_with_learned_bias` where SDPA cannot return the gradient of a trainable bias."""
    if (bias is not None and bias.requires_grad and torch.is_grad_enabled()
            and not sdpa_returns_bias_gradient(q.device)):
        return attention_with_learned_bias(q, k, v, bias, dropout)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=None if bias is None else bias.unsqueeze(0), dropout_p=dropout
    )


def sdpa_returns_bias_gradient(device: torch.device) -> bool:
    """Whether SDPA has a fused kernel that returns a gradient for a float `attn_mask` on this device.

    CUDA's memory-efficient kernel does (its backward takes `grad_input_mask` for q, k, v and the bias), so a
    trainable relative position bias stays on SDPA there and never materialises the (B, H, N, N) probabilities.
    The CPU flash kernel's backward returns q, k, v only: SDPA would fall back to its math path, which
    `attention_with_learned_bias` beats.
    """
    return device.type == "cuda"


def attention_with_learned_bias(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
                                dropout: float = 0.0) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v for a bias that needs a gradient: (B, H, N, d) x3 and (H, N, N).

    Used where SDPA's fused kernels cannot return a gradient for `attn_mask` (see `sdpa_returns_bias_gradient`),
    so with a trainable relative position bias SDPA would fall back to its math path. Two plain bmm calls with
    the scale on q and the bias added by broadcasting compute the same attention 11-17% faster on CPU, forward
    plus backward (ViT-Tiny/Small/Base shapes, torch 2.13, one thread; folding the bias into a baddbmm is
    slower: it must first copy the bias out to B*H matrices). Same result to fp32 rounding.
    """
    batch, heads, length, head_dim = q.shape
    logits = torch.bmm(
        (q * head_dim**-0.5).reshape(batch * heads, length, head_dim),
        k.reshape(batch * heads, length, head_dim).transpose(1, 2),
    ).view(batch, heads, length, length) + bias
    probs = logits.softmax(dim=-1)
    if dropout > 0:
        probs = F.dropout(probs, p=dropout)
    out = torch.bmm(probs.view(batch * heads, length, length), v.reshape(batch * heads, length, head_dim))
    return out.view(batch, heads, length, head_dim)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, act: str = "gelu", drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = ACT2FN[act]
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(GradientCheckpointingLayer):
    """Pre-norm transformer block: x + DropPath(gamma_1 * Attn(LN(x))), then x + DropPath(gamma_2 * MLP(LN(x))).
    A transformers `GradientCheckpointingLayer`, so `model.gradient_checkpointing_enable()` recomputes it in the
    backward pass instead of keeping its activations (drop-path masks replay: the RNG state is restored)."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, *, qkv_bias: str = "full", layer_scale: float = 0.0,
                 drop_path: float = 0.0, eps: float = 1e-6, act: str = "gelu", drop: float = 0.0,
                 attn_drop: float = 0.0, relative_grid_size: int | None = None, layer_id: int = 0):
        super().__init__()
        self.layer_id = layer_id  # 0-based; used by depth-scaled inits and layer-wise lr decay
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop, relative_grid_size)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim, act, drop)
        if layer_scale > 0:
            self.gamma_1 = nn.Parameter(torch.full((dim,), float(layer_scale)))
            self.gamma_2 = nn.Parameter(torch.full((dim,), float(layer_scale)))
        else:
            self.gamma_1 = self.gamma_2 = None

    def forward(self, x: torch.Tensor, shared_bias: torch.Tensor | None = None,
                grid: tuple[int, int] | None = None) -> torch.Tensor:
        attn = self.attn(self.norm1(x), shared_bias, grid)
        if self.gamma_1 is not None:
            attn = attn * self.gamma_1
        x = x + self.drop_path(attn)
        mlp = self.mlp(self.norm2(x))
        if self.gamma_2 is not None:
            mlp = mlp * self.gamma_2
        return x + self.drop_path(mlp)


def build_blocks(config, depth: int | None = None, dim: int | None = None, num_heads: int | None = None,
                 mlp_dim: int | None = None, drop_path_rate: float | None = None, relative_grid_size=None):
    """Blocks with drop-path rates rising linearly from 0 to `drop_path_rate` over depth."""
    depth = config.num_hidden_layers if depth is None else depth
    rate = config.drop_path_rate if drop_path_rate is None else drop_path_rate
    rates = torch.linspace(0, rate, depth).tolist() if depth > 1 else [rate] * depth
    return nn.ModuleList(
        Block(
            dim or config.hidden_size,
            num_heads or config.num_attention_heads,
            mlp_dim or config.intermediate_size,
            qkv_bias=config.qkv_bias,
            layer_scale=config.layer_scale_init_value,
            drop_path=rates[i],
            eps=config.layer_norm_eps,
            act=config.hidden_act,
            drop=config.hidden_dropout_prob,
            attn_drop=config.attention_probs_dropout_prob,
            relative_grid_size=relative_grid_size,
            layer_id=i,
        )
        for i in range(depth)
    )


def init_conv_as_pytorch_default(conv: nn.Module) -> None:
    """PyTorch's own convolution draw (kaiming-uniform a=sqrt(5), bias U(+-1/sqrt(fan_in))), for the convolutions
    the official code builds after its own init (SimMIM's head) or never re-initialises (Swin's patch embedding)."""
    init.kaiming_uniform_(conv.weight, a=math.sqrt(5))
    if conv.bias is not None:
        bound = 1.0 / math.sqrt(conv.weight[0].numel())
        init.uniform_(conv.bias, -bound, bound)


def substitute_mask_token(x: torch.Tensor, bool_masked_pos: torch.Tensor, mask_token: nn.Parameter | None):
    """(B, L, D) patch embeddings with the masked ones, (B, L) True, replaced by the (1, 1, D) `mask_token`:
    x * (1 - w) + token * w, as BEiT and SimMIM write it."""
    if mask_token is None:
        raise ValueError("this encoder has no mask token (config.use_mask_token=False, or a classifier); it cannot "
                         "take bool_masked_pos")
    if bool_masked_pos.shape != x.shape[:2]:
        raise ValueError(
            f"bool_masked_pos must be (batch, num_patches)={tuple(x.shape[:2])}, got {tuple(bool_masked_pos.shape)}"
        )
    w = bool_masked_pos.unsqueeze(-1).type_as(x)
    return x * (1 - w) + mask_token.to(x.dtype) * w


class ViTEncoder(nn.Module):
    """The encoder all five methods share.

    `forward` = `patch_tokens` (embed, mask-token blend, positions) -> optional gather of kept tokens ->
    `prepend_cls` -> `transform` (blocks + final norm). Methods that drop tokens (MAE, CAE) call the steps.
    """

    def __init__(self, config, add_final_norm: bool = True):
        super().__init__()
        self.config = config
        dim, grid = config.hidden_size, config.image_size // config.patch_size
        self.grid_size = grid
        self.patch_embed = PatchEmbed(config.patch_size, config.num_channels, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim)) if config.use_mask_token else None
        if config.position_embedding_type == "none":
            self.pos_embed = None
        else:
            fixed = config.position_embedding_type.startswith("sincos")
            self.pos_embed = nn.Parameter(
                torch.zeros(1, grid * grid + 1, dim),
                requires_grad=not fixed or bool(config.train_position_embeddings),
            )
        self.pos_drop = nn.Dropout(config.hidden_dropout_prob)
        shared = config.relative_position_bias == "shared"
        self.rel_pos_bias = RelativePositionBias(grid, config.num_attention_heads) if shared else None
        per_layer_grid = grid if config.relative_position_bias == "per_layer" else None
        self.blocks = build_blocks(config, relative_grid_size=per_layer_grid)
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps) if add_final_norm else None

    def position_table(self) -> torch.Tensor:
        """The sin-cos table this config describes, (1, 1 + L, D), for (re)initialising `pos_embed`."""
        order = self.config.position_embedding_type.split("_")[-1]
        return sincos_position_table(self.grid_size, self.grid_size, self.config.hidden_size, order).unsqueeze(0)

    def check_image_size(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool) -> tuple[int, int]:
        height, width = pixel_values.shape[-2:]
        patch = self.config.patch_size
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"pixel_values must be (batch, {self.config.num_channels}, height, width), got {tuple(pixel_values.shape)}"
            )
        if height % patch or width % patch:
            raise ValueError(f"image size {height}x{width} is not divisible by patch_size={patch}; resize or crop it")
        size = self.config.image_size
        fixed_grid = self.pos_embed is not None or self.config.relative_position_bias != "none"
        if (height, width) != (size, size) and fixed_grid and not interpolate_pos_encoding:
            raise ValueError(
                f"input image size ({height}x{width}) doesn't match the model ({size}x{size}): resize it with the "
                "model's image processor, or pass interpolate_pos_encoding=True to resample the position embeddings "
                "(absolute, and relative position bias tables)"
            )
        return height // patch, width // patch

    def patch_tokens(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None,
                     interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """(B, C, H, W) -> (B, L, D) patch embeddings, masked ones replaced by `mask_token`, positions added."""
        grid = self.check_image_size(pixel_values, interpolate_pos_encoding)
        x = self.patch_embed(pixel_values.to(self.patch_embed.proj.weight.dtype))
        if bool_masked_pos is not None:
            x = substitute_mask_token(x, bool_masked_pos, self.mask_token)
        if self.pos_embed is not None:
            x = x + self.resized_pos_embed(grid)[:, 1:]
        return x

    def resized_pos_embed(self, grid: tuple[int, int]) -> torch.Tensor:
        if grid == (self.grid_size, self.grid_size):
            return self.pos_embed
        return resize_position_table(self.pos_embed, grid)

    def prepend_cls(self, tokens: torch.Tensor) -> torch.Tensor:
        cls = self.cls_token
        if self.pos_embed is not None:
            cls = cls + self.pos_embed[:, :1]
        return torch.cat([cls.expand(tokens.shape[0], -1, -1).to(tokens.dtype), tokens], dim=1)

    def transform(self, x: torch.Tensor, output_hidden_states: bool = False, grid: tuple[int, int] | None = None):
        """Blocks then the final norm. Returns (last_hidden_state, hidden_states or None). `grid` (h, w): the patch
        grid of all of x's tokens, for relative position bias at another image size."""
        x = self.pos_drop(x)
        shared_bias = self.rel_pos_bias(grid) if self.rel_pos_bias is not None else None
        hidden_states = [x] if output_hidden_states else None
        for block in self.blocks:
            x = block(x, shared_bias, grid)
            if output_hidden_states:
                hidden_states.append(x)
        if self.norm is not None:
            x = self.norm(x)
        return x, (tuple(hidden_states) if output_hidden_states else None)

    def forward(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None,
                ids_keep: torch.Tensor | None = None, interpolate_pos_encoding: bool = False,
                output_hidden_states: bool = False):
        """Encode all patches, or only `ids_keep` (B, L_keep) of them. Returns (B, 1 + L', D) and hidden states."""
        x = self.patch_tokens(pixel_values, bool_masked_pos, interpolate_pos_encoding)
        grid = None
        if ids_keep is not None:
            x = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        elif interpolate_pos_encoding:
            grid = (pixel_values.shape[-2] // self.config.patch_size, pixel_values.shape[-1] // self.config.patch_size)
        return self.transform(self.prepend_cls(x), output_hidden_states, grid)


def pool_features(hidden_states: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, 1 + L, D) -> (B, D): the cls token, or the mean of the patch tokens (cls excluded)."""
    return hidden_states[:, 0] if pooling == "cls" else hidden_states[:, 1:].mean(dim=1)


def patchify(pixel_values: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, L, p*p*C), each patch ordered (row, col, channel) with channel fastest."""
    batch, channels, height, width = pixel_values.shape
    h, w = height // patch_size, width // patch_size
    x = pixel_values.reshape(batch, channels, h, patch_size, w, patch_size)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(batch, h * w, patch_size * patch_size * channels)


def unpatchify(patches: torch.Tensor, patch_size: int, num_channels: int, grid: tuple[int, int] | None = None):
    """Inverse of `patchify`: (B, L, p*p*C) -> (B, C, H, W); a square grid unless `grid` is given."""
    batch, length, _ = patches.shape
    h, w = grid if grid is not None else (int(math.isqrt(length)),) * 2
    x = patches.reshape(batch, h, w, patch_size, patch_size, num_channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(batch, num_channels, h * patch_size, w * patch_size)


def resize_relative_position_table(table: torch.Tensor, new_grid: tuple[int, int],
                                   num_cls_rows: int = 3) -> torch.Tensor:
    """Resample a BEiT relative position bias table ((2g-1)^2 + 3, heads) for another patch grid.

    The (2g-1) x (2g-1) offset part is interpolated bicubically per head, with the extreme offsets mapped onto the
    new extreme offsets (align_corners) so offset 0 stays at the centre; the last 3 rows (cls -> patch,
    patch -> cls, cls <-> cls) are kept as they are. The official BEiT fine-tuning code resamples instead on a
    geometric-progression (denser near offset 0) grid with scipy's cubic interpolation; the two agree on the
    identity and differ slightly elsewhere. Returns the table itself when the grid is unchanged.
    `num_cls_rows=0` for tables without cls rows (Swin's window tables, where the grid is the window).
    """
    num_pairs, num_heads = table.shape[0] - num_cls_rows, table.shape[1]
    old_side = int(math.isqrt(num_pairs))
    if old_side * old_side != num_pairs or old_side % 2 == 0:
        raise ValueError(f"a relative position bias table has (2g-1)^2 + {num_cls_rows} rows; got {table.shape[0]}")
    new_side = (2 * new_grid[0] - 1, 2 * new_grid[1] - 1)
    if new_side == (old_side, old_side):
        return table
    pairs = table[:num_pairs].t().reshape(1, num_heads, old_side, old_side)
    pairs = F.interpolate(pairs.float(), size=new_side, mode="bicubic", align_corners=True).to(table.dtype)
    return torch.cat([pairs.reshape(num_heads, -1).t(), table[num_pairs:]])


# ------------------------------------------------------------------------------------------- init pieces
# The cases every method's `_init_weights` shares. The `transformers.initialization` functions leave tensors loaded
# from a checkpoint alone.


def zero_bias(module: nn.Module) -> None:
    if module.bias is not None:
        init.zeros_(module.bias)


def init_layer_norm(norm: nn.LayerNorm) -> None:
    """The identity: weight 1, bias 0."""
    init.ones_(norm.weight)
    init.zeros_(norm.bias)
