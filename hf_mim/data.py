"""Data flows one way: `datasets` -> robust decode -> augmentation -> the method's image processor -> collator.

Every random choice for a sample (crop, flip, jitter, mask, MAE noise) is drawn from a generator seeded by
(seed, epoch, sample index). So a resumed run sees exactly the batches an uninterrupted one would, and the
samples do not depend on how many processes or loader workers share the work.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import ExifTags, Image, ImageEnhance, ImageFile, ImageOps, ImageStat, UnidentifiedImageError

from hf_mim_cli.arguments import MissingInputError, UsageError
from hf_mim.modeling.image_processing_mim import to_8_bit

logger = logging.getLogger(__name__)

SAMPLE_DIR = Path(__file__).parent / "sample_data" / "fashion_mnist"
UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)
READABLE_PROBE_SIZE = 64  # images decoded before training to tell a dataset of images from one of scraps
MAX_REPLACEMENTS = 16  # unreadable images a training sample is redrawn past before its batch goes without it


# ----------------------------------------------------------------------------------------------- loading


@dataclass
class ImageDataset:
    """A `datasets.Dataset` with its image column left undecoded (we decode, robustly) and its label names."""

    dataset: "datasets.Dataset"  # noqa: F821
    image_column: str
    label_column: str | None
    label_names: list[str] | None
    source: str
    max_image_pixels: int | None = None  # larger images are skipped unread (their header gives the size)


def load_image_dataset(dataset_name: str | None = None, train_dir: str | None = None, split: str = "train",
                       image_column: str | None = None, label_column: str | None = None,
                       cache_dir: str | None = None, max_image_pixels: int | None = None,
                       max_bad_image_fraction: float | None = None) -> ImageDataset:
    """The embedded sample (no flag), a Hub id or local dataset folder (`dataset_name`), or an image folder
    (`train_dir`, one sub-folder per class). Missing paths and columns fail with a message naming the fix; with
    `max_bad_image_fraction`, so does a dataset whose sampled images mostly cannot be decoded
    (`check_readable`)."""
    import datasets

    if dataset_name and train_dir:
        raise UsageError("pass either --dataset_name or --train_dir, not both")
    if train_dir:
        ds = load_image_folder(train_dir, split, cache_dir)
        source = f"imagefolder {train_dir}"
    elif dataset_name:
        path = Path(dataset_name)
        if path.exists() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            loaded = datasets.load_from_disk(str(path))
            ds = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        else:
            ds = datasets.load_dataset(dataset_name, split=split, cache_dir=cache_dir)
        source = dataset_name
    else:
        files = {name: str(SAMPLE_DIR / f"{name}.parquet") for name in ("train", "test")}
        if split not in files:
            raise ValueError(f"the embedded sample has splits 'train' and 'test', not {split!r}")
        ds = datasets.load_dataset("parquet", data_files={split: files[split]}, split=split, cache_dir=cache_dir)
        source = "embedded Fashion-MNIST sample (hf_mim/sample_data)"
    image_column = image_column or detect_column(ds, datasets.Image, ("image", "img", "pixel_values"), "--image_column")
    if image_column not in ds.column_names:
        raise UsageError(f"--image_column {image_column!r} is not in the dataset; its columns are {ds.column_names}")
    if isinstance(ds.features[image_column], datasets.Image):
        ds = ds.cast_column(image_column, datasets.Image(decode=False))
    label_column = label_column or next((c for c in ("label", "labels") if c in ds.column_names), None)
    names = None
    if label_column and isinstance(ds.features[label_column], datasets.ClassLabel):
        names = list(ds.features[label_column].names)
    data = ImageDataset(ds, image_column, label_column, names, source, max_image_pixels)
    if max_bad_image_fraction is not None:
        check_readable(data, max_bad_image_fraction)
    return data


def load_image_folder(folder: str, split: str, cache_dir: str | None):
    """`datasets`' imagefolder, after checking the folder holds an image file at all (its own error for an empty
    or image-less folder is a traceback that names neither the count nor what was expected)."""
    import datasets
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    if not Path(folder).is_dir():
        raise MissingInputError(f"--train_dir {folder!r} is not a folder; point it at an image folder")
    files = 0
    for path in Path(folder).rglob("*"):
        if path.is_file():
            files += 1
            if path.suffix.lower() in ImageFolder.EXTENSIONS:
                break
    else:
        raise UsageError(f"image folder {folder} holds {files} files and no image file; expected images (.png, "
                         ".jpg, .webp, ...) in it, in one sub-folder per class where labels matter")
    try:
        return datasets.load_dataset("imagefolder", data_dir=folder, split=split, cache_dir=cache_dir)
    except (FileNotFoundError, ValueError) as error:  # EmptyDatasetError, or a split with no files
        raise UsageError(f"image folder {folder}: no {split!r} images found ({error})") from None


def check_readable(data: ImageDataset, max_bad_fraction: float, sample_size: int = READABLE_PROBE_SIZE) -> None:
    """Decode up to `sample_size` images spread over the dataset; stop (UsageError) when none decodes or more
    than `max_bad_fraction` of them fail, naming the source, the counts and the first reasons. A bounded sample,
    so a large dataset pays seconds, not a pass."""
    total = len(data.dataset)
    if total == 0:
        raise UsageError(f"{data.source} holds no images; point --train_dir or --dataset_name at one that does")
    indices = sorted({int(i) for i in np.linspace(0, total - 1, min(total, sample_size)).round()})
    reasons = []
    for index in indices:
        value = data.dataset[index][data.image_column]
        image, reason = read_image(value, data.max_image_pixels)
        if image is None:
            reasons.append(f"{image_name(value, index)}: {reason}")
    failed, tried = len(reasons), len(indices)
    if failed == tried or failed / tried > max_bad_fraction:
        what = (f"no image in {data.source} can be decoded" if failed == tried else f"{failed / tried:.0%} of the "
                f"images in {data.source} cannot be decoded (more than --max_bad_image_fraction {max_bad_fraction:g})")
        raise UsageError(f"{what}: tried {tried} files, {failed} failed; first "
                         f"reasons: {'; '.join(reasons[:3])}. Fix or remove those files, or point --train_dir "
                         "or --dataset_name elsewhere")


def image_name(value, index: int) -> str:
    path = value.get("path") if isinstance(value, dict) else value if isinstance(value, (str, Path)) else None
    return Path(path).name if path else f"image {index}"


def detect_column(ds, feature_type, preferred, flag) -> str:
    for name, feature in ds.features.items():
        if isinstance(feature, feature_type):
            return name
    for name in preferred:
        if name in ds.column_names:
            return name
    raise ValueError(f"no image column found among {ds.column_names}; pass {flag}")


# ----------------------------------------------------------------------------------------------- decoding


def decode_image(value, max_pixels: int | None = None) -> Image.Image | None:
    """A PIL image, `{"bytes", "path"}` dict or path -> a fully decoded RGB image, upright by its EXIF
    orientation, or None if unreadable or larger than `max_pixels` (`read_image` says why)."""
    return read_image(value, max_pixels)[0]


def read_image(value, max_pixels: int | None = None) -> tuple[Image.Image | None, str | None]:
    """(RGB image, None), or (None, why it was skipped). The size is read from the header, so an image over
    `max_pixels` is never decoded; decoding is forced here (`load()`), so truncated files fail now rather than
    inside a worker later."""
    try:
        image = open_image(value)
        if max_pixels is not None and image.width * image.height > max_pixels:
            return None, (f"{image.width}x{image.height} is {image.width * image.height} pixels, more than "
                          f"--max_image_pixels {max_pixels}")
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        image.load()
        if exif_orientation(image) != 1:  # as `datasets` and transformers' load_image
            image = ImageOps.exif_transpose(image)
        return to_rgb(image), None
    except UNREADABLE as error:
        logger.debug("skipping unreadable image: %s", error)
        return None, f"{type(error).__name__}: {' '.join(str(error).split())[:120]}"


def open_image(value) -> Image.Image:
    """A PIL image, `{"bytes", "path"}` dict or path -> the image opened lazily (header read, pixels not)."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        return Image.open(io.BytesIO(data)) if data is not None else Image.open(path)
    return Image.open(value)


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag; 1 (as stored) when absent or when the EXIF block is unreadable (the pixels may
    still be fine: a broken tag must not cost the image)."""
    try:
        return image.getexif().get(ExifTags.Base.Orientation, 1)
    except (SyntaxError, ValueError, OSError):  # what PIL raises for a malformed EXIF/TIFF block
        return 1


def upright_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) once turned upright: orientations 5 to 8 are a quarter turn, which swaps the sides."""
    width, height = image.size
    return (height, width) if exif_orientation(image) in (5, 6, 7, 8) else (width, height)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB without losing the picture.

    16- and 32-bit images are scaled by their range (`to_8_bit`, which the image processors apply too: PIL's own
    convert clips them to white); transparency is composited on white; palette, CMYK, grayscale and 1-bit go
    through PIL's converters.
    """
    image = to_8_bit(image)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image


# ----------------------------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class AugmentationDraw:
    """One sample's random choices: colour-jitter order and factors (empty when off), flip, crop box
    (left, top, width, height) in pixels of the image it was drawn for."""

    jitter_order: tuple[int, ...]
    jitter_factors: tuple[float, ...]
    flip: bool
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class Augmentation:
    """The pretraining augmentations of the recipes: one random-resized-crop box (returned un-resized, so
    the processor can make the 224 and the tokenizer views from the same crop), a horizontal flip, and an
    optional colour jitter (BEiT). `draw` and `apply` are split so the accelerator path
    (hf_mim.device_augmentation) makes exactly the same random choices from the same seed."""

    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_probability: float = 0.5
    color_jitter: float = 0.0

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        return self.apply(image, self.draw(image.size, rng))

    def draw(self, size: tuple[int, int], rng: np.random.Generator) -> AugmentationDraw:
        order, factors = (), ()
        if self.color_jitter > 0:
            order = tuple(int(i) for i in rng.permutation(len(JITTER_ENHANCERS)))
            factors = tuple(float(rng.uniform(1 - self.color_jitter, 1 + self.color_jitter)) for _ in order)
        flip = bool(rng.random() < self.flip_probability)
        box = random_resized_crop_box(size, self.crop_scale, self.crop_ratio, rng)
        return AugmentationDraw(order, factors, flip, box)

    @staticmethod
    def apply(image: Image.Image, draw: AugmentationDraw) -> Image.Image:
        """Jitter, flip, crop: the pixels of torchvision's order (whole-image jitter, then flip, then crop), but
        only what the crop needs is computed. Brightness and saturation are per-pixel blends and commute with the
        crop; contrast blends with the whole image's mean grey, so the whole image is carried only up to the
        contrast step, for that mean. Flipping then cropping is cropping the mirrored box, then flipping."""
        left, top, width, height = draw.box
        if draw.flip:
            left = image.width - left - width
        box = (left, top, left + width, top + height)
        steps, whole_image_steps, contrast = list(zip(draw.jitter_order, draw.jitter_factors)), [], None
        if CONTRAST in draw.jitter_order:
            at = draw.jitter_order.index(CONTRAST)
            whole_image_steps, contrast, steps = steps[:at], steps[at][1], steps[at + 1:]
        for index, factor in whole_image_steps:
            image = JITTER_ENHANCERS[index](image).enhance(factor)
        crop = image.crop(box)
        if contrast is not None:
            crop = blend_with_grey(crop, whole_image_mean_grey(image), contrast)
        for index, factor in steps:
            crop = JITTER_ENHANCERS[index](crop).enhance(factor)
        return crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if draw.flip else crop


def random_resized_crop_box(size: tuple[int, int], scale, ratio, rng: np.random.Generator):
    """torchvision's RandomResizedCrop box: 10 tries at a random area and log-uniform aspect, else a centre
    crop clamped to the ratio range. Returns (left, top, width, height)."""
    width, height = size
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, max(w, 1), max(h, 1)


# Brightness (blend with black), contrast (with the mean grey), saturation (with the greyscale image), applied
# in a random order with factors in [1 - s, 1 + s].
JITTER_ENHANCERS = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)
CONTRAST = JITTER_ENHANCERS.index(ImageEnhance.Contrast)


def whole_image_mean_grey(image: Image.Image) -> int:
    """The grey level `ImageEnhance.Contrast` blends with: the rounded mean of the image's L channel."""
    return int(ImageStat.Stat(image.convert("L")).mean[0] + 0.5)


def blend_with_grey(image: Image.Image, grey: int, factor: float) -> Image.Image:
    """`ImageEnhance.Contrast(whole).enhance(factor)` restricted to `image`, a crop of `whole` whose mean grey
    is `grey` (RGB, no alpha, as `to_rgb` leaves every decoded image)."""
    return Image.blend(Image.new("L", image.size, grey).convert(image.mode), image, factor)


# ----------------------------------------------------------------------------------------------- datasets


class SeededImageDataset(torch.utils.data.Dataset):
    """Wraps an `ImageDataset` for training: decode, augment and process sample i with a generator seeded by
    (seed, epoch, i). An unreadable image is replaced by another one drawn from the same seed (up to
    `MAX_REPLACEMENTS` in a row), so a batch stays full however many of its files are bad; the example then
    carries `num_unreadable`. With `replace_unreadable=False` (evaluation: every image once), or when every
    replacement fails too, the sample comes back as `{"skipped": n}`. `collate` drops and counts both."""

    def __init__(self, data: ImageDataset, processor, augmentation: Augmentation | None = None, seed: int = 0,
                 processor_kwargs: dict | None = None, with_labels: bool = False, rand_augment=None,
                 random_erasing=None, replace_unreadable: bool = True):
        self.data = data
        self.processor = processor
        self.augmentation = augmentation
        self.rand_augment = rand_augment  # hf_mim.rand_augment.RandAugment, on the crop resized to the model size
        self.random_erasing = random_erasing  # hf_mim.rand_augment.RandomErasing, on the normalised pixels
        self.seed = seed
        self.epoch = 0
        self.processor_kwargs = processor_kwargs or {}
        self.with_labels = with_labels
        self.replace_unreadable = replace_unreadable
        if with_labels and data.label_column is None:
            raise ValueError(f"{data.source} has no label column ('label' or 'labels'); fine-tuning needs labels")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.data.dataset)

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        row_index, tries = int(index), 1 + (MAX_REPLACEMENTS if self.replace_unreadable else 0)
        for failures in range(tries):
            example = self.example_at(row_index, rng)
            if example is not None:
                return {**example, "num_unreadable": failures} if failures else example
            row_index = int(np.random.default_rng([self.seed, self.epoch, int(index), failures]).integers(len(self)))
        return {"skipped": tries}

    def example_at(self, row_index: int, rng: np.random.Generator) -> dict | None:
        """Row `row_index` decoded, augmented and processed with `rng` (the sample's), or None if unreadable."""
        row = self.data.dataset[row_index]
        image = decode_image(row[self.data.image_column], self.data.max_image_pixels)
        if image is None:
            return None
        if self.augmentation is not None:
            image = self.augmentation(image, rng)
        if self.rand_augment is not None:  # timm runs it after RandomResizedCrop, at the model's size
            size = self.processor.size
            image = self.rand_augment(image.resize((size["width"], size["height"]), Image.Resampling.BICUBIC), rng)
        features = self.processor(
            image, return_tensors="pt", mask_seed=int(rng.integers(2**31)), **self.processor_kwargs
        )
        example = {key: value[0] for key, value in features.items()}
        if self.random_erasing is not None:
            example["pixel_values"] = self.random_erasing(example["pixel_values"], rng)
        if self.with_labels:
            example["labels"] = torch.tensor(row[self.data.label_column], dtype=torch.long)
        return example


def collate(examples: list[dict]) -> dict:
    """Stack the readable examples' tensors (other values become lists, which stay on the host when Accelerate
    moves the batch); `num_skipped`, a host int for the same reason, counts the unreadable images it met (dropped
    or replaced). A batch where nothing was readable holds `num_skipped` alone."""
    kept = [e for e in examples if "skipped" not in e]
    batch = {}
    for key in kept[0] if kept else ():
        if key != "num_unreadable":
            values = [e[key] for e in kept]
            batch[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    batch["num_skipped"] = sum(e.get("skipped", 0) + e.get("num_unreadable", 0) for e in examples)
    return batch


def mixup_cutmix(batch: dict, num_labels: int, rng: np.random.Generator, mixup_alpha: float = 0.8,
                 cutmix_alpha: float = 1.0, switch_prob: float = 0.5, label_smoothing: float = 0.1) -> dict:
    """timm-style batch mixing: with probability `switch_prob` CutMix (a box pasted from the flipped batch, the
    label weight = its area), else Mixup; labels become smoothed soft targets (B, num_labels)."""
    pixel_values, labels = batch["pixel_values"], batch["labels"]
    off = label_smoothing / num_labels
    one_hot = torch.full((len(labels), num_labels), off).scatter_(1, labels[:, None], 1.0 - label_smoothing + off)
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.random() < switch_prob)
    if use_cutmix:
        lam = float(rng.beta(cutmix_alpha, cutmix_alpha))
        height, width = pixel_values.shape[-2:]
        cut_h, cut_w = int(height * math.sqrt(1 - lam)), int(width * math.sqrt(1 - lam))
        cy, cx = int(rng.integers(height)), int(rng.integers(width))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
        pixel_values = pixel_values.clone()
        pixel_values[..., y0:y1, x0:x1] = batch["pixel_values"].flip(0)[..., y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (height * width)
    elif mixup_alpha > 0:
        lam = float(rng.beta(mixup_alpha, mixup_alpha))
        pixel_values = pixel_values * lam + pixel_values.flip(0) * (1 - lam)
    else:
        lam = 1.0
    return {**batch, "pixel_values": pixel_values, "labels": one_hot * lam + one_hot.flip(0) * (1 - lam)}
