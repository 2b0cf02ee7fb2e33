"""Small builders shared by the script tests: tiny configs as --config_overrides, odd image files, script import."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]

# A ViT small enough that a pretraining step takes milliseconds on one CPU core.
TINY_OVERRIDES = {
    "mae": "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,decoder_hidden_size=16,"
           "decoder_num_hidden_layers=1,decoder_num_attention_heads=2,decoder_intermediate_size=32",
    "beit": "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,num_masking_patches=26,"
            "min_num_patches=4,drop_path_rate=0.0",
    "simmim": "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,mask_patch_size=8,"
              "drop_path_rate=0.0",
    "maskfeat": "image_size=32,patch_size=8,hog_cell_size=4,hidden_size=32,num_hidden_layers=2,num_attention_heads=2,"
                "intermediate_size=64,num_masking_patches=6,min_num_patches=2",
    "cae": "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,decoder_hidden_size=32,"
           "decoder_num_attention_heads=2,decoder_intermediate_size=64,regressor_num_hidden_layers=1,"
           "decoder_num_hidden_layers=1,num_masking_patches=32,min_num_patches=4,drop_path_rate=0.0",
}


# A 16 px MAE for the probes: features in milliseconds.
TINY_MAE_16PX = dict(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, decoder_hidden_size=16, decoder_num_hidden_layers=1,
                     decoder_num_attention_heads=2, decoder_intermediate_size=32)

# The same ViT shrunk to 16 px for the image processors alone: each method's mask fields at that size.
TINY_PROCESSOR_SETTINGS = {
    "beit": {"codebook_image_size": 8, "num_masking_patches": 4, "min_num_patches": 2},
    "cae": {"num_masking_patches": 4, "min_num_patches": 2},
    "maskfeat": {"num_masking_patches": 4, "min_num_patches": 2},
    "simmim": {"mask_patch_size": 8},
    "mae": {},
}


# The tokenizer of the tiny BEiT and CAE models: a 64-code dVAE at width 8.
TINY_TOKENIZER = dict(vocab_size=64, hidden_size=8, num_groups=4, num_blocks_per_group=1)


def assert_refused(make, fields: dict, needle: str) -> None:
    """`make(**fields)` (a config, a mask generator) raises a ValueError whose message matches `needle`, the
    field at fault."""
    import pytest

    with pytest.raises(ValueError, match=needle):
        make(**fields)


def assert_default_processor(processor, pretraining_kwargs: dict) -> None:
    """What every method's default processor shares: 224 px, ImageNet mean and std; and its pretraining kwargs."""
    assert processor.size["height"] == 224 and processor.pretraining_kwargs() == pretraining_kwargs
    assert list(processor.image_mean) == [0.485, 0.456, 0.406] and list(processor.image_std) == [0.229, 0.224, 0.225]


def randomize_parameters_(model, seed: int = 0, near: dict[str, tuple[float, float]] | None = None) -> None:
    """Every parameter random and non-trivial, so a parity test checks them all: N(0, 0.02^2), LayerNorm weights
    1 + 0.1 N(0, 1), and the parameters whose name holds a key of `near` at offset + scale * N(0, 1)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            layer_norm = (1.0, 0.1) if "layernorm" in name and name.endswith("weight") else (0.0, 0.02)
            offset, scale = next((rule for part, rule in (near or {}).items() if part in name), layer_norm)
            param.copy_(offset + scale * noise)


def parity_batch(config, batch: int, masks):
    """Seeded pixels (seed 1) and masks (seed 2) for a parity test, with the generator for further draws."""
    import torch

    generator = torch.Generator().manual_seed(1)
    pixel_values = torch.randn(batch, 3, config.image_size, config.image_size, generator=generator)
    return pixel_values, masks(config, batch, seed=2), generator


def assert_outputs_match(reference, ours, tolerances: dict[str, float], **inputs) -> None:
    """`reference` and `ours` on the same `inputs` under no_grad: each output named in `tolerances` equal to its
    absolute tolerance (no relative slack)."""
    import torch

    with torch.no_grad():
        expected, got = reference(**inputs), ours(**inputs)
    for name, atol in tolerances.items():
        torch.testing.assert_close(getattr(got, name), getattr(expected, name), rtol=0, atol=atol)


def assert_beit_style_vit_b(config) -> None:
    """The ViT-B/16 of BEiT's and SimMIM's pretraining: q/v bias, layer scale 0.1, drop path 0.1, no absolute
    positions, one shared relative position bias table, the mask token, mean pooling, eps 1e-6."""
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 12, 12)
    assert config.qkv_bias == "qv" and config.layer_scale_init_value == 0.1 and config.drop_path_rate == 0.1
    assert config.position_embedding_type == "none" and config.relative_position_bias == "shared"
    assert config.use_mask_token and config.pooling == "mean" and config.layer_norm_eps == 1e-6


def save_with_random_shared_table(model, folder: Path):
    """Save a BEiT-style pretraining model whose shared relative position table is made random (its init is zero,
    which would hide a table not copied on loading); returns the model."""
    import torch

    with torch.no_grad():
        model.vit.rel_pos_bias.relative_position_bias_table.normal_()
    model.save_pretrained(folder)
    return model


def random_images(count: int, height: int, width: int) -> list:
    """`count` random RGB PIL images of height x width, image i drawn from seed i."""
    return [Image.fromarray(np.random.default_rng(i).integers(0, 256, (height, width, 3), dtype=np.uint8))
            for i in range(count)]


def pretraining_batches(processor, images, *mask_seeds: int) -> list:
    """The processor's pretraining output (numpy) for `images`, once per mask seed."""
    return [processor(images, return_tensors="np", mask_seed=seed, **processor.pretraining_kwargs())
            for seed in mask_seeds]


def assert_plain_call_is_the_base_processor(processor, image, side: int) -> None:
    """Called without the pretraining kwargs, a method's processor gives only the base processor's pixels (what
    pipelines see)."""
    from hf_mim.modeling.image_processing_mim import MimImageProcessor

    plain = processor(image, return_tensors="np")
    assert set(plain) == {"pixel_values"}
    base = MimImageProcessor(size={"height": side, "width": side})(image, return_tensors="np")
    np.testing.assert_array_equal(plain["pixel_values"], base["pixel_values"])


def train_on_processor_output(config, processor_class, pretraining_class):
    """One training forward and backward of a fresh `pretraining_class(config)` on its processor's pretraining batch
    of two random 32x32 images (mask seed 0); returns (model, loss)."""
    processor = processor_class.for_model_config(config)
    batch = processor(random_images(2, 32, 32), return_tensors="pt", mask_seed=0, **processor.pretraining_kwargs())
    model = pretraining_class(config).train()
    loss = model(**batch).loss
    loss.backward()
    return model, loss


def run_without_hf_mim(folder: Path, classification_auto: str, body: str) -> list[str]:
    """Load a saved remote-code folder in a fresh offline process in which `import hf_mim` fails: `model` (the
    classifier, through the transformers Auto class named `classification_auto`, in eval mode), `features`
    (AutoModel) and `processor` (AutoImageProcessor), checked not to come from hf_mim; then run `body` (Python
    that may use them, `torch`, `pipeline` and `folder`). Returns the lines the process printed."""
    import os
    import subprocess
    import textwrap

    script = textwrap.dedent(f"""
        import sys
        sys.modules["hf_mim"] = None  # make `import hf_mim` fail in this process
        import torch
        from transformers import AutoImageProcessor, AutoModel, {classification_auto}, pipeline
        folder = {str(folder)!r}
        model = {classification_auto}.from_pretrained(folder, trust_remote_code=True).eval()
        features = AutoModel.from_pretrained(folder, trust_remote_code=True)
        processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
        assert not type(model).__module__.startswith("hf_mim"), type(model).__module__
    """) + textwrap.dedent(body)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(Path(folder) / "modules")}
    result = subprocess.run([sys.executable, "-c", script], cwd=folder, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()


def block_masks(config, batch_size: int, seed: int):
    """(B, L) bool block masks of the config's mask fields, as the processor draws them, from `seed`."""
    import random

    import torch

    from hf_mim.modeling.masking import block_mask

    rng = random.Random(seed)
    grid = config.grid_size
    return torch.from_numpy(np.stack([
        block_mask(grid, grid, config.num_masking_patches, config.min_num_patches, rng=rng).reshape(-1)
        for _ in range(batch_size)
    ]))


def assert_round_trip_to_transformers(reference, our_state: dict, key_map, qkv_bias: str) -> set[str]:
    """Our weights, renamed back with the inverted key map and the fused qkv split, are the reference's exactly;
    returns the keys only ours has (e.g. BEiT's fixed-zero key biases), for the caller to check."""
    import torch

    from hf_mim.convert import invert_key_map, rename_keys, split_fused_qkv

    back = rename_keys(split_fused_qkv(our_state, qkv_bias), invert_key_map(key_map))
    source = reference.state_dict()
    assert set(source) <= set(back)
    for key, value in source.items():
        assert torch.equal(back[key], value), key
    return {key: back[key] for key in set(back) - set(source)}


def assert_key_map_reads_saved_layout(reference, ours, key_map, qkv_bias: str, folder, saved_key: str) -> dict:
    """The reference saved with save_pretrained (the names on disk, `saved_key` among them) converts to exactly
    our weights; returns the converted state dict."""
    import torch
    from safetensors.torch import load_file

    from hf_mim.convert import convert_state_dict

    reference.save_pretrained(folder)
    on_disk = load_file(folder / "model.safetensors")
    assert saved_key in on_disk
    converted = convert_state_dict(on_disk, key_map, qkv_bias=qkv_bias)
    for key, value in converted.items():
        assert torch.equal(value, ours.state_dict()[key]), key
    return converted


def per_layer_classifier(folder, classification_class, route: str):
    """A classifier from a pretraining folder with one shared relative position table, switched to per-layer
    tables by the `relative_position_bias` kwarg (route "kwarg") or, as scripts/finetune.py does, by the config's
    `finetune_overrides`."""
    from transformers import AutoConfig, AutoModelForImageClassification

    if route == "kwarg":
        return classification_class.from_pretrained(folder, relative_position_bias="per_layer", num_labels=3)
    config = AutoConfig.from_pretrained(folder)
    config.update(dict(type(config).finetune_overrides))
    config = type(config)(**config.to_dict())
    return AutoModelForImageClassification.from_pretrained(folder, config=config)


def assert_tables_copied_then_kept(model, shared, folder) -> None:
    """Every block holds its own copy of the shared table, and a fine-tuned checkpoint keeps its own tables."""
    import torch

    assert model.config.relative_position_bias == "per_layer" and model.vit.rel_pos_bias is None
    tables = [block.attn.relative_position_bias_table for block in model.vit.blocks]
    assert all(torch.equal(table, shared) for table in tables)
    assert len({table.data_ptr() for table in tables}) == len(tables)  # copies, free to diverge
    with torch.no_grad():
        model.vit.blocks[1].attn.relative_position_bias_table.add_(1.0)
    model.save_pretrained(folder)
    reloaded = type(model).from_pretrained(folder)
    for mine, theirs in zip(model.vit.blocks, reloaded.vit.blocks):
        assert torch.equal(mine.attn.relative_position_bias_table, theirs.attn.relative_position_bias_table)


def assert_mean_pooled_classifier_starts_near_zero(model) -> None:
    """A head of std ~2e-5 and zero bias, mean pooling + fc_norm (no final norm), no mask token, and a gradient
    for every trainable parameter (nothing idle under DDP). `model` takes 32 px images and has 10 labels."""
    import torch

    model.train()
    assert 1e-5 < model.head.weight.std().item() < 3e-5 and model.head.bias.abs().sum() == 0
    assert "vit.mask_token" not in model.state_dict() and model.fc_norm is not None and model.vit.norm is None
    model(pixel_values=torch.randn(2, 3, 32, 32), labels=torch.tensor([1, 2])).loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)  # nothing idle under DDP


def needs_tokenizer(method_name: str) -> bool:
    """Whether the method's default config predicts visual tokens (so a run needs --tokenizer_name_or_path)."""
    import hf_mim

    return hf_mim.get_method(method_name).config_class().needs_tokenizer


def save_tiny_tokenizer(folder: Path, vocab_size: int = 512, image_size: int = 64) -> Path:
    """A randomly initialised dVAE small enough for tests (the demo's vocabulary and 64 px view)."""
    import torch

    from hf_mim.modeling.configuration_dvae import MimDvaeConfig
    from hf_mim.modeling.modeling_dvae import MimDvaeModel

    torch.manual_seed(0)
    config = MimDvaeConfig(vocab_size=vocab_size, hidden_size=8, num_blocks_per_group=1, decoder_init_size=8,
                           image_size=image_size)
    MimDvaeModel(config).save_pretrained(folder)
    return folder


def load_script(name: str):
    """Import scripts/<name>.py as a module (the scripts are not part of the installed package)."""
    path = REPO_ROOT / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"hf_mim_script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def write_image_folder(root: Path, per_class: int = 6, classes=("coat", "shoe"), size=28, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    for name in classes:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            array = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(array).save(folder / f"{i}.png")
    return root


def write_odd_images(folder: Path) -> dict[str, str]:
    """One file per kind of trouble a real dataset holds; returns {kind: filename}."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    files = {}

    def save(kind, image, name, **kwargs):
        image.save(folder / name, **kwargs)
        files[kind] = name

    save("grayscale", Image.fromarray(rgb[..., 0]), "gray.png")
    save("rgba", Image.fromarray(np.dstack([rgb, rgb[..., :1]])), "rgba.png")
    save("palette", Image.fromarray(rgb).convert("P"), "palette.png")
    save("cmyk", Image.fromarray(rgb).convert("CMYK"), "cmyk.jpg")
    sixteen = (rng.integers(0, 65536, (40, 40))).astype(np.uint16)
    save("16bit", Image.fromarray(sixteen), "deep.png")
    save("tiny", Image.fromarray(rgb[:1, :1]), "tiny.png")
    save("rgb", Image.fromarray(rgb), "ok.jpg")
    (folder / "corrupt.jpg").write_bytes(b"this is not an image at all")
    files["corrupt"] = "corrupt.jpg"
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG")
    (folder / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    files["truncated"] = "truncated.jpg"
    return files


def run_launcher(command: list[str], env: dict, timeout: float) -> str:
    """Run a launcher (`accelerate launch ...`) in its own process group, so a timeout takes its worker ranks
    down with it; assert it succeeded and return its stderr."""
    import os
    import signal
    import subprocess

    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    assert process.returncode == 0, stderr[-3000:]
    return stderr
