"""MaskFeat's HOG target against an independent per-image, per-cell numpy reference written from the MaskFeat paper's recipe.

The reference computes the Sobel gradients by explicit slicing of a reflect-padded array (no convolution), bins
with numpy's arctan2 in float64, sums each cell with `np.bincount`, and builds each patch vector by nested loops
in the documented index order c*nbins*k*k + bin*k*k + cell_row*k + cell_col.
"""

import math

import numpy as np
import pytest
import torch
from skimage import data as skimage_data

from hf_mim.hog_glyphs import render_hog_glyphs
from hf_mim.modeling.hog import HOGTarget

TOLERANCE = 1e-5


# ------------------------------------------------------------------------------------------------------------------
# Reference
# ------------------------------------------------------------------------------------------------------------------


def reference_gaussian_weights(height: int, width: int, window: int) -> np.ndarray:
    """(H, W) per-pixel weight: a window x window Gaussian (std window // 2, sum 1) repeated over the image."""
    def profile(position):
        return math.exp(-0.5 * ((position - (window - 1) / 2) / (window // 2)) ** 2)

    total = sum(profile(t) for t in range(window)) ** 2
    weights = np.empty((height, width))
    for row in range(height):
        for col in range(width):
            weights[row, col] = profile(row % window) * profile(col % window) / total
    return weights


def reference_hog_targets(image, nbins=9, cell=8, patch=16, window=0) -> np.ndarray:
    """One image (C, H, W) -> (L, C * nbins * k * k) in float64, k = patch // cell."""
    image = np.asarray(image, dtype=np.float64)
    channels, height, width = image.shape
    padded = np.pad(image, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    # kx = [[1,0,-1],[2,0,-2],[1,0,-1]] as cross-correlation: left minus right, rows weighted 1, 2, 1.
    left_minus_right = padded[:, :, :-2] - padded[:, :, 2:]  # (C, H + 2, W)
    grad_x = left_minus_right[:, :-2] + 2 * left_minus_right[:, 1:-1] + left_minus_right[:, 2:]
    # ky = kx^T: top minus bottom, columns weighted 1, 2, 1.
    top_minus_bottom = padded[:, :-2, :] - padded[:, 2:, :]  # (C, H, W + 2)
    grad_y = top_minus_bottom[:, :, :-2] + 2 * top_minus_bottom[:, :, 1:-1] + top_minus_bottom[:, :, 2:]
    magnitude = np.hypot(grad_x, grad_y)
    bins = np.floor(np.arctan2(grad_x, grad_y) / np.pi * nbins).astype(np.int64) % nbins  # numpy % is >= 0
    if window:
        magnitude = magnitude * reference_gaussian_weights(height, width, window)[None]

    cells_high, cells_wide = height // cell, width // cell
    histograms = np.zeros((channels, nbins, cells_high, cells_wide))
    for c in range(channels):
        for row in range(cells_high):
            for col in range(cells_wide):
                rows, cols = slice(row * cell, (row + 1) * cell), slice(col * cell, (col + 1) * cell)
                counts = np.bincount(bins[c, rows, cols].ravel(), magnitude[c, rows, cols].ravel(), minlength=nbins)
                histograms[c, :, row, col] = counts / max(np.sqrt((counts**2).sum()), 1e-12)

    k = patch // cell
    targets = []
    for patch_row in range(height // patch):
        for patch_col in range(width // patch):
            targets.append(
                [
                    histograms[c, b, patch_row * k + i, patch_col * k + j]
                    for c in range(channels)
                    for b in range(nbins)
                    for i in range(k)
                    for j in range(k)
                ]
            )
    return np.array(targets)


def max_diff_to_reference(images: torch.Tensor, **kwargs) -> float:
    """Run HOGTarget on the batch and the reference on each image; return the largest absolute difference."""
    hog = HOGTarget(nbins=9, cell_size=kwargs.get("cell", 8), patch_size=kwargs["patch"],
                    gaussian_window=kwargs.get("window", 0))
    ours = hog(images).numpy()
    expected = np.stack([reference_hog_targets(image.numpy(), **kwargs) for image in images])
    assert ours.shape == expected.shape
    return float(np.abs(ours - expected).max())


def real_images() -> torch.Tensor:
    """(3, 3, 64, 64) crops of skimage's sample photos as raw 0..255 values.

    Integer pixels keep every gradient exact in fp32 and float64 alike, so the hard bins cannot differ by rounding.
    """
    crops = [
        skimage_data.astronaut()[::8, ::8],  # whole picture, 64 x 64
        skimage_data.chelsea()[40:168:2, 120:248:2],  # the cat's face
        skimage_data.coffee()[100:228:2, 200:328:2],
    ]
    return torch.tensor(np.stack(crops), dtype=torch.float32).permute(0, 3, 1, 2).contiguous()


# ------------------------------------------------------------------------------------------------------------------
# Parity with the reference
# ------------------------------------------------------------------------------------------------------------------

CONFIGS = [
    dict(patch=16, window=0),
    dict(patch=16, window=16),
    dict(patch=8, window=0),
    dict(patch=8, window=8),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"patch{c['patch']}-window{c['window']}")
def test_matches_reference_on_random_images(config):
    images = torch.rand(3, 3, 32, 48, generator=torch.Generator().manual_seed(0))  # non-square: grid from H, W
    diff = max_diff_to_reference(images, **config)
    print(f"random {config}: max abs diff {diff:.2e}")
    assert diff < TOLERANCE


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"patch{c['patch']}-window{c['window']}")
def test_matches_reference_on_real_images(config):
    diff = max_diff_to_reference(real_images(), **config)
    print(f"real {config}: max abs diff {diff:.2e}")
    assert diff < TOLERANCE


def test_reference_is_not_trivially_satisfied():
    """The parity tests would pass vacuously if the targets were all zero or insensitive to orientation."""
    image = real_images()[:1]
    targets = HOGTarget()(image)
    assert (targets > 0.1).float().mean() > 0.1
    transposed = HOGTarget()(image.transpose(-1, -2).contiguous())
    assert (targets - transposed).abs().max() > 0.5


def test_normalisation_of_pixel_values_does_not_change_targets_of_continuous_images():
    """§4: HOG of the normalised input equals HOG of the raw one (per-channel scale cancels in the L2 norm)."""
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    for window in (0, 16):
        hog = HOGTarget(gaussian_window=window)
        assert torch.allclose(hog((images - mean) / std), hog(images), atol=1e-5)


# ------------------------------------------------------------------------------------------------------------------
# Layout
# ------------------------------------------------------------------------------------------------------------------


def test_output_shape_and_target_dim():
    hog = HOGTarget()
    assert hog.target_dim == 108
    assert hog(torch.rand(2, 3, 64, 32)).shape == (2, 8, 108)
    assert HOGTarget(patch_size=8).target_dim == 27
    assert hog.cell_histograms(torch.rand(2, 3, 64, 32)).shape == (2, 3, 9, 8, 4)


def test_flatten_order_with_hand_built_edges():
    """Red: a vertical edge between x = 15 and 16. Blue: a horizontal edge between y = 15 and 16. Green: flat.

    A vertical edge has gy = 0, so atan2(gx, 0) = +-pi/2 -> +-4.5 -> bin 4; a horizontal one has gx = 0, so
    atan2(0, gy) = 0 or pi -> bin 0. Only the cells touching an edge (cell col 1 and 2, or cell row 1 and 2)
    vote, each into a single bin, so after L2 normalisation those slots hold exactly 1.
    """
    image = torch.zeros(1, 3, 32, 32)
    image[0, 0, :, 16:] = 1.0
    image[0, 2, 16:, :] = 1.0
    targets = HOGTarget()(image)[0]  # (4 patches, 108)

    expected = torch.zeros(4, 108)
    nbins, cells = 9, 4  # 2 x 2 cells per patch
    for patch_row in range(2):
        for patch_col in range(2):
            patch_index = patch_row * 2 + patch_col
            for cell_row in range(2):
                for cell_col in range(2):
                    global_row, global_col = patch_row * 2 + cell_row, patch_col * 2 + cell_col
                    if global_col in (1, 2):  # red channel 0, bin 4
                        expected[patch_index, 0 * nbins * cells + 4 * cells + cell_row * 2 + cell_col] = 1.0
                    if global_row in (1, 2):  # blue channel 2, bin 0
                        expected[patch_index, 2 * nbins * cells + 0 * cells + cell_row * 2 + cell_col] = 1.0
    # e.g. patch 1 (top right), cell (0, 0) -> red slot 0*36 + 4*4 + 0 = 16; patch 2, cell (0, 1) -> blue slot 73
    assert expected[1, 16] == 1.0 and expected[2, 73] == 1.0
    torch.testing.assert_close(targets, expected, atol=1e-6, rtol=0)


def test_single_edge_lands_in_one_patch_and_cell():
    """A small green square inside cell (row 1, col 2) of a 32 x 32 image: only patch 1, cell (1, 0), green votes."""
    image = torch.zeros(1, 3, 32, 32)
    image[0, 1, 10:14, 19:21] = 1.0  # gradients reach rows 9..14, cols 18..21: all inside cell rows 8..15, 16..23
    targets = HOGTarget()(image)[0]
    nonzero = set(map(tuple, torch.nonzero(targets).tolist()))
    allowed = {(1, 1 * 36 + b * 4 + 1 * 2 + 0) for b in range(9)}
    assert nonzero and nonzero <= allowed
    assert torch.isclose(targets[1].norm(), torch.tensor(1.0))


# ------------------------------------------------------------------------------------------------------------------
# Errors, precision, state
# ------------------------------------------------------------------------------------------------------------------


def test_error_messages_name_the_fix():
    with pytest.raises(ValueError, match=r"patch_size \(16\) must be a multiple of cell_size \(6\)"):
        HOGTarget(cell_size=6)
    with pytest.raises(ValueError, match=r"30x32 is not divisible by patch_size=16.*e\.g\. 16x32"):
        HOGTarget()(torch.rand(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"not divisible by patch_size=16"):
        HOGTarget()(torch.rand(1, 3, 32, 40))
    with pytest.raises(ValueError, match=r"gaussian_window=12"):
        HOGTarget(patch_size=16, gaussian_window=12)(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"expects \(B, 3, H, W\)"):
        HOGTarget()(torch.rand(1, 1, 32, 32))


def test_fp32_and_no_grad_under_bf16_autocast():
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)).bfloat16().float()
    hog = HOGTarget(gaussian_window=16)
    expected = hog(images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        from_bf16 = hog(images.bfloat16())
        leaf = images.clone().requires_grad_(True)
        from_fp32 = hog(leaf)
    for out in (from_bf16, from_fp32):
        assert out.dtype == torch.float32
        assert not out.requires_grad
        torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_constants_never_reach_the_state_dict():
    class WithHOG(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(108, 2)
            self.hog = HOGTarget(gaussian_window=16)

    model = WithHOG()
    assert set(model.state_dict()) == {"head.weight", "head.bias"}
    assert {name for name, _ in model.hog.named_buffers()} == {"kernel_x", "kernel_y", "window"}
    assert list(model.hog.parameters()) == []
    model.load_state_dict(model.state_dict(), strict=True)
    assert model.hog.kernel_x.shape == (3, 1, 3, 3)


def test_batch_elements_are_independent():
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    hog = HOGTarget()
    batched = hog(images)
    one_by_one = torch.cat([hog(image[None]) for image in images])
    torch.testing.assert_close(batched, one_by_one, atol=0, rtol=0)


# ------------------------------------------------------------------------------------------------------------------
# Glyphs
# ------------------------------------------------------------------------------------------------------------------


def test_glyph_image_size():
    histograms = HOGTarget().cell_histograms(torch.rand(1, 3, 32, 48))  # (1, 3, 9, 4, 6)
    picture = render_hog_glyphs(histograms, cell_px=10)
    assert picture.mode == "L"
    assert picture.size == (6 * 10, 4 * 10)


@pytest.mark.parametrize("edge", ["vertical", "horizontal"])
def test_glyph_strokes_run_along_the_edge(edge):
    """The stroke is drawn along the edge (perpendicular to the gradient): a vertical edge gives a vertical stroke."""
    image = torch.zeros(1, 3, 32, 32)
    if edge == "vertical":
        image[..., :, 16:] = 1.0
    else:
        image[..., 16:, :] = 1.0
    cell_px = 16
    picture = np.asarray(render_hog_glyphs(HOGTarget().cell_histograms(image), cell_px=cell_px))
    cell = picture[cell_px : 2 * cell_px, cell_px : 2 * cell_px] > 128  # cell (1, 1) touches both edges' lines
    bright_per_column, bright_per_row = cell.sum(axis=0), cell.sum(axis=1)
    if edge == "vertical":
        assert bright_per_column.max() >= cell_px - 2 and bright_per_row.max() <= 2
    else:  # bin 0's centre is 10 degrees off horizontal, so the stroke spans a few rows
        assert bright_per_row.max() >= cell_px // 3 and bright_per_column.max() <= 2
    flat = np.asarray(render_hog_glyphs(HOGTarget().cell_histograms(image)))[:8, :8]
    assert flat.max() == 0  # a cell with no gradient draws nothing
