"""The surface every method's models share (modeling/mim_base.py): picture views, the step hook, the tokenizer
switch, the derived Auto classes, re-freezing after loading, the block-mask config fields, and folders saved by
earlier code still loading."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import hf_mim
from hf_mim.modeling.configuration_dvae import MimDvaeConfig
from hf_mim.modeling.mim_base import MimPreTrainedModel, PictureView
from hf_mim.modeling.modeling_dvae import MimDvaeModel, map_pixels

TOKENIZER = dict(vocab_size=16, hidden_size=8, num_groups=3, num_blocks_per_group=1, decoder_init_size=8,
                 image_size=16)
BASE = dict(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=64)
FIELDS = {
    "mae": dict(decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                decoder_intermediate_size=32),
    "beit": dict(num_masking_patches=6, min_num_patches=2, vocab_size=16, tokenizer_config=TOKENIZER),
    "simmim": dict(mask_patch_size=8),
    "maskfeat": dict(hog_cell_size=2, num_masking_patches=6, min_num_patches=2),
    "cae": dict(num_masking_patches=6, min_num_patches=2, regressor_num_hidden_layers=1, decoder_num_hidden_layers=1,
                vocab_size=16, tokenizer_config=TOKENIZER),
}
# The inputs each method's forward takes (MAE masks inside the model from `noise`).
INPUT_NAMES = {"mae": ("pixel_values", "noise"), "simmim": ("pixel_values", "bool_masked_pos"),
               "maskfeat": ("pixel_values", "bool_masked_pos")}
SAVED_BY_OLDER_CODE = Path(__file__).parent / "data" / "saved_by_0f7b965"


def config_of(method: str, **overrides):
    return hf_mim.get_method(method).config_class(**{**BASE, **FIELDS[method], **overrides})


def pretraining_model(method: str, **overrides):
    torch.manual_seed(0)
    return hf_mim.get_method(method).pretraining_class(config_of(method, **overrides)).eval()


def batch_of(method: str) -> dict:
    """Two 16 px images, 6 of their 16 patches masked (the same count each, as CAE needs)."""
    generator = torch.Generator().manual_seed(0)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, [0, 1, 4, 5, 10, 15]] = True
    mask[1, [2, 3, 6, 7, 8, 12]] = True
    batch = {"pixel_values": torch.randn(2, 3, 16, 16, generator=generator), "bool_masked_pos": mask,
             "codebook_pixel_values": map_pixels(torch.rand(2, 3, 16, 16, generator=generator)),
             "noise": torch.rand(2, 16, generator=generator)}
    names = INPUT_NAMES.get(method, ("pixel_values", "bool_masked_pos", "codebook_pixel_values"))
    return {name: batch[name] for name in names}


def tiny_dvae(decoder_trained: bool = True) -> MimDvaeModel:
    torch.manual_seed(3)
    return MimDvaeModel(MimDvaeConfig(**TOKENIZER, decoder_trained=decoder_trained)).eval()


@torch.no_grad()
def view_of(model, batch) -> PictureView | None:
    return model.picture_view(batch, model(**batch))


# ---------------------------------------------------------------------------------------------- picture views


def test_mae_pixels_view_de_standardises_a_perfect_norm_pix_prediction_back_to_the_input():
    model = pretraining_model("mae")
    batch = batch_of("mae")
    outputs = model(**batch)
    assert outputs.bool_masked_pos.dtype == torch.bool and torch.equal(outputs.bool_masked_pos, outputs.mask.bool())
    assert int(outputs.bool_masked_pos.sum()) == 2 * 12  # mask_ratio 0.75 of 16 patches
    outputs.logits = model.targets(batch["pixel_values"])  # the norm-pix targets themselves
    view = model.picture_view(batch, outputs)
    assert view.kind == "pixels" and view.target is None and view.bool_masked_pos is outputs.bool_masked_pos
    torch.testing.assert_close(view.predicted, batch["pixel_values"], rtol=0, atol=1e-4)


def test_simmim_pixels_view_is_its_reconstruction():
    model = pretraining_model("simmim")
    batch = batch_of("simmim")
    outputs = model(**batch)
    view = model.picture_view(batch, outputs)
    assert view.kind == "pixels" and view.target is None
    assert view.predicted is outputs.reconstruction and view.predicted.shape == (2, 3, 16, 16)
    assert torch.equal(view.bool_masked_pos, batch["bool_masked_pos"])


def test_maskfeat_hog_view_holds_predicted_and_target_vectors_per_patch():
    model = pretraining_model("maskfeat")
    batch = batch_of("maskfeat")
    view = view_of(model, batch)
    assert view.kind == "hog" and view.predicted.shape == view.target.shape == (2, 16, 3 * 9 * 4)
    assert torch.equal(view.target, model.hog(batch["pixel_values"]))
    assert model.cell_histograms(view.target, (16, 16)).shape == (2, 3, 9, 8, 8)


@pytest.mark.parametrize("method", ["beit", "cae"])
def test_tokens_view_decodes_true_tokens_and_the_predictions_at_masked_patches(method):
    model = pretraining_model(method)
    saved_keys = set(model.state_dict())
    dvae = tiny_dvae()
    model.load_tokenizer(dvae)
    batch = batch_of(method)
    outputs = model(**batch)
    view = model.picture_view(batch, outputs)
    true_ids = dvae.get_codebook_indices(batch["codebook_pixel_values"])  # (2, 4, 4)
    mixed = true_ids.flatten(1).clone()
    mixed[batch["bool_masked_pos"]] = outputs.logits.argmax(dim=-1).flatten()
    assert view.kind == "tokens" and view.predicted.shape == view.target.shape == (2, 3, 16, 16)
    assert torch.equal(view.target, dvae.decode(true_ids))
    assert torch.equal(view.predicted, dvae.decode(mixed.reshape(2, 4, 4)))
    assert float(view.predicted.min()) >= 0 and float(view.predicted.max()) <= 1
    assert set(model.state_dict()) == saved_keys  # the dVAE's decoder is no part of the model's weights


@pytest.mark.parametrize("method", ["beit", "cae"])
def test_tokens_view_is_none_without_a_trained_decoder(method, tmp_path):
    untrained = pretraining_model(method)
    untrained.load_tokenizer(tiny_dvae(decoder_trained=False))  # e.g. DALL-E's converted encoder alone
    assert view_of(untrained, batch_of(method)) is None
    untrained.save_pretrained(tmp_path)  # a folder holds the encoder only
    loaded = hf_mim.get_method(method).pretraining_class.from_pretrained(tmp_path).eval()
    assert view_of(loaded, batch_of(method)) is None


def test_cae_with_pixel_targets_shows_pixels_visible_as_given_and_masked_predicted():
    model = pretraining_model("cae", decoder_target="pixels")
    batch = batch_of("simmim")
    outputs = model(**batch)
    outputs.logits = model.pixel_targets(batch["pixel_values"], model.encode(**batch)[2])  # a perfect prediction
    view = model.picture_view(batch, outputs)
    assert view.kind == "pixels" and view.target is None
    torch.testing.assert_close(view.predicted, batch["pixel_values"], rtol=0, atol=1e-4)


def test_picture_view_kind_is_checked():
    with pytest.raises(ValueError, match="kind='rgb' is not one of"):
        PictureView("rgb", torch.zeros(1, 4, dtype=torch.bool), torch.zeros(1, 3, 4, 4))


# ------------------------------------------------------------------------------- step hook and tokenizer switch


def test_cae_after_optimizer_step_moves_the_teacher_as_update_teacher():
    model = pretraining_model("cae", teacher_momentum=0.75)
    with torch.no_grad():
        for parameter in model.vit.parameters():
            parameter.add_(torch.randn_like(parameter))
    reference = copy.deepcopy(model)
    before = [p.clone() for p in model.teacher.parameters()]
    model.after_optimizer_step()
    reference.update_teacher()
    for teacher, old, source, expected in zip(model.teacher.parameters(), before, model.vit.parameters(),
                                              reference.teacher.parameters()):
        assert torch.equal(teacher, expected)
        torch.testing.assert_close(teacher, 0.75 * old + 0.25 * source)


@pytest.mark.parametrize("method", ["mae", "simmim", "maskfeat", "beit"])
def test_after_optimizer_step_changes_nothing_elsewhere(method):
    model = pretraining_model(method)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.after_optimizer_step()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("method, overrides, expected", [
    ("beit", {}, True), ("cae", {}, True), ("cae", {"decoder_target": "pixels"}, False),
    ("mae", {}, False), ("simmim", {}, False), ("maskfeat", {}, False),
])
def test_needs_tokenizer_says_whether_targets_are_visual_tokens(method, overrides, expected):
    config = config_of(method, **overrides)
    assert config.needs_tokenizer is expected
    assert "needs_tokenizer" not in config.to_dict()


@pytest.mark.parametrize("method, overrides", [("mae", {}), ("simmim", {}), ("cae", {"decoder_target": "pixels"})])
def test_load_tokenizer_is_refused_naming_the_method(method, overrides):
    model = pretraining_model(method, **overrides)
    name = type(model).__name__
    with pytest.raises(ValueError, match=f"{name} has no tokenizer to load: {method} pretraining"):
        model.load_tokenizer(tiny_dvae())


# --------------------------------------------------------------------------------------- base and loading


def test_auto_classes_come_from_the_class_name_prefix():
    from hf_mim.modeling.modeling_mae import MimMaePreTrainedModel

    assert MimMaePreTrainedModel.auto_classes == {
        "AutoModel": "MimMaeModel",
        "AutoModelForPreTraining": "MimMaeForPreTraining",
        "AutoModelForMaskedImageModeling": "MimMaeForPreTraining",
        "AutoModelForImageClassification": "MimMaeForImageClassification",
        "AutoImageProcessor": "image_processing_mae.MimMaeImageProcessor",
    }
    for method in hf_mim.METHODS.values():
        assert issubclass(method.pretraining_class, MimPreTrainedModel)
        assert method.pretraining_class.auto_classes["AutoModel"] == method.model_class.__name__
        processor = method.pretraining_class.auto_classes["AutoImageProcessor"]
        assert processor.endswith("." + method.image_processor_class.__name__)

    class OwnPreTrainedModel(MimPreTrainedModel):
        auto_classes = {"AutoModel": "OwnModel"}

    assert OwnPreTrainedModel.auto_classes == {"AutoModel": "OwnModel"}


@pytest.mark.parametrize("method", sorted(hf_mim.METHODS))
def test_parameters_built_frozen_stay_frozen_after_loading(method, tmp_path):
    classes = hf_mim.get_method(method)
    overrides = {"teacher_momentum": 0.5} if method == "cae" else {}
    frozen = {}
    for cls in (classes.model_class, classes.pretraining_class, classes.classification_class):
        torch.manual_seed(0)
        model = cls(config_of(method, **overrides))
        model.save_pretrained(tmp_path / cls.__name__)
        loaded = cls.from_pretrained(tmp_path / cls.__name__)
        frozen[cls] = {name for name, p in model.named_parameters() if not p.requires_grad}
        assert {name for name, p in loaded.named_parameters() if not p.requires_grad} == frozen[cls], cls.__name__
    frozen_part = {"mae": "decoder.pos_embed", "beit": "tokenizer.", "cae": "teacher."}.get(method)
    if frozen_part:
        assert any(name.startswith(frozen_part) for name in frozen[classes.pretraining_class])


@pytest.mark.parametrize("method", sorted(hf_mim.METHODS))
def test_folders_saved_by_older_code_load_and_give_the_same_loss(method):
    """Folders saved by the code of commit 0f7b965 (before the shared base), their exported .py files removed."""
    folder = SAVED_BY_OLDER_CODE / method
    saved = load_file(folder / "inputs_and_loss.safetensors")
    expected_loss = saved.pop("loss")[0]
    model, info = hf_mim.get_method(method).pretraining_class.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    with torch.no_grad():
        loss = model.eval()(**saved).loss
    assert torch.equal(loss, expected_loss)


# ------------------------------------------------------------------------------------------ block-mask fields


def test_block_mask_fields_round_trip_and_take_string_overrides(tmp_path):
    config = config_of("beit", max_num_patches=8, max_aspect=2.0)
    config.update_from_string("num_masking_patches=7,min_aspect=0.5")
    config.save_pretrained(tmp_path)
    loaded = type(config).from_pretrained(tmp_path)
    assert (loaded.num_masking_patches, loaded.min_num_patches, loaded.max_num_patches) == (7, 2, 8)
    assert (loaded.min_aspect, loaded.max_aspect) == (0.5, 2.0)
    assert loaded.to_diff_dict() == config.to_diff_dict()


def test_block_mask_defaults_are_each_methods_own():
    classes = {name: hf_mim.get_method(name).config_class for name in ("beit", "maskfeat", "cae")}
    assert (classes["beit"]().num_masking_patches, classes["beit"]().min_num_patches) == (75, 16)
    assert (classes["maskfeat"]().num_masking_patches, classes["maskfeat"]().min_num_patches) == (78, 15)
    cae = classes["cae"]()
    assert (cae.num_masking_patches, cae.min_num_patches, cae.max_num_patches) == (98, 16, None)
    assert not hasattr(cae, "min_aspect")  # CAE's generator keeps the fixed aspect range


@pytest.mark.parametrize("method, field, value, needle", [
    ("beit", "num_masking_patches", 16, r"num_masking_patches must be an integer in \[1, 15\]"),
    ("maskfeat", "min_num_patches", 0, "min_num_patches must be an integer >= 1"),
    ("cae", "max_num_patches", 0, "max_num_patches must be an integer >= 1"),
    ("beit", "min_aspect", 0.0, "min_aspect must be a number > 0"),
    ("maskfeat", "max_aspect", 0.1, "max_aspect must be >= min_aspect=0.3"),
])
def test_block_mask_checks_name_the_field(method, field, value, needle):
    with pytest.raises(ValueError, match=needle):
        config_of(method, **{field: value})
