#!/usr/bin/env python
"""Publish a trained, fine-tuned or converted hf-mim folder to the Hub.

    python scripts/push_to_hub.py --model_dir outputs/mae-pretrain --hub_model_id org/mae-vit-base --dry_run
    python scripts/push_to_hub.py --model_dir outputs/mae-pretrain --hub_model_id org/mae-vit-base

Checks first that the folder is complete (safetensors weights, config with the remote-code `auto_map`, image
processor, model card whose `base_model` the Hub accepts), so what lands on the Hub loads both with
`import hf_mim` and with trust_remote_code. `--dry_run` checks and lists what would be uploaded, offline.
checkpoints/ (Accelerate training states) and the training logs stay local.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hf_mim_cli.arguments import ArgumentParser, answer_help_early, run_main

REQUIRED = ("model.safetensors", "config.json", "preprocessor_config.json", "README.md")


def check_folder(folder: Path) -> None:
    missing = [name for name in REQUIRED if not (folder / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks {', '.join(missing)}; write it with scripts/pretrain.py, finetune.py, train_tokenizer.py "
            "or convert_checkpoint.py"
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


def card_base_model(folder: Path, base_model: str | None) -> str | None:
    """The card's `base_model`, replaced by `base_model` when given; a local folder stops the push, since the Hub
    takes only model ids there."""
    from huggingface_hub import ModelCard

    card = ModelCard.load(str(folder / "README.md"))
    current = card.data.base_model
    if base_model is not None:
        return base_model
    if current and (Path(current).is_dir() or not HUB_ID.match(current)):
        raise ValueError(f"README.md names base_model {current!r}, a local folder, and the Hub accepts only model "
                         "ids: push that model first, then pass --base_model ORG/NAME to record its id")
    return current


def main(argv=None) -> str | None:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", required=True)
    p.add_argument("--hub_model_id", required=True, help="ORG/NAME")
    p.add_argument("--private", action="store_true")
    p.add_argument("--commit_message", default="Upload with hf-mim")
    p.add_argument("--base_model", help="ORG/NAME the weights came from, written into the card's base_model "
                                        "(needed when the card names a local folder)")
    p.add_argument("--dry_run", action="store_true", help="check the folder and list what would be uploaded, offline")
    args = p.parse_args(argv)
    folder = Path(args.model_dir)
    check_folder(folder)
    base_model = card_base_model(folder, args.base_model)
    files = files_to_upload(folder)
    if args.dry_run:
        print(f"{folder} is complete; would upload {len(files)} files to {args.hub_model_id} "
              f"(base_model: {base_model or 'none'}):")
        for rel in files:
            print(f"  {rel.as_posix()}  {(folder / rel).stat().st_size / 1e6:.3f} MB")
        return None
    if args.base_model is not None:
        from huggingface_hub import ModelCard

        card = ModelCard.load(str(folder / "README.md"))
        card.data.base_model = args.base_model
        card.save(str(folder / "README.md"))
    commit = push_folder(folder, args.hub_model_id, args.commit_message, private=args.private or None)
    print(f"pushed {folder} to {args.hub_model_id} ({commit})")
    return commit


if __name__ == "__main__":
    answer_help_early(main)

# Below the parser: these load torch and transformers, which `--help` does not wait for.
from hf_mim.hub import HUB_ID, files_to_upload, push_folder


if __name__ == "__main__":
    run_main(main)
