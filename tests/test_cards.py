"""Model cards: standard card-data keys only, base_model of fine-tuned models, the tokenizer of BEiT and CAE, the
demo warning, and a final training loss that a resumed run reports as the uninterrupted one does."""

import inspect
import json
import re
import shutil

import pytest
from huggingface_hub import ModelCard, ModelCardData

import hf_mim
from hf_mim.hub import write_model_card
from helpers import TINY_OVERRIDES, load_script

STANDARD_KEYS = set(inspect.signature(ModelCardData).parameters) - {"ignore_metadata_errors", "kwargs",
                                                                     "eval_results", "model_name"} | {"model-index"}


def card_for(folder, method_name, config, **kwargs):
    defaults = dict(model_name="mae-finetuned", method=hf_mim.get_method(method_name), config=config,
                    data_source="sample", steps=10, effective_batch=8, learning_rate=1e-3, final_loss=0.5,
                    command="python scripts/finetune.py --model_name_or_path outputs/mae-pretrain")
    write_model_card(folder, **{**defaults, **kwargs})
    return ModelCard.load(folder / "README.md")


def demo_config(name, **overrides):
    return hf_mim.get_method(name).config_class(**{**hf_mim.get_method(name).backbone().demo_config, **overrides})


def test_fine_tuned_card_names_its_base_model_with_standard_keys_only(tmp_path):
    pretrained = tmp_path / "mae-pretrain"
    pretrained.mkdir()
    (pretrained / "config.json").write_text("{}")
    config = demo_config("mae", num_labels=3)
    card = card_for(tmp_path / "a", "mae", config, weights_from=str(pretrained), is_classifier=True,
                    results=[{"metric": "accuracy", "value": 0.5, "protocol": "fine-tune top-1"}])
    data = card.data.to_dict()
    assert data["base_model"] == str(pretrained) and set(data) <= STANDARD_KEYS
    assert data["model-index"][0]["name"] == "mae-finetuned"  # the results' name: where model_name belongs
    hub = card_for(tmp_path / "b", "mae", config, weights_from="org/mae-vit-tiny", is_classifier=True)
    data = hub.data.to_dict()
    assert data["base_model"] == "org/mae-vit-tiny" and "model_name" not in data and set(data) <= STANDARD_KEYS
    scratch = card_for(tmp_path / "c", "mae", config, weights_from="random initialisation (baseline)")
    assert "base_model" not in scratch.data.to_dict()
    explicit = card_for(tmp_path / "d", "mae", config, weights_from="anything", base_model="org/other")
    assert explicit.data.base_model == "org/other"
    assert "method_spec" not in card.text and "§" not in card.text


def test_token_predicting_cards_name_their_tokenizer(tmp_path):
    trained = {"vocab_size": 512, "hidden_size": 64, "image_size": 64}
    beit = card_for(tmp_path / "beit", "beit", demo_config("beit", vocab_size=512, tokenizer_config=trained),
                    tokenizer="outputs/tokenizer")
    assert ("| tokenizer (prediction targets) | `outputs/tokenizer`: a dVAE of 512 codes (width 64, 64 px views) "
            "(`config.tokenizer_config`) |") in beit.text
    dalle = card_for(tmp_path / "dalle", "beit", demo_config("beit"))
    assert "| tokenizer (prediction targets) | not recorded by this run: DALL-E's dVAE encoder layout, 8192 codes" \
        in dalle.text
    cae = card_for(tmp_path / "cae", "cae", demo_config("cae", vocab_size=512, tokenizer_config=trained),
                   tokenizer="org/tokenizer")
    assert "`org/tokenizer`: a dVAE of 512 codes" in cae.text
    for name, config in [("cae", demo_config("cae", decoder_target="pixels")), ("mae", demo_config("mae"))]:
        assert "tokenizer (prediction targets)" not in card_for(tmp_path / name, name, config).text


def test_demo_cards_say_they_are_demo_models(tmp_path):
    demo = card_for(tmp_path / "demo", "mae", demo_config("mae", num_labels=3, drop_path_rate=0.1))
    assert "**A 32 px demo model.** The CPU demo's tiny ViT (4 blocks of width 128, 4 px patches)" in demo.text
    maskfeat = card_for(tmp_path / "maskfeat", "maskfeat", demo_config("maskfeat"))
    assert "**A 64 px demo model.**" in maskfeat.text
    base = card_for(tmp_path / "base", "mae", hf_mim.get_method("mae").config_class())
    assert "demo model" not in base.text


def final_loss_in(card_path) -> str:
    return re.search(r"\| final training loss \(mean of the last logging window\) \| (\S+) \|",
                     card_path.read_text()).group(1)


def test_a_resumed_run_reports_the_final_loss_of_the_uninterrupted_run(tmp_path):
    """Resumed mid-way through a logging window (checkpoint at update 6, logs at 5 and 8), the run logs the mean
    over updates 6-8 as the uninterrupted run does, not over 7-8 only; and it leaves checkpoints/README.md."""
    from accelerate.state import AcceleratorState, GradientState

    pretrain = load_script("pretrain")
    base = ["--method", "mae", "--config_overrides", TINY_OVERRIDES["mae"], "--per_device_train_batch_size", "8",
            "--logging_steps", "5", "--seed", "7", "--max_train_steps", "8", "--checkpointing_steps", "3"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    first = pretrain.main(base + ["--output_dir", str(straight)])
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(straight / "checkpoints" / "step_6", resumed / "checkpoints" / "step_6")
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    second = pretrain.main(base + ["--output_dir", str(resumed), "--resume_from_checkpoint", "latest"])
    assert second["final_loss"] == first["final_loss"]
    assert final_loss_in(resumed / "README.md") == final_loss_in(straight / "README.md")
    saved = json.loads((straight / "checkpoints" / "step_6" / "trainer_state.json").read_text())
    assert saved["loss_window"]["count"] == 1 and len(saved["loss_window"]["sums"]) == 1
    readme = (straight / "checkpoints" / "README.md").read_text()
    assert "not a `from_pretrained` folder" in readme and "--resume_from_checkpoint latest" in readme


@pytest.mark.parametrize("path", ["model_cards/pretrained.md", "hf_mim/hub.py", "scripts/push_to_hub.py"])
def test_card_sources_cite_nothing_users_lack(path):
    from helpers import REPO_ROOT

    text = (REPO_ROOT / path).read_text()
    assert "method_spec" not in text and "§" not in text and "design.md" not in text
