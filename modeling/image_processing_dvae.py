"""The visual tokenizer's input transform: the image resized (Lanczos) to the tokenizer's side, scaled to [0, 1] and
map_pixels'd into [0.1, 0.9] as DALL-E's dVAE reads it, never ImageNet-normalised. The same pixels as the
tokenizer view (`codebook_pixel_values`) that BEiT's and CAE's processors make beside their encoder view."""

from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import PILImageResampling

from .image_processing_mim import MimImageProcessor, MimImageProcessorKwargs, map_pixels


class MimDvaeImageProcessorKwargs(MimImageProcessorKwargs, total=False):
    """
    do_map_pixels (`bool`, defaults to `True`):
        Squeeze the [0, 1] pixels into [eps, 1 - eps] (x -> 0.8 x + 0.1), the input space of the dVAE (its
        logit-Laplace likelihood is undefined at 0 and 1). False returns the [0, 1] image.
    """

    do_map_pixels: bool


class MimDvaeImageProcessor(MimImageProcessor):
    """`processor(images).pixel_values` feed `MimDvaeModel.get_codebook_indices` (and its training objective)."""

    valid_kwargs = MimDvaeImageProcessorKwargs
    resample = PILImageResampling.LANCZOS  # BEiT's tokenizer view
    size = {"height": 112, "width": 112}
    do_normalize = False
    do_map_pixels = True

    def _preprocess(self, images, do_map_pixels=None, return_tensors=None, **kwargs):
        data = dict(super()._preprocess(images, return_tensors=None, **kwargs))
        if self.do_map_pixels if do_map_pixels is None else do_map_pixels:
            data["pixel_values"] = [map_pixels(image) for image in data["pixel_values"]]
        return BatchFeature(data=data, tensor_type=return_tensors)


__all__ = ["MimDvaeImageProcessor"]
