"""RandAugment and random erasing, the two fine-tuning augmentations every method's recipe takes from
timm ("rand-m9-mstd0.5-inc1", random erasing 0.25) and that no dependency of ours ships.

Both follow timm's definitions (op list, level-to-argument rules, per-op probability 0.5, Gaussian magnitude
noise clipped to [0, 10]; erasing of one box of 2-33% of the area, aspect 0.3-3.3, filled with per-pixel normal
noise after normalisation) but draw every random number from the sample's own generator, so a fine-tuning
sample depends only on (seed, epoch, index) like the rest of the pipeline, with any number of workers.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

LEVEL_MAX = 10.0
RESAMPLE = Image.Resampling.BICUBIC  # the recipes pass interpolation="bicubic" to timm's create_transform


def _affine(image, matrix, fill):
    return image.transform(image.size, Image.Transform.AFFINE, matrix, resample=RESAMPLE, fillcolor=fill)


def _solarize_add(image, addition, fill, threshold=128):
    lut = [min(255, i + addition) if i < threshold else i for i in range(256)]
    return image.point(lut * len(image.getbands()))


def _posterize(image, bits, fill):
    """Keep the top `bits` bits. timm's rules reach 0 bits (level 10 of PosterizeIncreasing, levels under 2.5 of
    Posterize): every value masked to 0, a black image, which current Pillow refuses to compute."""
    if bits <= 0:
        return image.point([0] * 256 * len(image.getbands()))
    return image if bits >= 8 else ImageOps.posterize(image, bits)


# name -> (function(image, argument, fill), the rule that turns a level in [0, 10] into the argument, or None)
OPS = {
    "AutoContrast": (lambda im, _, f: ImageOps.autocontrast(im), None),
    "Equalize": (lambda im, _, f: ImageOps.equalize(im), None),
    "Invert": (lambda im, _, f: ImageOps.invert(im), None),
    "Rotate": (lambda im, deg, f: im.rotate(deg, resample=RESAMPLE, fillcolor=f), "rotate"),
    "Posterize": (_posterize, "posterize"),
    "PosterizeIncreasing": (_posterize, "posterize_increasing"),
    "Solarize": (lambda im, t, f: ImageOps.solarize(im, t), "solarize"),
    "SolarizeIncreasing": (lambda im, t, f: ImageOps.solarize(im, t), "solarize_increasing"),
    "SolarizeAdd": (_solarize_add, "solarize_add"),
    "Color": (lambda im, v, f: ImageEnhance.Color(im).enhance(v), "enhance"),
    "ColorIncreasing": (lambda im, v, f: ImageEnhance.Color(im).enhance(v), "enhance_increasing"),
    "Contrast": (lambda im, v, f: ImageEnhance.Contrast(im).enhance(v), "enhance"),
    "ContrastIncreasing": (lambda im, v, f: ImageEnhance.Contrast(im).enhance(v), "enhance_increasing"),
    "Brightness": (lambda im, v, f: ImageEnhance.Brightness(im).enhance(v), "enhance"),
    "BrightnessIncreasing": (lambda im, v, f: ImageEnhance.Brightness(im).enhance(v), "enhance_increasing"),
    "Sharpness": (lambda im, v, f: ImageEnhance.Sharpness(im).enhance(v), "enhance"),
    "SharpnessIncreasing": (lambda im, v, f: ImageEnhance.Sharpness(im).enhance(v), "enhance_increasing"),
    "ShearX": (lambda im, s, f: _affine(im, (1, s, 0, 0, 1, 0), f), "shear"),
    "ShearY": (lambda im, s, f: _affine(im, (1, 0, 0, s, 1, 0), f), "shear"),
    "TranslateXRel": (lambda im, p, f: _affine(im, (1, 0, p * im.size[0], 0, 1, 0), f), "translate"),
    "TranslateYRel": (lambda im, p, f: _affine(im, (1, 0, 0, 0, 1, p * im.size[1]), f), "translate"),
}
STANDARD_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
                "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
# "inc1": the variants whose severity grows with the level (what every MIM fine-tuning recipe uses)
INCREASING_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
                  "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
                  "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")


def level_to_argument(rule: str, level: float, rng: np.random.Generator):
    """timm's level rules; signed arguments are negated with probability 1/2."""
    fraction = level / LEVEL_MAX

    def signed(value):
        return -value if rng.random() > 0.5 else value

    if rule == "rotate":
        return signed(fraction * 30.0)
    if rule == "shear":
        return signed(fraction * 0.3)
    if rule == "translate":
        return signed(fraction * 0.45)
    if rule == "enhance":
        return fraction * 1.8 + 0.1
    if rule == "enhance_increasing":
        return max(0.1, 1.0 + signed(fraction * 0.9))
    if rule == "posterize":
        return int(fraction * 4)
    if rule == "posterize_increasing":
        return 4 - int(fraction * 4)
    if rule == "solarize":
        return int(fraction * 256)
    if rule == "solarize_increasing":
        return 256 - int(fraction * 256)
    if rule == "solarize_add":
        return int(fraction * 110)
    raise ValueError(f"unknown level rule {rule!r}")


@dataclass(frozen=True)
class RandAugment:
    """`num_ops` ops drawn with replacement, each applied with `probability` at a magnitude drawn from
    N(magnitude, magnitude_std) clipped to [0, 10]. Affine ops fill with `fill` (the mean colour, 0-255)."""

    magnitude: float = 9.0
    magnitude_std: float = 0.5
    num_ops: int = 2
    probability: float = 0.5
    increasing: bool = True
    fill: tuple[int, int, int] = (124, 116, 104)

    @property
    def ops(self) -> tuple[str, ...]:
        return INCREASING_OPS if self.increasing else STANDARD_OPS

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        for name in rng.choice(self.ops, self.num_ops, replace=True):
            if self.probability < 1.0 and rng.random() > self.probability:
                continue
            magnitude = self.magnitude
            if self.magnitude_std == math.inf:
                magnitude = rng.uniform(0, magnitude)
            elif self.magnitude_std > 0:
                magnitude = rng.normal(magnitude, self.magnitude_std)
            magnitude = min(max(magnitude, 0.0), LEVEL_MAX)
            function, rule = OPS[str(name)]
            argument = None if rule is None else level_to_argument(rule, magnitude, rng)
            image = function(image, argument, self.fill)
        return image


def parse_rand_augment(spec: str | None, image_mean=(0.485, 0.456, 0.406)) -> RandAugment | None:
    """timm's config string, e.g. "rand-m9-mstd0.5-inc1" (m: magnitude, mstd: its std, inc: increasing ops,
    n: ops per image, p: probability per op); "" or "none" turns it off. The fill is the image mean."""
    if spec is None or spec.strip().lower() in ("", "none", "off"):
        return None
    parts = spec.strip().split("-")
    if parts[0] != "rand":
        raise ValueError(f"RandAugment spec {spec!r} must start with 'rand-', e.g. 'rand-m9-mstd0.5-inc1'")
    fields = {"magnitude": 9.0, "magnitude_std": 0.5, "num_ops": 2, "probability": 0.5, "increasing": False}
    keys = {"m": ("magnitude", float), "mstd": ("magnitude_std", float), "n": ("num_ops", int),
            "p": ("probability", float), "inc": ("increasing", lambda v: bool(int(v)))}
    for part in parts[1:]:
        match = re.fullmatch(r"([a-z]+)([0-9.]+|inf)", part)
        if match is None or match.group(1) not in keys:
            raise ValueError(f"RandAugment spec {spec!r}: cannot read {part!r}; known keys are m, mstd, n, p, inc "
                             "(e.g. 'rand-m9-mstd0.5-inc1')")
        name, convert = keys[match.group(1)]
        fields[name] = convert(match.group(2))
    fill = tuple(min(255, round(255 * float(m))) for m in image_mean)
    fill = (fill * 3)[:3] if len(fill) == 1 else fill
    return RandAugment(fill=fill, **fields)


@dataclass(frozen=True)
class RandomErasing:
    """With `probability`, replace one random box of a normalised (C, H, W) image by standard normal noise
    (timm's mode "pixel"): area a uniform fraction of `area`, log-uniform aspect in `aspect`, 10 tries to fit."""

    probability: float = 0.25
    area: tuple[float, float] = (0.02, 1 / 3)
    aspect: tuple[float, float] = (0.3, 1 / 0.3)

    def __call__(self, pixels: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if rng.random() > self.probability:
            return pixels
        channels, height, width = pixels.shape
        log_aspect = (math.log(self.aspect[0]), math.log(self.aspect[1]))
        for _ in range(10):
            target = rng.uniform(*self.area) * height * width
            aspect = math.exp(rng.uniform(*log_aspect))
            h, w = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if w < width and h < height:
                top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
                noise = torch.from_numpy(rng.standard_normal((channels, h, w), dtype=np.float32))
                pixels = pixels.clone()
                pixels[:, top:top + h, left:left + w] = noise.to(pixels.dtype)
                return pixels
        return pixels
