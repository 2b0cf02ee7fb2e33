"""SimMIM image processor: 224 bicubic, ImageNet mean/std; for pretraining, SimMIM's coarse
random mask: exactly ceil(mask_ratio * cells) cells of `mask_patch_size` pixels, each spread over the patches it
covers (120 of 196 patches at the defaults, in aligned 2x2 blocks)."""

import random

import numpy as np

from .image_processing_mim import MimImageProcessor, MimImageProcessorKwargs
from .masking import simmim_mask


class MimSimMIMImageProcessorKwargs(MimImageProcessorKwargs, total=False):
    """
    patch_size (`int`, defaults to 16): the model's patch size, which fixes the mask grid (size / patch_size).
    mask_patch_size (`int`, defaults to 32): side in pixels of one mask cell.
    mask_ratio (`float`, defaults to 0.6): fraction of the cells masked (rounded up).
    """

    patch_size: int
    mask_patch_size: int
    mask_ratio: float


class MimSimMIMImageProcessor(MimImageProcessor):
    valid_kwargs = MimSimMIMImageProcessorKwargs
    config_fields = ("patch_size", "mask_patch_size", "mask_ratio")
    patch_size = 16
    mask_patch_size = 32
    mask_ratio = 0.6

    def pretraining_kwargs(self) -> dict:
        return {"return_bool_masked_pos": True}

    def generate_mask(self, rng: random.Random, image_size: tuple[int, int] | None = None) -> np.ndarray:
        """SimMIM's mask on the patch grid, (grid, grid) bool, True = masked, drawn from `rng`."""
        height, width = image_size or self.output_size()
        if height != width:
            raise ValueError(
                f"SimMIM masks need a square image, got {height}x{width}; set size to {{'height': s, 'width': s}}"
            )
        return simmim_mask(height, self.mask_patch_size, self.patch_size, self.mask_ratio, rng=rng)
