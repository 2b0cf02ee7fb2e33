"""BEiT image processor: the 224 encoder view (bicubic, ImageNet mean/std as BEiT's ImageNet-1k recipe), and for
pretraining the block-wise `bool_masked_pos` and the tokenizer view `codebook_pixel_values`: the SAME image resized
to 112 with Lanczos, scaled to [0, 1] and map_pixels'd to [0.1, 0.9] (DALL-E's input transform), never
ImageNet-normalised.

The caller passes an already cropped (and flipped, jittered) image, so both views come from one crop, as
BEiT's data pipeline samples one RandomResizedCrop box for both.
"""

from .image_processing_mim import (  # noqa: F401 (map_pixels: re-export)
    BlockMaskImageProcessor, BlockMaskImageProcessorKwargs, TokenizerViewKwargs, TokenizerViewMixin, map_pixels,
)


class MimBeitImageProcessorKwargs(TokenizerViewKwargs, BlockMaskImageProcessorKwargs, total=False):
    """BEiT's defaults: num_masking_patches 75, min_num_patches 16 (see the two bases for every field)."""


class MimBeitImageProcessor(TokenizerViewMixin, BlockMaskImageProcessor):
    valid_kwargs = MimBeitImageProcessorKwargs
    config_fields = (*BlockMaskImageProcessor.config_fields, "codebook_image_size")
    num_masking_patches = 75
    min_num_patches = 16

    def pretraining_kwargs(self) -> dict:
        return {"return_bool_masked_pos": True, "return_codebook_pixels": True}
