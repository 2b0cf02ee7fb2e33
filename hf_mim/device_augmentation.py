"""Crop, flip, colour jitter and normalisation on the accelerator, for when loader workers are the bottleneck.

The CPU path (`SeededImageDataset`) spends most of each sample in the image processor's bicubic resize and
normalisation (~1.4-2.4 ms per 224 px image on one core, `scripts/benchmark.py --data`). Here the loader only
decodes and resizes the whole image to a fixed `source_size` square (uint8), and draws the sample's random choices
with `Augmentation.draw` from the same (seed, epoch, index) generator, so crops, flips, jitter factors, masks and
MAE noise are exactly those of the CPU path. `DeviceAugmentation` then crops, flips, jitters, resizes (bicubic
with antialiasing, where the processor uses PIL's bicubic, and Lanczos for the tokenizer view) and normalises the
batch on whatever device it lives on. Pixels differ from the CPU path by resampling only (measured in
tests/test_device_augmentation.py); the crop geometry is the same because a box in relative coordinates selects
the same content in the source square as in the original image.
"""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers.image_utils import SizeDict

from hf_mim.data import (UNREADABLE, Augmentation, AugmentationDraw, SeededImageDataset, decode_image, open_image,
                         upright_size)

# DALL-E's map_pixels: [0, 1] -> [0.1, 0.9] (the tokenizer view of BEiT and CAE)
LOGIT_LAPLACE_EPS = 0.1
# ITU-R 601-2 luma, as PIL's convert("L") (the greyscale of the contrast and saturation jitter)
LUMA = (0.299, 0.587, 0.114)


class DeviceAugmentedImageDataset(SeededImageDataset):
    """Loader side: decode, resize the whole image to `source_size` x `source_size` (uint8, channels first), and
    return the random choices of the CPU path: `crop_boxes` (left, top, width, height in source pixels, already
    mirrored when the sample is flipped; a tuple, so it stays on the host and slicing needs no device sync), `flips`, `jitter_order`/`jitter_factors` (when jitter is on),
    plus the masks and noise the processor would draw (`pretraining_kwargs`)."""

    def __init__(self, data, processor, augmentation: Augmentation, source_size: int, seed: int = 0,
                 processor_kwargs: dict | None = None):
        super().__init__(data, processor, augmentation, seed=seed, processor_kwargs=processor_kwargs)
        if source_size < 1:
            raise ValueError(f"source_size={source_size}: must be a positive side in pixels, e.g. 1.5 x image size")
        self.source_size = source_size

    def example_at(self, row_index: int, rng: np.random.Generator) -> dict | None:
        row = self.data.dataset[row_index]
        image, size = open_for_source(row[self.data.image_column], self.source_size, self.data.max_image_pixels)
        if image is None:
            return None
        draw = self.augmentation.draw(size, rng)
        mask_seed = int(rng.integers(2**31))
        side = self.source_size
        source = image.resize((side, side), Image.Resampling.BICUBIC)
        example = {
            "images": torch.from_numpy(np.asarray(source, dtype=np.uint8).copy()).permute(2, 0, 1),
            "crop_boxes": source_box(draw, size, side),
            "flips": torch.tensor(draw.flip),
        }
        if draw.jitter_order:
            example["jitter_order"] = torch.tensor(draw.jitter_order, dtype=torch.long)
            example["jitter_factors"] = torch.tensor(draw.jitter_factors, dtype=torch.float32)
        example.update(masks_and_noise(self.processor, mask_seed, self.processor_kwargs))
        return example


def open_for_source(value, side: int,
                    max_pixels: int | None = None) -> tuple[Image.Image | None, tuple[int, int] | None]:
    """(decoded RGB image, the file's full size). JPEGs at least twice `side` decode at 1/2 to 1/8 scale (libjpeg's
    DCT scaling via `draft`, never below `side`), which the resize to the source square makes free of loss; the
    random choices are drawn on the full size, so they stay those of the CPU path."""
    try:
        image = open_image(value)
    except UNREADABLE:
        return None, None
    size = upright_size(image)
    if max_pixels is not None and image.width * image.height > max_pixels:
        return None, None
    if image.format == "JPEG":
        image.draft("RGB", (side, side))
    image = decode_image(image)
    return (image, size) if image is not None else (None, None)


def source_box(draw: AugmentationDraw, size: tuple[int, int], side: int) -> tuple[int, int, int, int]:
    """The crop box in the resized source square, in un-flipped coordinates (the CPU path flips, then crops:
    the same pixels as cropping the mirrored box, then flipping the crop)."""
    width, height = size
    left, top, box_width, box_height = draw.box
    if draw.flip:
        left = width - left - box_width
    x0, x1 = round(left * side / width), round((left + box_width) * side / width)
    y0, y1 = round(top * side / height), round((top + box_height) * side / height)
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    return x0, y0, x1 - x0, y1 - y0


def masks_and_noise(processor, mask_seed: int, processor_kwargs: dict) -> dict:
    """What the processor adds besides pixels, drawn in its order (`MimImageProcessor._preprocess`: the mask,
    then `extra_views`) from the same seed, one image, leading dimension dropped. Pixel views are left to the
    device."""
    rng = random.Random(mask_seed)
    out = {}
    if processor_kwargs.get("return_bool_masked_pos"):
        out["bool_masked_pos"] = torch.from_numpy(processor.generate_mask(rng).reshape(-1).astype(bool))
    view_kwargs = {k: v for k, v in processor_kwargs.items()
                   if k not in ("return_bool_masked_pos", "return_codebook_pixels")}
    size = SizeDict(**processor.size) if isinstance(processor.size, dict) else processor.size
    for key, value in processor.extra_views([None], rng=rng, size=size, **view_kwargs).items():
        out[key] = torch.as_tensor(np.asarray(value)[0])
    return out


class DeviceAugmentation:
    """Accelerator side: turns a `DeviceAugmentedImageDataset` batch into the model's inputs, in place of the
    processor. `codebook_image_size` adds BEiT's / CAE's tokenizer view from the same crop."""

    def __init__(self, image_size: tuple[int, int], image_mean, image_std, codebook_image_size: int | None = None):
        self.image_size = tuple(image_size)
        self.mean = torch.tensor(image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(image_std, dtype=torch.float32).view(1, 3, 1, 1)
        self.codebook_image_size = codebook_image_size

    @classmethod
    def for_processor(cls, processor, processor_kwargs: dict) -> DeviceAugmentation:
        size = SizeDict(**processor.size) if isinstance(processor.size, dict) else processor.size
        codebook = processor.codebook_image_size if processor_kwargs.get("return_codebook_pixels") else None
        return cls((size.height, size.width), processor.image_mean, processor.image_std, codebook)

    @torch.no_grad()
    def __call__(self, batch: dict) -> dict:
        """Pops images, crop_boxes, flips and jitter_*; adds pixel_values (and codebook_pixel_values)."""
        images = batch.pop("images")
        boxes = batch.pop("crop_boxes")  # host-side ints: no device sync for the slice bounds
        flips = batch.pop("flips")
        order, factors = batch.pop("jitter_order", None), batch.pop("jitter_factors", None)
        pixels = images.float()
        if order is not None:
            pixels = jitter(pixels, order, factors)
        views, codebook_views = [], []
        for i, (left, top, width, height) in enumerate(boxes):
            crop = pixels[i : i + 1, :, top : top + height, left : left + width]
            crop = torch.where(flips[i], crop.flip(-1), crop)
            views.append(resize(crop, self.image_size))
            if self.codebook_image_size:
                codebook_views.append(resize(crop, (self.codebook_image_size,) * 2))
        mean, std = self.mean.to(pixels.device), self.std.to(pixels.device)
        batch["pixel_values"] = (torch.cat(views) / 255 - mean) / std
        if codebook_views:
            unit = torch.cat(codebook_views) / 255
            batch["codebook_pixel_values"] = (1 - 2 * LOGIT_LAPLACE_EPS) * unit + LOGIT_LAPLACE_EPS
        return batch


def resize(crop: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic with antialiasing (PIL-like when shrinking), clamped to the uint8 range as PIL's output is."""
    return F.interpolate(crop, size=size, mode="bicubic", antialias=True, align_corners=False).clamp_(0, 255)


def jitter(pixels: torch.Tensor, order: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance Brightness / Contrast / Color on a (B, 3, H, W) 0-255 batch, each sample's three
    enhancements in its own order, with PIL's integer arithmetic: the greyscale rounded, every blend with its
    degenerate image clipped to 0-255 and truncated to an integer (Image.blend)."""
    luma = torch.tensor(LUMA, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
    for step in range(order.shape[1]):
        kind = order[:, step].view(-1, 1, 1, 1)
        factor = factors[:, step].to(pixels.dtype).view(-1, 1, 1, 1)
        grey = (pixels * luma).sum(1, keepdim=True).round()
        degenerate = torch.where(
            kind == 0, torch.zeros_like(pixels),
            torch.where(kind == 1, grey.mean((2, 3), keepdim=True).add(0.5).floor().expand_as(pixels), grey.expand_as(pixels)),
        )
        pixels = (degenerate + factor * (pixels - degenerate)).clamp_(0, 255).floor_()
    return pixels
