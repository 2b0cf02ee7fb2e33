"""Optimiser groups, layer-wise lr decay (BEiT's layer-id rule), the lr schedule, and data determinism."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_mim.data import Augmentation, SeededImageDataset, collate, load_image_dataset, random_resized_crop_box, to_rgb
from hf_mim.modeling.configuration_mae import MimMaeConfig
from hf_mim.modeling.image_processing_mae import MimMaeImageProcessor
from hf_mim.modeling.modeling_mae import MimMaeForImageClassification
from hf_mim.training import build_optimizer, effective_learning_rate, lr_at, parameter_groups

TINY = dict(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
            intermediate_size=64, num_labels=5, train_position_embeddings=True)


def test_weight_decay_by_rank_and_layer_decay_by_block():
    model = MimMaeForImageClassification(MimMaeConfig(**TINY))
    groups = parameter_groups(model, weight_decay=0.05, layer_decay=0.5)
    by_name = {name: g for g in groups for name in g["names"]}
    assert by_name["vit.blocks.0.attn.qkv.weight"]["weight_decay"] == 0.05
    assert by_name["vit.blocks.0.attn.qkv.bias"]["weight_decay"] == 0.0
    assert by_name["vit.pos_embed"]["weight_decay"] == 0.0 and by_name["vit.cls_token"]["weight_decay"] == 0.0
    # L = 3: patch embed layer 0 -> 0.5**4, block i -> 0.5**(3 - i), head -> 1
    assert by_name["vit.patch_embed.proj.weight"]["lr_scale"] == 0.5**4
    assert by_name["vit.pos_embed"]["lr_scale"] == 0.5**4
    assert by_name["vit.blocks.0.mlp.fc1.weight"]["lr_scale"] == 0.5**3
    assert by_name["vit.blocks.2.mlp.fc1.weight"]["lr_scale"] == 0.5**1
    assert by_name["head.weight"]["lr_scale"] == 1.0 and by_name["fc_norm.weight"]["lr_scale"] == 1.0
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in model.parameters() if p.requires_grad)


def test_optimizer_built_before_prepare_is_fused_and_steps_like_plain_adamw():
    """The scripts build AdamW while the model is still on the CPU; it must still take the fused kernel (it used
    to check for CUDA at that moment and never did) and update as torch's reference AdamW, group by group."""
    torch.manual_seed(0)
    model = MimMaeForImageClassification(MimMaeConfig(**TINY))
    reference = MimMaeForImageClassification(MimMaeConfig(**TINY))
    reference.load_state_dict(model.state_dict())
    fused = build_optimizer(model, lr=1e-2, weight_decay=0.05, layer_decay=0.5)
    plain = build_optimizer(reference, lr=1e-2, weight_decay=0.05, layer_decay=0.5)
    assert all(group["fused"] for group in fused.param_groups)
    for group in plain.param_groups:
        group["fused"] = False
    before = {name: value.clone() for name, value in model.state_dict().items()}
    pixels = torch.randn(4, 3, 32, 32)
    # one step: later steps would compare chaos (the key bias's gradient is pure rounding noise, which Adam
    # normalises to a full-size update, so a 1e-7 difference in the weights becomes 1e-5 there)
    for net, optimizer in ((model, fused), (reference, plain)):
        net(pixel_values=pixels, labels=torch.arange(4)).loss.backward()
        optimizer.step()
    for (name, ours), theirs in zip(model.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5, msg=name)
    assert not torch.equal(model.vit.blocks[0].mlp.fc1.weight, before["vit.blocks.0.mlp.fc1.weight"])  # it stepped


def test_frozen_parameters_are_not_optimised():
    model = MimMaeForImageClassification(MimMaeConfig(**{**TINY, "train_position_embeddings": False}))
    names = {name for g in parameter_groups(model, 0.05) for name in g["names"]}
    assert "vit.pos_embed" not in names and "head.weight" in names


def test_lr_schedule_warmup_cosine_and_floor():
    assert lr_at(0, 1.0, 10, 110) == 0.0
    assert lr_at(5, 1.0, 10, 110) == pytest.approx(0.5)
    assert lr_at(60, 1.0, 10, 110, min_lr=0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_at(110, 1.0, 10, 110, min_lr=0.1) == pytest.approx(0.1)
    assert effective_learning_rate(1.5e-4, 4096, 256) == pytest.approx(2.4e-3)
    assert effective_learning_rate(1.5e-3, 4096, None) == 1.5e-3


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.integers(0, 10**6))
def test_random_resized_crop_box_stays_inside_the_image(width, height, seed):
    left, top, w, h = random_resized_crop_box((width, height), (0.08, 1.0), (3 / 4, 4 / 3), np.random.default_rng(seed))
    assert 0 <= left and 0 <= top and w >= 1 and h >= 1 and left + w <= width and top + h <= height


def test_sixteen_bit_images_keep_their_contrast():
    from PIL import Image

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    rgb = np.asarray(to_rgb(Image.fromarray(ramp)))
    assert rgb.min() == 0 and rgb.max() == 255 and len(np.unique(rgb[..., 0])) > 200


def test_transparent_pixels_become_white():
    from PIL import Image

    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    assert np.asarray(to_rgb(Image.fromarray(rgba)))[0, 0].tolist() == [255, 255, 255]


def test_samples_depend_only_on_seed_epoch_and_index():
    data = load_image_dataset(split="test")
    processor = MimMaeImageProcessor(size={"height": 32, "width": 32}, patch_size=4)
    dataset = SeededImageDataset(data, processor, Augmentation(), seed=1, processor_kwargs={"return_noise": True})
    first = dataset[3]
    again = SeededImageDataset(data, processor, Augmentation(), seed=1, processor_kwargs={"return_noise": True})[3]
    assert torch.equal(first["pixel_values"], again["pixel_values"]) and torch.equal(first["noise"], again["noise"])
    dataset.set_epoch(1)
    assert not torch.equal(first["noise"], dataset[3]["noise"])
    batch = collate([first, {"skipped": 1}, again])
    assert batch["pixel_values"].shape == (2, 3, 32, 32) and batch["num_skipped"] == 1


def whole_image_jitter_flip_crop(image, draw):
    """torchvision's order on the whole image: every jitter step, then the flip, then the crop."""
    from PIL import Image

    from hf_mim.data import JITTER_ENHANCERS

    for index, factor in zip(draw.jitter_order, draw.jitter_factors):
        image = JITTER_ENHANCERS[index](image).enhance(factor)
    if draw.flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    left, top, width, height = draw.box
    return image.crop((left, top, left + width, top + height))


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 90), st.integers(2, 90), st.sampled_from([0.0, 0.4, 0.9]), st.integers(0, 10**6))
def test_augmentation_jitters_only_the_crop_with_the_whole_images_pixels(width, height, jitter, seed):
    """Jittering the crop (contrast with the whole image's mean grey) gives the whole-image order's exact pixels,
    for every jitter order, flipped or not."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    pixels[: height // 2] //= 3  # an uneven image: the crop's mean grey differs from the whole image's
    image = Image.fromarray(pixels)
    augmentation = Augmentation(crop_scale=(0.08, 1.0), color_jitter=jitter)
    draw = augmentation.draw(image.size, rng)
    ours = np.asarray(augmentation.apply(image, draw))
    expected = np.asarray(whole_image_jitter_flip_crop(image, draw))
    assert ours.shape == expected.shape and np.array_equal(ours, expected)


def test_decoding_turns_photos_upright_by_their_exif_orientation_like_the_pipeline(tmp_path):
    """A phone photo stored sideways with an orientation tag trains upright, as `datasets` decodes it and as
    transformers' `load_image` (the pipeline's loader) shows it."""
    from PIL import Image
    from transformers.image_utils import load_image

    from hf_mim.data import decode_image

    pixels = np.zeros((30, 50, 3), dtype=np.uint8)
    pixels[:, :10] = 255  # a white band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    Image.fromarray(pixels).save(tmp_path / "sideways.png", exif=exif)
    upright = decode_image(str(tmp_path / "sideways.png"))
    assert upright.size == (30, 50)  # width and height swapped
    assert np.array_equal(np.asarray(upright), np.asarray(load_image(str(tmp_path / "sideways.png"))))
    assert np.asarray(upright)[:10].mean() > 250  # the band is now on top
    plain = tmp_path / "plain.png"
    Image.fromarray(pixels).save(plain)
    assert np.array_equal(np.asarray(decode_image(str(plain))), pixels)
    broken = tmp_path / "broken-exif.png"  # an unreadable EXIF block: the pixels are still used, as stored
    Image.fromarray(pixels).save(broken, exif=b"not a TIFF header")
    assert np.array_equal(np.asarray(decode_image(str(broken))), pixels)
