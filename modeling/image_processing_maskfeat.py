"""MaskFeat image processor: 224 bicubic, ImageNet mean/std; for pretraining, the block-wise
`bool_masked_pos` (78 of 196 patches, blocks of at least 15, with the official early stop, so the count may fall
short). The HOG targets are computed inside the model from `pixel_values`."""

from .image_processing_mim import BlockMaskImageProcessor, BlockMaskImageProcessorKwargs


class MimMaskFeatImageProcessorKwargs(BlockMaskImageProcessorKwargs, total=False):
    """MaskFeat's defaults: num_masking_patches 78, min_num_patches 15 (see the base for every field)."""


class MimMaskFeatImageProcessor(BlockMaskImageProcessor):
    valid_kwargs = MimMaskFeatImageProcessorKwargs
    num_masking_patches = 78
    min_num_patches = 15
