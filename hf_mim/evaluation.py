"""How good is a frozen encoder? Features once, then cheap protocols on them: kNN, linear probe, attentive probe,
and the raw-pixel baseline they must beat.

Every protocol reads features that `extract_features` computed once (and cached on disk), so trying another k, lr
or seed costs seconds, not another pass over the images. Every result is a dict of plain floats computed with the
local `evaluate` metrics (`hf_mim.metrics`), the same modules fine-tuning reports with.

Protocols (as the MAE, BEiT and CAE papers evaluate):
- kNN: cosine similarity, k nearest training features, votes weighted exp(sim / T) (InstDisc / DINO).
- linear probe: BatchNorm1d(affine=False) + Linear on the cls token (MAE's `main_linprobe.py`).
- attentive probe: a learned query cross-attending the patch tokens, LN, Linear (CAE's `run_attentive.py`).
- logistic regression on pixels: the baseline that says whether the encoder learned anything at all.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

POOLINGS = ("cls", "mean", "tokens")
MODEL_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


# ----------------------------------------------------------------------------------------------- models


def load_encoder(model_name_or_path: str, random_init: bool = False, seed: int = 0, crop_pct: float | None = None):
    """(model, image processor) for feature extraction from any hf-mim folder or Hub id.

    The processor is the evaluation one (short side to image_size / crop_pct, centre crop; `crop_pct` defaults to
    the official rule) with the normalisation saved beside the model.

    A pretraining or feature checkpoint loads as the method's `<M>Model` (its `vit` keys; decoders, teachers and
    tokenizers are left behind). A fine-tuned classifier loads as its own class, so a mean-pooling model keeps the
    encoder it was trained with (no final norm). `random_init` builds the same architecture with fresh weights,
    drawn from `seed`: the baseline that shows what pretraining adds.
    """
    from transformers import AutoConfig

    from .methods import backbone_of_config

    config = AutoConfig.from_pretrained(model_name_or_path)
    backbone = backbone_of_config(config)
    is_classifier = any(a.endswith("Classification") for a in (config.architectures or []))  # image or video
    model_class = backbone.classification_class if is_classifier else backbone.model_class
    if random_init:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = model_class(config)
    else:
        model = model_class.from_pretrained(model_name_or_path)
    processors = backbone.image_processor_class
    processor = processors.for_evaluation(config, crop_pct, **processors.normalization_saved_with(model_name_or_path))
    return model.eval(), processor


def model_fingerprint(model_name_or_path: str) -> str:
    """Size and modification time of a local folder's config and weights: a model retrained or reconfigured in the
    same folder gets a new cache key, so stale features are never served. A Hub id is its own fingerprint."""
    folder = Path(model_name_or_path)
    stats = [f"{name}:{(folder / name).stat().st_size}:{(folder / name).stat().st_mtime_ns}"
             for name in MODEL_FILES if (folder / name).is_file()]
    return ";".join(stats) or str(model_name_or_path)


def feature_cache_key(model_name_or_path: str, split: str, pooling: str, *, random_init: bool = False,
                      seed: int = 0, data_source: str = "", num_examples: int | None = None,
                      preprocessing: str = "") -> str:
    """A readable, collision-safe file stem: `<model>-<split>-<pooling>-<hash of everything that changes features>`."""
    identity = {
        "model": str(Path(model_name_or_path).resolve()) if Path(model_name_or_path).exists() else model_name_or_path,
        "files": model_fingerprint(model_name_or_path),  # random init too: its architecture is in config.json
        "weights": "random-init-seed-%d" % seed if random_init else "pretrained",
        "split": split, "pooling": pooling, "data": data_source, "num_examples": num_examples,
        "preprocessing": preprocessing,  # the image processor's settings (crop, normalisation)
    }
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    name = Path(str(model_name_or_path).rstrip("/")).name or "model"
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return f"{slug}{'-random' if random_init else ''}-{split}-{pooling}-{digest}"


# ----------------------------------------------------------------------------------------------- features


def pool_tokens(hidden_states: torch.Tensor, pooling: str, has_cls_token: bool = True) -> torch.Tensor:
    """(B, 1 + L, D) encoder output -> (B, D) for "cls" / "mean" (patch tokens, cls excluded), or the (B, L, D)
    patch tokens for "tokens" (what the attentive probe attends over). An encoder without a cls token (B, L, D)
    has no "cls" feature: its "cls" is the mean of its tokens, as its own classifier pools them."""
    patches = hidden_states[:, 1:] if has_cls_token else hidden_states
    if pooling == "cls":
        return hidden_states[:, 0] if has_cls_token else patches.mean(dim=1)
    if pooling == "mean":
        return patches.mean(dim=1)
    if pooling == "tokens":
        return patches
    raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")


def feature_loader(dataset_or_loader, processor=None, batch_size: int = 256, num_workers: int = 0):
    """A DataLoader of {"pixel_values", "labels"} batches, in dataset order, without augmentation.

    Accepts a DataLoader as is, an `hf_mim.data.ImageDataset` (decoded and processed here; unreadable images are
    dropped together with their labels by `collate`), or any map-style dataset of such dicts.
    """
    from .data import ImageDataset, SeededImageDataset, collate

    if isinstance(dataset_or_loader, torch.utils.data.DataLoader):
        return dataset_or_loader
    dataset = dataset_or_loader
    if isinstance(dataset, ImageDataset):
        if processor is None:
            raise ValueError("an ImageDataset needs the model's image processor to become pixel_values")
        dataset = SeededImageDataset(dataset, processor, augmentation=None, with_labels=True, replace_unreadable=False)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate,
                                       num_workers=num_workers)


@torch.no_grad()
def encode_batches(model, loader, pooling: str, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the frozen encoder (`model.encoder_tokens`: blocks + final norm where the model has one) over every
    batch."""
    from tqdm.auto import tqdm

    model.eval().to(device)
    features, labels = [], []
    for batch in tqdm(loader, desc=f"features ({pooling})", leave=False):
        if "pixel_values" not in batch:  # every image of this batch was unreadable
            continue
        hidden = model.encoder_tokens(batch["pixel_values"].to(device))
        pooled = pool_tokens(hidden, pooling, model.has_cls_token)
        # Patch tokens are 1 + L times larger than a pooled vector: half precision keeps a full split in memory and
        # loses nothing a probe can use (the values come out of a LayerNorm).
        features.append(pooled.to(torch.float16 if pooling == "tokens" else torch.float32).cpu())
        labels.append(batch["labels"].cpu())
    if not features:
        raise ValueError("no readable images to extract features from")
    return torch.cat(features), torch.cat(labels).long()


def extract_features(model, dataset_or_loader, pooling: str = "cls", batch_size: int = 256, device="cpu", *,
                     processor=None, cache_dir: str | Path | None = None, cache_key: str | None = None,
                     num_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, labels) of a frozen encoder: (N, D) float32 for "cls"/"mean", (N, L, D) float16 for "tokens".

    With `cache_dir` and `cache_key` (see `feature_cache_key`) the result is written to `<cache_dir>/<key>.pt` and
    later calls read it instead of running the encoder again: one pass over the images per model, split and
    pooling, however many probes, seeds or k values follow.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    path = Path(cache_dir) / f"{cache_key}.pt" if cache_dir is not None and cache_key else None
    if path is not None and path.is_file():
        cached = torch.load(path, map_location="cpu", weights_only=True)
        logger.info("features from cache %s", path)
        return cached["features"], cached["labels"]
    loader = feature_loader(dataset_or_loader, processor, batch_size, num_workers)
    start = time.perf_counter()
    features, labels = encode_batches(model, loader, pooling, torch.device(device))
    logger.info("extracted %s features of %d images in %.1fs", tuple(features.shape[1:]), len(labels),
                time.perf_counter() - start)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".pt.partial")
        torch.save({"features": features, "labels": labels}, partial)
        partial.replace(path)  # atomic: an interrupted run never leaves a truncated cache file behind
    return features, labels


# ----------------------------------------------------------------------------------------------- metrics


def classification_metrics(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Top-1 (and top-5 when there are more than 5 classes) from (N, C) class scores, via the local metrics.
    Ties go to the lower class id in both, so the numbers do not depend on the sort implementation."""
    scores = scores.float().cpu()
    labels = labels.long().cpu()
    predictions = first_argmax(scores)
    result = {"top1": local_metric("accuracy").compute(predictions=predictions.tolist(),
                                                      references=labels.tolist())["accuracy"]}
    if scores.shape[1] > 5:
        result["top5"] = local_metric("top_k_accuracy").compute(predictions=scores.tolist(),
                                                               references=labels.tolist(), k=5)["top_k_accuracy"]
    return result


@functools.lru_cache(maxsize=None)
def local_metric(name: str):
    """Each `evaluate` module is loaded once per process: loading costs about a second, computing microseconds."""
    from .metrics import load_metric

    return load_metric(name)


def first_argmax(scores: torch.Tensor) -> torch.Tensor:
    """Row-wise argmax that returns the lowest index among equal maxima (torch.argmax does not promise which)."""
    is_max = scores == scores.max(dim=1, keepdim=True).values
    preference = scores.shape[1] - torch.arange(scores.shape[1])  # distinct, larger for lower class ids
    return (is_max.long() * preference).argmax(dim=1)


# ----------------------------------------------------------------------------------------------- kNN


def nearest_neighbours(similarity: torch.Tensor, k: int) -> torch.Tensor:
    """(B, N) similarities -> (B, k) indices of the k largest, ties at the k-th value going to the lower index.

    `topk` alone leaves the choice among tied candidates to the implementation; here everything strictly above the
    k-th value is in, and the equal ones fill the remaining places in index order.
    """
    kth = similarity.topk(k, dim=1).values[:, -1:]
    above = similarity > kth
    tied = similarity == kth
    room = k - above.sum(dim=1, keepdim=True)
    chosen = above | (tied & (tied.cumsum(dim=1) <= room))
    return chosen.nonzero()[:, 1].reshape(len(similarity), k)


def knn_classify(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 k: int = 20, temperature: float = 0.07, num_classes: int | None = None,
                 batch_size: int = 256) -> torch.Tensor:
    """Weighted kNN (InstDisc, DINO's `eval_knn.py`): (N_test, C) class scores.

    Features are L2-normalised, so the dot product is the cosine similarity. Each of the k nearest training
    features votes for its label with weight exp(sim / T): close neighbours count far more than distant ones.
    Test features go through in batches so the similarity matrix never exceeds batch_size x N_train.
    """
    num_classes = int(num_classes if num_classes is not None else train_labels.max() + 1)
    k = min(k, len(train_features))
    train = F.normalize(train_features.float(), dim=1)
    train_labels = train_labels.long()
    scores = []
    for start in range(0, len(test_features), batch_size):
        test = F.normalize(test_features[start:start + batch_size].float(), dim=1)
        similarity = test @ train.T
        index = nearest_neighbours(similarity, k)
        weights = (similarity.gather(1, index) / temperature).exp()
        votes = torch.zeros(len(test), num_classes).scatter_add_(1, train_labels[index], weights)
        scores.append(votes)
    return torch.cat(scores)


# ----------------------------------------------------------------------------------------------- trained probes


def sgd_probe_learning_rate(batch_size: int, base_learning_rate: float = 0.1) -> float:
    """MAE's linear-probe rule, lr = blr * batch / 256 with blr 0.1 (6.4 at its batch 16384; 0.1 at 256)."""
    return base_learning_rate * batch_size / 256


def train_probe(head: nn.Module, features: torch.Tensor, labels: torch.Tensor, *, epochs: int, lr: float,
                batch_size: int, seed: int, weight_decay: float = 0.0, warmup_epochs: float | None = None,
                device="cpu", desc: str = "probe") -> list[float]:
    """Train only `head` on cached features: SGD with momentum 0.9, linear warmup then cosine, per step.

    Why SGD and not MAE's LARS: LARS exists to keep a batch of 16384 stable by scaling each tensor's step with
    ||w|| / ||grad||; at the batches a probe uses here (256 - 4096) momentum SGD with the same lr rule, warmup and
    cosine trains the BN + Linear head to the same optimum without that machinery. Shuffling uses its own
    generator seeded by `seed`, so the same seed gives bit-identical numbers on the same machine.
    Returns the mean loss of each epoch.
    """
    from tqdm.auto import tqdm

    from .training import lr_at

    device = torch.device(device)
    head.to(device).train()
    optimizer = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    count = len(labels)
    drop_last = count > batch_size  # also keeps BatchNorm from ever seeing a batch of one
    steps_per_epoch = count // batch_size if drop_last else 1
    total = epochs * steps_per_epoch
    warmup = int(round((warmup_epochs if warmup_epochs is not None else epochs / 9) * steps_per_epoch))
    losses, step = [], 0
    for _ in tqdm(range(epochs), desc=desc, leave=False):
        order = torch.randperm(count, generator=generator)
        epoch_loss = 0.0
        for batch in range(steps_per_epoch):
            index = order[batch * batch_size:(batch + 1) * batch_size]
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, lr, warmup, total)
            logits = head(features[index].to(device).float())
            loss = F.cross_entropy(logits, labels[index].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item()
            step += 1
        losses.append(epoch_loss / steps_per_epoch)
    return losses


@torch.no_grad()
def predict(head: nn.Module, features: torch.Tensor, batch_size: int = 1024, device="cpu") -> torch.Tensor:
    head.to(device).eval()
    return torch.cat([head(features[i:i + batch_size].to(device).float()).float().cpu()
                      for i in range(0, len(features), batch_size)])


def seeded(build, seed: int) -> nn.Module:
    """Build a module with its initial weights drawn from `seed`, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def linear_head(hidden_size: int, num_classes: int) -> nn.Module:
    """MAE's probe head: BatchNorm1d without affine (standardises each feature; the encoder's LN output has very
    different scales per channel) then Linear with trunc-normal(0.01) weights and zero bias."""
    linear = nn.Linear(hidden_size, num_classes)
    nn.init.trunc_normal_(linear.weight, std=0.01)
    nn.init.zeros_(linear.bias)
    return nn.Sequential(nn.BatchNorm1d(hidden_size, affine=False, eps=1e-6), linear)


def linear_probe(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, *, epochs: int = 90, lr: float | None = None, batch_size: int = 256,
                 seed: int = 0, weight_decay: float = 0.0, warmup_epochs: float | None = None,
                 num_classes: int | None = None, device="cpu") -> dict[str, float]:
    """MAE's linear probe on cached (N, D) features, scaled to our sizes.

    lr defaults to 0.1 * batch / 256; warmup defaults to a ninth of the epochs (MAE: 10 of 90). Returns
    {"top1", "top5", "final_loss", "learning_rate"} as plain floats.
    """
    num_classes = int(num_classes if num_classes is not None else max(train_labels.max(), test_labels.max()) + 1)
    lr = sgd_probe_learning_rate(batch_size) if lr is None else lr
    head = seeded(lambda: linear_head(train_features.shape[1], num_classes), seed)
    losses = train_probe(head, train_features, train_labels, epochs=epochs, lr=lr, batch_size=batch_size,
                         seed=seed, weight_decay=weight_decay, warmup_epochs=warmup_epochs, device=device,
                         desc="linear probe")
    scores = predict(head, test_features, device=device)
    return {**classification_metrics(scores, test_labels), "final_loss": float(losses[-1]), "learning_rate": float(lr)}


def attentive_head(hidden_size: int, num_heads: int, num_classes: int) -> nn.Module:
    """CAE's attentive probe head (`AttentiveProbe` in modeling_cae.py): one learned query cross-attends the
    patch tokens, then LayerNorm and Linear."""
    from .modeling.modeling_cae import AttentiveProbe

    return AttentiveProbe(hidden_size=hidden_size, num_heads=num_heads, num_labels=num_classes)


def attentive_probe(train_tokens: torch.Tensor, train_labels: torch.Tensor, test_tokens: torch.Tensor,
                    test_labels: torch.Tensor, *, num_heads: int, epochs: int = 90, lr: float | None = None,
                    batch_size: int = 256, seed: int = 0, weight_decay: float = 0.0,
                    warmup_epochs: float | None = None, num_classes: int | None = None,
                    device="cpu") -> dict[str, float]:
    """CAE's attentive probe on cached (N, L, D) patch tokens of a frozen encoder.

    A linear probe of one pooled vector under-rates MIM encoders, whose information is spread over the patch
    tokens; a learned query that attends over them measures it better. CAE's `run_attentive.py`: SGD momentum
    0.9, lr 0.4, 90 epochs, 10 warmup, weight decay 0; we reach its lr through the same rule as the linear probe
    (0.1 * batch / 256 = 0.4 at batch 1024). The encoder is not involved at all: only cached tokens go in.
    """
    num_classes = int(num_classes if num_classes is not None else max(train_labels.max(), test_labels.max()) + 1)
    lr = sgd_probe_learning_rate(batch_size) if lr is None else lr
    head = seeded(lambda: attentive_head(train_tokens.shape[-1], num_heads, num_classes), seed)
    losses = train_probe(head, train_tokens, train_labels, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                         weight_decay=weight_decay, warmup_epochs=warmup_epochs, device=device,
                         desc="attentive probe")
    scores = predict(head, test_tokens, batch_size=256, device=device)
    return {**classification_metrics(scores, test_labels), "final_loss": float(losses[-1]), "learning_rate": float(lr)}


# ----------------------------------------------------------------------------------------------- raw pixels


def standardize(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel zero mean, unit variance from the training set (constant pixels keep scale 1)."""
    mean = train.mean(dim=0)
    std = train.std(dim=0).clamp_min(1e-6)
    std[std <= 1e-6] = 1.0
    return (train - mean) / std, (test - mean) / std


def logistic_regression_on_pixels(train_images, train_labels, test_images, test_labels, *, l2: float = 1e-4,
                                  max_iter: int = 100, seed: int = 0, num_classes: int | None = None,
                                  device="cpu") -> dict[str, float]:
    """The raw-pixel baseline: multinomial logistic regression on standardised pixels, fit by full-batch L-BFGS.

    Objective: mean cross-entropy + l2 / 2 * ||W||^2 (bias not penalised), the convex problem scikit-learn's
    LogisticRegression solves, written in torch so no new dependency is needed. Convex, so the optimum does not
    depend on the start; the start is still drawn from `seed` (near zero) for a reproducible path.
    """
    device = torch.device(device)
    x_train = torch.as_tensor(np.asarray(train_images)).reshape(len(train_images), -1).double()
    x_test = torch.as_tensor(np.asarray(test_images)).reshape(len(test_images), -1).double()
    x_train, x_test = standardize(x_train, x_test)
    y_train = torch.as_tensor(np.asarray(train_labels)).long()
    y_test = torch.as_tensor(np.asarray(test_labels)).long()
    num_classes = int(num_classes if num_classes is not None else max(y_train.max(), y_test.max()) + 1)
    generator = torch.Generator().manual_seed(seed)
    weight = (torch.randn(x_train.shape[1], num_classes, generator=generator, dtype=torch.float64) * 1e-3)
    weight = weight.to(device).requires_grad_(True)
    bias = torch.zeros(num_classes, dtype=torch.float64, device=device, requires_grad=True)
    x_train, y_train = x_train.to(device), y_train.to(device)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                  line_search_fn="strong_wolfe")

    def objective():
        optimizer.zero_grad()
        loss = F.cross_entropy(x_train @ weight + bias, y_train) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    final_loss = objective().item()  # (step returns the loss at the start)
    with torch.no_grad():
        scores = (x_test.to(device) @ weight + bias).cpu()
    return {**classification_metrics(scores, y_test), "final_loss": float(final_loss), "l2": float(l2)}
