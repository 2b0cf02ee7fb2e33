"""MAE: parity with transformers' ViTMAEForPreTraining, and the behaviour the MAE paper and code pin down."""

import math

import pytest
import torch
from transformers import ViTMAEConfig, ViTMAEForPreTraining

from hf_mim.convert import HF_VIT_MAE, convert_state_dict, load_converted
from hf_mim.modeling.configuration_mae import MimMaeConfig
from hf_mim.modeling.modeling_mae import MimMaeForPreTraining
from hf_mim.modeling.vit import patchify
from helpers import assert_outputs_match, assert_refused, assert_round_trip_to_transformers
from model_tester import MimModelTests

TINY = dict(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, decoder_hidden_size=16, decoder_num_hidden_layers=2,
            decoder_num_attention_heads=2, decoder_intermediate_size=32)


class TestMaeModels(MimModelTests):
    method = "mae"
    tiny = TINY

    def mask_inputs(self, config, batch_size, seed, generator):
        return {"noise": torch.rand(batch_size, config.num_patches, generator=generator)}

    def check_pretraining_output(self, config, out):
        assert out.logits.shape == (2, config.num_patches, config.patch_size**2 * 3)
        removed = config.num_patches - int(config.num_patches * (1 - config.mask_ratio))
        assert out.mask.sum(dim=1).tolist() == [removed, removed]


def hf_pair(**sizes):
    """A randomly initialised transformers ViTMAE and ours holding the same weights."""
    torch.manual_seed(0)
    hf_config = ViTMAEConfig(layer_norm_eps=1e-6, qkv_bias=True, norm_pix_loss=True, mask_ratio=0.75, **sizes)
    reference = ViTMAEForPreTraining(hf_config).eval()
    ours = MimMaeForPreTraining(MimMaeConfig(**sizes)).eval()
    load_converted(ours, convert_state_dict(reference.state_dict(), HF_VIT_MAE, qkv_bias="full"))
    return reference, ours


@pytest.mark.parametrize(
    "sizes,batch",
    [(TINY, 3), (dict(image_size=224, patch_size=16), 1)],
    ids=["tiny", "vit-b-16"],
)
def test_parity_with_transformers_vit_mae(sizes, batch):
    reference, ours = hf_pair(**sizes)
    size = sizes["image_size"]
    num_patches = (size // sizes["patch_size"]) ** 2
    generator = torch.Generator().manual_seed(1)
    pixel_values = torch.randn(batch, 3, size, size, generator=generator)
    noise = torch.rand(batch, num_patches, generator=generator)
    assert_outputs_match(reference, ours, {"mask": 0, "ids_restore": 0, "logits": 1e-5, "loss": 1e-5},
                         pixel_values=pixel_values, noise=noise)


def test_conversion_back_to_transformers_layout_round_trips():
    reference, ours = hf_pair(**TINY)
    assert assert_round_trip_to_transformers(reference, ours.state_dict(), HF_VIT_MAE, "full") == {}


def test_loss_is_mean_over_removed_patches_of_norm_pix_targets():
    config = MimMaeConfig(**TINY)
    torch.manual_seed(0)
    model = MimMaeForPreTraining(config).eval()
    pixel_values = torch.randn(2, 3, 32, 32)
    out = model(pixel_values=pixel_values, noise=torch.rand(2, config.num_patches))
    patches = patchify(pixel_values, 4)
    total, count = 0.0, 0
    for b in range(2):
        for i in range(config.num_patches):
            if out.mask[b, i] == 1:
                target = patches[b, i]
                target = (target - target.mean()) / math.sqrt(target.var(unbiased=True).item() + 1e-6)
                total += ((out.logits[b, i] - target) ** 2).mean().item()
                count += 1
    assert abs(out.loss.item() - total / count) < 1e-5


def test_patchify_order_is_row_col_channel_with_channel_fastest():
    image = torch.arange(2 * 4 * 4, dtype=torch.float).reshape(1, 2, 4, 4)  # C=2, 4x4 image, patch 2
    patches = patchify(image, 2)
    # patch 0 covers rows 0-1, cols 0-1; entry (p=0, q=1, c=1) sits at (0*2 + 1)*2 + 1 = 3
    assert patches.shape == (1, 4, 8)
    assert patches[0, 0, 3].item() == image[0, 1, 0, 1].item()
    assert patches[0, 1, 0].item() == image[0, 0, 0, 2].item()


def test_reconstruct_inverts_norm_pix_targets():
    config = MimMaeConfig(**TINY)
    model = MimMaeForPreTraining(config)
    pixel_values = torch.randn(2, 3, 32, 32)
    perfect = model.targets(pixel_values)
    torch.testing.assert_close(model.reconstruct(pixel_values, perfect), pixel_values, rtol=0, atol=1e-4)


def test_default_config_is_the_canonical_vit_b_16():
    config = MimMaeConfig()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 12, 12)
    assert (config.decoder_hidden_size, config.decoder_num_hidden_layers, config.decoder_num_attention_heads) == (512, 8, 16)
    assert config.mask_ratio == 0.75 and config.norm_pix_loss and config.layer_norm_eps == 1e-6
    assert config.position_embedding_type == "sincos_mae" and config.qkv_bias == "full"


def test_official_init_fixed_sincos_and_xavier():
    config = MimMaeConfig(**TINY)
    torch.manual_seed(0)
    model = MimMaeForPreTraining(config)
    assert not model.vit.pos_embed.requires_grad and not model.decoder.pos_embed.requires_grad
    torch.testing.assert_close(model.vit.pos_embed, model.vit.position_table())
    assert model.vit.pos_embed[0, 0].abs().sum() == 0
    weight = model.vit.blocks[0].mlp.fc1.weight  # (64, 32): xavier bound sqrt(6 / 96)
    assert weight.abs().max() <= math.sqrt(6 / 96) and weight.std() > 0.8 * math.sqrt(2 / 96)
    conv = model.vit.patch_embed.proj.weight  # xavier on [32, 48]: bound 0.27, torch's default would be 0.14
    assert 0.8 * math.sqrt(6 / (48 + 32)) < conv.abs().max() <= math.sqrt(6 / (48 + 32))


def test_fixed_tables_stay_frozen_after_from_pretrained(tmp_path):
    MimMaeForPreTraining(MimMaeConfig(**TINY)).save_pretrained(tmp_path)
    loaded = MimMaeForPreTraining.from_pretrained(tmp_path)
    assert not loaded.vit.pos_embed.requires_grad and not loaded.decoder.pos_embed.requires_grad
    tuned = MimMaeForPreTraining.from_pretrained(tmp_path, train_position_embeddings=True)
    assert tuned.vit.pos_embed.requires_grad


@pytest.mark.parametrize("field,value,needle", [
    ("mask_ratio", 1.0, "mask_ratio"),
    ("image_size", 30, "patch_size"),
    ("decoder_num_attention_heads", 3, "decoder_num_attention_heads"),
])
def test_impossible_configs_fail_naming_the_field(field, value, needle):
    assert_refused(MimMaeConfig, {**TINY, field: value}, needle)


def test_noise_of_wrong_shape_is_refused():
    model = MimMaeForPreTraining(MimMaeConfig(**TINY))
    with pytest.raises(ValueError, match="noise must have shape"):
        model(pixel_values=torch.randn(2, 3, 32, 32), noise=torch.rand(2, 5))


def test_interpolated_positions_run_at_another_resolution():
    model = MimMaeForPreTraining(MimMaeConfig(**TINY)).eval()
    out = model(pixel_values=torch.randn(1, 3, 48, 48), interpolate_pos_encoding=True)
    assert out.logits.shape == (1, 144, 48) and torch.isfinite(out.loss)
