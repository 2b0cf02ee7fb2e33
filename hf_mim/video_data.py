"""Video clips for MaskFeat video: folders of video files (decoded with PyAV) or of frame folders, and the
embedded Fashion-MNIST video sample, served as the image pipeline serves images.

Same rules as `hf_mim.data`: every random choice for a clip (temporal crop, spatial crop, flip, cube mask) comes
from a generator seeded by (seed, epoch, clip index), and an unreadable clip comes back as `{"skipped": 1}`, which
`hf_mim.data.collate` drops and counts. PyAV is imported only when a video file is decoded
(`pip install -e ".[video]"`).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hf_mim.data import SeededImageDataset, decode_image
from hf_mim.fashion_mnist import LABELS
from hf_mim.modeling.video_processing_maskfeat import sample_frame_indices

logger = logging.getLogger(__name__)

VIDEO_SAMPLE_DIR = Path(__file__).parent / "sample_data" / "fashion_mnist_video"
SAMPLE_CLIP_FRAMES = 16  # frames of every embedded clip (scripts/make_video_sample.py --num_frames)
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def import_av():
    """PyAV, or an ImportError saying how to install it."""
    try:
        import av
    except ImportError:
        raise ImportError('decoding video files needs PyAV: pip install -e ".[video]"') from None
    return av


# ----------------------------------------------------------------------------------------------- decoding


def decode_video(path) -> list[Image.Image] | None:
    """Every frame of the first video stream of a file, as RGB PIL images; None if unreadable or empty."""
    av = import_av()
    try:
        with av.open(str(path)) as container:
            frames = [frame.to_image() for frame in container.decode(video=0)]
    except (av.FFmpegError, OSError, ValueError, IndexError, EOFError) as error:  # IndexError: no video stream
        logger.debug("skipping unreadable video %s: %s", path, error)
        return None
    return frames or None


def decode_frame_folder(path) -> list[Image.Image] | None:
    """The image files of a folder, in name order, as RGB frames; None if it has none or one is unreadable (a
    missing frame would shift the clip's timing)."""
    files = sorted(p for p in Path(path).iterdir() if p.suffix.lower() in FRAME_EXTENSIONS)
    frames = [decode_image(str(p)) for p in files]
    if not frames or any(frame is None for frame in frames):
        logger.debug("skipping unreadable frame folder %s", path)
        return None
    return frames


def decode_clip(path) -> list[Image.Image] | None:
    """A video file or a folder of frames -> its RGB frames, or None if unreadable."""
    return decode_frame_folder(path) if Path(path).is_dir() else decode_video(path)


def encode_video(path, frames: np.ndarray, fps: int = 8, codec: str = "libx264", options: dict | None = None) -> None:
    """Write (T, H, W, 3) uint8 frames as a video file. The default is near-lossless H.264 (crf 1, yuv420p, one
    thread; H and W must be even). x264 is not bit-reproducible across processes: a few files in a hundred may
    decode a few grey levels apart between two runs."""
    av = import_av()
    options = {"crf": "1", "threads": "1"} if options is None and codec == "libx264" else (options or {})
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.thread_count = 1
        for index, array in enumerate(frames):
            # explicit pts and colour conversion: left to the encoder, the bytes differed more often between runs
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24").reformat(format="yuv420p")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


# ----------------------------------------------------------------------------------------------- loading


@dataclass
class VideoClips:
    """Clip rows `{"video": path, "label": id}` with the fields `SeededImageDataset` reads."""

    dataset: list[dict]
    image_column: str
    label_column: str | None
    label_names: list[str] | None
    source: str
    frames_per_clip: int | None = None  # known for the embedded sample (16), None for a folder of clips


def is_clip(path: Path) -> bool:
    """A video file, or a folder holding image files (one clip's frames)."""
    if path.is_file():
        return path.suffix.lower() in VIDEO_EXTENSIONS
    return path.is_dir() and any(p.suffix.lower() in FRAME_EXTENSIONS for p in path.iterdir())


def load_video_folder(train_dir) -> VideoClips:
    """Clips under `train_dir`: one sub-folder per class holding video files or frame folders (labels by sorted
    class name), or the clips themselves directly (no labels)."""
    root = Path(train_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--train_dir {train_dir!r} is not a folder; point it at a folder of videos")
    entries = sorted(root.iterdir())
    direct = [p for p in entries if is_clip(p)]
    classes = [p for p in entries if p.is_dir() and p not in direct and any(is_clip(c) for c in p.iterdir())]
    if direct and classes:
        raise ValueError(f"{root} mixes clips and class folders; put every clip inside a class folder, or none")
    if direct:
        return VideoClips([{"video": str(p)} for p in direct], "video", None, None, f"video folder {root}")
    if not classes:
        raise ValueError(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) or frame folders found in {root}")
    rows = [{"video": str(clip), "label": label} for label, folder in enumerate(classes)
            for clip in sorted(folder.iterdir()) if is_clip(clip)]
    return VideoClips(rows, "video", "label", [p.name for p in classes], f"video folder {root}")


def load_video_sample(split: str = "train") -> VideoClips:
    """The embedded Fashion-MNIST video sample (hf_mim/sample_data/fashion_mnist_video), split "train" or "test"."""
    with open(VIDEO_SAMPLE_DIR / "metadata.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if split not in {row["split"] for row in rows}:
        raise ValueError(f"the embedded video sample has splits 'train' and 'test', not {split!r}")
    clips = [{"video": str(VIDEO_SAMPLE_DIR / row["file_name"]), "label": int(row["label"])}
             for row in rows if row["split"] == split]
    return VideoClips(clips, "video", "label", list(LABELS), "embedded Fashion-MNIST video sample (hf_mim/sample_data)",
                      frames_per_clip=SAMPLE_CLIP_FRAMES)


def load_video_dataset(train_dir=None, split: str = "train") -> VideoClips:
    """A folder of clips (`train_dir`) or, without one, the embedded sample's `split`."""
    return load_video_folder(train_dir) if train_dir else load_video_sample(split)


# ----------------------------------------------------------------------------------------------- datasets


def temporal_crop(num_available: int, num_frames: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Frame indices of a random temporal window of num_frames frames sample_rate apart (looped if short)."""
    span = num_frames * sample_rate
    start = int(rng.integers(0, num_available - span + 1)) if num_available > span else 0
    return sample_frame_indices(num_available, num_frames, sample_rate, start=start)


def clip_sample_rate(clips: VideoClips, processor) -> int:
    """Frames between two sampled frames: on the embedded sample the model's frames span the whole 16-frame clip
    (16 / num_frames); elsewhere the processor's `sample_rate` (4 by default, as on Kinetics)."""
    if clips.frames_per_clip:
        return max(1, clips.frames_per_clip // processor.num_frames)
    return processor.sample_rate


class SeededVideoDataset(SeededImageDataset):
    """`SeededImageDataset` for clips: decode, pick a temporal window (random in training, the centred one when
    there is no augmentation, as in evaluation) of the processor's num_frames `clip_sample_rate` apart, one spatial
    augmentation draw shared by all frames, then the video processor. An unreadable clip is skipped and counted.
    RandAugment and random erasing are image-only: a clip dataset refuses them."""

    def __init__(self, data: VideoClips, processor, augmentation=None, seed: int = 0, **kwargs):
        if kwargs.get("rand_augment") is not None or kwargs.get("random_erasing") is not None:
            raise ValueError("RandAugment and random erasing are applied to images only; for video clips pass "
                             "--rand_augment none --random_erasing 0 (the video recipe's defaults)")
        super().__init__(data, processor, augmentation, seed, **kwargs)
        self.sample_rate = clip_sample_rate(data, processor)

    def __getitem__(self, index: int) -> dict:
        row = self.data.dataset[int(index)]
        frames = decode_clip(row[self.data.image_column])
        if frames is None:
            return {"skipped": 1}
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        if self.augmentation is None:
            indices = sample_frame_indices(len(frames), self.processor.num_frames, self.sample_rate)
        else:
            indices = temporal_crop(len(frames), self.processor.num_frames, self.sample_rate, rng)
        frames = [frames[i] for i in indices]
        if self.augmentation is not None:
            draw = self.augmentation.draw(frames[0].size, rng)
            frames = [self.augmentation.apply(frame, draw) for frame in frames]
        features = self.processor(frames, return_tensors="pt", mask_seed=int(rng.integers(2**31)),
                                  **self.processor_kwargs)
        example = {key: value[0] for key, value in features.items()}
        if self.with_labels:
            example["labels"] = torch.tensor(row[self.data.label_column], dtype=torch.long)
        return example


# ----------------------------------------------------------------------------------------------- script entry points


def check_video_arguments(args) -> None:
    """The data flags a video run cannot take, refused with the fix."""
    if getattr(args, "dataset_name", None):
        raise SystemExit("--modality video reads clips from --train_dir (video files or folders of frames, one "
                         "sub-folder per class) or the embedded sample; --dataset_name is for images")
    if getattr(args, "augment_on_device", False):
        raise SystemExit("--augment_on_device is for images; drop it for --modality video (clips are augmented "
                         "on the CPU, one crop and flip for all frames)")


def video_pretraining_data(args, backbone, config, settings):
    """(clips, processor, dataset) of a video pretraining run: `--train_dir` or the embedded sample, the crop
    and flip of the recipe drawn once per clip, the cube mask from the processor."""
    from hf_mim.data import Augmentation

    check_video_arguments(args)
    clips = load_video_dataset(args.train_dir)
    processor = backbone.image_processor_class.for_model_config(config)
    augmentation = Augmentation(crop_scale=settings.crop_scale, color_jitter=settings.color_jitter)
    dataset = SeededVideoDataset(clips, processor, augmentation, seed=args.seed,
                                 processor_kwargs=processor.pretraining_kwargs())
    logger.info("video: %d clips, %d frames %d apart, tubelets of %d frames x %d px", len(clips.dataset),
                processor.num_frames, dataset.sample_rate, config.tubelet_size, config.patch_size)
    return clips, processor, dataset


def video_finetune_splits(args) -> tuple[VideoClips, VideoClips | None]:
    """(train, evaluation) clips of a video fine-tuning or probe run: `--train_dir` (and `--validation_dir`), or
    the embedded sample's train and test splits."""
    check_video_arguments(args)
    if args.train_dir:
        evaluation = load_video_folder(args.validation_dir) if getattr(args, "validation_dir", None) else None
        return load_video_folder(args.train_dir), evaluation
    return load_video_sample("train"), load_video_sample("test")


def is_video_model(model_name_or_path) -> bool:
    """Whether the hf-mim model saved at `model_name_or_path` takes video clips (its backbone's modality)."""
    from transformers import AutoConfig

    from hf_mim.methods import backbone_of_config

    return backbone_of_config(AutoConfig.from_pretrained(model_name_or_path)).modality == "video"


def as_feature_dataset(data, processor):
    """What `hf_mim.evaluation.extract_features` reads: clips become a `SeededVideoDataset` (centred windows, no
    augmentation, unreadable clips dropped with their labels); image data is returned as it is."""
    if not isinstance(data, VideoClips):
        return data
    return SeededVideoDataset(data, processor, None, with_labels=True, replace_unreadable=False)
