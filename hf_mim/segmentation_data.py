"""Semantic segmentation data: (image, label map) pairs -> joint augmentation -> pixel values and labels.

Sources: the embedded Fashion-MNIST segmentation sample (no flag), an image folder with a parallel mask folder
(same file stems), or a `datasets` dataset with `image` / `annotation` columns (the ADE20K scene-parsing layout of
the Hub). Training augmentation is the BEiT/MAE segmentation pipeline scaled to the data: random resize in a ratio
range, random crop (optionally redrawn until no class covers more than `cat_max_ratio` of it), horizontal flip,
photometric jitter of the image only; masks are always resampled nearest, and padding is `IGNORE_INDEX`. Every
draw comes from a generator seeded by (seed, epoch, index), as in `hf_mim.data`, so resumed runs are exact.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hf_mim_cli.arguments import MissingInputError, UsageError
from hf_mim.data import (JITTER_ENHANCERS, UNREADABLE, ImageDataset, check_readable, decode_image, detect_column,
                         open_image)

logger = logging.getLogger(__name__)

SEGMENTATION_SAMPLE_DIR = Path(__file__).parent / "sample_data" / "fashion_mnist_segmentation"
IGNORE_INDEX = 255  # label of pixels no loss or metric counts: padding, and ADE's "other" under --reduce_labels
ID2LABEL_FILE = "id2label.json"
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")  # lossless formats: a label map must not be JPEG-smoothed


def segmentation_id2label(class_names: list[str]) -> dict[int, str]:
    """Background 0, then the classes 1..N (the embedded sample's convention)."""
    return {0: "background", **{i + 1: name for i, name in enumerate(class_names)}}


# ----------------------------------------------------------------------------------------------- loading


def load_segmentation_dataset(dataset_name: str | None = None, train_dir: str | None = None,
                              mask_dir: str | None = None, split: str = "train", image_column: str | None = None,
                              annotation_column: str | None = None, max_image_pixels: int | None = None,
                              max_bad_image_fraction: float | None = None) -> ImageDataset:
    """An `ImageDataset` whose `label_column` holds the label maps (undecoded, as the images). `label_names` is
    the id2label list when the source ships one (`id2label.json` beside the data), else None."""
    import datasets

    if dataset_name and train_dir:
        raise UsageError("pass either --dataset_name or --train_dir (with --mask_dir), not both")
    names = None
    if train_dir:
        ds = paired_folder_dataset(train_dir, mask_dir)
        source, names = f"image folder {train_dir} with masks {mask_dir}", read_id2label(Path(mask_dir).parent)
    elif dataset_name:
        path = Path(dataset_name)
        if path.exists() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            loaded = datasets.load_from_disk(str(path))
            ds = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
            names = read_id2label(path)
        else:
            ds = datasets.load_dataset(dataset_name, split=split)
        source = dataset_name
    else:
        if split not in ("train", "validation"):
            raise UsageError(f"the embedded segmentation sample has splits 'train' and 'validation', not {split!r}")
        ds = datasets.load_dataset("parquet", data_files={split: str(SEGMENTATION_SAMPLE_DIR / f"{split}.parquet")},
                                   split=split)
        source, names = "embedded Fashion-MNIST segmentation sample (hf_mim/sample_data)", read_id2label(
            SEGMENTATION_SAMPLE_DIR)
    image_column = image_column or detect_column(ds, datasets.Image, ("image", "img"), "--image_column")
    annotation_column = annotation_column or "annotation"
    for column, flag in ((image_column, "--image_column"), (annotation_column, "--annotation_column")):
        if column not in ds.column_names:
            raise UsageError(f"{flag} {column!r} is not in the dataset; its columns are {ds.column_names}")
        if isinstance(ds.features[column], datasets.Image):
            ds = ds.cast_column(column, datasets.Image(decode=False))
    data = ImageDataset(ds, image_column, annotation_column, names, source, max_image_pixels)
    if max_bad_image_fraction is not None:
        check_readable(data, max_bad_image_fraction)
    return data


def read_id2label(folder: Path) -> list[str] | None:
    """The label names of `folder/id2label.json` ({"0": name, ...}, ids 0..K-1), or None when absent."""
    path = Path(folder) / ID2LABEL_FILE
    if not path.is_file():
        return None
    mapping = {int(k): v for k, v in json.loads(path.read_text()).items()}
    if sorted(mapping) != list(range(len(mapping))):
        raise UsageError(f"{path}: ids must be 0..{len(mapping) - 1} without gaps, got {sorted(mapping)}")
    return [mapping[i] for i in range(len(mapping))]


def paired_folder_dataset(image_dir: str, mask_dir: str | None):
    """A dataset of (image path, mask path) pairs matched by file stem; a missing folder, an image without a
    mask, or no pair at all stop with the names of what is missing."""
    import datasets

    if not mask_dir:
        raise UsageError("--train_dir needs --mask_dir: a folder of label maps (PNG) named as the images")
    for folder, flag in ((image_dir, "--train_dir"), (mask_dir, "--mask_dir")):
        if not Path(folder).is_dir():
            raise MissingInputError(f"{flag} {folder!r} is not a folder")
    masks = {p.stem: p for p in sorted(Path(mask_dir).iterdir()) if p.suffix.lower() in MASK_SUFFIXES}
    images = sorted(p for p in Path(image_dir).iterdir() if p.is_file() and not p.name.startswith("."))
    unmatched = [p.name for p in images if p.stem not in masks]
    if unmatched:
        raise UsageError(f"{len(unmatched)} images in {image_dir} have no mask of the same stem in {mask_dir} "
                         f"(first: {unmatched[:3]}); add the masks (.png) or remove those images")
    if not images:
        raise UsageError(f"{image_dir} holds no images; point --train_dir at a folder of images")
    rows = {"image": [{"bytes": None, "path": str(p)} for p in images],
            "annotation": [{"bytes": None, "path": str(masks[p.stem])} for p in images]}
    features = datasets.Features({"image": datasets.Image(decode=False), "annotation": datasets.Image(decode=False)})
    return datasets.Dataset.from_dict(rows, features=features)


def decode_label_map(value, reduce_labels: bool = False) -> np.ndarray | None:
    """A label map (PNG bytes, path or PIL image) -> (H, W) int64, or None if unreadable. A palette PNG keeps its
    indices; an RGB mask is refused (the labels would be colours). `reduce_labels`: transformers' ADE20K
    convention, 0 ("other") -> IGNORE_INDEX and every other label one lower."""
    try:
        mask = open_image(value)
        mask.load()
    except UNREADABLE:
        return None
    if mask.mode in ("RGB", "RGBA"):
        raise UsageError(f"a mask is {mask.mode}: label maps must be single-channel class ids (mode L, P or I), "
                         "one id per pixel")
    labels = np.asarray(mask, dtype=np.int64)
    if reduce_labels:
        labels = np.where(labels == 0, IGNORE_INDEX, labels - 1)
        labels[labels == IGNORE_INDEX - 1] = IGNORE_INDEX
    return labels


# ----------------------------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class SegmentationDraw:
    """One sample's random choices: the resize ratio, the crop box (left, top, width, height) in the resized
    image, the flip, and the photometric order and factors (empty when off)."""

    ratio: float
    box: tuple[int, int, int, int]
    flip: bool
    jitter_order: tuple[int, ...]
    jitter_factors: tuple[float, ...]


@dataclass(frozen=True)
class SegmentationAugmentation:
    """Random resize (short side -> crop_size x a ratio in `ratio_range`), random crop of crop_size (redrawn up
    to 10 times while one class covers more than `cat_max_ratio` of it; 1 = off), horizontal flip, brightness /
    contrast / saturation jitter of the image only. Images resample bilinear, masks nearest; crops smaller than
    crop_size (small images) are padded later, the mask with IGNORE_INDEX."""

    crop_size: int
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 1.0
    flip_probability: float = 0.5
    photometric: float = 0.0

    def __call__(self, image: Image.Image, labels: np.ndarray, rng: np.random.Generator):
        ratio = float(rng.uniform(*self.ratio_range))
        size = self.resized_size(image.size, ratio)
        image = image.resize(size, Image.Resampling.BILINEAR)
        labels = resize_labels(labels, size)
        box = self.crop_box(labels, rng)
        flip = bool(rng.random() < self.flip_probability)
        order, factors = (), ()
        if self.photometric > 0:
            order = tuple(int(i) for i in rng.permutation(len(JITTER_ENHANCERS)))
            factors = tuple(float(rng.uniform(1 - self.photometric, 1 + self.photometric)) for _ in order)
        return self.apply(image, labels, SegmentationDraw(ratio, box, flip, order, factors))

    def resized_size(self, size: tuple[int, int], ratio: float) -> tuple[int, int]:
        scale = self.crop_size * ratio / min(size)
        return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))

    def crop_box(self, labels: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int, int]:
        height, width = labels.shape
        w, h = min(self.crop_size, width), min(self.crop_size, height)
        for _ in range(10):
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            if self.cat_max_ratio >= 1 or dominant_share(labels[top:top + h, left:left + w]) < self.cat_max_ratio:
                break
        return left, top, w, h

    @staticmethod
    def apply(image: Image.Image, labels: np.ndarray, draw: SegmentationDraw):
        left, top, width, height = draw.box
        image = image.crop((left, top, left + width, top + height))
        labels = labels[top:top + height, left:left + width]
        if draw.flip:
            image, labels = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), labels[:, ::-1]
        for index, factor in zip(draw.jitter_order, draw.jitter_factors):
            image = JITTER_ENHANCERS[index](image).enhance(factor)
        return image, np.ascontiguousarray(labels)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest resampling of a label map to (width, height): labels are ids, never blended."""
    if labels.shape[::-1] == tuple(size):
        return labels
    as_image = Image.fromarray(labels.astype(np.int32), mode="I")
    return np.asarray(as_image.resize(size, Image.Resampling.NEAREST), dtype=np.int64)


def dominant_share(labels: np.ndarray) -> float:
    """The share of the most frequent class among the counted pixels (IGNORE_INDEX left out); 1 if none counts."""
    counted = labels[labels != IGNORE_INDEX]
    if counted.size == 0:
        return 1.0
    return float(np.bincount(counted.ravel()).max() / counted.size)


def pad_to(pixel_values: torch.Tensor, labels: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad (C, h, w) pixels with 0 (after normalisation) and (h, w) labels with IGNORE_INDEX to (size, size),
    on the bottom and right, as mmsegmentation's data preprocessor pads."""
    height, width = labels.shape
    bottom, right = max(size - height, 0), max(size - width, 0)
    if not (bottom or right):
        return pixel_values, labels
    pixel_values = torch.nn.functional.pad(pixel_values, (0, right, 0, bottom), value=0.0)
    return pixel_values, torch.nn.functional.pad(labels, (0, right, 0, bottom), value=IGNORE_INDEX)


# ----------------------------------------------------------------------------------------------- datasets


class SegmentationDataset(torch.utils.data.Dataset):
    """Sample i decoded, augmented and processed with a generator seeded by (seed, epoch, i).

    Training (`augmentation` given): the augmented crop, normalised by `processor` and padded to the crop size;
    `labels` (crop, crop). Evaluation (None): the processor's resized image (whole-image evaluation) and the
    original label map, so the metric is taken at the annotation's own resolution. An unreadable pair comes back
    as `{"skipped": 1}`, which `collate_segmentation` drops and counts."""

    def __init__(self, data: ImageDataset, processor, augmentation: SegmentationAugmentation | None = None,
                 seed: int = 0, reduce_labels: bool = False, keep_aspect: bool = False):
        self.data, self.processor, self.augmentation = data, processor, augmentation
        self.seed, self.epoch, self.reduce_labels, self.keep_aspect = seed, 0, reduce_labels, keep_aspect

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.data.dataset)

    def __getitem__(self, index: int) -> dict:
        row = self.data.dataset[int(index)]
        image = decode_image(row[self.data.image_column], self.data.max_image_pixels)
        labels = decode_label_map(row[self.data.label_column], self.reduce_labels)
        if image is None or labels is None:
            return {"skipped": 1}
        if labels.shape != (image.height, image.width):
            raise UsageError(f"{self.data.source}, sample {index}: image {image.width}x{image.height} but its mask "
                             f"{labels.shape[1]}x{labels.shape[0]}; a mask must have its image's size")
        if self.augmentation is None:
            return {"pixel_values": self.evaluation_pixels(image), "labels": torch.from_numpy(labels)}
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        image, labels = self.augmentation(image, labels, rng)
        pixel_values = self.processor(image, do_resize=False, return_tensors="pt")["pixel_values"][0]
        pixel_values, labels = pad_to(pixel_values, torch.from_numpy(labels), self.augmentation.crop_size)
        return {"pixel_values": pixel_values, "labels": labels}

    def evaluation_pixels(self, image: Image.Image) -> torch.Tensor:
        """Whole-image evaluation: the processor's square resize; sliding evaluation (`keep_aspect`): the short
        side resized to the processor's size, the aspect kept."""
        if not self.keep_aspect:
            return self.processor(image, return_tensors="pt")["pixel_values"][0]
        side = self.processor.size["height"]
        scale = side / min(image.size)
        size = (max(side, round(image.width * scale)), max(side, round(image.height * scale)))
        return self.processor(image.resize(size, Image.Resampling.BILINEAR), do_resize=False,
                              return_tensors="pt")["pixel_values"][0]


def collate_segmentation(examples: list[dict]) -> dict:
    """Stack pixel values and labels where their shapes agree, else keep lists (evaluation at each annotation's
    own size); `num_skipped` counts the unreadable pairs dropped."""
    kept = [e for e in examples if "skipped" not in e]
    batch = {}
    for key in ("pixel_values", "labels") if kept else ():
        values = [e[key] for e in kept]
        same = all(v.shape == values[0].shape for v in values)
        batch[key] = torch.stack(values) if same else values
    batch["num_skipped"] = sum(e.get("skipped", 0) for e in examples)
    return batch
