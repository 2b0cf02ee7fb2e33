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
    return_noise = False
    patch_size = 16

    @classmethod
    def kwargs_from_config(cls, config) -> dict:
        return {"patch_size": config.patch_size}

    def pretraining_kwargs(self) -> dict:
        return {"return_noise": True}

    def extra_views(self, images, rng: random.Random | None = None, return_noise=False, size=None, **kwargs) -> dict:
        if not return_noise:
            return {}
        num_patches = (size.height // self.patch_size) * (size.width // self.patch_size)
        rng = rng or random.Random()
        noise = [[rng.random() for _ in range(num_patches)] for _ in images]
        return {"noise": np.asarray(noise, dtype=np.float32)}
