"""Build the embedded video sample: short clips of real Fashion-MNIST garments moving, rotating and scaling.

Each clip takes one garment of the embedded Fashion-MNIST sample (hf_mim/sample_data/fashion_mnist: the first
`--train_per_class` garments of each class of its train split, the first `--test_per_class` of its test split) and
renders `--num_frames` frames of `--size` px on black: between the first and the last frame the garment's centre
moves along a straight line, it turns by up to +-45 degrees and its scale changes between 0.5 and 0.9 of the frame
(all linear in time, drawn per clip from a numpy Generator seeded by `--seed`; bilinear affine sampling). The clip
is labelled by its garment's class and stored as near-lossless H.264 (crf 1, yuv420p, 8 fps) .mp4.

    python scripts/make_video_sample.py            # rewrites hf_mim/sample_data/fashion_mnist_video/

Needs PyAV (`pip install -e ".[video]"`). The same arguments render the same frames; the encoder (x264) is not
bit-reproducible across processes, so a few files in a hundred may decode a few grey levels apart between runs.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
from pathlib import Path

from hf_mim_cli.arguments import HelpFormatter, answer_help_early

GARMENT_SIDE = 28


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    parser.add_argument("--output_dir", default=None, help="where the clips and metadata.csv go (default: the "
                        "embedded sample's folder, hf_mim/sample_data/fashion_mnist_video)")
    parser.add_argument("--train_per_class", type=int, default=20, help="train clips per class (one garment each)")
    parser.add_argument("--test_per_class", type=int, default=5, help="test clips per class (one garment each)")
    parser.add_argument("--num_frames", type=int, default=16, help="frames per clip")
    parser.add_argument("--size", type=int, default=32, help="frame side in pixels (even, for yuv420p)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the motion draws")
    return parser.parse_args(argv)


if __name__ == "__main__":
    answer_help_early(parse_args)

# Below the parser: these load torch and transformers, which `--help` does not wait for.
import numpy as np
from PIL import Image
from hf_mim.data import SAMPLE_DIR
from hf_mim.fashion_mnist import LABELS
from hf_mim.video_data import VIDEO_SAMPLE_DIR, encode_video


def garments(split: str, per_class: int) -> list[tuple[np.ndarray, int]]:
    """The first `per_class` (28x28 uint8 image, label) pairs of each class of the embedded sample's split."""
    import pyarrow.parquet as pq

    table = pq.read_table(SAMPLE_DIR / f"{split}.parquet").to_pydict()
    chosen, counts = [], {}
    for image, label in zip(table["image"], table["label"]):
        if counts.get(label, 0) < per_class:
            counts[label] = counts.get(label, 0) + 1
            chosen.append((np.asarray(Image.open(io.BytesIO(image["bytes"])).convert("L")), int(label)))
    return chosen


def draw_motion(rng: np.random.Generator, size: int) -> dict:
    """Start and end of centre (px), angle (degrees) and scale (garment side / frame side) of one clip."""
    scales = rng.uniform(0.5, 0.9, size=2)
    margin = size * 0.3
    centres = rng.uniform(margin, size - margin, size=(2, 2))
    start_angle = rng.uniform(-20.0, 20.0)
    return {"centre": centres, "angle": (start_angle, start_angle + rng.uniform(-45.0, 45.0)), "scale": scales}


def render_frame(garment: Image.Image, size: int, centre, angle: float, scale: float) -> np.ndarray:
    """The garment turned by `angle`, scaled to `scale * size` px and centred at `centre`, on a black frame."""
    zoom = scale * size / GARMENT_SIDE
    cos, sin = math.cos(math.radians(angle)) / zoom, math.sin(math.radians(angle)) / zoom
    half = GARMENT_SIDE / 2
    # output (x, y) -> input: R(-angle) / zoom applied to (x, y) - centre, then + the garment's centre
    a, b, d, e = cos, sin, -sin, cos
    c = half - a * centre[0] - b * centre[1]
    f = half - d * centre[0] - e * centre[1]
    frame = garment.transform((size, size), Image.Transform.AFFINE, (a, b, c, d, e, f),
                              resample=Image.Resampling.BILINEAR, fillcolor=0)
    return np.asarray(frame)


def render_clip(image: np.ndarray, motion: dict, num_frames: int, size: int) -> np.ndarray:
    """(num_frames, size, size, 3) uint8: the motion's parameters interpolated linearly over the frames."""
    garment = Image.fromarray(image, mode="L")
    frames = []
    for step in np.linspace(0.0, 1.0, num_frames):
        centre = motion["centre"][0] * (1 - step) + motion["centre"][1] * step
        angle = motion["angle"][0] * (1 - step) + motion["angle"][1] * step
        scale = motion["scale"][0] * (1 - step) + motion["scale"][1] * step
        frames.append(render_frame(garment, size, centre, angle, scale))
    return np.repeat(np.stack(frames)[..., None], 3, axis=-1)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.size % 2:
        raise ValueError(f"--size {args.size} must be even (H.264 yuv420p)")
    output = Path(args.output_dir or VIDEO_SAMPLE_DIR)
    output.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    rows = []
    for split, per_class in (("train", args.train_per_class), ("test", args.test_per_class)):
        (output / split).mkdir(exist_ok=True)
        for index, (image, label) in enumerate(garments(split, per_class)):
            name = f"{split}/{index:04d}_{LABELS[label].replace('/', '-').replace(' ', '_').lower()}.mp4"
            encode_video(output / name, render_clip(image, draw_motion(rng, args.size), args.num_frames, args.size))
            rows.append({"file_name": name, "label": label, "label_name": LABELS[label], "split": split})
    with open(output / "metadata.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file_name", "label", "label_name", "split"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} clips of {args.num_frames} frames, {args.size} px, to {output}")


if __name__ == "__main__":
    main()
