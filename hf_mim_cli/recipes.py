"""Training recipes: the values a method's published recipe trains with, and the CPU-sized demo variant.

Each method's entry in `hf_mim.methods` holds its recipes. A script turns a recipe into the settings of one run
with `hf_mim.planning.with_overrides` (every flag named like a recipe field replaces that field when given), and both
the recipe's own values and the flags are checked by `check_values`, so a bad value is refused the same way
wherever it comes from.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class PretrainRecipe:
    base_learning_rate: float  # lr = blr * batch / lr_batch_divisor, or absolute when the divisor is None
    lr_batch_divisor: int | None
    betas: tuple[float, float]
    weight_decay: float
    warmup_epochs: float
    min_learning_rate: float
    max_grad_norm: float | None  # 0 or None: no clipping
    crop_scale: tuple[float, float]
    color_jitter: float = 0.0
    num_train_epochs: int = 800
    per_device_train_batch_size: int = 32

    def __post_init__(self):
        check_values(dataclasses.asdict(self))

    def for_demo(self) -> "PretrainRecipe":
        """The demo run (tiny ViT, a few thousand images): a short warm-up, 60 epochs at batch 64, and 10x the
        base lr where the lr scales with the batch (small batches, few updates)."""
        scale = 10 if self.lr_batch_divisor else 1
        return dataclasses.replace(self, base_learning_rate=self.base_learning_rate * scale, warmup_epochs=2,
                                   num_train_epochs=60, per_device_train_batch_size=64)


@dataclass(frozen=True)
class FinetuneRecipe:
    base_learning_rate: float
    lr_batch_divisor: int | None
    layer_decay: float = 0.65
    weight_decay: float = 0.05
    warmup_epochs: float = 5
    min_learning_rate: float = 1e-6
    drop_path_rate: float = 0.1
    mixup: float = 0.8
    cutmix: float = 1.0
    label_smoothing: float = 0.1
    rand_augment: str = "rand-m9-mstd0.5-inc1"  # timm's spec; colour jitter is then off, as in timm
    random_erasing: float = 0.25
    crop_scale: tuple[float, float] = (0.08, 1.0)
    learning_rate: float | None = None  # absolute peak lr; replaces base_learning_rate x batch / divisor

    def __post_init__(self):
        check_values(dataclasses.asdict(self))

    def for_demo(self) -> "FinetuneRecipe":
        """The demo run (the 32 px demo ViT, about a thousand images, about a hundred updates): no mixup, cutmix,
        RandAugment or random erasing (they regularise 100-epoch runs and only slow a short one), mild crops, a
        half-epoch warm-up and one absolute lr. Measured on Fashion-MNIST, where the published recipe's values
        leave a short run near chance."""
        return dataclasses.replace(self, mixup=0.0, cutmix=0.0, rand_augment="none", random_erasing=0.0,
                                   warmup_epochs=0.5, learning_rate=4e-3, crop_scale=(0.8, 1.0))


def check_crop_scale(value) -> str | None:
    low, high = value
    if not 0 < low <= high <= 1:
        return f"{low} {high}: need 0 < MIN <= MAX <= 1 (fractions of the image area), e.g. 0.08 1"
    return None


def check_probability(value) -> str | None:
    return None if 0 <= value <= 1 else f"{value}: need a probability in [0, 1]"


def check_rand_augment(value) -> str | None:
    from hf_mim.rand_augment import parse_rand_augment

    try:
        parse_rand_augment(value)
    except ValueError as error:
        return str(error)
    return None


def check_crop_pct(value) -> str | None:
    return None if 0 < value <= 1 else f"{value}: need a share of the short side in (0, 1], e.g. 0.875 or 1"


VALUE_CHECKS = {"crop_scale": check_crop_scale, "random_erasing": check_probability, "rand_augment": check_rand_augment,
                "eval_crop_pct": check_crop_pct}


def check_values(values: dict) -> None:
    """Raise a ValueError naming the flag (`--name value: what is wrong`) for the first bad value; None means
    "not given" and passes."""
    for name, value in values.items():
        check = VALUE_CHECKS.get(name)
        problem = check(value) if check is not None and value is not None else None
        if problem:
            raise ValueError(f"--{name} {problem}")


# A ViT small enough to pretrain on 2 CPU cores in minutes: 32 px images, 4 px patches (64 tokens).
DEMO_BACKBONE = dict(
    image_size=32, patch_size=4, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
    intermediate_size=512, drop_path_rate=0.0,
)
