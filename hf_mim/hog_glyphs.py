"""The classic HOG glyph picture: per cell, one stroke per orientation bin, drawn along the edge (perpendicular to
the gradient), as bright as that bin's weight. It shows at a glance what MaskFeat asks the model to predict."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw


def _bin_stroke_templates(nbins: int, cell_px: int, line_width: int) -> np.ndarray:
    """(nbins, cell_px, cell_px) masks in [0, 1], one centred stroke per bin at the bin's centre orientation.

    HOGTarget's angle is atan2(gx, gy) with gx = left - right and gy = top - bottom, so the gradient of angle t
    points along (sin t, cos t) in (x right, y down) and the edge along (cos t, -sin t).
    """
    centre = (cell_px - 1) / 2
    half_length = cell_px / 2 - 0.5
    templates = np.zeros((nbins, cell_px, cell_px), dtype=np.float32)
    for bin_index in range(nbins):
        angle = (bin_index + 0.5) * math.pi / nbins
        dx, dy = half_length * math.cos(angle), -half_length * math.sin(angle)
        canvas = Image.new("L", (cell_px, cell_px), 0)
        ImageDraw.Draw(canvas).line(
            [(centre - dx, centre - dy), (centre + dx, centre + dy)], fill=255, width=line_width
        )
        templates[bin_index] = np.asarray(canvas, dtype=np.float32) / 255.0
    return templates


def render_hog_glyphs(cell_histograms, cell_px: int = 8, line_width: int = 1) -> Image.Image:
    """Draw HOG cell histograms as glyphs.

    Args:
        cell_histograms: (C, nbins, Hc, Wc), (1, C, nbins, Hc, Wc) or (nbins, Hc, Wc), numpy or torch, e.g.
            `HOGTarget.cell_histograms(pixel_values)[0]`. Channels are averaged.
        cell_px: side of one cell's glyph in output pixels (use the HOG cell size to overlay on the image).
        line_width: stroke width in pixels.

    Returns:
        A grey-scale ("L") image of size (Wc * cell_px, Hc * cell_px); brightness proportional to the bin value,
        scaled so the largest bin in the picture is 255. Overlapping strokes in a cell keep the brightest.
    """
    if hasattr(cell_histograms, "detach"):  # a torch tensor, on any device
        cell_histograms = cell_histograms.detach().float().cpu().numpy()
    histograms = np.asarray(cell_histograms, dtype=np.float32)
    if histograms.ndim == 5:
        if histograms.shape[0] != 1:
            raise ValueError(f"render one image at a time; got a batch of {histograms.shape[0]}, index it first.")
        histograms = histograms[0]
    if histograms.ndim == 4:
        histograms = histograms.mean(axis=0)
    if histograms.ndim != 3:
        raise ValueError(f"expected (C, nbins, Hc, Wc) or (nbins, Hc, Wc) histograms, got shape {histograms.shape}")
    nbins, cells_high, cells_wide = histograms.shape
    peak = float(np.abs(histograms).max())
    strength = np.clip(histograms / peak, 0.0, 1.0) if peak > 0 else np.zeros_like(histograms)
    templates = _bin_stroke_templates(nbins, cell_px, line_width)
    # (nbins, Hc, Wc, 1, 1) * (nbins, 1, 1, px, px) -> brightest stroke per pixel -> (Hc, px, Wc, px)
    glyphs = (strength[:, :, :, None, None] * templates[:, None, None]).max(axis=0)
    picture = glyphs.transpose(0, 2, 1, 3).reshape(cells_high * cell_px, cells_wide * cell_px)
    return Image.fromarray(np.round(picture * 255).astype(np.uint8))  # uint8 2-D -> mode "L"
