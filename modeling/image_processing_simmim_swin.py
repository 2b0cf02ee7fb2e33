"""SimMIM-Swin image processor: SimMIM's processor (bicubic resize, ImageNet mean/std, the coarse random mask on
request) at the official Swin pretraining defaults, 192 px with 4 px patches: each 32 px mask cell covers 8x8
patches, 22 of the 36 cells masked (1408 of 2304 patches)."""

from .image_processing_simmim import MimSimMIMImageProcessor


class MimSimMIMSwinImageProcessor(MimSimMIMImageProcessor):
    size = {"height": 192, "width": 192}
    patch_size = 4
