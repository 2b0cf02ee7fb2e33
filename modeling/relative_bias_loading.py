"""Fine-tuning's start for models with per-layer relative position bias (BEiT, SimMIM): when
the checkpoint only has pretraining's shared table, every block's table begins as a copy of it instead of zeros.

transformers' loader cannot express "initialise this missing key from that other key", so the models read the
shared table from the checkpoint themselves after `from_pretrained`; scripts/convert_checkpoint.py applies the
same rule to a converted state dict.
"""

from __future__ import annotations

import json

import torch
from transformers.utils import logging

logger = logging.get_logger(__name__)

SHARED_TABLE_KEY = "vit.rel_pos_bias.relative_position_bias_table"
LAYER_TABLE_KEY = "vit.blocks.{}.attn.relative_position_bias_table"


def per_layer_tables_from_shared(state_dict: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """Every per-layer table the state dict lacks, as a copy of its shared table (our key names). Empty without a
    shared table."""
    shared = state_dict.get(SHARED_TABLE_KEY)
    if shared is None:
        return {}
    keys = [LAYER_TABLE_KEY.format(i) for i in range(depth)]
    return {key: shared.clone() for key in keys if key not in state_dict}


def init_per_layer_tables_from_checkpoint(model: torch.nn.Module, name_or_path, load_kwargs: dict) -> None:
    """After `from_pretrained(name_or_path, **load_kwargs)`: copy the checkpoint's shared table into the model's
    per-layer tables the checkpoint does not have; a shape mismatch names the table and the likely cause."""
    depth = len(model.vit.blocks)
    keys = [SHARED_TABLE_KEY] + [LAYER_TABLE_KEY.format(i) for i in range(depth)]
    found = checkpoint_tensors(name_or_path, keys, load_kwargs)
    if SHARED_TABLE_KEY not in found:
        if len(found) < depth:
            logger.warning("the checkpoint has neither per-layer nor shared relative position bias tables: the "
                           "missing per-layer tables start at zero")
        return
    copies = per_layer_tables_from_shared(found, depth)
    own = model.state_dict()
    with torch.no_grad():
        for key, shared in copies.items():
            table = own[key]
            if table.shape != shared.shape:
                raise ValueError(
                    f"the checkpoint's shared relative position bias table is {tuple(shared.shape)} but {key} "
                    f"needs {tuple(table.shape)}: the image size, patch size or head count differs"
                )
            table.copy_(shared.to(device=table.device, dtype=table.dtype))
    logger.info("initialised %d per-layer relative position bias tables from the shared table", len(copies))


def checkpoint_tensors(name_or_path, keys: list[str], load_kwargs: dict) -> dict[str, torch.Tensor]:
    """The named tensors present in a saved model (a `state_dict` passed to from_pretrained, or the safetensors
    file(s) of a folder or Hub repo, resolved as from_pretrained resolves them); absent keys are left out."""
    state_dict = load_kwargs.get("state_dict")
    if state_dict is not None:
        return {k: state_dict[k] for k in keys if k in state_dict}
    from safetensors import safe_open
    from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, cached_file

    lookup = {name: load_kwargs[name] for name in ("cache_dir", "revision", "subfolder", "token", "local_files_only")
              if load_kwargs.get(name) is not None}
    lookup.update(_raise_exceptions_for_missing_entries=False, _raise_exceptions_for_connection_errors=False)
    single = cached_file(str(name_or_path), SAFE_WEIGHTS_NAME, **lookup)
    if single is not None:
        files = [single]
    else:
        index = cached_file(str(name_or_path), SAFE_WEIGHTS_INDEX_NAME, **lookup)
        if index is None:
            return {}
        with open(index) as handle:
            weight_map = json.load(handle)["weight_map"]
        files = [cached_file(str(name_or_path), shard, **lookup)
                 for shard in sorted({weight_map[k] for k in keys if k in weight_map})]
    found = {}
    for path in files:
        if path is None:
            continue
        with safe_open(path, framework="pt") as handle:
            present = set(handle.keys())
            found.update({k: handle.get_tensor(k) for k in keys if k in present})
    return found
