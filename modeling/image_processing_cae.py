"""CAE image processor: 224 bicubic, ImageNet mean/std; for pretraining, a block mask with an exact
count (98 of 196, blocks of at least 16) or a uniform random one, and the tokenizer's view of the same image
(LANCZOS to `codebook_image_size`, scaled to [0, 1], then DALL-E's map_pixels).

The processor cannot see the model, so it carries the model's `decoder_target` (copied by `for_model_config`):
`pretraining_kwargs()` asks for the tokenizer view only when the model predicts tokens. The view itself is made
whenever a call passes `return_codebook_pixels=True`, whatever `decoder_target` says.
"""

import random

import numpy as np

from .image_processing_mim import MimImageProcessor, MimImageProcessorKwargs, TokenizerViewKwargs, TokenizerViewMixin
from .masking import block_mask, random_mask


class MimCaeImageProcessorKwargs(TokenizerViewKwargs, MimImageProcessorKwargs, total=False):
    """
    patch_size (`int`, defaults to 16): the model's patch size, which fixes the mask grid.
    num_masking_patches (`int`, defaults to 98): patches masked per image, exactly.
    min_num_patches (`int`, defaults to 16): smallest block area the block generator aims for.
    max_num_patches (`int`, *optional*): largest block area (defaults to num_masking_patches).
    mask_mode (`str`, defaults to "block"): "block" (BEiT's generator run to an exact count) or "random".
    decoder_target (`str`, defaults to "tokens"): the model's target; "pixels" needs no tokenizer view.
    """

    patch_size: int
    num_masking_patches: int
    min_num_patches: int
    max_num_patches: int
    mask_mode: str
    decoder_target: str


class MimCaeImageProcessor(TokenizerViewMixin, MimImageProcessor):
    valid_kwargs = MimCaeImageProcessorKwargs
    config_fields = ("patch_size", "num_masking_patches", "min_num_patches", "max_num_patches", "mask_mode",
                     "codebook_image_size", "decoder_target")
    patch_size = 16
    num_masking_patches = 98
    min_num_patches = 16
    max_num_patches = None
    mask_mode = "block"
    decoder_target = "tokens"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.mask_mode not in ("block", "random"):
            raise ValueError(f"mask_mode={self.mask_mode!r} is not supported; choose 'block' or 'random'")
        if self.decoder_target not in ("tokens", "pixels"):
            raise ValueError(f"decoder_target={self.decoder_target!r} is not supported; choose 'tokens' or 'pixels'")

    def pretraining_kwargs(self) -> dict:
        return {"return_bool_masked_pos": True, "return_codebook_pixels": self.decoder_target == "tokens"}

    def generate_mask(self, rng: random.Random, image_size: tuple[int, int] | None = None) -> np.ndarray:
        """(grid_h, grid_w) bool, True = masked, exactly `num_masking_patches` of them (the encoder needs one
        visible length for the whole batch)."""
        height, width = self.patch_grid(image_size)
        if self.mask_mode == "random":
            # int() floors the ratio times the cell count; half a cell keeps the count exact under float rounding
            return random_mask(height, width, (self.num_masking_patches + 0.5) / (height * width), rng)
        return block_mask(
            height, width, self.num_masking_patches, self.min_num_patches, self.max_num_patches, exact=True, rng=rng
        )
