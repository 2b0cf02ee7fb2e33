"""`AutoModelForImageClassification.from_pretrained(pretraining_folder, num_labels=N)` (the Trainer's and the example
scripts' way in) builds the classifier scripts/finetune.py builds: the method's fine-tuning switches, the per-layer
relative position bias tables started from the shared one, the same weights and trainable parameters."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForImageClassification
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging

import hf_mim  # noqa: F401
from helpers import load_script
from test_config_fields import MODEL_CASES

LABELS = ["LABEL_0", "LABEL_1", "LABEL_2"]  # transformers' names for num_labels=3, so both configs agree


def save_pretraining_model(model_class, config, folder):
    torch.manual_seed(0)
    model = model_class(copy.deepcopy(config))
    with torch.no_grad():  # a non-zero shared table, so copying it into the per-layer tables shows
        for name, parameter in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                parameter.copy_(torch.randn(parameter.shape))
    model.save_pretrained(folder)
    return model


@pytest.mark.parametrize("model_class,config", MODEL_CASES, ids=lambda x: getattr(x, "__name__", ""))
def test_auto_classifier_from_a_pretraining_folder_is_finetune_scripts(tmp_path, model_class, config):
    pretrained = save_pretraining_model(model_class, config, tmp_path)
    torch.manual_seed(1)
    logger = logging.get_logger("hf_mim.modeling.task_heads")
    with CaptureLogger(logger) as captured:
        auto = AutoModelForImageClassification.from_pretrained(tmp_path, num_labels=3)
    assert captured.out.count("fine-tuning switches") == 1  # one line naming each switch that changed a field
    for key, value in type(config).finetune_overrides.items():
        assert (f"{key}={value!r} (was {getattr(config, key)!r})" in captured.out) == (getattr(config, key) != value)

    finetune = load_script("finetune")
    args = finetune.parse_args(["--model_name_or_path", str(tmp_path)])
    torch.manual_seed(1)
    _, _, scripted = finetune.build_classifier(args, SimpleNamespace(label_names=LABELS))

    assert type(auto) is type(scripted)
    ignored = {"architectures", "_name_or_path", "transformers_version"}
    auto_fields = {k: v for k, v in auto.config.to_dict().items() if k not in ignored}
    assert auto_fields == {k: v for k, v in scripted.config.to_dict().items() if k not in ignored}
    for key, overridden in type(config).finetune_overrides.items():
        assert getattr(auto.config, key) == overridden
    auto_state, scripted_state = auto.state_dict(), scripted.state_dict()
    assert auto_state.keys() == scripted_state.keys()
    for key in auto_state:
        assert torch.equal(auto_state[key], scripted_state[key]), key
    trainable = {n: p.requires_grad for n, p in auto.named_parameters()}
    assert trainable == {n: p.requires_grad for n, p in scripted.named_parameters()}
    if auto.config.relative_position_bias == "per_layer" and pretrained.vit.rel_pos_bias is not None:
        shared = pretrained.vit.rel_pos_bias.relative_position_bias_table
        for block in auto.vit.blocks:  # BEiT and SimMIM: every block starts from the shared table
            assert torch.equal(block.attn.relative_position_bias_table, shared)
    if auto.vit.pos_embed is not None and auto.config.model_type == "mim_mae":
        assert auto.vit.pos_embed.requires_grad  # MAE fine-tunes its positions


def test_keywords_and_finetuned_folders_are_left_as_given(tmp_path):
    model_class, config = MODEL_CASES[2]  # SimMIM: shared bias in pretraining, per layer when fine-tuned
    save_pretraining_model(model_class, config, tmp_path / "pretrained")
    auto = AutoModelForImageClassification.from_pretrained(tmp_path / "pretrained", num_labels=3,
                                                           drop_path_rate=0.2, relative_position_bias="none")
    # keywords that change a saved field win over the recipe (one equal to the saved value cannot be told apart)
    assert (auto.config.drop_path_rate, auto.config.relative_position_bias) == (0.2, "none")
    assert auto.config.architectures == ["MimSimMIMForImageClassification"]
    auto.config.pooling = "cls"
    auto.save_pretrained(tmp_path / "finetuned")
    logger = logging.get_logger("hf_mim.modeling.task_heads")
    with CaptureLogger(logger) as captured:
        again = AutoModelForImageClassification.from_pretrained(tmp_path / "finetuned")
    assert captured.out == "" and again.config.pooling == "cls"  # a classifier's own choices stay
