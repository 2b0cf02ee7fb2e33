"""MaskFeat's video mask: random space-time cubes over the (t, h, w) token grid until a target count is masked.

Each cube is a spatial rectangle (area and log-aspect drawn as in the image block mask) spanning several
consecutive tubelets in time, placed uniformly. A cube is kept when it adds between 1 and the remaining budget of
new tokens, so the mask never overshoots; when no cube fits for a while (the budget is smaller than any cube
drawn), the last few tokens are drawn from the free tokens next to the mask (then anywhere), so every clip masks
exactly `num_masking_patches`. Convention: True = masked; tokens in (t, h, w) row-major order, time slowest.
"""

from __future__ import annotations

import math

import numpy as np

# Cube draws in a row that may add nothing before the remaining count is filled token by token.
MAX_FAILED_DRAWS = 100


def _draw_cube(mask: np.ndarray, budget: int, area_range: tuple[float, float], log_aspect: tuple[float, float],
               frame_range: tuple[int, int], rng: np.random.Generator) -> int:
    """Try one cube: mask it if it adds 1..budget new tokens; return how many it added (0 = rejected)."""
    temporal, height, width = mask.shape
    low, high = area_range
    area = rng.uniform(min(low, budget), min(high, max(budget, low)))
    aspect = math.exp(rng.uniform(*log_aspect))
    h = min(max(int(round(math.sqrt(area * aspect))), 1), height)
    w = min(max(int(round(math.sqrt(area / aspect))), 1), width)
    t = int(rng.integers(frame_range[0], frame_range[1] + 1))
    top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
    front = int(rng.integers(0, temporal - t + 1))
    window = mask[front:front + t, top:top + h, left:left + w]
    new = window.size - int(window.sum())
    if 0 < new <= budget:
        window[...] = True
        return new
    return 0


def _fill_next_to_mask(mask: np.ndarray, missing: int, rng: np.random.Generator) -> None:
    """Mask `missing` free tokens, preferring those that touch the mask (6-neighbourhood), so cubes just grow."""
    for _ in range(missing):
        grown = mask.copy()
        for axis in range(3):
            grown |= np.roll(mask, 1, axis) | np.roll(mask, -1, axis)  # wrap-around only widens the choice
        candidates = np.flatnonzero((grown & ~mask).reshape(-1))
        if candidates.size == 0:
            candidates = np.flatnonzero(~mask.reshape(-1))
        mask.reshape(-1)[rng.choice(candidates)] = True


def cube_mask(temporal: int, height: int, width: int, num_masking_patches: int, min_num_patches: int = 9,
              max_num_patches: int | None = None, min_aspect: float = 0.3, max_aspect: float | None = None,
              min_cube_frames: int = 1, max_cube_frames: int | None = None,
              rng: np.random.Generator | None = None) -> np.ndarray:
    """(temporal, height, width) bool mask with exactly `num_masking_patches` True, made of random cubes.

    min/max_num_patches bound a cube's spatial area (max None = the frame grid), min/max_aspect its height/width
    ratio (max None = 1 / min), min/max_cube_frames its length in tubelets (max None = temporal).
    """
    total = temporal * height * width
    if not 0 < num_masking_patches < total:
        raise ValueError(
            f"num_masking_patches must be in [1, {total - 1}] for a {temporal}x{height}x{width} token grid, "
            f"got {num_masking_patches!r}"
        )
    max_cube_frames = temporal if max_cube_frames is None else max_cube_frames
    if not 1 <= min_cube_frames <= max_cube_frames <= temporal:
        raise ValueError(f"need 1 <= min_cube_frames <= max_cube_frames <= {temporal}, got "
                         f"{min_cube_frames} and {max_cube_frames}")
    if not min_aspect > 0 or min_num_patches < 1:
        raise ValueError(f"min_aspect must be > 0 and min_num_patches >= 1, got {min_aspect!r}, {min_num_patches!r}")
    rng = np.random.default_rng() if rng is None else rng
    area_range = (float(min_num_patches), float(height * width if max_num_patches is None else max_num_patches))
    log_aspect = (math.log(min_aspect), math.log(max_aspect or 1 / min_aspect))
    mask = np.zeros((temporal, height, width), dtype=bool)
    count, failed = 0, 0
    while count < num_masking_patches and failed < MAX_FAILED_DRAWS:
        added = _draw_cube(mask, num_masking_patches - count, area_range, log_aspect,
                           (min_cube_frames, max_cube_frames), rng)
        count += added
        failed = 0 if added else failed + 1
    if count < num_masking_patches:
        _fill_next_to_mask(mask, num_masking_patches - count, rng)
    return mask


class CubeMaskGenerator:
    """Callable holding cube_mask's settings and its own seeded numpy Generator; each call gives a fresh mask."""

    def __init__(self, temporal: int, height: int, width: int, num_masking_patches: int, min_num_patches: int = 9,
                 max_num_patches: int | None = None, min_aspect: float = 0.3, max_aspect: float | None = None,
                 min_cube_frames: int = 1, max_cube_frames: int | None = None, seed: int | None = None):
        self.shape = (temporal, height, width)
        self.settings = dict(num_masking_patches=num_masking_patches, min_num_patches=min_num_patches,
                             max_num_patches=max_num_patches, min_aspect=min_aspect, max_aspect=max_aspect,
                             min_cube_frames=min_cube_frames, max_cube_frames=max_cube_frames)
        cube_mask(*self.shape, **self.settings, rng=np.random.default_rng(0))  # checks the settings now
        self.rng = np.random.default_rng(seed)

    @classmethod
    def from_config(cls, config, seed: int | None = None) -> "CubeMaskGenerator":
        """The generator a `MimMaskFeatVideoConfig` describes."""
        return cls(config.temporal_size, config.grid_size, config.grid_size, config.num_masking_patches,
                   config.min_num_patches, config.max_num_patches, config.min_aspect, config.max_aspect,
                   config.min_cube_frames, config.max_cube_frames, seed=seed)

    def __call__(self) -> np.ndarray:
        """(temporal, height, width) bool, True = masked."""
        return cube_mask(*self.shape, **self.settings, rng=self.rng)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({'x'.join(map(str, self.shape))}, {self.settings})"
