"""BEiT, SimMIM and CAE models run at another input size with `interpolate_pos_encoding=True`: their relative
position bias tables (shared, or one per block) are resampled at run time as `resize_relative_position_table` does
offline, and at the config's own size nothing changes."""

from __future__ import annotations

import pytest
import torch

import hf_mim  # noqa: F401
from hf_mim.modeling.configuration_beit import MimBeitConfig
from hf_mim.modeling.configuration_cae import MimCaeConfig
from hf_mim.modeling.configuration_simmim import MimSimMIMConfig
from hf_mim.modeling.modeling_beit import MimBeitForImageClassification, MimBeitModel
from hf_mim.modeling.modeling_cae import MimCaeForImageClassification
from hf_mim.modeling.modeling_simmim import MimSimMIMForImageClassification, MimSimMIMModel
from hf_mim.modeling.vit import (RelativePositionBias, gather_relative_bias, relative_position_index,
                                 resize_relative_position_table)

TINY = dict(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=32, drop_path_rate=0.0)
TOKENIZER = dict(vocab_size=16, hidden_size=8, num_groups=2, num_blocks_per_group=1, decoder_init_size=8,
                 image_size=8)
BLOCK_MASK = dict(num_masking_patches=6, min_num_patches=2)


def beit(bias):
    return MimBeitConfig(**TINY, **BLOCK_MASK, vocab_size=16, tokenizer_config=TOKENIZER, relative_position_bias=bias)


def simmim(bias):
    return MimSimMIMConfig(**TINY, mask_patch_size=8, relative_position_bias=bias)


def cae():
    return MimCaeConfig(**TINY, **BLOCK_MASK, vocab_size=16, tokenizer_config=TOKENIZER,
                        relative_position_bias="per_layer")


CASES = [
    ("beit-shared", MimBeitModel, lambda: beit("shared")),
    ("beit-per-layer", MimBeitForImageClassification, lambda: beit("per_layer")),
    ("simmim-shared", MimSimMIMModel, lambda: simmim("shared")),
    ("simmim-per-layer", MimSimMIMForImageClassification, lambda: simmim("per_layer")),
    ("cae-per-layer", MimCaeForImageClassification, cae),
]


def random_tables(model):
    """Non-zero tables (they start at zero), so a wrong resampling or index shows in the outputs."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return model.eval()


@pytest.mark.parametrize("name,model_class,config", CASES, ids=[c[0] for c in CASES])
def test_runs_at_other_sizes_and_is_unchanged_at_the_config_size(name, model_class, config):
    torch.manual_seed(0)
    model = random_tables(model_class(config()))
    image = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        plain = model(pixel_values=image)
        same = model(pixel_values=image, interpolate_pos_encoding=True)
        for key in plain.keys():
            assert torch.equal(plain[key], same[key])  # bitwise: the stored table and index are used as they are
        for height, width in [(24, 24), (32, 20)]:
            out = model(pixel_values=torch.randn(2, 3, height, width), interpolate_pos_encoding=True)
            if "last_hidden_state" in out:
                assert out.last_hidden_state.shape == (2, 1 + (height // 4) * (width // 4), 32)
            else:
                assert out.logits.shape == (2, 2)
            assert torch.isfinite(next(iter(out.values()))).all()
    with pytest.raises(ValueError, match=r"input image size \(24x24\) doesn't match the model \(16x16\)"):
        model(pixel_values=torch.randn(1, 3, 24, 24))


def test_resampled_bias_is_the_offline_resize_gathered_on_the_new_grid():
    module = RelativePositionBias(grid_size=4, num_heads=3)
    with torch.no_grad():
        module.relative_position_bias_table.copy_(torch.randn(module.relative_position_bias_table.shape))
    table = module.relative_position_bias_table
    bias = module((6, 5))
    assert bias.shape == (3, 31, 31)
    expected = gather_relative_bias(resize_relative_position_table(table, (6, 5)), relative_position_index(6, 5))
    torch.testing.assert_close(bias, expected, rtol=0, atol=0)
    # offsets 0 (centre of the 7x7 offset grid) and the extreme offsets land on source points: kept exactly
    old = table[:49].reshape(7, 7, 3)
    torch.testing.assert_close(bias[:, 1, 1], old[3, 3], rtol=0, atol=1e-6)  # patch (0,0) -> itself
    torch.testing.assert_close(bias[:, 1, 30], old[0, 0], rtol=0, atol=1e-6)  # offset (-5, -4): the extreme corner
    torch.testing.assert_close(bias[:, 0, 0], table[-1], rtol=0, atol=0)  # cls <-> cls row kept
    torch.testing.assert_close(bias[:, 0, 5], table[-3], rtol=0, atol=0)  # cls -> patch row kept


def test_per_layer_tables_are_each_resampled():
    torch.manual_seed(0)
    model = random_tables(MimBeitForImageClassification(beit("per_layer")))
    for block in model.vit.blocks:
        attention = block.attn
        expected = gather_relative_bias(
            resize_relative_position_table(attention.relative_position_bias_table, (8, 8)), relative_position_index(8, 8)
        )
        torch.testing.assert_close(attention.own_relative_bias((8, 8)), expected, rtol=0, atol=0)
    tables = [block.attn.relative_position_bias_table for block in model.vit.blocks]
    assert not torch.equal(tables[0], tables[1])  # distinct tables, so a shared-table mix-up would show
