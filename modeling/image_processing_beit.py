"""BEiT image processor: the 224 encoder view (bicubic, ImageNet mean/std as BEiT's ImageNet-1k recipe), and for
pretraining the block-wise `bool_masked_pos` and the tokenizer view `codebook_pixel_values`: the SAME image resized
to 112 with Lanczos, scaled to [0, 1] and map_pixels'd to [0.1, 0.9] (DALL-E's input transform), never
ImageNet-normalised.

The caller passes an already cropped (and flipped, jittered) image, so both views come from one crop, as
BEiT's data pipeline samples one RandomResizedCrop box for both.
"""

import random

import numpy as np
from transformers.image_utils import PILImageResampling

from .image_processing_mim import MimImageProcessor, MimImageProcessorKwargs, map_pixels  # noqa: F401 (re-export)
from .masking import block_mask


class MimBeitImageProcessorKwargs(MimImageProcessorKwargs, total=False):
    """
    return_codebook_pixels (`bool`, defaults to `False`):
        Also return `codebook_pixel_values` (batch, 3, codebook_image_size, codebook_image_size): the same image,
        Lanczos-resized, in [0, 1] and map_pixels'd, the frozen tokenizer's input.
    codebook_image_size (`int`, defaults to 112): side of the tokenizer view (the grid size x 8 for DALL-E's dVAE).
    patch_size (`int`, defaults to 16): the model's patch size, which fixes the mask grid (size / patch_size).
    num_masking_patches (`int`, defaults to 75), min_num_patches (`int`, defaults to 16),
    max_num_patches (`int`, *optional*), min_aspect (`float`, defaults to 0.3), max_aspect (`float`, *optional*):
        the block-wise mask generator's settings: rectangles of min..max patches and aspect ratio min_aspect..
        max_aspect (default 1 / min_aspect) are placed until num_masking_patches are masked.
    """

    return_codebook_pixels: bool
    codebook_image_size: int
    patch_size: int
    num_masking_patches: int
    min_num_patches: int
    max_num_patches: int | None
    min_aspect: float
    max_aspect: float | None


class MimBeitImageProcessor(MimImageProcessor):
    valid_kwargs = MimBeitImageProcessorKwargs
    return_codebook_pixels = False
    codebook_image_size = 112
    patch_size = 16
    num_masking_patches = 75
    min_num_patches = 16
    max_num_patches = None
    min_aspect = 0.3
    max_aspect = None

    @classmethod
    def kwargs_from_config(cls, config) -> dict:
        return {
            "patch_size": config.patch_size,
            "codebook_image_size": config.codebook_image_size,
            "num_masking_patches": config.num_masking_patches,
            "min_num_patches": config.min_num_patches,
            "max_num_patches": config.max_num_patches,
            "min_aspect": config.min_aspect,
            "max_aspect": config.max_aspect,
        }

    def pretraining_kwargs(self) -> dict:
        return {"return_bool_masked_pos": True, "return_codebook_pixels": True}

    def generate_mask(self, rng: random.Random, image_size: tuple[int, int] | None = None) -> np.ndarray:
        """BEiT's block-wise mask on the patch grid, (grid_h, grid_w) bool, True = masked; may mask fewer than
        num_masking_patches (the official generator stops at the first block it cannot place)."""
        height, width = self.patch_grid(image_size)
        return block_mask(
            height, width, self.num_masking_patches, self.min_num_patches, self.max_num_patches,
            self.min_aspect, self.max_aspect, exact=False, rng=rng,
        )

    def extra_views(self, images, rng: random.Random | None = None, return_codebook_pixels=False,
                    codebook_image_size=None, **kwargs) -> dict:
        """The tokenizer view of each input image (from the input itself, not the resized encoder view)."""
        if not return_codebook_pixels:
            return {}
        side = codebook_image_size or self.codebook_image_size
        return {"codebook_pixel_values": self.codebook_views(images, side, **kwargs)}
