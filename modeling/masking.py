"""Mask functions shared by the five methods.

Convention everywhere: `True` (or 1) means masked / removed. Token order is row-major over the patch grid.
Pure functions take their randomness as an argument (noise tensor, `random.Random` or numpy Generator) so tests
can pin it.
"""

from __future__ import annotations

import inspect
import math
import random

import numpy as np
import torch


def random_masking(
    tokens: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE's per-sample random masking by argsort of uniform noise.

    Args:
        tokens: (B, L, D) patch tokens, positions already added.
        mask_ratio: fraction of the L tokens to remove; `int(L * (1 - ratio))` are kept (floor).
        noise: optional (B, L) noise in [0, 1]; pass it to make the mask reproducible.

    Returns:
        kept: (B, L_keep, D) the visible tokens, in shuffled order.
        mask: (B, L) float, 1 = removed, in the original patch order.
        ids_restore: (B, L) indices that undo the shuffle.
    """
    batch, length, dim = tokens.shape
    len_keep = int(length * (1 - mask_ratio))
    if noise is None:
        noise = torch.rand(batch, length, device=tokens.device)
    elif noise.shape != (batch, length):
        raise ValueError(f"noise must have shape {(batch, length)} (batch, num_patches), got {tuple(noise.shape)}")
    # small is keep, large is remove
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    kept = torch.gather(tokens, 1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))
    mask = torch.ones(batch, length, device=tokens.device, dtype=tokens.dtype)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return kept, mask, ids_restore


# ---------------------------------------------------------------------------------------------------------------
# Mask generators run by the image processors (BEiT, MaskFeat, CAE: block-wise; SimMIM: coarse random; CAE: random).
# They return (H, W) bool numpy arrays; the processor flattens them row-major to `bool_masked_pos` (L,).
# ---------------------------------------------------------------------------------------------------------------

# With exact=True, how many try_block calls in a row may place nothing before the missing count is drawn from the
# free cells at random. CAE's official loop retries forever. At its settings (14x14, N=98, min 16) the longest streak
# in 30,000 seeds was 19 calls, so masks match the official loop (tested); settings where no block can ever fit
# (a 1-wide grid, a first block bigger than the grid allows) hang the official loop and end here.
EXACT_MAX_FAILED_CALLS = 200


def _check_block_args(height, width, num_masking_patches, min_num_patches, max_num_patches, min_aspect, max_aspect):
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer (patches along that axis of the grid), got {value!r}")
    num_patches = height * width
    if not isinstance(num_masking_patches, (int, np.integer)) or not 0 < num_masking_patches < num_patches:
        raise ValueError(
            f"num_masking_patches must be an integer in [1, {num_patches - 1}] for a {height}x{width} grid "
            f"(at least one patch masked and one visible), got {num_masking_patches!r}"
        )
    if not min_num_patches >= 1:
        raise ValueError(f"min_num_patches must be >= 1 (smallest block area to aim for), got {min_num_patches!r}")
    if max_num_patches is not None and not max_num_patches >= 1:
        raise ValueError(f"max_num_patches must be >= 1, or None for num_masking_patches, got {max_num_patches!r}")
    if not min_aspect > 0:
        raise ValueError(f"min_aspect must be > 0 (block height/width ratio; BEiT uses 0.3), got {min_aspect!r}")
    if max_aspect is not None and not max_aspect >= min_aspect:
        raise ValueError(
            f"max_aspect must be >= min_aspect ({min_aspect}), or None for 1/min_aspect, got {max_aspect!r}"
        )


def _try_block(mask, budget, min_num_patches, log_aspect, rng):
    """One call of BEiT's `_mask`: up to 10 attempts at a rectangle adding 1..budget new cells; returns that count.

    The rng calls (uniform, uniform, then randint, randint when the block fits) follow the official order."""
    height, width = mask.shape
    for _ in range(10):
        area = rng.uniform(min_num_patches, budget)
        aspect = math.exp(rng.uniform(*log_aspect))
        h = int(round(math.sqrt(area * aspect)))
        w = int(round(math.sqrt(area / aspect)))
        if w < width and h < height:
            top = rng.randint(0, height - h)
            left = rng.randint(0, width - w)
            window = mask[top : top + h, left : left + w]
            new = h * w - int(window.sum())
            if 0 < new <= budget:
                window[...] = True
                return new
    return 0


def block_mask(
    height: int,
    width: int,
    num_masking_patches: int,
    min_num_patches: float = 16,
    max_num_patches: int | None = None,
    min_aspect: float = 0.3,
    max_aspect: float | None = None,
    exact: bool = False,
    rng: random.Random | None = None,
) -> np.ndarray:
    """BEiT's block-wise mask: rectangles of random area and aspect until N cells are masked.

    exact=False (BEiT, MaskFeat) stops at the first call whose 10 attempts all fail, so it may undershoot N; it never
    overshoots. exact=True (CAE, whose encoder needs a fixed visible length) keeps calling until exactly N are
    masked, as CAE's official loop does; unlike that loop it cannot spin forever: after `EXACT_MAX_FAILED_CALLS`
    empty calls in a row, the missing cells are drawn uniformly from the unmasked ones.

    Returns: (height, width) bool, True = masked.
    """
    _check_block_args(height, width, num_masking_patches, min_num_patches, max_num_patches, min_aspect, max_aspect)
    rng = random.Random() if rng is None else rng
    max_num_patches = num_masking_patches if max_num_patches is None else max_num_patches
    log_aspect = (math.log(min_aspect), math.log(max_aspect or 1 / min_aspect))
    mask = np.zeros((height, width), dtype=bool)
    count, failed = 0, 0
    while count < num_masking_patches:
        delta = _try_block(mask, min(num_masking_patches - count, max_num_patches), min_num_patches, log_aspect, rng)
        count += delta
        if delta:
            failed = 0
        elif not exact:
            break
        else:
            failed += 1
            if failed >= EXACT_MAX_FAILED_CALLS:
                free = np.flatnonzero(~mask.reshape(-1)).tolist()
                mask.reshape(-1)[rng.sample(free, num_masking_patches - count)] = True
                count = num_masking_patches
    return mask


class SeededMaskGenerator:
    """Callable holding a mask function's arguments and its own seeded generator; each call gives a fresh mask.

    The arguments are those of `mask_function` but `rng`, checked here (`check`) so a bad config fails at
    construction; `seed=None` seeds from the OS. They read back as attributes (`generator.height`).
    """

    @staticmethod
    def mask_function(*args, rng=None, **kwargs) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def check(**arguments) -> None:
        """Raise, naming the field, when the arguments cannot make a mask."""

    @staticmethod
    def make_rng(seed: int | None):
        return random.Random(seed)

    def __init__(self, *args, seed: int | None = None, **kwargs):
        if "rng" in kwargs:
            raise TypeError(f"{type(self).__name__} holds its own generator: pass seed=, not rng=")
        bound = inspect.signature(self.mask_function).bind(*args, **kwargs)
        bound.apply_defaults()
        self.arguments = {name: value for name, value in bound.arguments.items() if name != "rng"}
        self.check(**self.arguments)
        self.rng = self.make_rng(seed)

    def __call__(self) -> np.ndarray:
        return self.mask_function(**self.arguments, rng=self.rng)

    def __getattr__(self, name: str):
        arguments = self.__dict__.get("arguments", {})
        if name in arguments:
            return arguments[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.arguments.items())})"


class BlockMaskGenerator(SeededMaskGenerator):
    """`block_mask` with its settings and a seeded `random.Random`: (height, width) bool, True = masked."""

    mask_function = staticmethod(block_mask)

    @staticmethod
    def check(exact=False, **arguments) -> None:
        _check_block_args(**arguments)


def _numpy_rng(rng) -> np.random.Generator:
    """A numpy Generator from None (fresh), a Generator (as is) or a `random.Random` (seeded from it), so the
    processors, which hold one `random.Random` per call, can drive the numpy-based generators too."""
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, random.Random):
        return np.random.default_rng(rng.getrandbits(64))
    return rng


def _check_simmim_args(input_size, mask_patch_size, model_patch_size, mask_ratio):
    for name, value in (
        ("input_size", input_size), ("mask_patch_size", mask_patch_size), ("model_patch_size", model_patch_size)
    ):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer (pixels), got {value!r}")
    if input_size % mask_patch_size:
        raise ValueError(
            f"input_size ({input_size}) must be divisible by mask_patch_size ({mask_patch_size}); "
            f"pick a mask_patch_size that divides the image size (SimMIM: 224 and 32)"
        )
    if mask_patch_size % model_patch_size:
        raise ValueError(
            f"mask_patch_size ({mask_patch_size}) must be a multiple of model_patch_size ({model_patch_size}), "
            f"so each mask cell covers whole patches (SimMIM ViT: 32 and 16)"
        )
    if not 0 < mask_ratio < 1:
        raise ValueError(f"mask_ratio must be in (0, 1) (SimMIM uses 0.6), got {mask_ratio!r}")


def simmim_mask(
    input_size: int = 224,
    mask_patch_size: int = 32,
    model_patch_size: int = 16,
    mask_ratio: float = 0.6,
    rng: np.random.Generator | random.Random | None = None,
) -> np.ndarray:
    """SimMIM's mask: exactly ceil(ratio * cells) coarse cells of mask_patch_size pixels, drawn by
    a random permutation, each repeated over the (mask_patch_size / model_patch_size)^2 patches it covers.

    Returns: (input_size / model_patch_size,) * 2 bool, True = masked; at defaults 120 of 196, in aligned 2x2 blocks.
    """
    _check_simmim_args(input_size, mask_patch_size, model_patch_size, mask_ratio)
    rand_size = input_size // mask_patch_size
    scale = mask_patch_size // model_patch_size
    token_count = rand_size**2
    mask_count = math.ceil(token_count * mask_ratio)
    mask = np.zeros(token_count, dtype=bool)
    mask[_numpy_rng(rng).permutation(token_count)[:mask_count]] = True
    return mask.reshape(rand_size, rand_size).repeat(scale, axis=0).repeat(scale, axis=1)


class SimMIMMaskGenerator(SeededMaskGenerator):
    """`simmim_mask` with its settings and a seeded numpy Generator: (input_size / model_patch_size,) * 2 bool,
    True = masked."""

    mask_function = staticmethod(simmim_mask)
    check = staticmethod(_check_simmim_args)
    make_rng = staticmethod(np.random.default_rng)


def random_mask(
    height: int, width: int, mask_ratio: float, rng: np.random.Generator | random.Random | None = None
) -> np.ndarray:
    """CAE's "random" mode: exactly int(mask_ratio * H * W) cells, uniformly, so every image masks the same count.

    Returns: (height, width) bool, True = masked.
    """
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer (patches along that axis of the grid), got {value!r}")
    if not 0 <= mask_ratio < 1:
        raise ValueError(f"mask_ratio must be in [0, 1) (CAE uses 0.5), got {mask_ratio!r}")
    num_patches = height * width
    mask = np.zeros(num_patches, dtype=bool)
    mask[_numpy_rng(rng).permutation(num_patches)[: int(mask_ratio * num_patches)]] = True
    return mask.reshape(height, width)


def split_by_mask(
    tokens: torch.Tensor, bool_masked_pos: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split tokens into visible and masked sets by a given mask, for encoders that drop masked tokens (CAE).

    A stable argsort of the mask puts visible patches first and masked ones after, each in ascending patch order,
    with no loop over the batch. Every row must mask the same count, or the sets would be ragged.

    Args:
        tokens: (B, L, D).
        bool_masked_pos: (B, L) bool (or 0/1), True = masked.

    Returns:
        visible: (B, Lv, D); masked: (B, Lm, D); ids_visible: (B, Lv) and ids_masked: (B, Lm) patch indices (long).
    """
    if tokens.dim() != 3 or bool_masked_pos.shape != tokens.shape[:2]:
        raise ValueError(
            f"bool_masked_pos must have shape {tuple(tokens.shape[:2])} (batch, num_patches) for tokens of shape "
            f"(batch, num_patches, dim); got tokens {tuple(tokens.shape)} and mask {tuple(bool_masked_pos.shape)}"
        )
    batch, length, dim = tokens.shape
    mask = bool_masked_pos.to(device=tokens.device, dtype=torch.bool)
    counts = mask.sum(dim=1).tolist()  # the one host read: the count sets the shapes below
    num_masked = counts[0] if batch else 0
    if any(count != num_masked for count in counts):
        raise ValueError(
            "every image in the batch must have the same number of masked patches; use exact=True "
            f"(block masks) or random masks; got counts {sorted(set(counts))}"
        )
    order = torch.argsort(mask.to(torch.uint8), dim=1, stable=True)
    ids_visible, ids_masked = order[:, : length - num_masked], order[:, length - num_masked :]
    visible = torch.gather(tokens, 1, ids_visible.unsqueeze(-1).expand(-1, -1, dim))
    masked = torch.gather(tokens, 1, ids_masked.unsqueeze(-1).expand(-1, -1, dim))
    return visible, masked, ids_visible, ids_masked
