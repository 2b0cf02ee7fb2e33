"""MaskFeat video processor: VideoMAE-style frames (shorter side resized bicubically to the model size, centre
crop, ImageNet normalisation) with temporal sampling, giving pixel_values (B, T, C, H, W), and for pretraining
the cube mask `bool_masked_pos` (B, t*h*w) on request (`return_bool_masked_pos=True`, seedable by `mask_seed`).

It is an image processor that takes videos (a video = a list of frames, or a (T, H, W, C) / (T, C, H, W) array;
a batch = a list of videos), as transformers' VideoMAE image processor: transformers' `BaseVideoProcessor` needs
torchvision, which a CPU install of hf-mim does not have, and the video-classification pipeline feeds an image
processor the decoded frames directly. The frames go through the same PIL backend as the image methods.

Temporal sampling (`sample_frame_indices`): `num_frames` frames `sample_rate` apart, centred in the clip. A clip
shorter than num_frames * sample_rate is looped (frame indices wrap around to its start), so any clip of at least
one frame gives num_frames frames; a clip of exactly num_frames frames is taken as already sampled (the
video-classification pipeline and the training loader sample before calling the processor) and kept as it is.
"""

from __future__ import annotations

import numpy as np
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import SizeDict

from .cube_masking import cube_mask
from .image_processing_mim import MimImageProcessor, MimImageProcessorKwargs


def sample_frame_indices(num_available: int, num_frames: int, sample_rate: int = 1,
                         start: int | None = None) -> np.ndarray:
    """Indices of `num_frames` frames `sample_rate` apart from `start` (None = centred), looped when the clip is
    short; a clip of exactly num_frames frames gives 0..num_frames-1 (already sampled)."""
    if num_available < 1:
        raise ValueError("the clip has no frames; it cannot be sampled (an unreadable or empty video?)")
    if num_frames < 1 or sample_rate < 1:
        raise ValueError(f"num_frames and sample_rate must be >= 1, got {num_frames} and {sample_rate}")
    if num_available == num_frames:
        return np.arange(num_frames)
    span = num_frames * sample_rate
    if start is None:
        start = max(0, (num_available - span) // 2)
    return (start + np.arange(num_frames) * sample_rate) % num_available


def is_frame_stack(value) -> bool:
    """A 4-D array or tensor: one video of T frames."""
    return getattr(value, "ndim", None) == 4


def as_video_batch(videos) -> list[list]:
    """One video (list of frames, or a 4-D array) or a batch (list of those, or a 5-D array) -> list of frame
    lists."""
    if getattr(videos, "ndim", None) == 5:
        return [list(video) for video in videos]
    if is_frame_stack(videos):
        return [list(videos)]
    if not isinstance(videos, (list, tuple)) or len(videos) == 0:
        raise ValueError(
            "videos must be a video (a list of frames or a (frames, height, width, channels) array) or a list of "
            f"videos; got {type(videos).__name__}{' (empty)' if isinstance(videos, (list, tuple)) else ''}"
        )
    if isinstance(videos[0], (list, tuple)) or is_frame_stack(videos[0]):
        return [list(video) for video in videos]
    return [list(videos)]


class MimMaskFeatVideoProcessorKwargs(MimImageProcessorKwargs, total=False):
    """
    num_frames (`int`, defaults to 16): frames per clip the model takes.
    sample_rate (`int`, defaults to 4): stride between sampled frames (MaskFeat/VideoMAE on Kinetics: 4).
    patch_size (`int`), tubelet_size (`int`): the model's token sizes, which fix the mask grid.
    mask_ratio, min_num_patches, max_num_patches, min_aspect, max_aspect, min_cube_frames, max_cube_frames:
        the cube mask's settings (see `MimMaskFeatVideoConfig`).
    """

    num_frames: int
    sample_rate: int
    patch_size: int
    tubelet_size: int
    mask_ratio: float
    min_num_patches: int
    max_num_patches: int | None
    min_aspect: float
    max_aspect: float | None
    min_cube_frames: int
    max_cube_frames: int | None


class MimMaskFeatVideoProcessor(MimImageProcessor):
    valid_kwargs = MimMaskFeatVideoProcessorKwargs
    size = {"shortest_edge": 224}
    do_center_crop = True
    crop_size = {"height": 224, "width": 224}
    num_frames = 16
    sample_rate = 4
    patch_size = 16
    tubelet_size = 2
    mask_ratio = 0.4
    min_num_patches = 9
    max_num_patches = None
    min_aspect = 0.3
    max_aspect = None
    min_cube_frames = 1
    max_cube_frames = None

    @classmethod
    def for_model_config(cls, config, **kwargs):
        """The processor that feeds a model of this config: shorter side to image_size, centre image_size crop."""
        side = config.image_size
        return cls(**{"size": {"shortest_edge": side}, "crop_size": {"height": side, "width": side},
                      **cls.kwargs_from_config(config), **kwargs})

    @classmethod
    def kwargs_from_config(cls, config) -> dict:
        names = ("num_frames", "patch_size", "tubelet_size", "mask_ratio", "min_num_patches", "max_num_patches",
                 "min_aspect", "max_aspect", "min_cube_frames", "max_cube_frames")
        return {name: getattr(config, name) for name in names}

    def pretraining_kwargs(self) -> dict:
        return {"return_bool_masked_pos": True}

    def token_grid(self, frames: int, crop: SizeDict) -> tuple[int, int, int]:
        if frames % self.tubelet_size or crop.height % self.patch_size or crop.width % self.patch_size:
            raise ValueError(
                f"{frames} frames of {crop.height}x{crop.width} do not split into tubelets of {self.tubelet_size} "
                f"frames x {self.patch_size}x{self.patch_size} pixels; fix num_frames or crop_size"
            )
        return frames // self.tubelet_size, crop.height // self.patch_size, crop.width // self.patch_size

    def generate_mask(self, grid: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
        """The cube mask on the (t, h, w) token grid, exactly round(mask_ratio * t*h*w) True."""
        count = int(round(self.mask_ratio * grid[0] * grid[1] * grid[2]))
        return cube_mask(*grid, count, self.min_num_patches, self.max_num_patches, self.min_aspect, self.max_aspect,
                         self.min_cube_frames, self.max_cube_frames, rng=rng)

    def _preprocess_image_like_inputs(self, images, *args, num_frames=None, sample_rate=None,
                                      return_bool_masked_pos=False, mask_seed=None, return_tensors=None, **kwargs):
        """Sample each video's frames, run every frame through the image pipeline, regroup them per video."""
        videos = [[video[i] for i in sample_frame_indices(len(video), num_frames, sample_rate)]
                  for video in as_video_batch(images)]
        frames = [frame for video in videos for frame in video]
        processed = super()._preprocess_image_like_inputs(frames, *args, return_tensors=None, **kwargs)
        stacked = np.stack(processed["pixel_values"]).astype(np.float32, copy=False)
        pixel_values = stacked.reshape(len(videos), num_frames, *stacked.shape[1:])
        data = {"pixel_values": pixel_values}
        if return_bool_masked_pos:
            grid = self.token_grid(num_frames, SizeDict(height=pixel_values.shape[-2], width=pixel_values.shape[-1]))
            rng = np.random.default_rng(mask_seed)
            data["bool_masked_pos"] = np.stack([self.generate_mask(grid, rng).reshape(-1) for _ in videos])
        return BatchFeature(data=data, tensor_type=return_tensors)
