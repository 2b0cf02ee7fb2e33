"""The hf-mim encoders as transformers backbones: shapes, loading from pretraining folders, parity with BeitBackbone."""

import json

import pytest
import torch
from transformers import AutoBackbone, AutoModel, BeitBackbone, BeitConfig
from transformers.initialization import no_init_weights

from hf_mim.backbones import register_backbones
from hf_mim.convert import HF_BEIT, convert_state_dict, load_converted
from hf_mim.methods import METHODS
from hf_mim.modeling.backbone_vit import MimBeitBackbone, default_out_indices

register_backbones()

TINY_TOKENIZER = dict(vocab_size=64, hidden_size=8, num_groups=4, num_blocks_per_group=1)
TINY_VIT = dict(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                intermediate_size=64)
TINY_METHOD = {
    "beit": dict(num_masking_patches=20, min_num_patches=4, vocab_size=64, tokenizer_config=TINY_TOKENIZER,
                 codebook_image_size=64),
    "mae": dict(decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                decoder_intermediate_size=32),
    "simmim": dict(mask_patch_size=8),
    "maskfeat": dict(hog_cell_size=2, num_masking_patches=20, min_num_patches=4),
    "cae": dict(decoder_hidden_size=32, decoder_num_attention_heads=2, decoder_intermediate_size=64,
                regressor_num_hidden_layers=1, decoder_num_hidden_layers=1, num_masking_patches=20, min_num_patches=4,
                vocab_size=64, tokenizer_config=TINY_TOKENIZER, codebook_image_size=64),
}


def tiny_config(method, **overrides):
    return METHODS[method].config_class(**{**TINY_VIT, **TINY_METHOD[method], **overrides})


def pixels(batch=2, height=32, width=32, seed=0):
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def pretraining_folders(tmp_path_factory):
    """A saved pretraining model of every method (random weights, fixed seed)."""
    folders = {}
    for method in METHODS:
        torch.manual_seed(0)
        folder = tmp_path_factory.mktemp(f"{method}-pretrained")
        METHODS[method].pretraining_class(tiny_config(method)).save_pretrained(folder)
        folders[method] = folder
    return folders


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("out_indices,shapes", [
    ([1, 2, 3, 4], [(32, 32), (16, 16), (8, 8), (4, 4)]),
    ([0, 4], [(8, 8), (8, 8)]),
    ([-1], [(8, 8)]),
])
def test_feature_maps_have_the_documented_shapes(method, out_indices, shapes):
    backbone = AutoBackbone.from_config(tiny_config(method, out_indices=out_indices)).eval()
    with torch.no_grad():
        maps = backbone(pixels()).feature_maps
    assert type(backbone).__name__ == f"{METHODS[method].model_class.__name__[:-5]}Backbone"
    assert [tuple(m.shape) for m in maps] == [(2, 32, *shape) for shape in shapes]
    assert backbone.channels == [32] * len(shapes)
    assert backbone.config.add_fpn == (len(out_indices) == 4)


@pytest.mark.parametrize("method", list(METHODS))
def test_loads_the_encoder_of_a_pretraining_folder(method, pretraining_folders):
    """The chosen stages are the pretrained encoder's hidden states, patch tokens only, as (B, C, h, w) maps."""
    folder = pretraining_folders[method]
    backbone = AutoBackbone.from_pretrained(folder, out_indices=[2, 4]).eval()
    encoder = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        maps = backbone(pixels()).feature_maps
        hidden = encoder(pixels(), output_hidden_states=True).hidden_states
    assert backbone.out_features == ["stage2", "stage4"] and not backbone.config.add_fpn
    for feature_map, index in zip(maps, [2, 4]):
        expected = hidden[index][:, 1:].transpose(1, 2).reshape(2, 32, 8, 8)
        torch.testing.assert_close(feature_map, expected, rtol=0, atol=0)


@pytest.mark.parametrize("method", list(METHODS))
def test_default_is_a_four_level_pyramid(method, pretraining_folders):
    backbone = AutoBackbone.from_pretrained(pretraining_folders[method]).eval()
    with torch.no_grad():
        maps = backbone(pixels(batch=1)).feature_maps
    assert backbone.out_indices == default_out_indices(4) == [1, 2, 3, 4]
    assert [tuple(m.shape[-2:]) for m in maps] == [(32, 32), (16, 16), (8, 8), (4, 4)]


def test_default_out_indices_are_the_official_segmentation_blocks():
    assert default_out_indices(12) == [4, 6, 8, 12]  # official 0-based blocks [3, 5, 7, 11]
    assert default_out_indices(24) == [8, 12, 16, 24]  # ViT-L: [7, 11, 15, 23]
    assert default_out_indices(2) == [1, 2]


def test_relative_bias_and_layer_scale_come_from_the_checkpoint(pretraining_folders):
    backbone = AutoBackbone.from_pretrained(pretraining_folders["beit"])
    reference = METHODS["beit"].pretraining_class.from_pretrained(pretraining_folders["beit"])
    assert backbone.vit.rel_pos_bias is not None and backbone.vit.mask_token is None and backbone.vit.norm is None
    torch.testing.assert_close(backbone.vit.rel_pos_bias.relative_position_bias_table,
                               reference.vit.rel_pos_bias.relative_position_bias_table)
    torch.testing.assert_close(backbone.vit.blocks[3].gamma_2, reference.vit.blocks[3].gamma_2)


@pytest.mark.parametrize("method", ["mae", "maskfeat", "cae"])
def test_other_input_sizes_resample_absolute_positions(method, pretraining_folders):
    backbone = AutoBackbone.from_pretrained(pretraining_folders[method]).eval()
    with torch.no_grad():
        maps = backbone(pixels(batch=1, height=48, width=64)).feature_maps
    assert [tuple(m.shape[-2:]) for m in maps] == [(48, 64), (24, 32), (12, 16), (6, 8)]


def test_saved_backbone_reloads_with_its_stages_and_neck(tmp_path, pretraining_folders):
    backbone = AutoBackbone.from_pretrained(pretraining_folders["mae"], out_indices=[0, 1, 3, 4]).eval()
    torch.nn.init.normal_(backbone.fpn.fpn2.weight)
    backbone.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["out_indices"] == [0, 1, 3, 4] and saved["add_fpn"] is True
    assert saved["auto_map"] == {"AutoBackbone": "backbone_vit.MimMaeBackbone",
                                 "AutoConfig": "configuration_mae.MimMaeConfig"}
    reloaded = AutoBackbone.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        for a, b in zip(backbone(pixels()).feature_maps, reloaded(pixels()).feature_maps):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert AutoBackbone.from_pretrained(tmp_path, out_features=["stage4"]).out_indices == [4]


def test_pyramid_needs_four_stages():
    with pytest.raises(ValueError, match="pass exactly 4 out_indices"):
        AutoBackbone.from_config(tiny_config("mae", out_indices=[2, 4], add_fpn=True))
    with pytest.raises(ValueError, match="out_indices must be valid indices"):
        AutoBackbone.from_config(tiny_config("mae", out_indices=[5]))


def randomize_(module, seed=1):
    """Non-trivial values in every parameter and BatchNorm statistic, so no term hides at 0 or 1."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point():
                values = torch.randn(tensor.shape, generator=generator) * 0.3
                tensor.copy_(values.abs() + 0.5 if name.endswith("running_var") else values)
    return module


@pytest.mark.parametrize("bias", ["shared", "per_layer"])
def test_parity_with_transformers_beit_backbone_with_fpn(bias):
    """Same weights (BEiT's key map for the encoder, the neck copied as it is): same four maps."""
    per_layer = bias == "per_layer"
    hf_config = BeitConfig(
        image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
        use_shared_relative_position_bias=not per_layer, use_relative_position_bias=per_layer,
        use_absolute_position_embeddings=per_layer, layer_scale_init_value=0.1, layer_norm_eps=1e-6,
        use_mean_pooling=True, add_fpn=True, out_indices=[1, 2, 3, 4], drop_path_rate=0.0,
    )
    config = tiny_config("beit", relative_position_bias=bias, out_indices=[1, 2, 3, 4],
                         position_embedding_type="learned" if per_layer else "none")
    with no_init_weights():
        reference, ours = BeitBackbone(hf_config).eval(), MimBeitBackbone(config).eval()
    state = randomize_(reference).state_dict()
    encoder = {k: v for k, v in state.items() if k.startswith("beit.")}
    converted = convert_state_dict(encoder, HF_BEIT, qkv_bias="qv")
    converted.update({k: v for k, v in state.items() if k.startswith("fpn.")})
    load_converted(ours, converted)
    with torch.no_grad():
        expected, actual = reference(pixels()).feature_maps, ours(pixels()).feature_maps
    assert len(actual) == 4
    for e, a in zip(expected, actual):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------- Swin

from hf_mim.modeling.backbone_swin import MimSimMIMSwinBackbone  # noqa: E402
from hf_mim.modeling.configuration_simmim_swin import MimSimMIMSwinConfig  # noqa: E402
from hf_mim.modeling.modeling_simmim_swin import MimSimMIMSwinForPreTraining, MimSimMIMSwinModel  # noqa: E402

TINY_SWIN = dict(image_size=32, patch_size=4, embed_dim=16, depths=[2, 2, 2], num_heads=[2, 2, 4], window_size=2,
                 encoder_stride=16, mask_patch_size=8)


@pytest.mark.parametrize("out_indices,shapes", [
    (None, [(16, 8, 8), (32, 4, 4), (64, 2, 2)]),
    ([0, 3], [(16, 8, 8), (64, 2, 2)]),
    ([-2], [(32, 4, 4)]),
])
def test_swin_stage_maps_have_the_documented_shapes(out_indices, shapes):
    config = MimSimMIMSwinConfig(**TINY_SWIN)
    backbone = AutoBackbone.from_config(config, out_indices=out_indices).eval()
    assert isinstance(backbone, MimSimMIMSwinBackbone) and not backbone.config.add_fpn
    with torch.no_grad():
        maps = backbone(pixels()).feature_maps
    assert [tuple(m.shape) for m in maps] == [(2, *shape) for shape in shapes]
    assert backbone.channels == [shape[0] for shape in shapes]


def test_swin_backbone_loads_the_pretrained_encoder_and_its_stages_are_the_encoders(tmp_path):
    """Stage outputs after patch merging are the encoder's own hidden states, so the backbone's stage walk cannot
    drift from `SwinEncoder.forward`; the last stage, normed by the final norm's weights, is the encoder's output."""
    torch.manual_seed(0)
    MimSimMIMSwinForPreTraining(MimSimMIMSwinConfig(**TINY_SWIN)).save_pretrained(tmp_path)
    backbone = AutoBackbone.from_pretrained(tmp_path, out_indices=[1, 2, 3]).eval()
    encoder = MimSimMIMSwinModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        ours = backbone.stage_outputs(pixels())
        last, theirs = encoder.swin(pixels(), output_hidden_states=True)
        for stage, index in zip(encoder.swin.layers[:-1], range(1, 3)):
            torch.testing.assert_close(stage.downsample(ours[index], stage.grid_size), theirs[index], rtol=0, atol=0)
        torch.testing.assert_close(ours[-1], theirs[-1], rtol=0, atol=0)
        backbone.hidden_states_norms["stage3"].load_state_dict(encoder.swin.norm.state_dict())
        expected = last.transpose(1, 2).reshape(2, 64, 2, 2)
        torch.testing.assert_close(backbone(pixels()).feature_maps[-1], expected, rtol=0, atol=0)
    ids = backbone.layer_ids()
    assert ids[id(backbone.swin.patch_embed.proj.weight)] == 0 and max(ids.values()) == 7


def test_upernet_on_the_swin_backbone_round_trips(tmp_path):
    from transformers import AutoModelForSemanticSegmentation

    from hf_mim.backbones import save_segmentation_model, upernet_from_pretrained_encoder

    torch.manual_seed(0)
    MimSimMIMSwinForPreTraining(MimSimMIMSwinConfig(**TINY_SWIN)).save_pretrained(tmp_path / "pre")
    model = upernet_from_pretrained_encoder(tmp_path / "pre", {0: "a", 1: "b"}, hidden_size=16,
                                            auxiliary_channels=8).eval()
    with torch.no_grad():
        logits = model(pixels()).logits
    assert tuple(logits.shape) == (2, 2, 32, 32)
    save_segmentation_model(model, tmp_path / "seg")
    assert (tmp_path / "seg" / "backbone_swin.py").exists()
    reloaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path / "seg").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixels()).logits, logits, rtol=0, atol=0)


@pytest.mark.parametrize("method", list(METHODS))
def test_other_input_sizes_interpolate_positions_and_bias_tables(method, pretraining_folders):
    """A 32 px encoder segments 64x48 px inputs (the embedded segmentation set is 64 px): absolute positions and
    relative position bias tables are resampled to the 16x12 grid; the pyramid follows the grid."""
    backbone = AutoBackbone.from_pretrained(pretraining_folders[method]).eval()
    with torch.no_grad():
        maps = backbone(pixels(height=64, width=48)).feature_maps
    assert [tuple(m.shape) for m in maps] == [(2, 32, 64, 48), (2, 32, 32, 24), (2, 32, 16, 12), (2, 32, 8, 6)]
    assert all(torch.isfinite(m).all() for m in maps)
