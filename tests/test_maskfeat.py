"""MaskFeat: the loss against a reference computed another way (an explicit loop over masked patches of HOG cell
histograms), masked-only scoring, the frozen fp32 HOG target, and the behaviour the MaskFeat paper and code pin down.
transformers has no MaskFeat, so there is no parity test against it."""

import math
import random

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForImageClassification

import hf_mim  # noqa: F401  (registers the Auto classes)
from hf_mim.hog_glyphs import render_hog_glyphs
from hf_mim.modeling.configuration_maskfeat import MimMaskFeatConfig
from hf_mim.modeling.hog import HOGTarget
from hf_mim.modeling.image_processing_maskfeat import MimMaskFeatImageProcessor
from hf_mim.modeling.masking import block_mask
from hf_mim.modeling.modeling_maskfeat import (
    MimMaskFeatForImageClassification,
    MimMaskFeatForPreTraining,
    patch_targets_to_cell_histograms,
)
from helpers import (
    assert_default_processor,
    assert_mean_pooled_classifier_starts_near_zero,
    assert_plain_call_is_the_base_processor,
    assert_refused,
    block_masks,
    pretraining_batches,
    random_images,
    train_on_processor_output,
)
from model_tester import MimModelTests

# 4x4 patches of 8 px with 4-px cells: 2x2 cells per patch, as ViT-B/16 with 8-px cells, so 108 values per patch.
TINY = dict(image_size=32, patch_size=8, hog_cell_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, num_masking_patches=6, min_num_patches=2)


masks = block_masks


class TestMaskFeatModels(MimModelTests):
    method = "maskfeat"
    tiny = TINY
    masks = staticmethod(masks)

    def check_pretraining_output(self, config, out):
        assert out.logits.shape == (2, config.num_patches, 108) and config.target_dim == 108
        assert out.hog_targets.shape == out.logits.shape and out.hog_targets.dtype == torch.float32
        assert not out.hog_targets.requires_grad
        assert out.bool_masked_pos.shape == (2, config.num_patches) and out.bool_masked_pos.dtype == torch.bool


# ----------------------------------------------------------------------------------------------- loss


def reference_loss(pixel_values, logits, bool_masked_pos, nbins, cell_size, patch_size):
    """MSE averaged over every masked patch of the batch and all its values, each patch's target assembled from
    the per-cell histograms one value at a time: index c*nbins*k*k + bin*k*k + cell_row*k + cell_col."""
    histograms = HOGTarget(nbins=nbins, cell_size=cell_size, patch_size=patch_size).cell_histograms(pixel_values)
    k = patch_size // cell_size
    grid = pixel_values.shape[-1] // patch_size
    total, count = 0.0, 0
    for b in range(pixel_values.shape[0]):
        for row in range(grid):
            for col in range(grid):
                if not bool_masked_pos[b, row * grid + col]:
                    continue
                target = [histograms[b, c, bin_, row * k + cell_row, col * k + cell_col].item()
                          for c in range(3) for bin_ in range(nbins) for cell_row in range(k) for cell_col in range(k)]
                prediction = logits[b, row * grid + col].tolist()
                assert len(target) == len(prediction)
                total += sum((p - t) ** 2 for p, t in zip(prediction, target)) / len(target)
                count += 1
    return total / count


@pytest.mark.parametrize("patch_size,cell_size", [(8, 4), (16, 8), (8, 8)], ids=["k2", "vit-b-ratio", "k1"])
def test_loss_equals_an_explicit_loop_over_masked_patches(patch_size, cell_size):
    config = MimMaskFeatConfig(**{**TINY, "patch_size": patch_size, "hog_cell_size": cell_size,
                                  "num_masking_patches": 2, "min_num_patches": 1})
    torch.manual_seed(0)
    model = MimMaskFeatForPreTraining(config).eval()
    grid = config.grid_size
    mask = torch.zeros(2, grid * grid, dtype=torch.bool)
    mask[0, [1, grid, grid * grid - 1]] = True  # 3 masked here, 1 there: the mean is over patches, not images
    mask[1, 2] = True
    pixel_values = torch.rand(2, 3, 32, 32) * 4 - 2
    with torch.no_grad():
        out = model(pixel_values=pixel_values, bool_masked_pos=mask)
    expected = reference_loss(pixel_values, out.logits, mask, 9, cell_size, patch_size)
    assert abs(out.loss.item() - expected) < 1e-6
    assert out.logits.shape[-1] == 3 * 9 * (patch_size // cell_size) ** 2


def test_only_masked_patches_count():
    config = MimMaskFeatConfig(**TINY)
    torch.manual_seed(0)
    model = MimMaskFeatForPreTraining(config).eval()
    inputs = {"pixel_values": torch.randn(2, 3, 32, 32), "bool_masked_pos": masks(config, 2, seed=1)}
    visible = ~inputs["bool_masked_pos"]
    assert visible.any() and (~visible).any()
    with torch.no_grad():
        base = model(**inputs).loss

        def shift(where):
            handle = model.pred_head.register_forward_hook(lambda m, args, out: out + 3.0 * where.unsqueeze(-1))
            try:
                return model(**inputs).loss
            finally:
                handle.remove()

        assert torch.equal(shift(visible), base)  # predictions at visible patches are free
        assert shift(~visible) > base + 1.0


def test_nothing_masked_gives_a_zero_loss_and_a_missing_mask_a_clear_error():
    model = MimMaskFeatForPreTraining(MimMaskFeatConfig(**TINY))
    out = model(pixel_values=torch.randn(1, 3, 32, 32), bool_masked_pos=torch.zeros(1, 16, dtype=torch.bool))
    assert out.loss.item() == 0.0 and out.loss.requires_grad
    with pytest.raises(ValueError, match="return_bool_masked_pos=True"):
        model(pixel_values=torch.randn(1, 3, 32, 32))


# ----------------------------------------------------------------------------------------------- HOG target


def test_hog_target_is_frozen_fp32_and_adds_no_state_dict_keys():
    config = MimMaskFeatConfig(**TINY)
    model = MimMaskFeatForPreTraining(config).train()
    assert list(model.hog.parameters()) == []
    assert all(key.startswith(("vit.", "pred_head.")) for key in model.state_dict())
    inputs = {"pixel_values": torch.randn(2, 3, 32, 32), "bool_masked_pos": masks(config, 2, seed=0)}
    fp32 = model(**inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = model(**inputs)
    assert half.logits.dtype == torch.bfloat16 and half.hog_targets.dtype == torch.float32
    assert not half.hog_targets.requires_grad and half.loss.dtype == torch.float32
    torch.testing.assert_close(half.hog_targets, fp32.hog_targets, rtol=0, atol=0)
    model.to(torch.bfloat16)  # a bf16 model still scores against fp32 targets of the same values
    torch.testing.assert_close(model(**inputs).hog_targets, fp32.hog_targets, rtol=0, atol=0)


def test_hog_settings_come_from_the_config_and_survive_from_pretrained(tmp_path):
    """The Sobel filters and the Gaussian window are non-persistent buffers; from_pretrained builds on the meta
    device, so the model must rebuild them (they would be zeros otherwise)."""
    config = MimMaskFeatConfig(**TINY, hog_gaussian_window=16, hog_nbins=6)
    model = MimMaskFeatForPreTraining(config)
    assert (model.hog.nbins, model.hog.cell_size, model.hog.patch_size, model.hog.gaussian_window) == (6, 4, 8, 16)
    assert model.pred_head.out_features == 3 * 6 * 4 == config.target_dim
    reference = HOGTarget(nbins=6, cell_size=4, patch_size=8, gaussian_window=16)
    model.save_pretrained(tmp_path)
    loaded = MimMaskFeatForPreTraining.from_pretrained(tmp_path)
    for name in ("kernel_x", "kernel_y", "window"):
        assert torch.equal(getattr(loaded.hog, name), getattr(reference, name)), name
    pixel_values = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded.hog(pixel_values), reference(pixel_values), rtol=0, atol=0)


def test_predicted_targets_render_as_hog_glyphs():
    config = MimMaskFeatConfig(**TINY)
    model = MimMaskFeatForPreTraining(config).eval()
    pixel_values = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(pixel_values=pixel_values, bool_masked_pos=masks(config, 2, seed=0))
    # the cell layout inverts the patch grouping exactly
    torch.testing.assert_close(model.cell_histograms(out.hog_targets, (32, 32)),
                               model.hog.cell_histograms(pixel_values), rtol=0, atol=0)
    predicted = model.cell_histograms(out.logits, (32, 32))
    assert predicted.shape == (2, 3, 9, 8, 8)
    picture = render_hog_glyphs(predicted[0], cell_px=4)
    assert picture.mode == "L" and picture.size == (32, 32)
    # ViT-B/16: 196 patches of 108 values -> 28x28 cells of 9 bins per colour, one 8-px glyph per cell
    hog = HOGTarget()
    image = torch.randn(1, 3, 224, 224)
    cells = patch_targets_to_cell_histograms(hog(image), (14, 14), num_channels=3, nbins=9)
    torch.testing.assert_close(cells, hog.cell_histograms(image), rtol=0, atol=0)
    assert render_hog_glyphs(cells, cell_px=8).size == (224, 224)


# ----------------------------------------------------------------------------------------------- init


def test_official_init_trunc_normal_without_depth_rescale_and_default_patch_conv():
    config = MimMaskFeatConfig(**{**TINY, "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 3})
    torch.manual_seed(0)
    model = MimMaskFeatForPreTraining(config)
    for block in model.vit.blocks:
        for weight in (block.attn.qkv.weight, block.attn.proj.weight, block.mlp.fc1.weight, block.mlp.fc2.weight):
            assert abs(weight.std().item() / 0.02 - 1) < 0.1
        assert block.attn.qkv.bias.abs().sum() == 0 and block.gamma_1 is None
    assert abs(model.pred_head.weight.std().item() / 0.02 - 1) < 0.1 and model.pred_head.bias.abs().sum() == 0
    for token in (model.vit.cls_token, model.vit.mask_token, model.vit.pos_embed):
        assert 0.5 * 0.02 < token.std().item() < 1.5 * 0.02
    assert model.vit.pos_embed.requires_grad and model.vit.rel_pos_bias is None
    conv = model.vit.patch_embed.proj  # PyTorch's Conv2d default, kaiming-uniform a=sqrt(5): bound 1/sqrt(fan_in)
    bound = 1 / math.sqrt(3 * 8 * 8)
    assert conv.weight.abs().max() <= bound and abs(conv.weight.std().item() / (bound / math.sqrt(3)) - 1) < 0.1
    assert conv.bias.abs().max() <= bound and conv.bias.abs().sum() > 0


def test_classifier_head_starts_near_zero_and_has_no_mask_token():
    assert_mean_pooled_classifier_starts_near_zero(MimMaskFeatForImageClassification(MimMaskFeatConfig(**TINY, num_labels=10)))


def test_finetuning_loads_the_encoder_with_a_new_norm(tmp_path):
    torch.manual_seed(0)
    pretrained = MimMaskFeatForPreTraining(MimMaskFeatConfig(**TINY))
    with torch.no_grad():
        pretrained.vit.norm.weight.mul_(3.0)
    pretrained.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)  # as scripts/finetune.py does
    config.update(dict(type(config).finetune_overrides))
    config = type(config)(**config.to_dict(), num_labels=4)
    model = AutoModelForImageClassification.from_pretrained(tmp_path, config=config)
    assert type(model) is MimMaskFeatForImageClassification and model.config.drop_path_rate == 0.1
    for name in ("pos_embed", "cls_token"):
        assert torch.equal(getattr(model.vit, name), getattr(pretrained.vit, name))
    assert torch.equal(model.vit.blocks[1].attn.qkv.weight, pretrained.vit.blocks[1].attn.qkv.weight)
    assert torch.equal(model.fc_norm.weight, torch.ones(32))  # new, not the pretrained head LayerNorm


def test_finetune_overrides_are_maskfeats_recipe():
    assert MimMaskFeatConfig.finetune_overrides == {"drop_path_rate": 0.1, "pooling": "mean"}


def test_interpolated_positions_run_at_another_resolution():
    model = MimMaskFeatForPreTraining(MimMaskFeatConfig(**TINY)).eval()
    mask = torch.zeros(1, 36, dtype=torch.bool)
    mask[0, :5] = True
    out = model(pixel_values=torch.randn(1, 3, 48, 48), bool_masked_pos=mask, interpolate_pos_encoding=True)
    assert out.logits.shape == (1, 36, 108) and out.hog_targets.shape == (1, 36, 108) and torch.isfinite(out.loss)


# ----------------------------------------------------------------------------------------------- config


def test_default_config_is_the_official_vit_b_16_pretraining():
    config = MimMaskFeatConfig()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 12, 12)
    assert config.qkv_bias == "full" and config.layer_scale_init_value == 0 and config.drop_path_rate == 0
    assert config.position_embedding_type == "learned" and config.relative_position_bias == "none"
    assert config.use_mask_token and config.layer_norm_eps == 1e-6
    mask = (config.num_masking_patches, config.min_num_patches, config.max_num_patches, config.min_aspect)
    assert mask == (78, 15, None, 0.3) and config.num_masking_patches == round(0.4 * 196)
    assert (config.hog_nbins, config.hog_cell_size, config.hog_gaussian_window, config.target_dim) == (9, 8, 0, 108)


@pytest.mark.parametrize("overrides,needle", [
    ({"hog_cell_size": 3}, "patch_size=8 must be a positive multiple of hog_cell_size=3"),
    ({"num_masking_patches": 16}, "num_masking_patches"),
    ({"num_masking_patches": 0}, "num_masking_patches"),
    ({"hog_gaussian_window": 12}, "hog_gaussian_window"),
    ({"hog_gaussian_window": -1}, "hog_gaussian_window"),
    ({"hog_nbins": 0}, "hog_nbins"),
])
def test_impossible_configs_fail_naming_the_field(overrides, needle):
    assert_refused(MimMaskFeatConfig, {**TINY, **overrides}, needle)


# ----------------------------------------------------------------------------------------------- processor


def test_processor_defaults_are_seeded_block_masks_of_at_most_78():
    processor = MimMaskFeatImageProcessor()
    assert_default_processor(processor, {"return_bool_masked_pos": True})
    counts = []
    for seed in range(20):
        mask = processor.generate_mask(random.Random(seed))
        expected = block_mask(14, 14, 78, 15, rng=random.Random(seed))
        np.testing.assert_array_equal(mask, expected)
        counts.append(int(mask.sum()))
    assert max(counts) <= 78 and min(counts) > 40 and counts.count(78) >= 10


def test_processor_masks_are_seeded_and_take_their_sizes_from_the_config(tmp_path):
    processor = MimMaskFeatImageProcessor.for_model_config(MimMaskFeatConfig(**TINY))
    assert (processor.patch_size, processor.num_masking_patches, processor.min_num_patches) == (8, 6, 2)
    images = random_images(3, 40, 50)
    first, again = pretraining_batches(processor, images, 7, 7)
    masks_ = first["bool_masked_pos"]
    assert masks_.shape == (3, 16) and masks_.dtype == bool
    np.testing.assert_array_equal(masks_, again["bool_masked_pos"])
    rng = random.Random(7)  # the processor's per-call generator, drawn once per image
    np.testing.assert_array_equal(masks_, np.stack([block_mask(4, 4, 6, 2, rng=rng).reshape(-1) for _ in images]))
    assert_plain_call_is_the_base_processor(processor, images[0], 32)
    processor.save_pretrained(tmp_path)
    loaded = MimMaskFeatImageProcessor.from_pretrained(tmp_path)
    assert (loaded.num_masking_patches, loaded.min_num_patches, loaded.patch_size) == (6, 2, 8)


def test_processor_output_trains_the_model():
    model, loss = train_on_processor_output(MimMaskFeatConfig(**TINY), MimMaskFeatImageProcessor,
                                            MimMaskFeatForPreTraining)
    assert torch.isfinite(loss) and loss > 0 and model.vit.mask_token.grad.abs().sum() > 0
