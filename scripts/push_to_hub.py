#!/usr/bin/env python
"""Publish a trained, fine-tuned or converted hf-mim folder to the Hub.

    python scripts/push_to_hub.py --model_dir outputs/mae-pretrain --hub_model_id org/mae-vit-base

Checks first that the folder is complete (safetensors weights, config with the remote-code `auto_map`, image
processor, model card), so what lands on the Hub loads both with `import hf_mim` and with trust_remote_code.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hf_mim.arguments import ArgumentParser, run_main
from hf_mim.hub import push_folder

REQUIRED = ("model.safetensors", "config.json", "preprocessor_config.json", "README.md")


def check_folder(folder: Path) -> None:
    missing = [name for name in REQUIRED if not (folder / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks {', '.join(missing)}; write it with scripts/pretrain.py, finetune.py or convert_checkpoint.py"
        )
    if list(folder.glob("*.bin")) or list(folder.glob("*.pt")) or list(folder.glob("*.pth")):
        raise ValueError(f"{folder} holds pickle-based weights; publish safetensors only (save_pretrained writes them)")
    auto_map = json.loads((folder / "config.json").read_text()).get("auto_map", {})
    for entry in ("AutoConfig", "AutoModel", "AutoImageProcessor"):
        if entry not in auto_map:
            raise ValueError(f"config.json has no auto_map[{entry!r}]; re-save the model with save_pretrained")
        module = auto_map[entry].split(".")[0]
        if not (folder / f"{module}.py").exists():
            raise FileNotFoundError(f"{module}.py (remote code for {entry}) is missing from {folder}")


def main(argv=None) -> str:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", required=True)
    p.add_argument("--hub_model_id", required=True, help="ORG/NAME")
    p.add_argument("--private", action="store_true")
    p.add_argument("--commit_message", default="Upload with hf-mim")
    args = p.parse_args(argv)
    folder = Path(args.model_dir)
    check_folder(folder)
    commit = push_folder(folder, args.hub_model_id, args.commit_message, private=args.private or None)
    print(f"pushed {folder} to {args.hub_model_id} ({commit})")
    return commit


if __name__ == "__main__":
    run_main(main)
