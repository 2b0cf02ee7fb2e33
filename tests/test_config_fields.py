"""Every field of every hf-mim config is range-checked, whichever way it is set: at construction, by setattr after
construction, by `update_from_string` (the scripts' and run_mim.py's --config_overrides) and, for the rules that tie
fields together, when a model is built from the config.

BAD_VALUES is this test's own table, written independently of the rules in configuration_vit.FIELD_RULES: a new
config field fails `test_every_config_field_has_a_rule_and_bad_values` until it has a row in both.
"""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
from transformers import AutoModelForMaskedImageModeling, PretrainedConfig

import hf_mim  # noqa: F401  (registers the Auto classes)
from hf_mim.modeling.configuration_beit import MimBeitConfig
from hf_mim.modeling.configuration_cae import MimCaeConfig
from hf_mim.modeling.configuration_dvae import MimDvaeConfig
from hf_mim.modeling.configuration_mae import MimMaeConfig
from hf_mim.modeling.configuration_maskfeat import MimMaskFeatConfig
from hf_mim.modeling.configuration_simmim import MimSimMIMConfig
from hf_mim.modeling.configuration_vit import FIELD_RULES, constructor_defaults_none
from hf_mim.modeling.modeling_beit import MimBeitForPreTraining
from hf_mim.modeling.modeling_cae import MimCaeForPreTraining
from hf_mim.modeling.modeling_dvae import MimDvaeModel
from hf_mim.modeling.modeling_mae import MimMaeForPreTraining, MimMaeModel
from hf_mim.modeling.modeling_maskfeat import MimMaskFeatForPreTraining
from hf_mim.modeling.modeling_simmim import MimSimMIMForPreTraining

CONFIGS = [MimMaeConfig, MimBeitConfig, MimSimMIMConfig, MimMaskFeatConfig, MimCaeConfig, MimDvaeConfig]
NAN = math.nan
POSITIVE_INT = [0, -1, 2.5, "4", True, None]
NON_NEGATIVE_INT = [-1, 1.5, "2", False, None]
BELOW_ONE = [-0.1, 1.0, 1.5, NAN, "0.1", None]  # probabilities in [0, 1)
POSITIVE_FLOAT = [0.0, -1e-6, NAN, "1e-6", None]
NON_NEGATIVE_FLOAT = [-0.1, NAN, "0", None]
SWITCH = ["yes", 1, None]
WORD = ["nope", 1, None]

# field -> values that must be refused (every kind of value: out of range, wrong type, None where None means nothing)
BAD_VALUES = {
    "image_size": POSITIVE_INT, "patch_size": POSITIVE_INT, "num_channels": POSITIVE_INT,
    "hidden_size": POSITIVE_INT, "num_hidden_layers": POSITIVE_INT, "num_attention_heads": POSITIVE_INT,
    "intermediate_size": POSITIVE_INT, "hidden_act": ["gelu2", 3, None], "layer_norm_eps": POSITIVE_FLOAT,
    "hidden_dropout_prob": BELOW_ONE, "attention_probs_dropout_prob": BELOW_ONE, "drop_path_rate": BELOW_ONE,
    "qkv_bias": ["kv", True, None], "layer_scale_init_value": NON_NEGATIVE_FLOAT,
    "position_embedding_type": ["rope", None], "train_position_embeddings": SWITCH,
    "relative_position_bias": ["all", None], "use_mask_token": SWITCH, "pooling": ["max", None],
    "initializer_range": POSITIVE_FLOAT, "label_smoothing": BELOW_ONE,
    "mask_ratio": [0.0, 1.0, -0.5, NAN, "0.6", None], "mask_patch_size": POSITIVE_INT,
    "num_masking_patches": POSITIVE_INT, "min_num_patches": POSITIVE_INT, "max_num_patches": [0, -3, 2.5, "9"],
    "min_aspect": POSITIVE_FLOAT, "max_aspect": [0.0, -1.0, NAN, "3"], "mask_mode": WORD,
    "norm_pix_loss": SWITCH, "encoder_stride": POSITIVE_INT, "decoder_hidden_size": POSITIVE_INT,
    "decoder_num_hidden_layers": NON_NEGATIVE_INT, "decoder_num_attention_heads": POSITIVE_INT,
    "decoder_intermediate_size": POSITIVE_INT, "decoder_layer_scale_init_value": NON_NEGATIVE_FLOAT,
    "regressor_num_hidden_layers": NON_NEGATIVE_INT, "alignment_weight": NON_NEGATIVE_FLOAT,
    "teacher_momentum": BELOW_ONE, "decoder_target": WORD, "hog_nbins": POSITIVE_INT,
    "hog_cell_size": POSITIVE_INT, "hog_gaussian_window": NON_NEGATIVE_INT,
    "vocab_size": [1, 0, 2.5, "8192", None], "tokenizer_config": ["dalle", 3, [("vocab_size", 8)]],
    "codebook_image_size": POSITIVE_INT, "num_groups": POSITIVE_INT, "num_blocks_per_group": POSITIVE_INT,
    "decoder_init_size": POSITIVE_INT, "kl_weight": NON_NEGATIVE_FLOAT, "kl_warmup_steps": NON_NEGATIVE_INT,
    "codebook_diversity_weight": NON_NEGATIVE_FLOAT,
    "temperature_start": POSITIVE_FLOAT, "temperature_end": POSITIVE_FLOAT,
    "temperature_anneal_steps": NON_NEGATIVE_INT, "decoder_trained": SWITCH,
}
# values at the edge of each range that must be accepted
EDGE_VALUES = {
    "drop_path_rate": [0, 0.0, 0.999], "layer_scale_init_value": [0, 0.0], "decoder_num_hidden_layers": [0],
    "max_num_patches": [None, 1], "max_aspect": [None, 1e-3], "tokenizer_config": [None, {}], "vocab_size": [2],
    "hog_gaussian_window": [0], "mask_ratio": [1e-6, 0.999999], "layer_norm_eps": [1e-12],
}


# constructor arguments a config drops because the method fixes them (MAE and CAE never put mask tokens in the encoder)
FIXED_BY_METHOD = {(MimMaeConfig, "use_mask_token"), (MimCaeConfig, "use_mask_token")}


def own_fields(config_class) -> list[str]:
    return sorted(set(config_class().to_dict()) - set(PretrainedConfig().to_dict()) - {"model_type"})


def field_cases():
    return [(cls, name) for cls in CONFIGS for name in own_fields(cls)]


def test_every_config_field_has_a_rule_and_bad_values():
    fields = {name for cls in CONFIGS for name in own_fields(cls)}
    assert fields - set(FIELD_RULES) == set(), "add these fields to configuration_vit.FIELD_RULES"
    assert set(FIELD_RULES) == set(BAD_VALUES), "FIELD_RULES and this test's BAD_VALUES must cover the same fields"
    assert set(FIELD_RULES) - fields == {"label_smoothing"}  # read by the classifiers when set, no default


@pytest.mark.parametrize("config_class,name", field_cases(), ids=lambda x: getattr(x, "__name__", x))
def test_bad_values_are_refused_naming_the_field_at_construction_and_setattr(config_class, name):
    config = config_class()
    before = getattr(config, name)
    for value in BAD_VALUES[name]:
        with pytest.raises(ValueError, match=rf"^{name}={re.escape(repr(value))} is (out of range|of the wrong type): {name} must"):
            setattr(config, name, value)
        assert getattr(config, name) == before  # a refused value is never stored
        if name == "tokenizer_config":  # BEiT and CAE copy it with dict() first: a TypeError or ValueError
            with pytest.raises((TypeError, ValueError)):
                config_class(**{name: value})
            continue
        if (config_class, name) in FIXED_BY_METHOD or value is None and name in constructor_defaults_none(config_class):
            continue  # a None argument asks the constructor to derive the value
        with pytest.raises(ValueError, match=rf"{name}"):
            config_class(**{name: value})
    for value in EDGE_VALUES.get(name, []):
        setattr(config, name, value)


@pytest.mark.parametrize("config_class,name", field_cases(), ids=lambda x: getattr(x, "__name__", x))
def test_update_from_string_refuses_bad_values_naming_the_field_and_changes_nothing(config_class, name):
    config = config_class()
    before = config.to_dict()
    # Python values of the wrong type ("0.1", True) are fine as strings; the out-of-range ones are not
    kind = FIELD_RULES[name].kind
    texts = [str(v) for v in BAD_VALUES[name]
             if isinstance(v, (int, float)) and not isinstance(v, bool) and kind in (int, float)]
    texts += [v for v in BAD_VALUES[name] if isinstance(v, str) and kind is str]
    if name == "tokenizer_config":
        with pytest.raises(ValueError, match="tokenizer_config cannot be set from a string"):
            config.update_from_string("tokenizer_config=dalle")
        return
    for text in texts + ["abc"]:
        with pytest.raises(ValueError, match=rf"^{name}="):
            config.update_from_string(f"{name}={text}")
        assert config.to_dict() == before


def test_update_from_string_names_unknown_and_malformed_overrides():
    config = MimMaeConfig()
    with pytest.raises(ValueError, match="patch_sise is not a field of MimMaeConfig; did you mean patch_size"):
        config.update_from_string("patch_sise=8")
    with pytest.raises(ValueError, match="'mask_ratio' is not key=value"):
        config.update_from_string("mask_ratio")
    with pytest.raises(ValueError, match=r"^mask_ratio='abc' is of the wrong type: mask_ratio must be a number in \(0, 1\)"):
        config.update_from_string("mask_ratio=abc")
    config.update_from_string("mask_ratio=0.5, drop_path_rate=0,norm_pix_loss=false")
    assert (config.mask_ratio, config.drop_path_rate, config.norm_pix_loss) == (0.5, 0.0, False)
    config = MimBeitConfig()
    config.update_from_string("max_num_patches=40,max_aspect=2.5")  # fields whose default is None take numbers
    assert (config.max_num_patches, config.max_aspect) == (40, 2.5)
    config.update_from_string("max_num_patches=None")
    assert config.max_num_patches is None


def test_update_from_string_checks_the_whole_config_atomically():
    config = MimMaeConfig()
    with pytest.raises(ValueError, match="image_size=224 must be a positive multiple of patch_size=5"):
        config.update_from_string("mask_ratio=0.5,patch_size=5")
    assert (config.mask_ratio, config.patch_size) == (0.75, 16)
    config.update_from_string("image_size=40,patch_size=5")  # together they fit
    assert config.grid_size == 8


def test_update_from_string_rederives_fields_left_at_their_derived_value():
    """run_mim.py's `--config_overrides patch_size=4` on SimMIM crashed in the forward: encoder_stride kept 16."""
    config = MimSimMIMConfig()
    config.update_from_string("patch_size=4,mask_patch_size=16")
    assert (config.patch_size, config.encoder_stride) == (4, 4)
    with pytest.raises(ValueError, match="encoder_stride=8 must equal patch_size=4"):
        config.update_from_string("encoder_stride=8")
    cae = MimCaeConfig()
    cae.update_from_string("hidden_size=384,num_attention_heads=6,vocab_size=1024")
    assert (cae.decoder_hidden_size, cae.decoder_num_attention_heads, cae.decoder_intermediate_size) == (384, 6, 1536)
    assert cae.tokenizer_config == {"vocab_size": 1024}
    explicit = MimCaeConfig(decoder_hidden_size=192, decoder_num_attention_heads=3)
    explicit.update_from_string("hidden_size=384,num_attention_heads=6")
    assert (explicit.decoder_hidden_size, explicit.decoder_num_attention_heads) == (192, 3)  # explicit stays


TINY = dict(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=32)
TINY_TOKENIZER = dict(vocab_size=16, hidden_size=8, num_groups=2, num_blocks_per_group=1, decoder_init_size=8,
                      image_size=8)
BLOCK_MASK = dict(num_masking_patches=6, min_num_patches=2)
MODEL_CASES = [
    (MimMaeForPreTraining, MimMaeConfig(**TINY, decoder_hidden_size=16, decoder_num_hidden_layers=1,
                                        decoder_num_attention_heads=2, decoder_intermediate_size=16)),
    (MimBeitForPreTraining, MimBeitConfig(**TINY, **BLOCK_MASK, vocab_size=16, tokenizer_config=TINY_TOKENIZER)),
    (MimSimMIMForPreTraining, MimSimMIMConfig(**TINY, mask_patch_size=8)),
    (MimMaskFeatForPreTraining, MimMaskFeatConfig(**TINY, **BLOCK_MASK, hog_cell_size=2)),
    (MimCaeForPreTraining, MimCaeConfig(**TINY, **BLOCK_MASK, vocab_size=16, tokenizer_config=TINY_TOKENIZER,
                                        regressor_num_hidden_layers=1, decoder_num_hidden_layers=1)),
]


@pytest.mark.parametrize("model_class,config", MODEL_CASES, ids=lambda x: getattr(x, "__name__", ""))
def test_models_revalidate_a_config_changed_after_construction(model_class, config, tmp_path):
    config = copy.deepcopy(config)
    model_class(config)  # the tiny config itself is fine
    config.num_attention_heads = 3  # in range alone, but 32 is not a multiple of 3
    with pytest.raises(ValueError, match="hidden_size=32 must be a positive multiple of num_attention_heads=3"):
        model_class(config)
    with pytest.raises(ValueError, match="num_attention_heads=3"):
        config.save_pretrained(tmp_path)


def test_tokenizer_model_revalidates_its_config():
    config = MimDvaeConfig(**TINY_TOKENIZER)
    config.hidden_size = 18
    with pytest.raises(ValueError, match="hidden_size must be divisible by 4"):
        MimDvaeModel(config)


def test_from_pretrained_keyword_overrides_are_checked(tmp_path):
    config = copy.deepcopy(MODEL_CASES[0][1])
    MimMaeModel(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"^drop_path_rate=1\.5 is out of range"):
        MimMaeModel.from_pretrained(tmp_path, drop_path_rate=1.5)
    with pytest.raises(ValueError, match="image_size=16 must be a positive multiple of patch_size=3"):
        MimMaeModel.from_pretrained(tmp_path, patch_size=3)


@pytest.mark.parametrize("config_class,extra", [
    (MimSimMIMConfig, "mask_patch_size=8"),
    (MimMaskFeatConfig, "hog_cell_size=2,num_masking_patches=6,min_num_patches=2"),
])
def test_run_mim_reads_and_builds_simmim_and_maskfeat(config_class, extra):
    """transformers' run_mim.py from scratch: default config, --config_overrides, then it reads image_size,
    patch_size and encoder_stride, writes them back with `config.update`, and trains
    AutoModelForMaskedImageModeling on (pixel_values, bool_masked_pos) -> loss."""
    config = config_class()
    config.update_from_string("image_size=16,patch_size=4,hidden_size=32,num_hidden_layers=1,num_attention_heads=2,"
                              f"intermediate_size=32,{extra}")
    config.update({"image_size": config.image_size, "patch_size": config.patch_size,
                   "encoder_stride": config.encoder_stride})
    assert (config.image_size, config.patch_size, config.encoder_stride) == (16, 4, 4)
    model = AutoModelForMaskedImageModeling.from_config(config)
    mask = torch.zeros(2, 16, dtype=torch.long)
    mask[:, ::3] = 1
    out = model(pixel_values=torch.randn(2, 3, 16, 16), bool_masked_pos=mask)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    config.update({"encoder_stride": 8})  # run_mim's --encoder_stride disagreeing with the patch size
    with pytest.raises(ValueError, match="encoder_stride=8 must equal patch_size=4"):
        AutoModelForMaskedImageModeling.from_config(config)


@pytest.mark.parametrize("config_class", [MimMaeConfig, MimBeitConfig, MimCaeConfig])
def test_run_mim_is_told_why_other_methods_have_no_encoder_stride(config_class):
    config = config_class()
    assert not hasattr(config, "encoder_stride")
    with pytest.raises(AttributeError, match=f"{config_class.__name__} has no encoder_stride: .* run_mim.py cannot"):
        config.encoder_stride
    assert copy.deepcopy(config).to_dict() == config.to_dict()
