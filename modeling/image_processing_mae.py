"""MAE image processor: resize to 224 bicubic and ImageNet-normalise; masks are drawn inside the model."""

from .image_processing_mim import MimImageProcessor


class MimMaeImageProcessor(MimImageProcessor):
    _auto_class = "AutoImageProcessor"
