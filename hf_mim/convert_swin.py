"""Key maps from the published Swin layouts to ours (`MimSimMIMSwin*`), for tests and the checkpoint converter.

Sources: transformers' `SwinForMaskedImageModeling` / `SwinModel` / `SwinForImageClassification` (in-memory names
and the legacy names their files keep), and the official SimMIM Swin checkpoints (`encoder.*`, `decoder.0.*`;
classifiers at the top level). Derived buffers (`relative_position_index`, the shift masks `attn_mask`) are
dropped: our model rebuilds them from the config.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

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


# ------------------------------------------------------------------------------------ reading configs off weights

def swin_fields_from_converted(converted: dict[str, torch.Tensor], image_size: int | None) -> dict:
    """Our Swin config fields from the shapes of a converted state dict (our names): width, patch and channels
    from the patch embedding, depths from the blocks per stage, heads and window from the bias tables (a
    (2w - 1)**2-row table per block), MLP ratio, biases, absolute positions and, for a classifier, the labels.
    The image size is not in the weights unless absolute positions are: `image_size` gives it otherwise."""
    patch_weight = converted["swin.patch_embed.proj.weight"]
    width, channels, patch = patch_weight.shape[0], patch_weight.shape[1], patch_weight.shape[-1]
    blocks = sorted({tuple(map(int, m.groups())) for k in converted
                     if (m := re.match(r"swin\.layers\.(\d+)\.blocks\.(\d+)\.", k))})
    depths = [1 + max(j for i, j in blocks if i == stage) for stage in range(1 + max(i for i, _ in blocks))]
    tables = [converted[f"swin.layers.{stage}.blocks.0.attn.relative_position_bias_table"] for stage in
              range(len(depths))]
    positions = converted.get("swin.absolute_pos_embed")
    if positions is not None:
        image_size = math.isqrt(positions.shape[1]) * patch
    if image_size is None:
        raise ValueError("the weights do not say the image size (no shift masks, no absolute positions): give "
                         "--image_size (192 for the official SimMIM Swin pretraining, 224 for its fine-tuned models)")
    first = "swin.layers.0.blocks.0."
    fields = dict(
        image_size=image_size, patch_size=patch, num_channels=channels, embed_dim=width, depths=depths,
        num_heads=[table.shape[1] for table in tables], window_size=(math.isqrt(tables[0].shape[0]) + 1) // 2,
        mlp_ratio=converted[first + "mlp.fc1.weight"].shape[0] / width, qkv_bias=first + "attn.qkv.bias" in converted,
        use_absolute_embeddings=positions is not None, encoder_stride=patch * 2 ** (len(depths) - 1),
    )
    if "head.weight" in converted:
        fields["num_labels"] = converted["head.weight"].shape[0]
    else:
        fields["use_mask_token"] = "swin.mask_token" in converted
    return fields


def image_size_from_shift_masks(state_dict: dict[str, torch.Tensor], patch_size: int, window_size: int) -> int | None:
    """The image size the official Swin code saved its shift masks (`layers.i.blocks.j.attn_mask`, (windows, N, N))
    for: stage i's grid is sqrt(windows) * window, the image that grid * 2**i * patch. None without masks."""
    for key, mask in state_dict.items():
        found = re.search(r"layers\.(\d+)\.blocks\.\d+\.attn_mask$", key)
        if found:
            return math.isqrt(mask.shape[0]) * window_size * 2 ** int(found.group(1)) * patch_size
    return None


def simmim_official_swin_fields(state_dict, converted, args) -> dict:
    """The official SimMIM Swin: shapes, and the image size its shift masks were built for (else --image_size)."""
    probe = swin_fields_from_converted(converted, image_size=0)
    saved = image_size_from_shift_masks(state_dict, probe["patch_size"], probe["window_size"])
    return swin_fields_from_converted(converted, saved or args.image_size)


def hf_swin_fields(state_dict, converted, args) -> dict:
    """transformers' Swin folder: its config.json (same field names as ours), labels kept for a classifier."""
    from transformers import SwinConfig

    hf_config = SwinConfig.from_pretrained(args.checkpoint)
    fields = swin_fields_from_converted(converted, hf_config.image_size)
    fields.update(hidden_act=hf_config.hidden_act, layer_norm_eps=hf_config.layer_norm_eps)
    if "head.weight" in converted:  # a pretraining model's labels are placeholders
        fields.update(id2label=dict(hf_config.id2label), label2id=dict(hf_config.label2id))
    return fields


def read_hf_swin_folder(path: str) -> dict[str, torch.Tensor]:
    """A transformers Swin folder's weights; a bare `SwinModel`'s keys get the `swin.` prefix its heads use."""
    from .checkpoint_sources import read_hf_folder

    state_dict = read_hf_folder(path)
    bare = ("embeddings.", "encoder.", "layernorm.", "pooler.")
    return {f"swin.{k}" if k.startswith(bare) else k: v for k, v in state_dict.items()}


def resize_swin_tables(converted: dict[str, torch.Tensor], config) -> list[str]:
    """Resample the window bias tables to the config's window size (e.g. `--config_overrides window_size=7`)."""
    return resize_window_bias_tables(converted, config.window_size)


def check_against_hf_swin(args, model) -> float:
    """Our converted model against transformers' own class for the folder: logits, reconstruction or features."""
    import transformers

    from .checkpoint_sources import reference_inputs

    architecture = (json.loads((Path(args.checkpoint) / "config.json").read_text()).get("architectures")
                    or ["SwinModel"])[0]
    reference = getattr(transformers, architecture).from_pretrained(args.checkpoint).eval()
    inputs = reference_inputs(model.config)
    if architecture != "SwinForMaskedImageModeling":
        inputs.pop("bool_masked_pos")
    output = {"SwinForImageClassification": "logits", "SwinForMaskedImageModeling": "reconstruction"}.get(
        architecture, "last_hidden_state")
    with torch.no_grad():
        expected, got = getattr(reference(**inputs), output), getattr(model.eval()(**inputs), output)
    return (expected - got).abs().max().item()
