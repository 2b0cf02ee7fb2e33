"""Segmentation data: joint augmentation keeps image and mask aligned, padding is ignored, sources load, and the
mean IoU metric module gives hand-computed numbers."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from hf_mim_cli.arguments import UsageError
from hf_mim.metrics import load_metric
from hf_mim.segmentation_data import (IGNORE_INDEX, SegmentationAugmentation, collate_segmentation,
                                      decode_label_map, load_segmentation_dataset, pad_to)

LEVEL, OFFSET = 40, 20  # grey level = OFFSET + LEVEL * label: the image spells its own label map


def blocky_labels(rng, height, width, block=8, classes=6):
    coarse = rng.integers(0, classes, size=(-(-height // block), -(-width // block)))
    return np.kron(coarse, np.ones((block, block), dtype=np.int64))[:height, :width]


def uniform_interior(labels, radius=2):
    """Pixels whose (2r+1)^2 neighbourhood holds one label: away from edges, where bilinear images blend."""
    height, width = labels.shape
    interior = np.zeros_like(labels, dtype=bool)
    for y in range(radius, height - radius):
        for x in range(radius, width - radius):
            window = labels[y - radius:y + radius + 1, x - radius:x + radius + 1]
            interior[y, x] = (window == window[0, 0]).all()
    return interior


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), height=st.integers(24, 72), width=st.integers(24, 72),
       cat_max_ratio=st.sampled_from([1.0, 0.75]))
def test_augmented_image_and_mask_stay_aligned(seed, height, width, cat_max_ratio):
    rng = np.random.default_rng(seed)
    labels = blocky_labels(rng, height, width)
    image = Image.fromarray((OFFSET + LEVEL * labels).astype(np.uint8), mode="L").convert("RGB")
    augmentation = SegmentationAugmentation(crop_size=32, ratio_range=(0.5, 2.0), cat_max_ratio=cat_max_ratio)
    out_image, out_labels = augmentation(image, labels, np.random.default_rng(seed))
    assert out_labels.shape == (out_image.height, out_image.width)
    assert max(out_labels.shape) <= 32 and out_labels.dtype == np.int64
    assert set(np.unique(out_labels)) <= set(np.unique(labels))  # nearest: no blended label
    spelled = np.rint((np.asarray(out_image)[..., 0].astype(float) - OFFSET) / LEVEL)
    interior = uniform_interior(out_labels)
    np.testing.assert_array_equal(spelled[interior], out_labels[interior])


def test_same_seed_same_draw_and_the_flip_moves_both():
    labels = np.zeros((16, 16), dtype=np.int64)
    labels[:, :4] = 3
    image = Image.fromarray((OFFSET + LEVEL * labels).astype(np.uint8), mode="L").convert("RGB")
    always = SegmentationAugmentation(crop_size=16, ratio_range=(1.0, 1.0), flip_probability=1.0)
    flipped_image, flipped_labels = always(image, labels, np.random.default_rng(0))
    assert (flipped_labels[:, -4:] == 3).all() and (flipped_labels[:, :-4] == 0).all()
    assert (np.asarray(flipped_image)[:, -4:, 0] == OFFSET + 3 * LEVEL).all()
    a = SegmentationAugmentation(crop_size=12, photometric=0.3)
    first, second = a(image, labels, np.random.default_rng(5)), a(image, labels, np.random.default_rng(5))
    assert np.array_equal(np.asarray(first[0]), np.asarray(second[0])) and np.array_equal(first[1], second[1])


def test_padding_is_zero_in_pixels_and_ignored_in_labels():
    pixels, labels = pad_to(torch.ones(3, 5, 6), torch.zeros(5, 6, dtype=torch.long), 8)
    assert tuple(pixels.shape) == (3, 8, 8) and tuple(labels.shape) == (8, 8)
    assert (labels[5:] == IGNORE_INDEX).all() and (labels[:, 6:] == IGNORE_INDEX).all() and (labels[:5, :6] == 0).all()
    assert pixels[:, 5:].abs().sum() == 0 and pixels[:, :5, :6].min() == 1
    batch = collate_segmentation([{"pixel_values": pixels, "labels": labels}, {"skipped": 1}])
    assert tuple(batch["labels"].shape) == (1, 8, 8) and batch["num_skipped"] == 1


def test_reduce_labels_follows_the_ade_convention(tmp_path):
    path = tmp_path / "mask.png"
    Image.fromarray(np.array([[0, 1, 2], [150, 255, 0]], dtype=np.uint8), mode="L").save(path)
    np.testing.assert_array_equal(decode_label_map(str(path), reduce_labels=True), [[255, 0, 1], [149, 255, 255]])
    np.testing.assert_array_equal(decode_label_map(str(path)), [[0, 1, 2], [150, 255, 0]])
    Image.new("RGB", (3, 2)).save(tmp_path / "rgb.png")
    with pytest.raises(UsageError, match="single-channel class ids"):
        decode_label_map(str(tmp_path / "rgb.png"))


def test_embedded_sample_loads_with_its_labels():
    data = load_segmentation_dataset(split="validation", max_bad_image_fraction=0.5)
    assert len(data.dataset) == 100 and data.label_names[0] == "background" and len(data.label_names) == 11
    labels = decode_label_map(data.dataset[0][data.label_column])
    assert labels.shape == (64, 64) and labels.max() <= 10


def test_image_folder_with_a_parallel_mask_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for name in ("a", "b"):
        Image.new("RGB", (8, 6), (10, 20, 30)).save(tmp_path / "images" / f"{name}.jpg")
        Image.new("L", (8, 6), 1).save(tmp_path / "masks" / f"{name}.png")
    (tmp_path / "id2label.json").write_text(json.dumps({"0": "ground", "1": "thing"}))
    data = load_segmentation_dataset(train_dir=str(tmp_path / "images"), mask_dir=str(tmp_path / "masks"))
    assert len(data.dataset) == 2 and data.label_names == ["ground", "thing"]
    Image.new("RGB", (8, 6)).save(tmp_path / "images" / "c.jpg")
    with pytest.raises(UsageError, match=r"1 images in .* have no mask of the same stem .*\['c.jpg'\]"):
        load_segmentation_dataset(train_dir=str(tmp_path / "images"), mask_dir=str(tmp_path / "masks"))
    with pytest.raises(UsageError, match="--train_dir needs --mask_dir"):
        load_segmentation_dataset(train_dir=str(tmp_path / "images"))


# ----------------------------------------------------------------------------------------------- mean IoU

def test_mean_iou_matches_a_hand_computed_confusion_matrix():
    # references (rows) x predictions (columns), counted by hand from the two maps below (255 left out):
    #          pred 0  pred 1  pred 2
    # ref 0       2       1       0
    # ref 1       0       2       1
    # ref 2       0       0       0     (class 2 is only ever predicted)
    references = [[[0, 0, 0], [1, 1, 1]], [[255, 255]]]
    predictions = [[[0, 0, 1], [1, 1, 2]], [[2, 2]]]
    result = load_metric("mean_iou").compute(predictions=predictions, references=references, num_labels=3)
    # IoU: class 0: 2 / (3 + 2 - 2) = 2/3; class 1: 2 / (3 + 3 - 2) = 1/2; class 2: 0 / (0 + 1 - 0) = 0
    assert result["per_category_iou"] == pytest.approx([2 / 3, 1 / 2, 0.0], abs=1e-12)
    assert result["mean_iou"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3, abs=1e-12)
    assert result["per_category_accuracy"][:2] == pytest.approx([2 / 3, 2 / 3], abs=1e-12)
    assert np.isnan(result["per_category_accuracy"][2])
    assert result["mean_accuracy"] == pytest.approx(2 / 3, abs=1e-12)
    assert result["overall_accuracy"] == pytest.approx(4 / 6, abs=1e-12)


def numpy_mean_iou(predictions, references, num_labels, ignore_index=255):
    """Independent per-class set counting (no confusion matrix)."""
    pred = np.concatenate([np.ravel(p) for p in predictions])
    ref = np.concatenate([np.ravel(r) for r in references])
    keep = ref != ignore_index
    pred, ref = pred[keep], ref[keep]
    ious = []
    for c in range(num_labels):
        inter, union = np.sum((pred == c) & (ref == c)), np.sum((pred == c) | (ref == c))
        if union:
            ious.append(inter / union)
    return float(np.mean(ious)), float(np.mean(pred == ref))


def test_mean_iou_matches_an_independent_numpy_count():
    rng = np.random.default_rng(0)
    references = [rng.integers(0, 5, (7, 9)) for _ in range(4)]
    references[1][2:4] = 255
    predictions = [np.where(rng.random(r.shape) < 0.6, r % 5, rng.integers(0, 5, r.shape)) for r in references]
    result = load_metric("mean_iou").compute(predictions=[p.tolist() for p in predictions],
                                             references=[r.tolist() for r in references], num_labels=5)
    mean_iou, accuracy = numpy_mean_iou(predictions, references, 5)
    assert result["mean_iou"] == pytest.approx(mean_iou, abs=1e-12)
    assert result["overall_accuracy"] == pytest.approx(accuracy, abs=1e-12)
