"""The ViT backbone over video: tubelet patch embedding (Conv3d) and separable space + time position tables in
front of `vit.py`'s blocks, cls token and final norm (the same `ViTEncoder.transform`, not a second transformer).

Input pixel_values are (B, T, C, H, W) as transformers' VideoMAE takes them. Tokens are in (t, h, w) row-major
order, time slowest, which is the order of `bool_masked_pos` (B, t*h*w) everywhere.

Position embeddings: one learned (h*w, D) spatial table plus one learned (t, D) temporal table, summed per token,
and a learned cls position, as MaskFeat's video ViT/MViT code (`SEP_POS_EMBED`). Separable tables need h*w + t rows
instead of h*w*t, and a clip of another size or length resamples each table on its own axis.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .vit import ViTEncoder, resize_position_table


class TubeletEmbed(nn.Module):
    """Non-overlapping tubelets (tubelet_size frames x patch_size^2 pixels) by a strided Conv3d:
    (B, T, C, H, W) -> (B, T/ts * H/p * W/p, D)."""

    def __init__(self, tubelet_size: int, patch_size: int, num_channels: int, hidden_size: int):
        super().__init__()
        self.tubelet_size = tubelet_size
        self.patch_size = patch_size
        kernel = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(num_channels, hidden_size, kernel_size=kernel, stride=kernel)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.proj(pixel_values.transpose(1, 2)).flatten(2).transpose(1, 2)


class VideoViTEncoder(ViTEncoder):
    """`ViTEncoder` whose patch embedding and positions see space-time: `forward`, `prepend_cls` and
    `transform` (blocks + final norm) are the image encoder's; only the token-making steps differ."""

    def __init__(self, config, add_final_norm: bool = True):
        super().__init__(config, add_final_norm=add_final_norm)
        dim = config.hidden_size
        self.temporal_size = config.num_frames // config.tubelet_size
        self.patch_embed = TubeletEmbed(config.tubelet_size, config.patch_size, config.num_channels, dim)
        self.pos_embed = None  # the image encoder's joint table is replaced by the separable ones
        if config.position_embedding_type == "none":
            self.pos_embed_spatial = self.pos_embed_temporal = self.pos_embed_class = None
        else:
            self.pos_embed_spatial = nn.Parameter(torch.zeros(1, self.grid_size**2, dim))
            self.pos_embed_temporal = nn.Parameter(torch.zeros(1, self.temporal_size, dim))
            self.pos_embed_class = nn.Parameter(torch.zeros(1, 1, dim))

    def check_video_size(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool) -> tuple[int, int, int]:
        """(t, h, w) token grid of (B, T, C, H, W) input, or a ValueError naming the fix."""
        config = self.config
        if pixel_values.ndim != 5 or pixel_values.shape[2] != config.num_channels:
            raise ValueError(
                f"pixel_values must be (batch, frames, {config.num_channels}, height, width), as VideoMAE takes them; "
                f"got {tuple(pixel_values.shape)}"
            )
        frames, height, width = pixel_values.shape[1], pixel_values.shape[-2], pixel_values.shape[-1]
        if frames % config.tubelet_size or height % config.patch_size or width % config.patch_size:
            raise ValueError(
                f"a {frames}-frame {height}x{width} clip does not split into tubelets of {config.tubelet_size} "
                f"frames x {config.patch_size}x{config.patch_size} pixels; sample frames and resize with the model's "
                "processor"
            )
        same = (frames, height, width) == (config.num_frames, config.image_size, config.image_size)
        if not same and self.pos_embed_spatial is not None and not interpolate_pos_encoding:
            raise ValueError(
                f"input clip ({frames} frames, {height}x{width}) doesn't match the model ({config.num_frames} frames, "
                f"{config.image_size}x{config.image_size}): use the model's processor, or pass "
                "interpolate_pos_encoding=True to resample the position embeddings"
            )
        return frames // config.tubelet_size, height // config.patch_size, width // config.patch_size

    def space_time_positions(self, grid: tuple[int, int, int]) -> torch.Tensor:
        """(1, t*h*w, D): spatial row + temporal row of every token, each table resampled to the grid if needed."""
        temporal, height, width = grid
        spatial = self.pos_embed_spatial
        if (height, width) != (self.grid_size, self.grid_size):
            padded = torch.cat([spatial[:, :1], spatial], dim=1)  # resize_position_table keeps a leading cls row
            spatial = resize_position_table(padded, (height, width))[:, 1:]
        time = self.pos_embed_temporal
        if temporal != self.temporal_size:
            time = F.interpolate(time.transpose(1, 2), size=temporal, mode="linear", align_corners=False)
            time = time.transpose(1, 2)
        return (time[:, :, None, :] + spatial[:, None, :, :]).flatten(1, 2)

    def patch_tokens(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None,
                     interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """(B, T, C, H, W) -> (B, L, D) tubelet embeddings, masked ones replaced by `mask_token`, positions added."""
        grid = self.check_video_size(pixel_values, interpolate_pos_encoding)
        x = self.patch_embed(pixel_values.to(self.patch_embed.proj.weight.dtype))
        if bool_masked_pos is not None:
            if self.mask_token is None:
                raise ValueError("this encoder has no mask token (the classifier); it cannot take bool_masked_pos")
            if bool_masked_pos.shape != x.shape[:2]:
                raise ValueError(
                    f"bool_masked_pos must be (batch, t*h*w)={tuple(x.shape[:2])}, got {tuple(bool_masked_pos.shape)}"
                )
            w = bool_masked_pos.unsqueeze(-1).type_as(x)
            x = x * (1 - w) + self.mask_token.to(x.dtype) * w
        if self.pos_embed_spatial is not None:
            x = x + self.space_time_positions(grid).to(x.dtype)
        return x

    def prepend_cls(self, tokens: torch.Tensor) -> torch.Tensor:
        cls = self.cls_token
        if self.pos_embed_class is not None:
            cls = cls + self.pos_embed_class
        return torch.cat([cls.expand(tokens.shape[0], -1, -1).to(tokens.dtype), tokens], dim=1)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed_spatial", "pos_embed_temporal", "pos_embed_class", "cls_token"}
