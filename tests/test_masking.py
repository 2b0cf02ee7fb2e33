"""Mask generators: property tests over grid sizes, counts, ratios and seeds, plus parity with transformers' copy
of BEiT's block generator (FlavaMaskingGenerator) and with CAE's exact-count loop rebuilt from it."""

from __future__ import annotations

import math
import random
import signal
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers.models.flava.image_processing_pil_flava import FlavaMaskingGenerator

from helpers import assert_refused
from hf_mim.modeling.masking import (
    EXACT_MAX_FAILED_CALLS,
    BlockMaskGenerator,
    SimMIMMaskGenerator,
    block_mask,
    random_mask,
    random_masking,
    simmim_mask,
    split_by_mask,
)

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(0, 2**32 - 1)


@contextmanager
def time_limit(seconds: int):
    """Turn a hang (the official CAE loop on a degenerate grid) into a failure."""

    def fail(signum, frame):
        raise TimeoutError(f"did not finish within {seconds} s")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def global_random_seed(seed: int):
    """Flava's generator draws from the global `random` module; seed it and restore it afterwards."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


@st.composite
def block_args(draw, min_side=1, max_side=16, max_fill=1.0):
    height = draw(st.integers(min_side, max_side))
    width = draw(st.integers(max(min_side, 2 if height == 1 else 1), max_side))  # room for 1 masked + 1 visible
    n = draw(st.integers(1, max(1, min(height * width - 1, int(max_fill * height * width)))))
    return dict(
        height=height,
        width=width,
        num_masking_patches=n,
        min_num_patches=draw(st.integers(1, 20)),
        max_num_patches=draw(st.none() | st.integers(1, n)),
        min_aspect=draw(st.floats(0.2, 1.0)),
        max_aspect=None,
    )


def flava_mask(args: dict, seed: int) -> np.ndarray:
    generator = FlavaMaskingGenerator(
        input_size=(args["height"], args["width"]),
        total_mask_patches=args["num_masking_patches"],
        mask_group_max_patches=args["max_num_patches"],
        mask_group_min_patches=args["min_num_patches"],
        mask_group_min_aspect_ratio=args["min_aspect"],
        mask_group_max_aspect_ratio=args["max_aspect"],
    )
    with global_random_seed(seed):
        return generator().numpy()


def cae_reference_mask(args: dict, seed: int) -> np.ndarray | None:
    """CAE's official loop (`while count != N`, no early stop) over Flava's `_mask`; None if it would spin."""
    n = args["num_masking_patches"]
    max_patches = n if args["max_num_patches"] is None else args["max_num_patches"]
    generator = FlavaMaskingGenerator(
        input_size=(args["height"], args["width"]),
        total_mask_patches=n,
        mask_group_max_patches=max_patches,
        mask_group_min_patches=args["min_num_patches"],
        mask_group_min_aspect_ratio=args["min_aspect"],
        mask_group_max_aspect_ratio=args["max_aspect"],
    )
    mask = torch.zeros(args["height"], args["width"], dtype=torch.int)
    count, failed = 0, 0
    with global_random_seed(seed):
        while count != n:
            delta = int(generator._mask(mask, min(n - count, max_patches)))
            count += delta
            failed = 0 if delta else failed + 1
            if failed >= EXACT_MAX_FAILED_CALLS:
                return None
    return mask.numpy()


# ------------------------------------------------------------------------------------------------ block_mask


@PROPERTY
@given(args=block_args(), seed=seeds)
def test_block_mask_matches_flava_generator(args, seed):
    ours = block_mask(**args, rng=random.Random(seed))
    assert ours.dtype == bool and ours.shape == (args["height"], args["width"])
    np.testing.assert_array_equal(ours.astype(int), flava_mask(args, seed))


def test_block_mask_matches_flava_at_method_defaults():
    for n, min_patches in ((75, 16), (78, 15), (98, 16)):  # BEiT, MaskFeat, CAE's N without exact
        args = dict(height=14, width=14, num_masking_patches=n, min_num_patches=min_patches,
                    max_num_patches=None, min_aspect=0.3, max_aspect=None)
        for seed in range(30):
            np.testing.assert_array_equal(block_mask(**args, rng=random.Random(seed)).astype(int),
                                          flava_mask(args, seed))


@PROPERTY
@given(args=block_args(), seed=seeds, exact=st.booleans())
def test_block_mask_never_overshoots_and_exact_hits_n(args, seed, exact):
    with time_limit(5):
        mask = block_mask(**args, exact=exact, rng=random.Random(seed))
    if exact:
        assert mask.sum() == args["num_masking_patches"]
    else:
        assert mask.sum() <= args["num_masking_patches"]


@PROPERTY
@given(args=block_args(min_side=6, max_fill=0.7), seed=seeds)
def test_exact_block_mask_matches_cae_loop(args, seed):
    reference = cae_reference_mask(args, seed)
    ours = block_mask(**args, exact=True, rng=random.Random(seed))
    assert ours.sum() == args["num_masking_patches"]
    if reference is not None:  # the official loop would have spun; ours fell back to random cells
        np.testing.assert_array_equal(ours.astype(int), reference)


def test_exact_block_mask_matches_cae_loop_at_cae_defaults():
    args = dict(height=14, width=14, num_masking_patches=98, min_num_patches=16,
                max_num_patches=None, min_aspect=0.3, max_aspect=None)
    for seed in range(100):
        reference = cae_reference_mask(args, seed)
        assert reference is not None
        np.testing.assert_array_equal(block_mask(**args, exact=True, rng=random.Random(seed)).astype(int), reference)


def test_early_stop_undershoots_and_exact_does_not():
    """BEiT's early stop leaves some masks short of N; CAE's loop never does."""
    counts = [int(block_mask(14, 14, 75, rng=random.Random(seed)).sum()) for seed in range(40)]
    assert min(counts) < 75 and max(counts) == 75
    assert all(block_mask(14, 14, 75, exact=True, rng=random.Random(seed)).sum() == 75 for seed in range(40))


@pytest.mark.parametrize(
    "height, width, n, min_patches",
    [
        (4, 4, 15, 16),  # every first block would need an area of 15-16 on a grid that fits at most 3x3
        (1, 10, 5, 1),  # a 1-wide grid fits no block at all (sides must be strictly smaller than the grid)
        (2, 2, 3, 16),
    ],
)
def test_exact_block_mask_ends_where_official_loop_spins(height, width, n, min_patches):
    args = dict(height=height, width=width, num_masking_patches=n, min_num_patches=min_patches,
                max_num_patches=None, min_aspect=0.3, max_aspect=None)
    assert cae_reference_mask(args, 0) is None
    for seed in range(3):
        with time_limit(10):
            mask = block_mask(**args, exact=True, rng=random.Random(seed))
        assert mask.sum() == n


class FirstBlockOnly(random.Random):
    """Draws as usual for the first attempt, then asks for areas no grid fits: every later try_block fails."""

    def uniform(self, a, b):
        self.uniform_calls = getattr(self, "uniform_calls", 0) + 1
        value = super().uniform(a, b)
        return value if self.uniform_calls <= 2 or self.uniform_calls % 2 == 0 else 1e6  # odd calls are areas


def test_exact_fallback_keeps_blocks_and_fills_only_free_cells():
    for seed in range(20):
        first_block = block_mask(20, 20, 60, min_num_patches=16, rng=FirstBlockOnly(seed))
        assert 0 < first_block.sum() < 60  # early stop: the one block, then nothing
        mask = block_mask(20, 20, 60, min_num_patches=16, exact=True, rng=FirstBlockOnly(seed))
        assert mask.sum() == 60 and mask[first_block].all()


@PROPERTY
@given(args=block_args(), seed=seeds, exact=st.booleans())
def test_block_generator_is_deterministic_per_seed(args, seed, exact):
    first = BlockMaskGenerator(**args, exact=exact, seed=seed)
    second = BlockMaskGenerator(**args, exact=exact, seed=seed)
    reference_rng = random.Random(seed)
    for _ in range(3):
        mask = first()
        np.testing.assert_array_equal(mask, second())
        np.testing.assert_array_equal(mask, block_mask(**args, exact=exact, rng=reference_rng))


def test_block_generator_draws_fresh_masks():
    generator = BlockMaskGenerator(14, 14, 75, seed=0)
    masks = [generator() for _ in range(5)]
    assert len({m.tobytes() for m in masks}) == 5
    assert not np.array_equal(BlockMaskGenerator(14, 14, 75, seed=1)(), BlockMaskGenerator(14, 14, 75, seed=2)())
    assert block_mask(14, 14, 75).shape == (14, 14)  # rng=None works


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(height=0, width=14, num_masking_patches=10), "height"),
        (dict(height=14, width=2.5, num_masking_patches=10), "width"),
        (dict(height=14, width=14, num_masking_patches=0), "num_masking_patches"),
        (dict(height=14, width=14, num_masking_patches=196), "num_masking_patches"),
        (dict(height=14, width=14, num_masking_patches=7.5), "num_masking_patches"),
        (dict(height=14, width=14, num_masking_patches=75, min_num_patches=0), "min_num_patches"),
        (dict(height=14, width=14, num_masking_patches=75, max_num_patches=0), "max_num_patches"),
        (dict(height=14, width=14, num_masking_patches=75, min_aspect=0), "min_aspect"),
        (dict(height=14, width=14, num_masking_patches=75, min_aspect=0.5, max_aspect=0.4), "max_aspect"),
    ],
)
def test_block_mask_errors_name_the_field(kwargs, field):
    for make in (BlockMaskGenerator, block_mask):
        assert_refused(make, kwargs, rf"^{field} must")


# ------------------------------------------------------------------------------------------------ SimMIM


@PROPERTY
@given(
    rand_size=st.integers(1, 8),
    model_patch_size=st.sampled_from([2, 4, 8, 16]),
    scale=st.integers(1, 4),
    mask_ratio=st.floats(0.01, 0.99),
    seed=seeds,
)
def test_simmim_mask_counts_and_blocks(rand_size, model_patch_size, scale, mask_ratio, seed):
    mask_patch_size = model_patch_size * scale
    mask = simmim_mask(rand_size * mask_patch_size, mask_patch_size, model_patch_size, mask_ratio,
                       np.random.default_rng(seed))
    grid = rand_size * scale
    assert mask.dtype == bool and mask.shape == (grid, grid)
    coarse = mask[::scale, ::scale]
    assert coarse.sum() == math.ceil(rand_size**2 * mask_ratio)
    # every scale x scale group of tokens is one aligned cell: all masked or all visible
    np.testing.assert_array_equal(mask, np.kron(coarse, np.ones((scale, scale), dtype=bool)))


def test_simmim_mask_defaults():
    mask = SimMIMMaskGenerator(seed=0)()
    assert mask.shape == (14, 14) and mask.sum() == 120  # ceil(49 * 0.6) = 30 cells of 2x2
    blocks = mask.reshape(7, 2, 7, 2).transpose(0, 2, 1, 3).reshape(49, 4)
    assert set(blocks.sum(1).tolist()) == {0, 4}
    swin = simmim_mask(192, 32, 4, 0.6, np.random.default_rng(0))
    assert swin.shape == (48, 48) and swin.sum() == 22 * 64


@PROPERTY
@given(seed=seeds)
def test_simmim_generator_is_deterministic_per_seed(seed):
    first, second = SimMIMMaskGenerator(seed=seed), SimMIMMaskGenerator(seed=seed)
    reference_rng = np.random.default_rng(seed)
    for _ in range(3):
        mask = first()
        np.testing.assert_array_equal(mask, second())
        np.testing.assert_array_equal(mask, simmim_mask(rng=reference_rng))
    # the processors hold a random.Random; it drives the numpy-based generators reproducibly too
    np.testing.assert_array_equal(simmim_mask(rng=random.Random(seed)), simmim_mask(rng=random.Random(seed)))


def test_simmim_generator_draws_fresh_masks():
    generator = SimMIMMaskGenerator(seed=0)
    assert len({generator().tobytes() for _ in range(5)}) == 5


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(input_size=224, mask_patch_size=48), "input_size"),
        (dict(input_size=224, mask_patch_size=28, model_patch_size=16), "mask_patch_size"),
        (dict(mask_ratio=0.0), "mask_ratio"),
        (dict(mask_ratio=1.0), "mask_ratio"),
        (dict(model_patch_size=0), "model_patch_size"),
    ],
)
def test_simmim_errors_name_the_field(kwargs, field):
    for make in (SimMIMMaskGenerator, simmim_mask):
        assert_refused(make, kwargs, rf"^{field} ")


# ------------------------------------------------------------------------------------------------ random_mask


@PROPERTY
@given(height=st.integers(1, 20), width=st.integers(1, 20), mask_ratio=st.floats(0.0, 0.999), seed=seeds)
def test_random_mask_exact_count_and_determinism(height, width, mask_ratio, seed):
    mask = random_mask(height, width, mask_ratio, np.random.default_rng(seed))
    assert mask.dtype == bool and mask.shape == (height, width)
    assert mask.sum() == int(mask_ratio * height * width)
    np.testing.assert_array_equal(mask, random_mask(height, width, mask_ratio, np.random.default_rng(seed)))


def test_random_mask_is_uniform_over_cells():
    rng = np.random.default_rng(0)
    frequency = np.mean([random_mask(14, 14, 0.5, rng) for _ in range(2000)], axis=0)
    assert np.abs(frequency - 0.5).max() < 0.06  # ~5.3 standard deviations of a cell's mean


def test_random_mask_errors_name_the_field():
    with pytest.raises(ValueError, match="^mask_ratio"):
        random_mask(14, 14, 1.0)
    with pytest.raises(ValueError, match="^height"):
        random_mask(0, 14, 0.5)


# ------------------------------------------------------------------------------------------------ random_masking (MAE)


@PROPERTY
@given(
    batch=st.integers(1, 4), length=st.integers(1, 40), dim=st.integers(1, 5),
    mask_ratio=st.floats(0.0, 0.99), seed=st.integers(0, 2**31 - 1),
)
def test_random_masking_matches_python_sort(batch, length, dim, mask_ratio, seed):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, length, dim, generator=generator)
    # distinct noise values, so the order is unambiguous for any sort
    noise = torch.stack([torch.randperm(length, generator=generator) for _ in range(batch)]).float() / length
    kept, mask, ids_restore = random_masking(tokens, mask_ratio, noise=noise)

    len_keep = int(length * (1 - mask_ratio))
    assert kept.shape == (batch, len_keep, dim) and mask.shape == ids_restore.shape == (batch, length)
    for b in range(batch):
        order = sorted(range(length), key=lambda i: noise[b, i].item())  # small noise is kept
        torch.testing.assert_close(kept[b], tokens[b, order[:len_keep]], rtol=0, atol=0)
        expected_mask = [1.0 if i in set(order[len_keep:]) else 0.0 for i in range(length)]
        assert mask[b].tolist() == expected_mask  # 1 = removed, in the original patch order
        shuffled = tokens[b, order]
        torch.testing.assert_close(shuffled[ids_restore[b]], tokens[b], rtol=0, atol=0)  # undoes the shuffle


def test_random_masking_noise_shape_error():
    with pytest.raises(ValueError, match=r"noise must have shape \(2, 6\)"):
        random_masking(torch.zeros(2, 6, 3), 0.5, noise=torch.rand(2, 5))


# ------------------------------------------------------------------------------------------------ split_by_mask


@PROPERTY
@given(
    batch=st.integers(1, 4), height=st.integers(1, 6), width=st.integers(1, 6), dim=st.integers(1, 4),
    mask_ratio=st.floats(0.0, 0.99), seed=seeds,
)
def test_split_by_mask_orders_and_gathers(batch, height, width, dim, mask_ratio, seed):
    rng = np.random.default_rng(seed)
    length = height * width
    mask = torch.from_numpy(np.stack([random_mask(height, width, mask_ratio, rng).reshape(-1) for _ in range(batch)]))
    tokens = torch.from_numpy(rng.standard_normal((batch, length, dim)))
    visible, masked, ids_visible, ids_masked = split_by_mask(tokens, mask)

    num_masked = int(mask_ratio * length)
    assert visible.shape == (batch, length - num_masked, dim) and masked.shape == (batch, num_masked, dim)
    for b in range(batch):
        expected_masked = [i for i in range(length) if mask[b, i]]
        expected_visible = [i for i in range(length) if not mask[b, i]]
        assert ids_masked[b].tolist() == expected_masked and ids_visible[b].tolist() == expected_visible
        torch.testing.assert_close(masked[b], tokens[b, expected_masked], rtol=0, atol=0)
        torch.testing.assert_close(visible[b], tokens[b, expected_visible], rtol=0, atol=0)


def test_split_by_mask_with_exact_block_masks_and_int_masks():
    masks = np.stack([block_mask(14, 14, 98, exact=True, rng=random.Random(s)).reshape(-1) for s in range(8)])
    tokens = torch.randn(8, 196, 3)
    visible, masked, ids_visible, ids_masked = split_by_mask(tokens, torch.from_numpy(masks).int())
    assert visible.shape == masked.shape == (8, 98, 3)
    assert (ids_masked.diff(dim=1) > 0).all() and (ids_visible.diff(dim=1) > 0).all()
    assert torch.from_numpy(masks).gather(1, ids_masked).all()


def test_split_by_mask_errors():
    tokens = torch.zeros(2, 4, 3)
    uneven = torch.tensor([[True, False, False, False], [True, True, False, False]])
    with pytest.raises(ValueError, match="every image in the batch must have the same number of masked patches; "
                                         "use exact=True"):
        split_by_mask(tokens, uneven)
    with pytest.raises(ValueError, match=r"bool_masked_pos must have shape \(2, 4\)"):
        split_by_mask(tokens, torch.zeros(2, 5, dtype=torch.bool))


def test_block_mask_marginal_rate_is_symmetric_and_centre_biased_like_the_official_generator():
    """Issue 3 asked for a per-position rate "close to uniform"; the official BEiT generator is not: blocks must
    fit strictly inside the grid, so centre cells are masked far more often than corners (measured: ~0.04 at a
    corner, ~0.73 at the centre for 75/196). We keep the official behaviour (parity with Flava's copy) and pin
    what does hold: every cell can be masked, the rate is mirror-symmetric, and the mean is the expected count."""
    rng = random.Random(0)
    draws = 3000
    rate = sum(block_mask(14, 14, 75, 16, rng=rng).astype(float) for _ in range(draws)) / draws
    assert rate.min() > 0.01 and rate[7, 7] > 5 * rate[0, 0]
    np.testing.assert_allclose(rate, rate[::-1, :], atol=0.05)
    np.testing.assert_allclose(rate, rate[:, ::-1], atol=0.05)
    assert 0.33 < rate.mean() < 75 / 196 + 1e-9
