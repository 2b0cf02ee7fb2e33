"""Unit tests of hf_mim/evaluation.py: kNN against loops worked out by hand, probes that learn and reproduce,
the raw-pixel baseline, and the feature cache."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from hf_mim.evaluation import (attentive_probe, classification_metrics, extract_features, feature_cache_key,
                               knn_classify, linear_probe, load_encoder, logistic_regression_on_pixels,
                               nearest_neighbours)
from helpers import TINY_MAE_16PX
from hf_mim.modeling.configuration_mae import MimMaeConfig
from hf_mim.modeling.modeling_mae import MimMaeForPreTraining

TINY = TINY_MAE_16PX
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_mae(seed=0):
    torch.manual_seed(seed)
    return MimMaeForPreTraining(MimMaeConfig(**TINY)).eval()


class PixelDataset(torch.utils.data.Dataset):
    def __init__(self, count=10, seed=0):
        generator = torch.Generator().manual_seed(seed)
        self.pixels = torch.randn(count, 3, 16, 16, generator=generator)
        self.labels = torch.arange(count) % 3

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {"pixel_values": self.pixels[index], "labels": self.labels[index]}


# ----------------------------------------------------------------------------------------------- kNN


def knn_by_hand(train, train_labels, test, k, temperature, num_classes):
    """The InstDisc/DINO vote with plain Python: cosine by the formula, neighbours by (-sim, index)."""
    def cosine(a, b):
        return sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))

    rows = []
    for query in test:
        sims = [(cosine(query, t), i) for i, t in enumerate(train)]
        neighbours = sorted(sims, key=lambda pair: (-pair[0], pair[1]))[:k]
        votes = [0.0] * num_classes
        for sim, i in neighbours:
            votes[train_labels[i]] += math.exp(sim / temperature)
        rows.append(votes)
    return rows


def test_knn_matches_hand_computed_votes():
    train = [[1.0, 0.0], [0.8, 0.6], [0.0, 2.0], [-1.0, 0.1], [0.6, -0.8], [3.0, 0.3]]
    labels = [0, 1, 2, 2, 1, 0]
    test = [[1.0, 0.2], [0.1, 1.0], [-0.5, -0.5]]
    expected = knn_by_hand(train, labels, test, k=3, temperature=0.5, num_classes=3)
    scores = knn_classify(torch.tensor(train), torch.tensor(labels), torch.tensor(test), k=3, temperature=0.5,
                          num_classes=3, batch_size=2)
    torch.testing.assert_close(scores, torch.tensor(expected, dtype=torch.float32), rtol=1e-5, atol=0)
    # a worked number: query (1, 0.2) has neighbours 5 (cos 0.99523), 0 (cos 0.98058) and 1 (cos 0.90213)
    assert scores[0, 0].item() == pytest.approx(math.exp(0.980581 / 0.5) + math.exp(0.995229 / 0.5), rel=1e-5)
    assert scores[0, 1].item() == pytest.approx(math.exp(0.902134 / 0.5), rel=1e-5)


def test_knn_uses_cosine_not_euclidean_and_is_batch_invariant():
    train = torch.tensor([[10.0, 0.0], [0.0, 0.1]])
    labels = torch.tensor([0, 1])
    test = torch.tensor([[0.1, 0.0], [0.0, 50.0]])
    scores = knn_classify(train, labels, test, k=1, temperature=1.0)
    assert scores.argmax(1).tolist() == [0, 1]  # length is ignored: direction decides
    generator = torch.Generator().manual_seed(0)
    train, test = torch.randn(50, 8, generator=generator), torch.randn(13, 8, generator=generator)
    labels = torch.randint(0, 4, (50,), generator=generator)
    torch.testing.assert_close(knn_classify(train, labels, test, k=7, batch_size=1),
                               knn_classify(train, labels, test, k=7, batch_size=100))


def test_temperature_decides_between_one_close_and_many_far_neighbours():
    # one very close neighbour of class 1 against two farther ones of class 0
    train = torch.tensor([[1.0, 0.05], [1.0, 0.9], [1.0, -0.9]])
    labels = torch.tensor([1, 0, 0])
    test = torch.tensor([[1.0, 0.0]])
    sharp = knn_classify(train, labels, test, k=3, temperature=0.07)
    flat = knn_classify(train, labels, test, k=3, temperature=100.0)
    assert sharp.argmax().item() == 1  # exp(sim / T) with small T: the closest neighbour dominates
    assert flat.argmax().item() == 0  # large T: every weight is about 1, a majority vote


def test_ties_go_to_the_lower_training_index():
    similarity = torch.tensor([[0.5, 0.9, 0.5, 0.5, 0.1], [0.2, 0.2, 0.2, 0.2, 0.2]])
    assert nearest_neighbours(similarity, 2).tolist() == [[0, 1], [0, 1]]
    assert nearest_neighbours(similarity, 3).tolist() == [[0, 1, 2], [0, 1, 2]]
    # identical training features with different labels: the one listed first wins the vote
    train = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    scores = knn_classify(train, torch.tensor([2, 1, 0]), torch.tensor([[1.0, 0.0]]), k=1)
    assert scores[0].tolist() == pytest.approx([0.0, 0.0, math.exp(1 / 0.07)], rel=1e-6)


def test_metrics_are_plain_floats_with_lower_class_winning_ties():
    scores = torch.tensor([[0.0, 1.0, 1.0, 0, 0, 0], [5.0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1.0]])
    result = classification_metrics(scores, torch.tensor([1, 1, 4]))  # class 4 ties at 0 and loses to 0-3
    assert result == {"top1": pytest.approx(1 / 3), "top5": pytest.approx(2 / 3)}
    assert all(type(v) is float for v in result.values())
    assert set(classification_metrics(scores[:, :3], torch.tensor([1, 1, 0]))) == {"top1"}


# ----------------------------------------------------------------------------------------------- probes


def blobs(count=240, dim=8, classes=3, seed=0, spread=0.3):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=generator) * 3
    labels = torch.arange(count) % classes
    return centres[labels] + spread * torch.randn(count, dim, generator=generator), labels


def test_linear_probe_learns_a_separable_set_and_reproduces_exactly():
    features, labels = blobs()
    train, test = slice(0, 180), slice(180, None)
    kwargs = dict(epochs=15, batch_size=32, seed=3)
    first = linear_probe(features[train], labels[train], features[test], labels[test], **kwargs)
    again = linear_probe(features[train], labels[train], features[test], labels[test], **kwargs)
    other = linear_probe(features[train], labels[train], features[test], labels[test], **{**kwargs, "seed": 4})
    assert first["top1"] == 1.0
    assert first == again  # same seed, same numbers, bit for bit
    assert other["final_loss"] != first["final_loss"]
    assert first["learning_rate"] == pytest.approx(0.1 * 32 / 256)
    assert all(type(v) is float for v in first.values())


def test_linear_probe_leaves_the_global_rng_alone():
    features, labels = blobs(count=60)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    linear_probe(features, labels, features, labels, epochs=1, batch_size=16)
    assert torch.equal(torch.rand(3), expected)


def test_attentive_probe_trains_on_cached_tokens_and_never_touches_the_encoder():
    model = tiny_mae()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    loader = torch.utils.data.DataLoader(PixelDataset(12), batch_size=5)
    tokens, labels = extract_features(model, loader, pooling="tokens")
    assert tokens.shape == (12, 16, 32) and tokens.dtype == torch.float16 and labels.tolist() == [0, 1, 2] * 4
    # a token set the probe can learn: each class shifts every token along its own direction
    generator = torch.Generator().manual_seed(0)
    directions = torch.randn(3, 32, generator=generator) * 2
    train_labels = torch.arange(90) % 3
    train_tokens = (torch.randn(90, 16, 32, generator=generator) + directions[train_labels, None]).half()
    result = attentive_probe(train_tokens[:60], train_labels[:60], train_tokens[60:], train_labels[60:],
                             num_heads=2, epochs=5, batch_size=20, seed=0)
    assert result["top1"] >= 0.9 and set(result) == {"top1", "final_loss", "learning_rate"}
    again = attentive_probe(train_tokens[:60], train_labels[:60], train_tokens[60:], train_labels[60:],
                            num_heads=2, epochs=5, batch_size=20, seed=0)
    assert again == result
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())


def test_logistic_regression_on_pixels_separates_bright_quadrants():
    rng = np.random.default_rng(0)
    labels = np.arange(200) % 4
    images = rng.integers(0, 60, (200, 8, 8)).astype(np.uint8)
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 2)
        images[i, row * 4:(row + 1) * 4, col * 4:(col + 1) * 4] += 150
    result = logistic_regression_on_pixels(images[:150], labels[:150], images[150:], labels[150:], max_iter=50)
    assert result["top1"] == 1.0 and set(result) == {"top1", "final_loss", "l2"}
    assert result == logistic_regression_on_pixels(images[:150], labels[:150], images[150:], labels[150:], max_iter=50)
    # the L2 term is in the objective: a strong penalty keeps the loss far from zero
    strong = logistic_regression_on_pixels(images[:150], labels[:150], images[150:], labels[150:], l2=1.0, max_iter=50)
    assert strong["final_loss"] > result["final_loss"] + 0.1


# ----------------------------------------------------------------------------------------------- features


def count_encoder_calls(model):
    calls = []
    original = model.vit.forward

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    model.vit.forward = counted
    return calls


def test_features_are_the_frozen_encoders_pooled_output():
    model = tiny_mae()
    model.train()  # extraction must switch to eval itself
    dataset = PixelDataset(7)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4)
    cls, labels = extract_features(model, loader, pooling="cls")
    mean, _ = extract_features(model, dataset, pooling="mean", batch_size=3)
    with torch.no_grad():
        hidden = model.eval().vit(dataset.pixels)[0]
    assert cls.dtype == torch.float32 and cls.shape == (7, 32)
    torch.testing.assert_close(cls, hidden[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mean, hidden[:, 1:].mean(1), rtol=1e-5, atol=1e-5)
    assert torch.equal(labels, dataset.labels)
    with pytest.raises(ValueError, match="pooling"):
        extract_features(model, loader, pooling="max")


def test_feature_cache_is_reused_and_keyed_by_weights(tmp_path):
    model = tiny_mae()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    calls = count_encoder_calls(model)
    loader = torch.utils.data.DataLoader(PixelDataset(10), batch_size=4)
    key = feature_cache_key(str(folder), "train", "cls")
    first = extract_features(model, loader, "cls", cache_dir=tmp_path / "cache", cache_key=key)
    assert len(calls) == 3
    second = extract_features(model, loader, "cls", cache_dir=tmp_path / "cache", cache_key=key)
    assert len(calls) == 3  # served from <cache>/<key>.pt, the encoder did not run
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert (tmp_path / "cache" / f"{key}.pt").is_file()
    # other split, pooling, random init or retrained weights: another key
    assert len({key, feature_cache_key(str(folder), "test", "cls"), feature_cache_key(str(folder), "train", "mean"),
                feature_cache_key(str(folder), "train", "cls", random_init=True)}) == 4
    tiny_mae(seed=1).save_pretrained(folder)
    assert feature_cache_key(str(folder), "train", "cls") != key


def test_images_go_through_the_processor_and_load_encoder(tmp_path):
    from hf_mim.data import load_image_dataset

    tiny_mae().save_pretrained(tmp_path / "mae")
    encoder, processor = load_encoder(str(tmp_path / "mae"))
    assert type(encoder).__name__ == "MimMaeModel"
    assert processor.size.height == 16 and processor.evaluation_sides() == (18, 16)  # int(16 / 0.875), centre 16
    assert list(processor.image_mean) == [0.485, 0.456, 0.406]  # nothing saved beside the model: the defaults
    data = load_image_dataset(split="test")
    data = dataclasses.replace(data, dataset=data.dataset.select(range(6)))
    features, labels = extract_features(encoder, data, "mean", batch_size=4, processor=processor)
    assert features.shape == (6, 32) and labels.tolist() == data.dataset["label"]
    random_a, _ = load_encoder(str(tmp_path / "mae"), random_init=True, seed=5)
    random_b, _ = load_encoder(str(tmp_path / "mae"), random_init=True, seed=5)
    qkv = "vit.blocks.0.attn.qkv.weight"
    assert torch.equal(random_a.state_dict()[qkv], random_b.state_dict()[qkv])
    assert not torch.equal(random_a.state_dict()[qkv], encoder.state_dict()[qkv])
    with pytest.raises(ValueError, match="processor"):
        extract_features(encoder, data, "cls")


def test_load_encoder_keeps_the_saved_normalisation_and_the_asked_crop(tmp_path):
    """A converted BEiT keeps its 0.5/0.5 normalisation: features are taken on the pixels it was trained on."""
    from hf_mim.modeling.image_processing_mae import MimMaeImageProcessor

    tiny_mae().save_pretrained(tmp_path / "mae")
    MimMaeImageProcessor(image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(tmp_path / "mae")
    _, processor = load_encoder(str(tmp_path / "mae"), crop_pct=1.0)
    assert list(processor.image_mean) == [0.5] * 3 and list(processor.image_std) == [0.5] * 3
    assert processor.evaluation_sides() == (16, 16) and processor.crop_pct == 1.0 and processor.do_center_crop
    with pytest.raises(ValueError, match="crop_pct=1.5"):
        load_encoder(str(tmp_path / "mae"), crop_pct=1.5)
