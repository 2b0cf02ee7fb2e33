"""What every entry of the method registry must hold, checked for each registered method: its classes and Auto
registrations, recipes, the config checks every method shares, and that its model battery exists. A new method is
covered by adding it to `hf_mim.METHODS` (and its facts to EXPECTED)."""

import dataclasses
from pathlib import Path

import pytest
from transformers import (AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification,
                          AutoModelForMaskedImageModeling, AutoModelForPreTraining, AutoModelForVideoClassification,
                          PreTrainedConfig, PreTrainedModel)

import hf_mim
from hf_mim_cli.recipes import FinetuneRecipe, PretrainRecipe

# facts of each method's published recipe: the lr's batch divisor (None = absolute lr) and words of the paper
EXPECTED = {
    "beit": dict(divisor=None, paper=("BEiT", "ICLR 2022"), target="tokens"),
    "mae": dict(divisor=256, paper=("Masked Autoencoders", "CVPR 2022"), target="pixels"),
    "simmim": dict(divisor=512, paper=("SimMIM", "CVPR 2022"), target="pixels"),
    "maskfeat": dict(divisor=256, paper=("Masked Feature Prediction", "CVPR 2022"), target="hog"),
    "cae": dict(divisor=None, paper=("Context Autoencoder", "IJCV 2023"), target="tokens"),
}
NAMES = sorted(hf_mim.METHODS)


def demo_config(name, family="vit", **overrides):
    backbone = hf_mim.get_method(name).backbone(family)
    return backbone.config_class(**{**backbone.demo_config, **overrides})


def test_every_method_has_its_expected_facts():
    assert sorted(EXPECTED) == NAMES, "add the new method's facts to EXPECTED"


@pytest.mark.parametrize("name", NAMES)
def test_entry_recipes_and_capabilities(name):
    method, expected = hf_mim.get_method(name), EXPECTED[name]
    assert method.name == name and all(word in method.paper for word in expected["paper"]) and method.summary
    assert isinstance(method.pretrain_recipe, PretrainRecipe) and isinstance(method.finetune_recipe, FinetuneRecipe)
    assert method.pretrain_recipe.lr_batch_divisor == expected["divisor"]
    assert method.targets[0] == expected["target"]
    assert set(method.picture_captions) <= {"pixels", "hog", "tokens"} and method.targets[0] in method.picture_captions
    assert all(caption.startswith("Rows: ") for caption in method.picture_captions.values())
    assert method.can_use_tokenizer == ("tokens" in method.targets)
    assert method.config_class().needs_tokenizer == (expected["target"] == "tokens")
    with pytest.raises(ValueError, match=f"{name} has no 'nope' backbone"):
        method.backbone("nope")


@pytest.mark.parametrize("name", NAMES)
def test_classes_are_registered_with_the_auto_classes(name, tmp_path):
    method = hf_mim.get_method(name)
    for family, backbone in method.backbones.items():
        config = demo_config(name, family, num_hidden_layers=1)
        assert issubclass(backbone.config_class, PreTrainedConfig)
        assert all(issubclass(cls, PreTrainedModel) for cls in
                   (backbone.model_class, backbone.pretraining_class, backbone.classification_class))
        assert hf_mim.method_of_config(config) is method and hf_mim.backbone_of_config(config) is backbone
        backbone.pretraining_class(config).save_pretrained(tmp_path / family)
        backbone.image_processor_class.for_model_config(config).save_pretrained(tmp_path / family)
        folder = tmp_path / family
        assert type(AutoConfig.from_pretrained(folder)) is backbone.config_class
        video = backbone.modality == "video"  # video models: no masked-image-modeling entry, a video classifier
        for auto in (AutoModelForPreTraining,) if video else (AutoModelForMaskedImageModeling, AutoModelForPreTraining):
            assert type(auto.from_pretrained(folder)) is backbone.pretraining_class
        assert type(AutoModel.from_pretrained(folder)) is backbone.model_class
        classifier = AutoModelForVideoClassification if video else AutoModelForImageClassification
        assert type(classifier.from_pretrained(folder, num_labels=2)) is backbone.classification_class
        assert type(AutoImageProcessor.from_pretrained(folder)) is backbone.image_processor_class


def shared_rejections(name):
    """The checks every config with the field makes: (overrides, words of the error)."""
    config = demo_config(name)
    cases = [({"qkv_bias": "kv"}, "qkv_bias")]
    if getattr(config, "use_mask_token", False):  # the methods that put mask tokens in the encoder
        cases.append(({"use_mask_token": False}, "use_mask_token"))
    if hasattr(config, "min_aspect"):  # block masks
        cases += [({"min_aspect": 0.0}, "min_aspect"), ({"min_num_patches": 0}, "min_num_patches")]
    return cases


@pytest.mark.parametrize("name, overrides, needle",
                         [(name, *case) for name in NAMES for case in shared_rejections(name)])
def test_impossible_shared_fields_fail_naming_the_field(name, overrides, needle):
    with pytest.raises(ValueError, match=needle):
        demo_config(name, **overrides)


def test_every_method_runs_the_shared_model_battery():
    sources = "\n".join(path.read_text() for path in Path(__file__).parent.glob("test_*.py"))
    missing = [name for name in NAMES if f'method = "{name}"' not in sources]
    assert not missing, f"give {missing} a MimModelTests subclass (tests/model_tester.py)"


def test_conversion_sources_name_their_method():
    from hf_mim.methods import conversion_source, conversion_source_ids

    ids = conversion_source_ids()
    assert len(ids) == len(set(ids)) and "mae-official" in ids
    for source_id in ids:
        method, source = conversion_source(source_id)
        assert method.conversion_sources[source_id] is source
    with pytest.raises(ValueError, match="unknown checkpoint source 'nope'"):
        conversion_source("nope")


def test_the_command_line_catalog_names_what_the_registry_holds():
    from hf_mim_cli import catalog

    assert catalog.method_names() == sorted(hf_mim.METHODS)
    assert catalog.backbone_families() == hf_mim.methods.backbone_families()
    assert catalog.conversion_source_ids() == hf_mim.methods.conversion_source_ids()
    assert catalog.MODALITIES == tuple(sorted({b.modality for m in hf_mim.METHODS.values() for b in m.backbones.values()}))


def test_a_registry_entry_missing_from_the_catalog_stops_the_import_naming_the_line_to_add(monkeypatch):
    from hf_mim_cli import catalog

    monkeypatch.setitem(hf_mim.METHODS, "data2vec", dataclasses.replace(hf_mim.METHODS["mae"], name="data2vec"))
    monkeypatch.delitem(catalog.METHOD_BACKBONES, "simmim")
    with pytest.raises(ImportError) as error:
        hf_mim.methods.check_catalog()
    said = str(error.value)
    assert "hf_mim_cli/catalog.py" in said
    assert 'METHOD_BACKBONES["data2vec"] = (\'vit\',)' in said
    assert 'METHOD_BACKBONES["simmim"] = (\'vit\', \'swin\')' in said
    assert 'CONVERSION_SOURCES["data2vec"] = (\'mae-official\', \'hf-vit-mae\')' in said
    monkeypatch.undo()
    hf_mim.methods.check_catalog()  # the real pair agrees
