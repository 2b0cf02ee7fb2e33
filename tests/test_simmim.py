"""SimMIM: parity with transformers' ViTForMaskedImageModeling (plain-ViT configuration), and the behaviour the
SimMIM paper and code pin down (official ViT-B defaults, init, loss on masked pixels, fine-tuning positions, masks)."""

import math
import random

import numpy as np
import pytest
import torch
from transformers import ViTConfig
from transformers import ViTForMaskedImageModeling
from transformers.initialization import no_init_weights

import hf_mim  # noqa: F401  (registers the Auto classes)
from hf_mim.convert import HF_VIT_MIM, convert_state_dict, load_converted
from hf_mim.modeling.configuration_simmim import PLAIN_VIT, MimSimMIMConfig
from hf_mim.modeling.image_processing_simmim import MimSimMIMImageProcessor
from hf_mim.modeling.masking import simmim_mask
from hf_mim.modeling.modeling_simmim import (
    MimSimMIMForImageClassification,
    MimSimMIMForPreTraining,
    MimSimMIMModel,
)
from hf_mim.modeling.vit import relative_position_index
from helpers import (
    assert_outputs_match,
    assert_beit_style_vit_b,
    assert_default_processor,
    assert_key_map_reads_saved_layout,
    assert_mean_pooled_classifier_starts_near_zero,
    assert_plain_call_is_the_base_processor,
    assert_refused,
    assert_round_trip_to_transformers,
    assert_tables_copied_then_kept,
    parity_batch,
    per_layer_classifier,
    pretraining_batches,
    random_images,
    randomize_parameters_,
    save_with_random_shared_table,
    train_on_processor_output,
)
from model_tester import MimModelTests

# transformers' ViTForMaskedImageModeling (in-memory names first, then the legacy names `save_pretrained` writes)
# -> ours. Its decoder is `decoder.0` (the 1x1 conv) + `decoder.1` (PixelShuffle, no weights), as ours.
# Proposed for hf_mim/convert.py; hf_mim.benchmarking also finds it here.

TINY = dict(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, mask_patch_size=8)
VIT_B = dict(image_size=224, patch_size=16)


def masks(config, batch_size, seed):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([
        simmim_mask(config.image_size, config.mask_patch_size, config.patch_size, config.mask_ratio, rng).reshape(-1)
        for _ in range(batch_size)
    ]))


class TestSimMIMModels(MimModelTests):
    method = "simmim"
    tiny = TINY
    masks = staticmethod(masks)

    def check_pretraining_output(self, config, out):
        assert out.reconstruction.shape == (2, 3, config.image_size, config.image_size)
        assert out.bool_masked_pos.shape == (2, config.num_patches) and out.bool_masked_pos.dtype == torch.bool
        # ceil(0.6 * 16 cells) = 10 cells of 2x2 patches
        assert out.bool_masked_pos.sum(dim=1).tolist() == [40, 40]


# ----------------------------------------------------------------------------------------------- parity


def hf_pair(**sizes):
    """transformers' ViTForMaskedImageModeling with random weights and our plain-ViT SimMIM holding the same."""
    config = MimSimMIMConfig(**{**sizes, **PLAIN_VIT})
    hf_config = ViTConfig(
        image_size=config.image_size, patch_size=config.patch_size, hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size, qkv_bias=True, layer_norm_eps=1e-6,
        encoder_stride=config.encoder_stride,
    )
    with no_init_weights():  # every weight is overwritten below; skipping the init keeps ViT-B fast on a CPU
        reference = ViTForMaskedImageModeling(hf_config).eval()
        ours = MimSimMIMForPreTraining(config).eval()
    randomize_parameters_(reference)
    load_converted(ours, convert_state_dict(reference.state_dict(), HF_VIT_MIM, qkv_bias="full"))
    return reference, ours


@pytest.mark.parametrize("sizes,batch", [(TINY, 3), (VIT_B, 1)], ids=["tiny", "vit-b-16"])
def test_parity_with_transformers_vit_for_masked_image_modeling(sizes, batch):
    reference, ours = hf_pair(**sizes)
    pixel_values, mask, _ = parity_batch(ours.config, batch, masks)
    assert_outputs_match(reference, ours, {"reconstruction": 1e-5, "loss": 1e-5}, pixel_values=pixel_values,
                         bool_masked_pos=mask)


def test_conversion_back_to_transformers_layout_round_trips():
    reference, ours = hf_pair(**TINY)
    assert assert_round_trip_to_transformers(reference, ours.state_dict(), HF_VIT_MIM, "full") == {}


def test_hf_vit_mim_key_map_reads_the_layout_save_pretrained_writes(tmp_path):
    reference, ours = hf_pair(**TINY)
    converted = assert_key_map_reads_saved_layout(reference, ours, HF_VIT_MIM, "full", tmp_path,
                                                  "vit.encoder.layer.0.attention.attention.query.weight")
    assert set(converted) == set(ours.state_dict())


# ----------------------------------------------------------------------------------------------- head and loss


def test_loss_is_l1_over_masked_pixels_divided_by_channels():
    config = MimSimMIMConfig(**TINY)
    torch.manual_seed(0)
    model = MimSimMIMForPreTraining(config).eval()
    pixel_values = torch.randn(2, 3, 32, 32)
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[0, 0, 2:6] = True  # asymmetric, so a transposed grid would score other pixels
    mask[1, 3:5, 7] = True
    with torch.no_grad():
        out = model(pixel_values=pixel_values, bool_masked_pos=mask)
    total, count = 0.0, 0
    for b in range(2):
        for row in range(8):
            for col in range(8):
                if mask[b, row, col]:
                    window = (b, slice(None), slice(4 * row, 4 * row + 4), slice(4 * col, 4 * col + 4))
                    total += (out.reconstruction[window] - pixel_values[window]).abs().sum().item()
                    count += 16
    assert abs(out.loss.item() - total / (count + 1e-5) / 3) < 1e-6
    assert out.bool_masked_pos.shape == (2, 64)  # a (B, h, w) mask comes back flattened row-major


def test_pixel_shuffle_puts_conv_channel_c_r2_plus_i_r_plus_j_at_pixel_c_i_j_of_each_patch():
    config = MimSimMIMConfig(**TINY)
    model = MimSimMIMForPreTraining(config).eval()
    with torch.no_grad():
        model.decoder[0].weight.zero_()
        model.decoder[0].bias.copy_(torch.arange(3 * 16, dtype=torch.float))
        out = model(pixel_values=torch.randn(1, 3, 32, 32), bool_masked_pos=torch.zeros(1, 64, dtype=torch.bool))
    c, i, j = 2, 1, 3
    patch_row, patch_col = 5, 6
    assert out.reconstruction[0, c, 4 * patch_row + i, 4 * patch_col + j].item() == c * 16 + i * 4 + j


def test_visible_pixels_do_not_count():
    """Pixels of visible patches may be anything: the loss only reads masked ones."""
    config = MimSimMIMConfig(**TINY)
    torch.manual_seed(0)
    model = MimSimMIMForPreTraining(config).eval()
    mask = masks(config, 1, seed=0)
    pixel_values = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        out = model(pixel_values=pixel_values, bool_masked_pos=mask)
        pixel_mask = mask.reshape(1, 8, 8).repeat_interleave(4, 1).repeat_interleave(4, 2).unsqueeze(1)
        from hf_mim.modeling.losses import masked_l1_loss

        shifted = out.reconstruction + 5.0 * (~pixel_mask)
        assert masked_l1_loss(shifted, pixel_values, pixel_mask.float()) == out.loss
        assert masked_l1_loss(out.reconstruction + 5.0 * pixel_mask, pixel_values, pixel_mask.float()) != out.loss


def test_missing_mask_is_a_clear_error():
    model = MimSimMIMForPreTraining(MimSimMIMConfig(**TINY))
    with pytest.raises(ValueError, match="return_bool_masked_pos=True"):
        model(pixel_values=torch.randn(1, 3, 32, 32))


def test_reconstruct_pixels_gives_the_picture_its_prediction_and_mask():
    config = MimSimMIMConfig(**TINY)
    model = MimSimMIMForPreTraining(config).eval()
    batch = {"pixel_values": torch.randn(2, 3, 32, 32), "bool_masked_pos": masks(config, 2, 0)}
    out = model(**batch)
    predicted, mask = model.reconstruct_pixels(batch, out)
    assert predicted is out.reconstruction and torch.equal(mask, batch["bool_masked_pos"])


# ----------------------------------------------------------------------------------------------- init


def test_official_init_trunc_normal_depth_rescale_and_default_conv_head():
    config = MimSimMIMConfig(**{**TINY, "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 3,
                                "num_labels": 0})
    torch.manual_seed(0)
    model = MimSimMIMForPreTraining(config)
    for block in model.vit.blocks:
        scale = 1 / math.sqrt(2 * (block.layer_id + 1))
        for weight in (block.attn.proj.weight, block.mlp.fc2.weight):
            assert abs(weight.std().item() / (0.02 * scale) - 1) < 0.1
        fc1 = block.mlp.fc1.weight  # not rescaled, and not truncated at +-1 std (timm's +-2 absolute bounds)
        assert abs(fc1.std().item() / 0.02 - 1) < 0.05 and fc1.abs().max() > 3 * 0.02
        assert torch.equal(block.gamma_1, torch.full_like(block.gamma_1, 0.1))
        assert block.attn.q_bias.abs().sum() == 0 and block.attn.v_bias.abs().sum() == 0
        assert block.attn.proj.bias.abs().sum() == 0
    assert abs(model.vit.patch_embed.proj.weight.std().item() / 0.02 - 1) < 0.1
    assert model.vit.mask_token.abs().max() <= 0.02  # the mask token alone is cut at +-1 std
    assert model.vit.rel_pos_bias.relative_position_bias_table.abs().sum() == 0
    # the 1x1 conv keeps PyTorch's Conv2d default (kaiming-uniform a=sqrt(5)): bound 1/sqrt(fan_in)
    conv = model.decoder[0]
    bound = 1 / math.sqrt(64)
    assert conv.weight.abs().max() <= bound and abs(conv.weight.std().item() / (bound / math.sqrt(3)) - 1) < 0.1
    assert conv.bias.abs().max() <= bound and conv.bias.abs().sum() > 0


def test_classifier_head_starts_near_zero_and_has_no_mask_token():
    assert_mean_pooled_classifier_starts_near_zero(MimSimMIMForImageClassification(MimSimMIMConfig(**TINY, num_labels=10)))


def test_depth_rescale_and_index_survive_from_pretrained(tmp_path):
    model = MimSimMIMForPreTraining(MimSimMIMConfig(**TINY))
    model.save_pretrained(tmp_path)
    for cls in (MimSimMIMForPreTraining, MimSimMIMModel, MimSimMIMForImageClassification):
        loaded = cls.from_pretrained(tmp_path)
        for mine, theirs in zip(model.vit.blocks, loaded.vit.blocks):
            assert torch.equal(mine.attn.proj.weight, theirs.attn.proj.weight)
        # the classifier gets the fine-tuning recipe's per-layer tables from a pretraining folder
        holders = [loaded.vit.rel_pos_bias] if cls is not MimSimMIMForImageClassification else [
            block.attn for block in loaded.vit.blocks]
        for holder in holders:
            assert torch.equal(holder.relative_position_index, relative_position_index(8, 8))


# ----------------------------------------------------------------------------------------------- fine-tuning


def pretrained_folder(tmp_path, seed=0):
    torch.manual_seed(seed)
    return save_with_random_shared_table(MimSimMIMForPreTraining(MimSimMIMConfig(**TINY)), tmp_path)


@pytest.mark.parametrize("route", ["kwarg", "finetune_overrides_config"])
def test_finetuning_copies_the_shared_table_into_every_block(tmp_path, route):
    pretrained = pretrained_folder(tmp_path)
    shared = pretrained.vit.rel_pos_bias.relative_position_bias_table.detach().clone()
    model = per_layer_classifier(tmp_path, MimSimMIMForImageClassification, route)
    assert type(model) is MimSimMIMForImageClassification
    assert torch.equal(model.vit.blocks[1].mlp.fc2.weight, pretrained.vit.blocks[1].mlp.fc2.weight)
    for block in model.vit.blocks:
        assert torch.equal(block.attn.relative_position_index, relative_position_index(8, 8))
    assert_tables_copied_then_kept(model, shared, tmp_path / "finetuned")


def test_finetune_overrides_are_simmims_recipe():
    assert MimSimMIMConfig.finetune_overrides == {"relative_position_bias": "per_layer", "drop_path_rate": 0.1,
                                                  "pooling": "mean"}
    config = MimSimMIMConfig(**{**MimSimMIMConfig().to_dict(), **MimSimMIMConfig.finetune_overrides})
    assert config.position_embedding_type == "none" and config.layer_scale_init_value == 0.1


# ----------------------------------------------------------------------------------------------- config


def test_default_config_is_the_official_vit_b_16_pretraining():
    config = MimSimMIMConfig()
    assert_beit_style_vit_b(config)
    assert (config.mask_patch_size, config.mask_ratio, config.encoder_stride) == (32, 0.6, 16)


def test_plain_vit_configuration_is_transformers_vit():
    config = MimSimMIMConfig(**PLAIN_VIT)
    assert config.qkv_bias == "full" and config.layer_scale_init_value == 0
    assert config.relative_position_bias == "none" and config.position_embedding_type == "learned"


@pytest.mark.parametrize("overrides,needle", [
    ({"mask_patch_size": 12}, "image_size=32 must be a positive multiple of mask_patch_size"),
    ({"image_size": 48, "mask_patch_size": 6, "patch_size": 4},
     "mask_patch_size=6 must be a positive multiple of patch_size"),
    ({"mask_ratio": 0.0}, "mask_ratio"),
    ({"mask_ratio": 1.0}, "mask_ratio"),
    ({"encoder_stride": 8}, "encoder_stride"),
    ({"position_embedding_type": "sincos_mae"}, "position_embedding_type"),
])
def test_impossible_configs_fail_naming_the_field(overrides, needle):
    assert_refused(MimSimMIMConfig, {**TINY, **overrides}, needle)


# ----------------------------------------------------------------------------------------------- processor


def test_processor_defaults_mask_exactly_120_of_196_in_aligned_2x2_blocks():
    processor = MimSimMIMImageProcessor()
    assert_default_processor(processor, {"return_bool_masked_pos": True})
    for seed in range(5):
        mask = processor.generate_mask(random.Random(seed))
        assert mask.shape == (14, 14) and mask.dtype == bool and mask.sum() == 120
        cells = mask.reshape(7, 2, 7, 2)
        assert (cells == cells[:, :1, :, :1]).all()


def test_processor_masks_are_seeded_and_take_their_sizes_from_the_config(tmp_path):
    processor = MimSimMIMImageProcessor.for_model_config(MimSimMIMConfig(**TINY))
    assert (processor.patch_size, processor.mask_patch_size, processor.mask_ratio) == (4, 8, 0.6)
    images = random_images(3, 40, 50)
    first, again, other = pretraining_batches(processor, images, 7, 7, 8)
    masks_ = first["bool_masked_pos"]
    assert masks_.shape == (3, 64) and masks_.dtype == bool and masks_.sum(axis=1).tolist() == [40, 40, 40]
    np.testing.assert_array_equal(masks_, again["bool_masked_pos"])
    assert not np.array_equal(masks_, other["bool_masked_pos"])
    rng = random.Random(7)  # the processor's per-call generator, drawn once per image
    expected = [simmim_mask(32, 8, 4, 0.6, rng=rng).reshape(-1) for _ in images]
    np.testing.assert_array_equal(masks_, np.stack(expected))
    assert_plain_call_is_the_base_processor(processor, images[0], 32)
    processor.save_pretrained(tmp_path)
    loaded = MimSimMIMImageProcessor.from_pretrained(tmp_path)
    assert (loaded.mask_patch_size, loaded.patch_size, loaded.size["height"]) == (8, 4, 32)


def test_processor_output_trains_the_model():
    model, loss = train_on_processor_output(MimSimMIMConfig(**TINY), MimSimMIMImageProcessor, MimSimMIMForPreTraining)
    assert torch.isfinite(loss) and model.vit.mask_token.grad.abs().sum() > 0
