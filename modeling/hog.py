"""MaskFeat's regression target: per-patch histograms of oriented gradients (HOG), as SlowFast's image model.

Pipeline, per colour channel: reflect-pad 1 px -> Sobel-like 3x3 cross-correlation for gx, gy ->
magnitude and unsigned orientation `atan2(gx, gy)` (argument order as the official code) -> hard vote of the
magnitude into one of `nbins` bins (optionally weighted by a tiled Gaussian window, mmpretrain's variant) ->
sum over non-overlapping `cell_size` cells -> L2-normalise each cell's histogram per channel -> group the cells of
each patch into one vector, index `c * nbins * k * k + bin * k * k + cell_row * k + cell_col` with k = patch/cell.

It runs on the model's normalised `pixel_values` as the official code does; there is nothing to un-normalise,
because a per-channel affine map scales every magnitude of that channel alike (and shifts no gradient), and the
per-cell, per-channel L2 normalisation removes that scale. That holds in exact arithmetic only: where an 8-bit
image has gx = 0 exactly (a horizontal edge), normalised fp32 inputs leave gx = +-1e-7 of rounding, and its sign
sends the vote to bin 0 or bin 8. The official code has the same tie-break noise; we keep its arithmetic for parity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_window_kernel(window_size: int) -> torch.Tensor:
    """(window_size, window_size) Gaussian, std = window_size // 2, centred between the middle pixels, sum 1.

    mmpretrain multiplies each pixel's gradient magnitude by this, tiled over the image, so each patch is
    centre-weighted.
    """
    offsets = torch.arange(window_size, dtype=torch.float32)
    offsets = (offsets - offsets.mean()) / (window_size // 2)
    profile = torch.exp(-0.5 * offsets**2)
    kernel = torch.outer(profile, profile)
    return kernel / kernel.sum()


def sobel_kernels(num_channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The official fixed filters as grouped-conv weights, (C, 1, 3, 3) each. Cross-correlation with kx gives
    left-minus-right, with ky = kx^T top-minus-bottom (the sign is irrelevant for unsigned orientations)."""
    kernel_x = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
    kernel_y = kernel_x.t().contiguous()
    return (
        kernel_x.view(1, 1, 3, 3).repeat(num_channels, 1, 1, 1),
        kernel_y.view(1, 1, 3, 3).repeat(num_channels, 1, 1, 1),
    )


def hog_cell_histograms(
    images: torch.Tensor,
    kernel_x: torch.Tensor,
    kernel_y: torch.Tensor,
    nbins: int = 9,
    cell_size: int = 8,
    window: torch.Tensor | None = None,
    normalize_cells: bool = True,
) -> torch.Tensor:
    """Per-cell, per-channel orientation histograms.

    Args:
        images: (B, C, H, W) float; H and W multiples of `cell_size` (and of the window size, if any).
        kernel_x, kernel_y: (C, 1, 3, 3) filters from `sobel_kernels`.
        window: optional (w, w) magnitude weights, tiled over the image.
        normalize_cells: L2-normalise each (cell, channel) histogram over its bins (the official target).

    Returns:
        (B, C, nbins, H / cell_size, W / cell_size) in the dtype of `images`.
    """
    batch, channels, height, width = images.shape
    padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
    grad_x = F.conv2d(padded, kernel_x.to(images.dtype), groups=channels)
    grad_y = F.conv2d(padded, kernel_y.to(images.dtype), groups=channels)
    magnitude = torch.sqrt(grad_x**2 + grad_y**2)
    # atan2(gx, gy) in [-pi, pi] -> [-nbins, nbins]; floor then Python-style modulo folds opposite directions
    # together (unsigned orientation): +-nbins (a horizontal edge, gx = 0) is bin 0. Same op order as the official
    # code, so values on a bin boundary round the same way.
    scaled_phase = torch.atan2(grad_x, grad_y) / math.pi * nbins
    bin_index = torch.remainder(torch.floor(scaled_phase).long(), nbins)
    if window is not None:
        window_size = window.shape[-1]
        magnitude = magnitude * window.to(magnitude).repeat(height // window_size, width // window_size)
    votes = torch.zeros(batch, channels, nbins, height, width, dtype=magnitude.dtype, device=magnitude.device)
    votes.scatter_add_(2, bin_index.unsqueeze(2), magnitude.unsqueeze(2))
    cells = votes.view(batch, channels, nbins, height // cell_size, cell_size, width // cell_size, cell_size)
    histograms = cells.sum(dim=(4, 6))
    if normalize_cells:
        histograms = F.normalize(histograms, p=2, dim=2, eps=1e-12)
    return histograms


def cell_histograms_to_patch_targets(histograms: torch.Tensor, cells_per_side: int) -> torch.Tensor:
    """Group each patch's k x k cells (k = cells_per_side) into one target vector, patches in row-major order.

    (B, C, nbins, Hc, Wc) -> (B, (Hc/k) * (Wc/k), C * nbins * k * k), index c*nbins*k*k + bin*k*k + row*k + col.
    """
    batch, channels, nbins, cells_high, cells_wide = histograms.shape
    k = cells_per_side
    grid = histograms.reshape(batch, channels * nbins, cells_high // k, k, cells_wide // k, k)
    # (B, C*nbins, patch_row, cell_row, patch_col, cell_col) -> (B, patch_row, patch_col, C*nbins, cell_row, cell_col)
    grid = grid.permute(0, 2, 4, 1, 3, 5)
    return grid.reshape(batch, (cells_high // k) * (cells_wide // k), channels * nbins * k * k)


class HOGTarget(torch.nn.Module):
    """Frozen HOG target of MaskFeat: (B, C, H, W) pixel_values -> (B, L, C * nbins * (patch/cell)^2) targets.

    With the defaults (nbins 9, cell 8, patch 16, RGB) each patch gets 108 values. It always runs without grad
    and in fp32, also under autocast, since atan2 and the normalisation are fragile in half precision.

    Args:
        nbins: orientation bins over 180 degrees (unsigned).
        cell_size: pixels per cell side; histograms are pooled per cell.
        patch_size: pixels per patch side; must be a multiple of cell_size.
        gaussian_window: 0/None = no weighting (official SlowFast image model, our default); a positive int w
            multiplies the magnitudes by a w x w Gaussian (std w // 2) tiled over the image (mmpretrain uses 16).
        normalize_cells: L2-normalise each cell's histogram per channel (the official target; off only for study).
        num_channels: colour channels of the input.
    """

    def __init__(
        self,
        nbins: int = 9,
        cell_size: int = 8,
        patch_size: int = 16,
        gaussian_window: int | None = 0,
        normalize_cells: bool = True,
        num_channels: int = 3,
    ):
        super().__init__()
        if patch_size % cell_size != 0:
            raise ValueError(
                f"patch_size ({patch_size}) must be a multiple of cell_size ({cell_size}); pick a cell_size that "
                f"divides the patch, e.g. cell_size={patch_size // 2}."
            )
        if gaussian_window is not None and gaussian_window < 0:
            raise ValueError(f"gaussian_window must be 0/None (off) or a positive size, got {gaussian_window}.")
        self.nbins = nbins
        self.cell_size = cell_size
        self.patch_size = patch_size
        self.gaussian_window = gaussian_window or 0
        self.normalize_cells = normalize_cells
        self.num_channels = num_channels
        self.cells_per_side = patch_size // cell_size
        kernel_x, kernel_y = sobel_kernels(num_channels)
        # Fixed constants, rebuilt at construction: never in a state dict, so checkpoints stay those of the ViT.
        self.register_buffer("kernel_x", kernel_x, persistent=False)
        self.register_buffer("kernel_y", kernel_y, persistent=False)
        if self.gaussian_window:
            self.register_buffer("window", gaussian_window_kernel(self.gaussian_window), persistent=False)
        else:
            self.register_buffer("window", None, persistent=False)

    @property
    def target_dim(self) -> int:
        """Length of one patch's target vector (108 for the defaults)."""
        return self.num_channels * self.nbins * self.cells_per_side**2

    def _check_input(self, pixel_values: torch.Tensor) -> None:
        if pixel_values.dim() != 4 or pixel_values.shape[1] != self.num_channels:
            raise ValueError(
                f"HOGTarget expects (B, {self.num_channels}, H, W) images, got shape {tuple(pixel_values.shape)}; "
                f"pass num_channels={pixel_values.shape[1] if pixel_values.dim() == 4 else '?'} or fix the layout."
            )
        height, width = pixel_values.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"image size {height}x{width} is not divisible by patch_size={self.patch_size}; resize or crop the "
                f"images to a multiple of {self.patch_size} (e.g. {height - height % self.patch_size}x"
                f"{width - width % self.patch_size})."
            )
        if self.gaussian_window and (height % self.gaussian_window or width % self.gaussian_window):
            raise ValueError(
                f"image size {height}x{width} is not divisible by gaussian_window={self.gaussian_window}; the window "
                f"is tiled over the image, so use a window that divides both sides (e.g. the patch size) or 0."
            )

    def cell_histograms(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, nbins, H / cell, W / cell) fp32 histograms, e.g. for `render_hog_glyphs`."""
        self._check_input(pixel_values)
        with torch.no_grad(), torch.autocast(device_type=pixel_values.device.type, enabled=False):
            return hog_cell_histograms(
                pixel_values.float(),
                self.kernel_x,
                self.kernel_y,
                nbins=self.nbins,
                cell_size=self.cell_size,
                window=self.window,
                normalize_cells=self.normalize_cells,
            )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, L, target_dim) fp32, L = (H / patch) * (W / patch) in row-major patch order."""
        histograms = self.cell_histograms(pixel_values)
        return cell_histograms_to_patch_targets(histograms, self.cells_per_side)

    def extra_repr(self) -> str:
        return (
            f"nbins={self.nbins}, cell_size={self.cell_size}, patch_size={self.patch_size}, "
            f"gaussian_window={self.gaussian_window}, normalize_cells={self.normalize_cells}"
        )
