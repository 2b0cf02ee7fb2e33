"""The whole path a BEiT or CAE user walks, from a fresh checkout: train a tokenizer -> pretrain -> fine-tune ->
classify with a pipeline -> load by repo id from an offline hub cache, with and without hf_mim installed."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from PIL import Image
from transformers import pipeline

from helpers import TINY_OVERRIDES, load_script

train_tokenizer = load_script("train_tokenizer")
pretrain = load_script("pretrain")
finetune = load_script("finetune")


def fresh_accelerate():
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.mark.parametrize("method", ["beit", "cae"])
def test_tokenizer_pretrain_finetune_pipeline_and_hub(tmp_path, method):
    tokenizer = tmp_path / "tokenizer"
    train_tokenizer.main(["--config_overrides", "vocab_size=64,hidden_size=8,decoder_init_size=8",
                          "--output_dir", str(tokenizer), "--max_train_steps", "2", "--per_device_train_batch_size", "16"])
    fresh_accelerate()
    pretrained = tmp_path / "pretrained"
    pretrain.main(["--method", method, "--config_overrides", TINY_OVERRIDES[method], "--tokenizer_name_or_path",
                   str(tokenizer), "--output_dir", str(pretrained), "--max_train_steps", "2",
                   "--per_device_train_batch_size", "16"])
    fresh_accelerate()
    tuned = tmp_path / "tuned"
    summary = finetune.main(["--model_name_or_path", str(pretrained), "--output_dir", str(tuned),
                             "--max_train_steps", "2", "--per_device_train_batch_size", "16"])
    assert summary["best_epoch"] == 0
    config = json.loads((tuned / "config.json").read_text())
    assert config["relative_position_bias"] == "per_layer" and config["architectures"][0].endswith("ForImageClassification")
    predictions = pipeline("image-classification", model=str(tuned))(Image.new("L", (28, 28), 200), top_k=2)
    assert len(predictions) == 2

    from hf_mim.hub import seed_hub_cache

    cache = tmp_path / "hub"
    seed_hub_cache(pretrained, f"org/{method}-vit-tiny", cache)
    seed_hub_cache(tuned, f"org/{method}-vit-tiny-ft", cache)
    for with_hf_mim in (True, False):
        script = textwrap.dedent(f"""
            import sys
            {"import hf_mim" if with_hf_mim else "sys.modules['hf_mim'] = None"}
            from transformers import AutoModel, pipeline
            from PIL import Image
            model = AutoModel.from_pretrained("org/{method}-vit-tiny", trust_remote_code={not with_hf_mim})
            classify = pipeline("image-classification", model="org/{method}-vit-tiny-ft", trust_remote_code={not with_hf_mim})
            print(type(model).__name__, type(model).__module__.startswith("hf_mim"), len(classify(Image.new("RGB", (9, 9)))))
        """)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_MODULES_CACHE": str(tmp_path / "mods")}
        result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                                cwd=tmp_path, stdin=subprocess.DEVNULL, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        name, from_package, count = result.stdout.split()
        assert name == f"Mim{method.capitalize()}Model" and from_package == str(with_hf_mim) and int(count) == 5
