"""Property-based tests of the image processors' pretraining outputs over random image sizes, patch and mask
sizes, counts and seeds: shapes, exact counts where the method promises them, and seeded reproducibility."""

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

import hf_mim
from hf_mim.benchmarking import plain_pil_backend
from helpers import TINY_PROCESSOR_SETTINGS

from hf_mim.modeling.image_processing_cae import MimCaeImageProcessor
from hf_mim.modeling.image_processing_mae import MimMaeImageProcessor
from hf_mim.modeling.image_processing_simmim import MimSimMIMImageProcessor

images = st.tuples(st.integers(1, 80), st.integers(1, 80), st.sampled_from(["L", "RGB", "RGBA"])).map(
    lambda t: Image.new(t[2], (t[0], t[1]), 90))


@settings(max_examples=25, deadline=None)
@given(image=images, grid=st.integers(2, 8), scale=st.sampled_from([1, 2]), ratio=st.floats(0.05, 0.95),
       seed=st.integers(0, 2**31 - 1))
def test_simmim_processor_masks_exact_ceil_counts_reproducibly(image, grid, scale, ratio, seed):
    patch, mask_patch = 4, 4 * scale
    size = mask_patch * grid
    processor = MimSimMIMImageProcessor(size={"height": size, "width": size}, patch_size=patch,
                                        mask_patch_size=mask_patch, mask_ratio=ratio)
    out = processor(image, return_bool_masked_pos=True, mask_seed=seed, return_tensors="np")
    again = processor(image, return_bool_masked_pos=True, mask_seed=seed, return_tensors="np")
    assert out["pixel_values"].shape == (1, 3, size, size)
    assert out["bool_masked_pos"].shape == (1, (size // patch) ** 2)
    assert out["bool_masked_pos"].sum() == math.ceil(grid * grid * ratio) * scale * scale
    assert np.array_equal(out["bool_masked_pos"], again["bool_masked_pos"])


@settings(max_examples=25, deadline=None)
@given(image=images, grid=st.integers(3, 10), fraction=st.floats(0.1, 0.7), seed=st.integers(0, 2**31 - 1))
def test_cae_processor_masks_exactly_the_asked_count(image, grid, fraction, seed):
    count = max(1, int(grid * grid * fraction))
    processor = MimCaeImageProcessor(size={"height": 4 * grid, "width": 4 * grid}, patch_size=4,
                                     num_masking_patches=count, min_num_patches=2)
    out = processor([image, image], return_bool_masked_pos=True, mask_seed=seed, return_tensors="np")
    assert out["bool_masked_pos"].shape == (2, grid * grid)
    assert out["bool_masked_pos"].sum(axis=1).tolist() == [count, count]


@settings(max_examples=25, deadline=None)
@given(image=images, grid=st.integers(1, 8), seed=st.integers(0, 2**31 - 1))
def test_mae_processor_noise_is_seeded_and_in_unit_interval(image, grid, seed):
    processor = MimMaeImageProcessor(size={"height": 4 * grid, "width": 4 * grid}, patch_size=4)
    first = processor(image, return_noise=True, mask_seed=seed, return_tensors="np")["noise"]
    second = processor(image, return_noise=True, mask_seed=seed, return_tensors="np")["noise"]
    assert first.shape == (1, grid * grid) and np.array_equal(first, second)
    assert ((first >= 0) & (first < 1)).all()


pixel_arrays = st.tuples(
    st.sampled_from([(16, 16), (16, 24), (7, 5), (40, 33), (8, 8)]),
    st.sampled_from(["uint8 RGB", "uint8 RGBA", "float RGB", "PIL RGB", "PIL L", "PIL RGBA", "PIL RGB keyed"]),
    st.integers(0, 2**31 - 1),
)


@settings(max_examples=100, deadline=None)
@example(case=((16, 24), "PIL RGB", 0), method="beit", pretraining=True)  # tokenizer views from the PIL source
@example(case=((40, 33), "PIL RGB", 1), method="cae", pretraining=True)
@example(case=((7, 5), "PIL RGB keyed", 2), method="beit", pretraining=True)
@example(case=((16, 16), "PIL RGB", 3), method="mae", pretraining=False)
@given(case=pixel_arrays, method=st.sampled_from(sorted(hf_mim.METHODS)), pretraining=st.booleans())
def test_fast_paths_give_the_pil_backends_exact_pixels(case, method, pretraining):
    """Resizing RGB PIL images before they become arrays, skipping the same-size PIL round trip and normalising a
    contiguous copy must not change one bit: images that need a resize and ones that do not, uint8, float and
    PIL, every method's processor and extra view, in pretraining and at inference."""
    (height, width), kind, seed = case
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[kind.split()[1]]
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    if kind.startswith("float"):
        image = rng.random((height, width, 3), dtype=np.float32)  # off the k/255 grid: PIL would requantise it
    elif kind.startswith("PIL"):
        image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
        if kind.endswith("keyed"):  # a transparency colour: the backend composites it onto white
            image.info["transparency"] = tuple(int(c) for c in pixels[0, 0])
    else:
        image = pixels
    processor_class = hf_mim.get_method(method).image_processor_class
    settings_ = {"size": {"height": 16, "width": 16}, "patch_size": 4, **TINY_PROCESSOR_SETTINGS[method]}
    fast, plain = processor_class(**settings_), plain_pil_backend(processor_class)(**settings_)
    kwargs = fast.pretraining_kwargs() if pretraining else {}
    ours = fast(image, return_tensors="np", mask_seed=seed, **kwargs)
    reference = plain(image, return_tensors="np", mask_seed=seed, **kwargs)
    assert sorted(ours) == sorted(reference)
    for key in reference:
        assert ours[key].dtype == reference[key].dtype and np.array_equal(ours[key], reference[key]), key


def test_a_2d_array_is_one_greyscale_image():
    """transformers stops on a 2-D array (batch or image?); ours reads it as greyscale, like a PIL "L" image."""
    import torch

    grey = np.random.default_rng(0).integers(0, 256, (40, 50), dtype=np.uint8)
    processor = MimMaeImageProcessor(size={"height": 32, "width": 32})
    expected = processor(Image.fromarray(grey), return_tensors="np")["pixel_values"]
    assert np.array_equal(processor(grey, return_tensors="np")["pixel_values"], expected)
    assert np.array_equal(processor(torch.from_numpy(grey), return_tensors="np")["pixel_values"], expected)
    both = processor([grey, grey], return_tensors="np")["pixel_values"]
    assert both.shape == (2, 3, 32, 32) and np.array_equal(both[1:], expected)


def test_sixteen_bit_arrays_stop_with_the_conversion_that_works():
    import torch

    from hf_mim.data import to_rgb

    deep = np.random.default_rng(0).integers(0, 65536, (40, 50), dtype=np.uint16)
    processor = MimMaeImageProcessor(size={"height": 32, "width": 32})
    with pytest.raises(ValueError, match=r"uint16 image spans .*pass a greyscale one as `PIL\.Image\.fromarray\(array\)`"):
        processor(deep)
    with pytest.raises(ValueError, match=r"torch\.uint16 image spans"):
        processor(torch.from_numpy(deep))
    as_pil = processor(Image.fromarray(deep), return_tensors="np")["pixel_values"]  # the advice works
    as_trained = processor(to_rgb(Image.fromarray(deep)), return_tensors="np")["pixel_values"]
    assert np.array_equal(as_pil, as_trained) and np.ptp(as_pil) > 3
    in_range = deep % 256  # integer arrays within 0..255 keep working, whatever their dtype
    assert processor(in_range, return_tensors="np")["pixel_values"].shape == (1, 3, 32, 32)


def test_sixteen_bit_pil_images_get_the_pixels_training_saw():
    """PIL's convert("RGB") clips a 16-bit image to white; the processor scales it by its range, as the training
    decoder does, so a pipeline on a 16-bit PNG sees what the model was trained on."""
    from hf_mim.data import to_rgb

    ramp = Image.fromarray(np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16))
    assert len(np.unique(np.asarray(ramp.convert("RGB")))) < 20  # what the plain conversion would keep
    processor = MimMaeImageProcessor(size={"height": 64, "width": 64})
    ours = processor(ramp, return_tensors="np")["pixel_values"]
    assert np.array_equal(ours, processor(to_rgb(ramp), return_tensors="np")["pixel_values"])
    assert len(np.unique(ours[0, 0])) > 200


def test_evaluation_crop_against_pil_and_the_plain_resize_of_square_images():
    """The evaluation processor is PIL's short-side resize then the centre square (a reference built from PIL
    directly); with crop_pct 1 a square image gets exactly the plain resize (the Fashion-MNIST table's pixels)."""
    from hf_mim.data import decode_image, load_image_dataset
    from hf_mim.modeling.configuration_mae import MimMaeConfig

    config = MimMaeConfig(image_size=32, patch_size=4)
    evaluation = MimMaeImageProcessor.for_evaluation(config)
    assert evaluation.size.height == 32 and evaluation.crop_pct == 0.875  # `size` is the model's input
    assert evaluation.evaluation_sides() == (36, 32)  # int(32 / 0.875)
    wide = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    reference = np.asarray(wide.resize((54, 36), Image.Resampling.BICUBIC).crop((11, 2, 43, 34)))
    expected = ((reference / 255).astype(np.float32) - np.float32(evaluation.image_mean)) / np.float32(evaluation.image_std)
    ours = evaluation(wide, return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)
    data = load_image_dataset(split="test")
    garment = decode_image(data.dataset[0][data.image_column])
    whole = MimMaeImageProcessor.for_evaluation(config, crop_pct=1)(garment, return_tensors="np")["pixel_values"]
    plain = MimMaeImageProcessor.for_model_config(config)(garment, return_tensors="np")["pixel_values"]
    assert np.array_equal(whole, plain)
