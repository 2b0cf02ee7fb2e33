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
