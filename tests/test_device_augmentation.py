"""The accelerator augmentation path against the CPU path it replaces: the same random choices exactly, the same
pixels up to resampling, and a pretraining run that uses it."""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import hf_mim
from hf_mim.data import Augmentation, SeededImageDataset, collate, load_image_dataset
from hf_mim.device_augmentation import DeviceAugmentation, DeviceAugmentedImageDataset, jitter

from helpers import TINY_OVERRIDES, load_script


def smooth_images(folder, count=6, size=(180, 120), suffix="png", orientation=None):
    """Photos stand-in with content everywhere: red grows left to right, green top to bottom, blue a blob, so a
    wrong box, a missing flip or a swapped channel changes many pixels a lot. `orientation`: an EXIF tag to store
    (6 = the camera was turned, view rotated a quarter turn)."""
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    x, y = np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, height))
    for i in range(count):
        cx, cy = 0.2 + 0.12 * i, 0.7 - 0.08 * i
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.05)
        rgb = np.stack([40 + 200 * x, 30 + 180 * y, 20 + 220 * blob], -1)
        exif = Image.Exif()
        if orientation:
            exif[0x0112] = orientation
        Image.fromarray(rgb.round().astype(np.uint8)).save(folder / f"{i}.{suffix}", quality=95, exif=exif)
    return folder


def both_paths(method_name, folder, augmentation, source_size=256, size_overrides=None):
    method = hf_mim.get_method(method_name)
    config = method.config_class(**{**method.backbone().demo_config, **(size_overrides or {})})
    processor = method.image_processor_class.for_model_config(config)
    kwargs = processor.pretraining_kwargs()
    data = load_image_dataset(train_dir=str(folder))
    cpu = SeededImageDataset(data, processor, augmentation, seed=3, processor_kwargs=kwargs)
    device = DeviceAugmentedImageDataset(data, processor, augmentation, source_size, seed=3, processor_kwargs=kwargs)
    cpu.set_epoch(2)
    device.set_epoch(2)
    cpu_batch = collate([cpu[i] for i in range(len(cpu))])
    device_batch = DeviceAugmentation.for_processor(processor, kwargs)(collate([device[i] for i in range(len(device))]))
    return cpu_batch, device_batch, processor


@pytest.mark.parametrize("method_name", sorted(hf_mim.METHODS))
def test_masks_and_noise_are_those_of_the_cpu_path(tmp_path, method_name):
    cpu, device, _ = both_paths(method_name, smooth_images(tmp_path / "img"), Augmentation(crop_scale=(0.2, 1.0)))
    assert set(cpu) == set(device), (sorted(cpu), sorted(device))
    for key in ("bool_masked_pos", "noise"):
        if key in cpu:
            assert torch.equal(cpu[key], device[key]), key


@pytest.mark.parametrize("color_jitter, photo", [(0.0, "png"), (0.4, "png"), (0.4, "jpeg"), (0.4, "sideways jpeg")])
def test_pixels_match_the_cpu_path_up_to_resampling(tmp_path, color_jitter, photo):
    """BEiT's views (64 px encoder view, 32 px tokenizer view) from crops down to 20% of the image, flips and
    jitter; the 720 x 480 JPEGs decode at 1/4 scale for the 96 px source square, and sideways ones are turned
    upright by their EXIF tag on both paths. Resampling differences stay near 1% of the range; a mirrored or
    misplaced crop is ~10x further."""
    augmentation = Augmentation(crop_scale=(0.2, 1.0), color_jitter=color_jitter)
    images = (smooth_images(tmp_path / "img") if photo == "png"
              else smooth_images(tmp_path / "img", size=(720, 480), suffix="jpg",
                                 orientation=6 if photo.startswith("sideways") else None))
    cpu, device, processor = both_paths("beit", images, augmentation, source_size=256 if photo == "png" else 96,
                                        size_overrides={"image_size": 64, "patch_size": 8})
    std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
    error = ((cpu["pixel_values"] - device["pixel_values"]) * std).abs()  # in units of the [0, 1] range
    mirrored = ((cpu["pixel_values"] - device["pixel_values"].flip(-1)) * std).abs()
    assert error.mean() < 0.012 and error.amax() < 0.2, (error.mean(), error.amax())
    assert mirrored.mean() > 5 * error.mean()
    codebook_error = (cpu["codebook_pixel_values"] - device["codebook_pixel_values"]).abs()
    assert codebook_error.mean() < 0.012 and device["codebook_pixel_values"].min() >= 0.1 - 1e-6


def test_jitter_follows_pil_image_enhance():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    order, factors = (2, 0, 1), (1.3, 0.7, 1.25)
    expected = Augmentation.apply(image, type("D", (), dict(jitter_order=order, jitter_factors=factors, flip=False,
                                                           box=(0, 0, 24, 24)))())
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    ours = jitter(pixels, torch.tensor([order]), torch.tensor([factors]))[0].permute(1, 2, 0).numpy()
    difference = np.abs(ours - np.asarray(expected, dtype=np.float32))
    assert difference.max() <= 1.0 and difference.mean() < 0.05, (difference.max(), difference.mean())


def test_a_source_size_of_zero_is_refused(tmp_path):
    method = hf_mim.get_method("mae")
    processor = method.image_processor_class()
    with pytest.raises(ValueError, match="source_size=0: must be a positive side"):
        DeviceAugmentedImageDataset(load_image_dataset(train_dir=str(smooth_images(tmp_path / "i", 2))), processor,
                                    Augmentation(), 0)


def test_pretraining_on_the_device_path_resumes_exactly(tmp_path, caplog):
    from accelerate.state import AcceleratorState, GradientState

    pretrain = load_script("pretrain")

    def run(out, extra):
        summary = pretrain.main(["--method", "mae", "--config_overrides", TINY_OVERRIDES["mae"], "--output_dir", str(out),
                                 "--per_device_train_batch_size", "8", "--max_train_steps", "4", "--augment_on_device",
                                 "--augmentation_source_size", "48", "--checkpointing_steps", "2", "--gradient_checkpointing",
                                 *extra])
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        return summary

    straight = run(tmp_path / "a", [])
    resumed = run(tmp_path / "b", ["--resume_from_checkpoint", str(tmp_path / "a" / "checkpoints" / "step_2")])
    assert "resumed from" in caplog.text and "at update 2" in caplog.text
    assert np.isfinite(straight["final_loss"]) and resumed["steps"] == straight["steps"] == 4
    first, second = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_a_source_size_without_the_device_path_is_an_error(capsys):
    with pytest.raises(SystemExit):
        load_script("pretrain").parse_args(["--method", "mae", "--augmentation_source_size", "336"])
    assert "--augmentation_source_size only applies with --augment_on_device" in capsys.readouterr().err


def test_unreadable_images_are_skipped_and_jpegs_decode_at_reduced_scale(tmp_path):
    import io

    from hf_mim.device_augmentation import open_for_source

    photo = io.BytesIO()
    Image.fromarray(np.zeros((480, 720, 3), dtype=np.uint8)).save(photo, "JPEG")
    image, size = open_for_source({"bytes": photo.getvalue(), "path": None}, 96)
    assert size == (720, 480) and image.size == (180, 120) and image.mode == "RGB"  # 1/4 scale, not below 96
    assert open_for_source({"bytes": photo.getvalue()[:200], "path": None}, 96) == (None, None)
    assert open_for_source({"bytes": b"not an image", "path": None}, 96) == (None, None)
