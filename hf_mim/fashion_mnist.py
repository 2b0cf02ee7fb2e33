"""Fashion-MNIST (Zalando, MIT licence) from its original idx files into a `datasets.DatasetDict`.

Our machines get the idx files from the Debian package `dataset-fashion-mnist`; elsewhere the Hub's copy
(`zalando-datasets/fashion_mnist`) has the same images. Used for the embedded sample and the benchmark.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(path: Path) -> np.ndarray:
    """Parse an idx file (optionally gzipped): big-endian magic with the dtype code and rank, then the dims."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, rank = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file (magic {data[:4].hex()})")
    dims = struct.unpack(f">{rank}I", data[4 : 4 + 4 * rank])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank)
    if array.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {array.size}")
    return array.reshape(dims)


def load_split(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    directory = Path(directory)
    images = read_idx(find(directory, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(find(directory, f"{prefix}-labels-idx1-ubyte"))
    return images, labels


def find(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"{stem}[.gz] not found in {directory}; install the idx files (Debian: apt-get install dataset-fashion-mnist) "
        "or pass --dataset_name zalando-datasets/fashion_mnist where the Hub is reachable"
    )


def to_dataset_dict(directory: Path = DEBIAN_DIR, per_class: dict[str, int] | None = None, seed: int = 0):
    """DatasetDict with `image` (PIL, mode L) and `label` (ClassLabel). `per_class` keeps a balanced subset."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
    from PIL import Image as PILImage

    features = Features({"image": Image(), "label": ClassLabel(names=LABELS)})
    splits = {}
    for split in ("train", "test"):
        images, labels = load_split(directory, split)
        index = np.arange(len(labels))
        if per_class and split in per_class:
            rng = np.random.default_rng(seed)
            index = np.sort(np.concatenate([
                rng.choice(np.flatnonzero(labels == c), per_class[split], replace=False) for c in range(len(LABELS))
            ]))
        rows = {"image": [PILImage.fromarray(images[i], mode="L") for i in index], "label": labels[index].tolist()}
        splits[split] = Dataset.from_dict(rows, features=features)
    return DatasetDict(splits)
