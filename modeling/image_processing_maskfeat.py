"""MaskFeat image processor: 224 bicubic, ImageNet mean/std; for pretraining, the block-wise
`bool_masked_pos` (78 of 196 patches, blocks of at least 15, with the official early stop, so the count may fall
short). The HOG targets are computed inside the model from `pixel_values`."""

import random

import numpy as np

from .image_processing_mim import MimImageProcessor, MimImageProcessorKwargs
from .masking import block_mask


class MimMaskFeatImageProcessorKwargs(MimImageProcessorKwargs, total=False):
    """
    patch_size (`int`, defaults to 16): the model's patch size, which fixes the mask grid (size / patch_size).
    num_masking_patches (`int`, defaults to 78), min_num_patches (`int`, defaults to 15),
    max_num_patches (`int`, *optional*), min_aspect (`float`, defaults to 0.3), max_aspect (`float`, *optional*):
        the block-wise mask generator's settings: rectangles of min..max patches and aspect ratio min_aspect..
        max_aspect (default 1 / min_aspect) are placed until num_masking_patches are masked.
    """

    patch_size: int
    num_masking_patches: int
    min_num_patches: int
    max_num_patches: int | None
    min_aspect: float
    max_aspect: float | None


class MimMaskFeatImageProcessor(MimImageProcessor):
    valid_kwargs = MimMaskFeatImageProcessorKwargs
    patch_size = 16
    num_masking_patches = 78
    min_num_patches = 15
    max_num_patches = None
    min_aspect = 0.3
    max_aspect = None

    @classmethod
    def kwargs_from_config(cls, config) -> dict:
        return {
            "patch_size": config.patch_size,
            "num_masking_patches": config.num_masking_patches,
            "min_num_patches": config.min_num_patches,
            "max_num_patches": config.max_num_patches,
            "min_aspect": config.min_aspect,
            "max_aspect": config.max_aspect,
        }

    def pretraining_kwargs(self) -> dict:
        return {"return_bool_masked_pos": True}

    def generate_mask(self, rng: random.Random, image_size: tuple[int, int] | None = None) -> np.ndarray:
        """The block-wise mask on the patch grid, (grid_h, grid_w) bool, True = masked; may mask fewer than
        num_masking_patches (the official generator stops at the first block it cannot place)."""
        height, width = self.patch_grid(image_size)
        return block_mask(
            height, width, self.num_masking_patches, self.min_num_patches, self.max_num_patches, self.min_aspect,
            self.max_aspect, exact=False, rng=rng,
        )
