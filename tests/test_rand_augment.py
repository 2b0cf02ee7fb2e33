"""RandAugment and random erasing of the fine-tuning recipes: spec parsing, each op against a numpy reference,
timm's level rules, determinism per sample, erasing geometry, and the dataset hook."""

import numpy as np
import pytest
import torch
from PIL import Image

from hf_mim.data import SeededImageDataset, load_image_dataset
from hf_mim.modeling.image_processing_mae import MimMaeImageProcessor
from hf_mim.rand_augment import (INCREASING_OPS, OPS, STANDARD_OPS, RandAugment, RandomErasing, level_to_argument,
                                 parse_rand_augment)

FILL = (124, 116, 104)


def gradient_image(width=20, height=12) -> Image.Image:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(array)


def test_recipe_spec_parses_to_timm_defaults_and_the_fill_is_the_mean_colour():
    augment = parse_rand_augment("rand-m9-mstd0.5-inc1")
    assert (augment.magnitude, augment.magnitude_std, augment.num_ops, augment.probability) == (9.0, 0.5, 2, 0.5)
    assert augment.increasing and augment.ops == INCREASING_OPS and augment.fill == FILL
    custom = parse_rand_augment("rand-m7-n3-p1-mstd0", image_mean=(0.5, 0.5, 0.5))
    assert (custom.magnitude, custom.num_ops, custom.probability, custom.magnitude_std) == (7.0, 3, 1.0, 0.0)
    assert not custom.increasing and custom.ops == STANDARD_OPS and custom.fill == (128, 128, 128)
    for off in (None, "", "none", "NONE"):
        assert parse_rand_augment(off) is None


@pytest.mark.parametrize("spec, message", [
    ("auto-m9", "must start with 'rand-'"),
    ("rand-m9-x2", "cannot read 'x2'"),
    ("rand-mnine", "cannot read 'mnine'"),
])
def test_bad_specs_name_the_part_that_cannot_be_read(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_rand_augment(spec)


def test_pixel_ops_match_their_numpy_definitions():
    image = gradient_image()
    x = np.asarray(image).astype(np.int32)

    def run(name, argument):
        return np.asarray(OPS[name][0](image, argument, FILL)).astype(np.int32)

    np.testing.assert_array_equal(run("Invert", None), 255 - x)
    np.testing.assert_array_equal(run("Solarize", 100), np.where(x < 100, x, 255 - x))
    np.testing.assert_array_equal(run("SolarizeAdd", 60), np.where(x < 128, np.minimum(x + 60, 255), x))
    np.testing.assert_array_equal(run("PosterizeIncreasing", 2), x & 0b11000000)
    np.testing.assert_array_equal(run("Posterize", 8), x)
    np.testing.assert_array_equal(run("PosterizeIncreasing", 0), x & 0)  # level 10: no bits kept (Pillow refuses 0)
    np.testing.assert_array_equal(run("Posterize", 0), x & 0)  # levels under 2.5
    np.testing.assert_array_equal(run("Brightness", 0.0), np.zeros_like(x))


def test_translate_moves_content_by_the_fraction_of_the_width_and_fills_with_the_mean():
    image = gradient_image(width=20)
    x = np.asarray(image)
    moved = np.asarray(OPS["TranslateXRel"][0](image, 0.25, FILL))  # 5 px: output column c shows input c + 5
    np.testing.assert_array_equal(moved[:, :15], x[:, 5:])
    assert (moved[:, 15:] == np.array(FILL, dtype=np.uint8)).all()
    down = np.asarray(OPS["TranslateYRel"][0](image, -0.25, FILL))  # 3 px the other way
    np.testing.assert_array_equal(down[3:], x[:-3])
    assert (down[:3] == np.array(FILL, dtype=np.uint8)).all()


def test_level_rules_span_timm_ranges():
    rng = np.random.default_rng(0)
    assert {abs(level_to_argument("rotate", 10, rng)) for _ in range(5)} == {30.0}
    assert {round(level_to_argument("enhance_increasing", 10, rng), 6) for _ in range(50)} == {0.1, 1.9}
    assert level_to_argument("enhance_increasing", 0, rng) == 1.0  # level 0 changes nothing
    assert level_to_argument("enhance", 0, rng) == pytest.approx(0.1)
    assert (level_to_argument("posterize_increasing", 0, rng), level_to_argument("posterize_increasing", 10, rng)) == (4, 0)
    assert (level_to_argument("solarize_increasing", 0, rng), level_to_argument("solarize_increasing", 10, rng)) == (256, 0)
    assert level_to_argument("solarize_add", 10, rng) == 110
    assert abs(level_to_argument("translate", 10, rng)) == pytest.approx(0.45)
    assert abs(level_to_argument("shear", 5, rng)) == pytest.approx(0.15)


def test_randaugment_repeats_per_seed_uses_every_op_and_clips_the_magnitude(monkeypatch):
    image = gradient_image()
    augment = RandAugment()
    same = [np.asarray(augment(image, np.random.default_rng(7))) for _ in range(2)]
    np.testing.assert_array_equal(*same)
    assert any(not np.array_equal(same[0], np.asarray(augment(image, np.random.default_rng(s)))) for s in range(8))
    np.testing.assert_array_equal(np.asarray(RandAugment(probability=0.0)(image, np.random.default_rng(0))),
                                  np.asarray(image))

    import hf_mim.rand_augment as module

    seen, arguments = [], []
    recording = {name: ((lambda n: lambda im, a, f: seen.append(n) or arguments.append((n, a)) or im)(name), rule)
                 for name, (_, rule) in OPS.items()}
    monkeypatch.setattr(module, "OPS", recording)
    wild = RandAugment(magnitude=10, magnitude_std=5.0, probability=1.0)
    rng = np.random.default_rng(0)
    for _ in range(300):
        wild(image, rng)
    assert len(seen) == 600 and set(seen) == set(INCREASING_OPS)
    rotations = [abs(a) for n, a in arguments if n == "Rotate"]
    assert max(rotations) <= 30.0 + 1e-9 and min(rotations) < 30.0  # noise below 10 shows, above 10 is clipped


def test_random_erasing_replaces_one_box_within_the_area_and_aspect_bounds():
    pixels = torch.zeros(3, 40, 50)
    for seed in range(30):
        erased = RandomErasing(probability=1.0)(pixels, np.random.default_rng(seed))
        assert pixels.abs().sum() == 0  # the input is not modified
        changed = (erased != 0).any(0)
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert changed.sum() == height * width  # one solid box
        assert 0.02 * 2000 - 2 * (height + width) <= height * width <= 2000 / 3 + 2 * (height + width)
        assert 0.3 * 0.7 <= height / width <= 1 / 0.3 / 0.7
        assert erased[:, changed].std() == pytest.approx(1.0, abs=0.35)  # standard normal noise
    torch.testing.assert_close(RandomErasing(1.0)(pixels, np.random.default_rng(3)),
                               RandomErasing(1.0)(pixels, np.random.default_rng(3)), rtol=0, atol=0)
    assert RandomErasing(probability=0.0)(pixels, np.random.default_rng(0)) is pixels
    hits = sum(RandomErasing(0.25)(pixels, np.random.default_rng(s)).abs().sum() > 0 for s in range(400))
    assert 70 <= hits <= 130  # ~100 of 400


def test_dataset_applies_both_at_the_model_size_and_repeats_per_sample():
    data = load_image_dataset(split="test")
    processor = MimMaeImageProcessor(size={"height": 32, "width": 32})
    plain = SeededImageDataset(data, processor, seed=0)
    augmented = SeededImageDataset(data, processor, seed=0, rand_augment=parse_rand_augment("rand-m9-mstd0.5-inc1"),
                                   random_erasing=RandomErasing(1.0))
    first, again = augmented[3]["pixel_values"], augmented[3]["pixel_values"]
    assert first.shape == plain[3]["pixel_values"].shape == (3, 32, 32)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first, plain[3]["pixel_values"])
    augmented.set_epoch(1)
    assert not torch.equal(first, augmented[3]["pixel_values"])


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_runs_at_every_level(name):
    """The extremes of timm's level rules (0 posterize bits, 256 solarize threshold, ±30° rotation, ...) must be
    computable: a fine-tuning run draws them sooner or later."""
    op, rule = OPS[name]
    image = gradient_image()
    for level in (0.0, 1.0, 2.4, 2.5, 5.0, 9.0, 10.0):
        for seed in (0, 1):  # both signs of the signed rules
            argument = level_to_argument(rule, level, np.random.default_rng(seed)) if rule else None
            out = op(image, argument, FILL)
            assert out.size == image.size and out.mode == image.mode, (name, level)
