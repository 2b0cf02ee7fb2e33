"""Key maps from the published Swin layouts to ours (`MimSimMIMSwin*`), for tests and the checkpoint converter.

Sources: transformers' `SwinForMaskedImageModeling` / `SwinModel` / `SwinForImageClassification` (in-memory names
and the legacy names their files keep), and the official SimMIM Swin checkpoints (`encoder.*`, `decoder.0.*`;
classifiers at the top level). Derived buffers (`relative_position_index`, the shift masks `attn_mask`) are
dropped: our model rebuilds them from the config.
"""

from __future__ import annotations

import re

import torch

from .convert import KeyMap, merge_split_qkv, rename_keys
from .modeling.configuration_simmim_swin import MimSimMIMSwinConfig
from .modeling.vit import resize_relative_position_table

_BLOCK = r"swin\.encoder\.layers\.(\d+)\.blocks\.(\d+)\."
_OURS = r"swin.layers.\1.blocks.\2."

_HF_SHARED_RULES = [
    (r"^swin\.embeddings\.mask_token$", "swin.mask_token"),
    (r"^swin\.embeddings\.position_embeddings$", "swin.absolute_pos_embed"),
    (r"^swin\.embeddings\.patch_embeddings\.projection\.", "swin.patch_embed.proj."),
    (r"^swin\.embeddings\.norm\.", "swin.patch_embed.norm."),
    (rf"^{_BLOCK}layernorm_before\.", rf"{_OURS}norm1."),
    (rf"^{_BLOCK}layernorm_after\.", rf"{_OURS}norm2."),
    (r"^swin\.encoder\.layers\.(\d+)\.downsample\.", r"swin.layers.\1.downsample."),
    (r"^swin\.layernorm\.", "swin.norm."),
    (r"^decoder\.0\.", "decoder.0."),
    (r"^classifier\.", "head."),
]

# transformers' Swin as it is in memory (fused-free q/k/v projections, `o_proj`) and as its files store it.
HF_SWIN = KeyMap(
    rules=[
        *_HF_SHARED_RULES,
        (rf"^{_BLOCK}attention\.(q|k|v)_proj\.", rf"{_OURS}attn.\3_split."),
        (rf"^{_BLOCK}attention\.o_proj\.", rf"{_OURS}attn.proj."),
        (rf"^{_BLOCK}attention\.relative_position_bias\.relative_position_bias_table$",
         rf"{_OURS}attn.relative_position_bias_table"),
        (rf"^{_BLOCK}mlp\.", rf"{_OURS}mlp."),
        (rf"^{_BLOCK}attention\.self\.query\.", rf"{_OURS}attn.q_split."),
        (rf"^{_BLOCK}attention\.self\.key\.", rf"{_OURS}attn.k_split."),
        (rf"^{_BLOCK}attention\.self\.value\.", rf"{_OURS}attn.v_split."),
        (rf"^{_BLOCK}attention\.self\.relative_position_bias_table$", rf"{_OURS}attn.relative_position_bias_table"),
        (rf"^{_BLOCK}attention\.output\.dense\.", rf"{_OURS}attn.proj."),
        (rf"^{_BLOCK}intermediate\.dense\.", rf"{_OURS}mlp.fc1."),
        (rf"^{_BLOCK}output\.dense\.", rf"{_OURS}mlp.fc2."),
    ],
    drop=[r"relative_position_index$"],
)

# The official SimMIM Swin: pretraining checkpoints under `encoder.` (+ `decoder.0.`), fine-tuned ones at the top
# level with a `head.`. Our names are the official ones under `swin.`.
SIMMIM_SWIN_OFFICIAL = KeyMap(
    rules=[
        (r"^encoder\.", "swin."),
        (r"^decoder\.0\.", "decoder.0."),
        (r"^head\.", "head."),
        (r"^(mask_token|absolute_pos_embed|patch_embed\.|layers\.|norm\.)", r"swin.\1"),
    ],
    drop=[r"relative_position_index$", r"\.attn_mask$"],
)


def convert_hf_swin_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers Swin (any of its three heads) -> our state dict, q/k/v projections fused into `attn.qkv`."""
    renamed = rename_keys(state_dict, HF_SWIN)
    has_bias = any(re.search(r"\.attn\.q_split\.bias$", k) for k in renamed)
    return merge_split_qkv(renamed, "full" if has_bias else "none")


def config_from_hf_swin(hf_config, **overrides) -> MimSimMIMSwinConfig:
    """Our config for the architecture of a transformers `SwinConfig` (its field names are ours)."""
    fields = ("image_size", "patch_size", "num_channels", "embed_dim", "depths", "num_heads", "window_size",
              "mlp_ratio", "qkv_bias", "hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate",
              "hidden_act", "use_absolute_embeddings", "layer_norm_eps", "initializer_range", "encoder_stride")
    values = {name: getattr(hf_config, name) for name in fields}
    values["depths"], values["num_heads"] = list(values["depths"]), list(values["num_heads"])
    if hf_config.num_labels and getattr(hf_config, "id2label", None):
        values["id2label"] = dict(hf_config.id2label)
    return MimSimMIMSwinConfig(**{**values, **overrides})


def resize_window_bias_tables(state_dict: dict[str, torch.Tensor], window_size: int) -> list[str]:
    """Resample every block's relative position bias table (our names) in place for another window size, as the
    official fine-tuning does from 192 px / window 6 to 224 px / window 7 (bicubic per head, offset 0 kept at the
    centre; see `resize_relative_position_table`). Returns the keys it changed."""
    changed = []
    for key in [k for k in state_dict if k.endswith(".attn.relative_position_bias_table")]:
        resized = resize_relative_position_table(state_dict[key], (window_size, window_size), num_cls_rows=0)
        if resized is not state_dict[key]:
            state_dict[key] = resized
            changed.append(key)
    return changed
