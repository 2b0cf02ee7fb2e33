"""Every `size` form transformers allows, for inference and pretraining calls of all five processors, and the
fine-tuned (evaluation) processor whose `size` is the model's input with the crop as `crop_pct`."""

import random

import numpy as np
import pytest
from PIL import Image

import hf_mim
from hf_mim.methods import METHODS

SIZE_FORMS = ("height_width", "shortest_edge", "shortest_and_longest_edge", "int")


def size_form(form: str, side: int):
    return {"height_width": {"height": side, "width": side}, "shortest_edge": {"shortest_edge": side},
            "shortest_and_longest_edge": {"shortest_edge": side, "longest_edge": 2 * side}, "int": side}[form]


def demo_config(name: str):
    return hf_mim.get_method(name).config_class(**hf_mim.get_method(name).backbone().demo_config)


def picture(height: int, width: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def one_line_error(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("form", SIZE_FORMS)
@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_size_form_gives_the_same_inference_and_pretraining_inputs(name, form):
    """A square image: every form means the model's square, so pixels, masks, noise and tokenizer views equal
    those of the height/width form for the same seed (the MAE form used to stop at `NoneType // int`)."""
    config = demo_config(name)
    side = config.image_size
    processors = hf_mim.get_method(name).image_processor_class
    reference = processors.for_model_config(config)
    processor = processors.for_model_config(config, size=size_form(form, side))
    image = picture(side + 8, side + 8)
    expected = reference(image, return_tensors="np")["pixel_values"]
    assert expected.shape == (1, 3, side, side)
    assert np.array_equal(processor(image, return_tensors="np")["pixel_values"], expected)
    assert np.array_equal(reference(image, size=size_form(form, side), return_tensors="np")["pixel_values"], expected)
    kwargs = {**reference.pretraining_kwargs(), "mask_seed": 3}
    wanted = reference(image, return_tensors="np", **kwargs)
    got = processor(image, return_tensors="np", **kwargs)
    assert sorted(got.keys()) == sorted(wanted.keys())
    for key in wanted:
        assert np.array_equal(got[key], wanted[key]), key
    patches = (side // config.patch_size) ** 2
    for key in ("bool_masked_pos", "noise"):
        if key in wanted:
            assert wanted[key].shape == (1, patches)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_fine_tuned_processor_size_is_the_model_input_and_its_pixels_are_unchanged(name, tmp_path):
    """The saved evaluation processor says `size` = the model's input (what transformers' example scripts read) and
    `crop_pct`; its pixels are bit for bit those of the earlier short-side form (resize to side / crop_pct, centre
    crop), also after a save and load."""
    config = demo_config(name)
    side = config.image_size
    processors = hf_mim.get_method(name).image_processor_class
    images = [picture(20, 30, 1), picture(50, 40, 2), picture(side, side, 3), picture(37, 61, 4)]
    for crop_pct in (None, 1.0, 0.9):
        evaluation = processors.for_evaluation(config, crop_pct=crop_pct)
        share = 0.875 if crop_pct is None else crop_pct
        earlier = processors(**{"size": {"shortest_edge": int(side / share)}, "do_center_crop": True,
                                "crop_size": {"height": side, "width": side}, **processors.kwargs_from_config(config)})
        evaluation.save_pretrained(tmp_path / str(crop_pct))
        loaded = processors.from_pretrained(tmp_path / str(crop_pct))
        assert dict(loaded.size) == {"height": side, "width": side} and loaded.crop_pct == share
        assert loaded.evaluation_sides() == (int(side / share), side)
        for image in images:
            pixels = earlier(image, return_tensors="np")["pixel_values"]
            assert pixels.shape == (1, 3, side, side)
            assert np.array_equal(evaluation(image, return_tensors="np")["pixel_values"], pixels)
            assert np.array_equal(loaded(image, return_tensors="np")["pixel_values"], pixels)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_fine_tuned_processor_asked_for_pretraining_inputs(name):
    """Masks and noise follow the centre crop; the tokenizer view (BEiT, CAE), made from the whole image, refuses a
    cropped encoder view in one line that names the processor to use."""
    config = demo_config(name)
    side = config.image_size
    processor = hf_mim.get_method(name).image_processor_class.for_evaluation(config)
    image = picture(side + 12, side + 4)
    if config.needs_tokenizer:
        with pytest.raises(ValueError) as error:
            processor(image, return_tensors="np", **processor.pretraining_kwargs())
        assert "for_model_config(config)" in one_line_error(error)
        return
    out = processor(image, return_tensors="np", mask_seed=0, **processor.pretraining_kwargs())
    assert out["pixel_values"].shape == (1, 3, side, side)
    key = "noise" if name == "mae" else "bool_masked_pos"
    assert out[key].shape == (1, (side // config.patch_size) ** 2)


def test_shapes_that_masks_cannot_follow_raise_one_line_errors():
    config = demo_config("mae")
    mae = hf_mim.get_method("mae").image_processor_class.for_model_config(config, size={"shortest_edge": 32})
    wide = mae(picture(40, 60), return_noise=True, return_tensors="np")  # 32x48: the noise covers 8x12 patches
    assert wide["pixel_values"].shape == (1, 3, 32, 48) and wide["noise"].shape == (1, 96)
    with pytest.raises(ValueError) as error:
        mae([picture(40, 60), picture(40, 40)], return_noise=True)
    assert "gave these images the shapes [(32, 32), (32, 48)]" in one_line_error(error)
    with pytest.raises(ValueError) as error:
        mae(picture(40, 40), size={"height": 30, "width": 30}, return_noise=True)
    assert "do not split into 4 px patches" in one_line_error(error)
    with pytest.raises(ValueError) as error:
        mae.patch_grid()  # outside a call, as the device-side augmentation asks
    assert "set size={'height': s, 'width': s}" in one_line_error(error)
    simmim = hf_mim.get_method("simmim").image_processor_class.for_model_config(
        demo_config("simmim"), size={"shortest_edge": 32})
    with pytest.raises(ValueError) as error:
        simmim(picture(40, 60), return_bool_masked_pos=True)
    assert "SimMIM masks need a square image, got 32x48" in one_line_error(error)
    assert simmim.generate_mask(random.Random(0), (32, 32)).shape == (8, 8)
    with pytest.raises(ValueError) as error:
        simmim.generate_mask(random.Random(0))
    assert "cannot be sized before an image is seen" in one_line_error(error)
    with pytest.raises(ValueError, match=r"crop_pct=1.5: the centre crop's share"):
        hf_mim.get_method("mae").image_processor_class(crop_pct=1.5)
