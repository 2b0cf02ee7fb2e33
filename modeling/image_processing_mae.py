"""MAE image processor: resize to 224 bicubic and ImageNet-normalise. MAE masks inside the model; for
pretraining the processor can also draw the model's masking `noise` from the call's seed, so a sample's mask
depends only on its seed (exact resume, same masks whatever the number of processes)."""

import random

import numpy as np

from .image_processing_mim import MimImageProcessor, MimImageProcessorKwargs


class MimMaeImageProcessorKwargs(MimImageProcessorKwargs, total=False):
    """
    return_noise (`bool`, defaults to `False`): also return `noise` (batch, num_patches) in [0, 1) for the model.
    patch_size (`int`, defaults to 16): the model's patch size, which fixes num_patches.
    """

    return_noise: bool
    patch_size: int


class MimMaeImageProcessor(MimImageProcessor):
    valid_kwargs = MimMaeImageProcessorKwargs
    config_fields = ("patch_size",)
    return_noise = False
    patch_size = 16

    def pretraining_kwargs(self) -> dict:
        return {"return_noise": True}

    def extra_views(self, images, rng: random.Random | None = None, return_noise=False, image_size=None,
                    **kwargs) -> dict:
        """`noise` (batch, num_patches): one uniform draw per patch of the processed images (of `output_size()`
        when called without them, as the device-side augmentation does)."""
        if not return_noise:
            return {}
        rows, columns = self.patch_grid(image_size() if image_size is not None else None)
        rng = rng or random.Random()
        noise = [[rng.random() for _ in range(rows * columns)] for _ in images]
        return {"noise": np.asarray(noise, dtype=np.float32)}
