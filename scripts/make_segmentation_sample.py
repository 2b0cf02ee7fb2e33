#!/usr/bin/env python
"""Build the embedded segmentation sample: 64 px canvases of real Fashion-MNIST garments, labelled per pixel.

Each canvas is black and holds 1 to 4 garments of the embedded Fashion-MNIST sample (hf_mim/sample_data/
fashion_mnist; train canvases take garments of its train split, validation canvases of its test split), each
resized (bilinear) to a random side of `--min_side` to `--max_side` px and pasted at a random position inside the
canvas. A garment's pixels are its silhouette: where its resized intensity is at least `--threshold`. Those
pixels take the garment's grey levels in the image and its class (1..10) in the annotation; later garments cover
earlier ones; every other pixel is background (0). All draws come from one numpy Generator seeded by `--seed`,
so the same arguments give the same images and annotations.

    python scripts/make_segmentation_sample.py     # rewrites hf_mim/sample_data/fashion_mnist_segmentation/

Stored as parquet (`image` and `annotation`, both PNG bytes; the ADE20K scene-parsing layout of the Hub) with
`id2label.json` (0 background, 1..10 the Fashion-MNIST classes).
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

from hf_mim_cli.arguments import ArgumentParser, answer_help_early

SPLITS = {"train": "train", "validation": "test"}  # our split -> the Fashion-MNIST sample split it draws from


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default=None,
                        help="default: the embedded sample's folder, hf_mim/sample_data/fashion_mnist_segmentation")
    parser.add_argument("--num_train", type=int, default=320, help="train canvases")
    parser.add_argument("--num_validation", type=int, default=100, help="validation canvases")
    parser.add_argument("--size", type=int, default=64, help="canvas side in pixels")
    parser.add_argument("--min_side", type=int, default=20, help="smallest garment side in pixels")
    parser.add_argument("--max_side", type=int, default=40, help="largest garment side in pixels")
    parser.add_argument("--max_garments", type=int, default=4, help="garments per canvas: 1 to this")
    parser.add_argument("--threshold", type=int, default=24, help="grey level (0-255) a silhouette pixel reaches")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    answer_help_early(parse_args)

# Below the parser: these load torch and transformers, which `--help` does not wait for.
import numpy as np
from PIL import Image
from hf_mim.data import decode_image, load_image_dataset
from hf_mim.fashion_mnist import LABELS
from hf_mim.segmentation_data import SEGMENTATION_SAMPLE_DIR, segmentation_id2label


def garments(split: str) -> list[tuple[Image.Image, int]]:
    """(28x28 grey garment, Fashion-MNIST label) of every image of the embedded sample's split."""
    data = load_image_dataset(split=split)
    rows = data.dataset
    return [(decode_image(row[data.image_column]).convert("L"), int(row[data.label_column])) for row in rows]


def render_canvas(pool: list[tuple[Image.Image, int]], rng: np.random.Generator, args) -> tuple[np.ndarray, np.ndarray]:
    """One (image, annotation) pair of uint8 (size, size) arrays: garments pasted in draw order, later on top."""
    image = np.zeros((args.size, args.size), np.uint8)
    annotation = np.zeros((args.size, args.size), np.uint8)
    for _ in range(int(rng.integers(1, args.max_garments + 1))):
        garment, label = pool[int(rng.integers(len(pool)))]
        side = int(rng.integers(args.min_side, args.max_side + 1))
        top, left = (int(rng.integers(0, args.size - side + 1)) for _ in range(2))
        pixels = np.asarray(garment.resize((side, side), Image.Resampling.BILINEAR))
        silhouette = pixels >= args.threshold
        image[top:top + side, left:left + side][silhouette] = pixels[silhouette]
        annotation[top:top + side, left:left + side][silhouette] = label + 1
    return image, annotation


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode="L").save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def build_split(split: str, count: int, rng: np.random.Generator, args):
    from datasets import Dataset, Features
    from datasets import Image as ImageFeature

    pool = garments(SPLITS[split])
    rows = {"image": [], "annotation": []}
    for _ in range(count):
        image, annotation = render_canvas(pool, rng, args)
        rows["image"].append({"bytes": png_bytes(image), "path": None})
        rows["annotation"].append({"bytes": png_bytes(annotation), "path": None})
    return Dataset.from_dict(rows, features=Features({"image": ImageFeature(), "annotation": ImageFeature()}))


def main(argv=None) -> Path:
    args = parse_args(argv)
    if not 0 < args.min_side <= args.max_side <= args.size:
        raise SystemExit(f"need 0 < --min_side ({args.min_side}) <= --max_side ({args.max_side}) <= --size "
                         f"({args.size})")
    out = Path(args.output_dir or SEGMENTATION_SAMPLE_DIR)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for split, count in (("train", args.num_train), ("validation", args.num_validation)):
        build_split(split, count, rng, args).to_parquet(str(out / f"{split}.parquet"))
    (out / "id2label.json").write_text(json.dumps(segmentation_id2label(LABELS), indent=2) + "\n")
    return out


if __name__ == "__main__":
    print(main())
