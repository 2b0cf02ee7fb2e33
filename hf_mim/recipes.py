"""Per-method training recipes (method_spec §7) and the CPU-sized demo model the README runs.

The scripts read these as defaults; every value can be overridden by a flag.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PretrainRecipe:
    base_learning_rate: float  # lr = blr * batch / lr_batch_divisor, or absolute when the divisor is None
    lr_batch_divisor: int | None
    betas: tuple[float, float]
    weight_decay: float
    warmup_epochs: float
    min_lr: float
    max_grad_norm: float | None
    crop_scale: tuple[float, float]
    color_jitter: float = 0.0


@dataclass(frozen=True)
class FinetuneRecipe:
    base_learning_rate: float
    lr_batch_divisor: int | None
    layer_decay: float = 0.65
    weight_decay: float = 0.05
    warmup_epochs: float = 5
    min_lr: float = 1e-6
    drop_path_rate: float = 0.1
    mixup: float = 0.8
    cutmix: float = 1.0
    label_smoothing: float = 0.1
    rand_augment: str = "rand-m9-mstd0.5-inc1"  # timm's spec; colour jitter is then off, as in timm
    random_erasing: float = 0.25


PRETRAIN_RECIPES = {
    "mae": PretrainRecipe(1.5e-4, 256, (0.9, 0.95), 0.05, 40, 0.0, None, (0.2, 1.0)),
    "beit": PretrainRecipe(1.5e-3, None, (0.9, 0.999), 0.05, 10, 1e-5, 3.0, (0.08, 1.0), color_jitter=0.4),
    "simmim": PretrainRecipe(1e-4, 512, (0.9, 0.999), 0.05, 10, 5e-7, 5.0, (0.67, 1.0)),
    "maskfeat": PretrainRecipe(2e-4, 256, (0.9, 0.999), 0.05, 30, 1e-6, 0.02, (0.5, 1.0)),
    "cae": PretrainRecipe(1.5e-3, None, (0.9, 0.999), 0.05, 20, 1e-5, 3.0, (0.08, 1.0)),
}

FINETUNE_RECIPES = {
    "mae": FinetuneRecipe(5e-4, 256, warmup_epochs=5),
    "beit": FinetuneRecipe(4e-3, None, warmup_epochs=20),
    "simmim": FinetuneRecipe(1.25e-3, 512, warmup_epochs=20),
    "maskfeat": FinetuneRecipe(1e-3, 256, warmup_epochs=20),  # 8e-3 at batch 2048
    "cae": FinetuneRecipe(8e-3, None, warmup_epochs=5, rand_augment=""),  # the official script's --aa default
}

# A ViT small enough to pretrain on 2 CPU cores in minutes: 32 px images, 4 px patches (64 tokens).
DEMO_BACKBONE = dict(
    image_size=32, patch_size=4, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
    intermediate_size=512, drop_path_rate=0.0,
)
DEMO_OVERRIDES = {
    "mae": dict(decoder_hidden_size=64, decoder_num_hidden_layers=2, decoder_num_attention_heads=4,
                decoder_intermediate_size=256),
    "beit": dict(num_masking_patches=26, min_num_patches=4),
    "simmim": dict(mask_patch_size=8),
    "maskfeat": dict(image_size=64, patch_size=8, hog_cell_size=4, num_masking_patches=26, min_num_patches=4),
    "cae": dict(num_masking_patches=32, min_num_patches=4, regressor_num_hidden_layers=2,
                decoder_num_hidden_layers=2),
}


def demo_config_kwargs(method: str) -> dict:
    return {**DEMO_BACKBONE, **DEMO_OVERRIDES.get(method, {})}
