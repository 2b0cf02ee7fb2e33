"""Checkpoint conversion by declarative key maps: a source is a list of (regex, replacement) rules, applied to
every key, followed by the merge of split q/k/v projections into our fused `qkv`.

Every key must be matched by a rule or listed as dropped; anything else is an error naming the key, so a
checkpoint of the wrong method or a truncated file fails loudly instead of loading half the weights.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class KeyMap:
    """rules: (pattern, replacement) tried in order, first match wins. drop: patterns of keys to discard."""

    rules: list[tuple[str, str]]
    drop: list[str] = field(default_factory=list)


# transformers' ViT layer {i} under `{src}` -> our block {i} under `{dst}` (templates for `layer_rules`).
HF_VIT_NORM_RULES = [
    (r"^{src}\.(\d+)\.layernorm_before\.", r"{dst}.\1.norm1."),
    (r"^{src}\.(\d+)\.layernorm_after\.", r"{dst}.\1.norm2."),
]
HF_VIT_LAYER_RULES = [
    (r"^{src}\.(\d+)\.attention\.(q|k|v)_proj\.", r"{dst}.\1.attn.\2_split."),
    (r"^{src}\.(\d+)\.attention\.o_proj\.", r"{dst}.\1.attn.proj."),
    *HF_VIT_NORM_RULES,
    (r"^{src}\.(\d+)\.mlp\.", r"{dst}.\1.mlp."),
]


# The same layers as `save_pretrained` writes them to disk (transformers keeps the legacy names in files).
HF_VIT_LAYER_RULES_ON_DISK = [
    *((rf"^{{src}}\.(\d+)\.attention\.attention\.{name}\.", rf"{{dst}}.\1.attn.{name[0]}_split.")
      for name in ("query", "key", "value")),
    (r"^{src}\.(\d+)\.attention\.output\.dense\.", r"{dst}.\1.attn.proj."),
    (r"^{src}\.(\d+)\.intermediate\.dense\.", r"{dst}.\1.mlp.fc1."),
    (r"^{src}\.(\d+)\.output\.dense\.", r"{dst}.\1.mlp.fc2."),
    *HF_VIT_NORM_RULES,
]


# BEiT's layers add layer scale and, when fine-tuned, their own relative position tables.
HF_BEIT_LAYER_SCALE_RULES = [(r"^{src}\.(\d+)\.lambda_%d$" % i, r"{dst}.\1.gamma_%d" % i) for i in (1, 2)]
HF_BEIT_LAYER_RULES = [
    *HF_BEIT_LAYER_SCALE_RULES,
    (r"^{src}\.(\d+)\.relative_position_bias\.relative_position_bias_table$",
     r"{dst}.\1.attn.relative_position_bias_table"),
    *HF_VIT_LAYER_RULES,
]
HF_BEIT_LAYER_RULES_ON_DISK = [
    *HF_BEIT_LAYER_SCALE_RULES,
    (r"^{src}\.(\d+)\.attention\.attention\.relative_position_bias\.relative_position_bias_table$",
     r"{dst}.\1.attn.relative_position_bias_table"),
    *HF_VIT_LAYER_RULES_ON_DISK,
]
# transformers' embedding tensors, by their name under `<model>.embeddings.`, and ours under `vit.`
HF_EMBEDDING_NAMES = {"cls_token": "cls_token", "mask_token": "mask_token", "position_embeddings": "pos_embed"}


def layer_rules(src: str, dst: str, rules=HF_VIT_LAYER_RULES) -> list[tuple[str, str]]:
    return [(p.format(src=re.escape(src)), r.format(dst=dst)) for p, r in rules]


def embedding_rules(src: str, *tensors: str) -> list[tuple[str, str]]:
    """transformers' `<src>.embeddings.` tensors (names of `HF_EMBEDDING_NAMES`) and patch projection -> `vit.`"""
    prefix = rf"^{re.escape(src)}\.embeddings\."
    return [*((rf"{prefix}{name}$", f"vit.{HF_EMBEDDING_NAMES[name]}") for name in tensors),
            (rf"{prefix}patch_embeddings\.projection\.", "vit.patch_embed.proj.")]


HF_VIT_MAE = KeyMap(
    rules=[
        *embedding_rules("vit", "cls_token", "position_embeddings"),
        *layer_rules("vit.layers", "vit.blocks"),
        (r"^vit\.layernorm\.", "vit.norm."),
        (r"^decoder\.mask_token$", "decoder.mask_token"),
        (r"^decoder\.decoder_pos_embed$", "decoder.pos_embed"),
        (r"^decoder\.decoder_embed\.", "decoder.embed."),
        *layer_rules("decoder.decoder_layers", "decoder.blocks"),
        (r"^decoder\.decoder_norm\.", "decoder.norm."),
        (r"^decoder\.decoder_pred\.", "decoder.pred."),
        *layer_rules("vit.encoder.layer", "vit.blocks", HF_VIT_LAYER_RULES_ON_DISK),
        *layer_rules("decoder.decoder_encoder.layer", "decoder.blocks", HF_VIT_LAYER_RULES_ON_DISK),
    ]
)


# transformers BeitForMaskedImageModeling / BeitForImageClassification, in memory and as saved on disk.
HF_BEIT = KeyMap(
    rules=[
        *embedding_rules("beit", "cls_token", "mask_token", "position_embeddings"),
        (r"^beit\.shared_position_bias\.relative_position_bias_table$",
         "vit.rel_pos_bias.relative_position_bias_table"),
        *layer_rules("beit.layers", "vit.blocks", HF_BEIT_LAYER_RULES),
        (r"^layernorm\.", "vit.norm."),
        (r"^lm_head\.", "lm_head."),
        (r"^beit\.pooler\.layernorm\.", "fc_norm."),
        (r"^classifier\.", "head."),
        # on disk
        (r"^beit\.encoder\.relative_position_bias\.relative_position_bias_table$",
         "vit.rel_pos_bias.relative_position_bias_table"),
        *layer_rules("beit.encoder.layer", "vit.blocks", HF_BEIT_LAYER_RULES_ON_DISK),
    ]
)


# transformers ViTForMaskedImageModeling (SimMIM in its plain-ViT configuration), in memory and on disk.
HF_VIT_MIM = KeyMap(
    rules=[
        *embedding_rules("vit", "cls_token", "mask_token", "position_embeddings"),
        *layer_rules("vit.layers", "vit.blocks"),
        (r"^vit\.layernorm\.", "vit.norm."),
        (r"^decoder\.0\.", "decoder.0."),
        *layer_rules("vit.encoder.layer", "vit.blocks", HF_VIT_LAYER_RULES_ON_DISK),
    ]
)


def rename_keys(state_dict: dict[str, torch.Tensor], key_map: KeyMap) -> dict[str, torch.Tensor]:
    """Apply the rules; raise naming every key no rule matches."""
    renamed, unmatched = {}, []
    for key, value in state_dict.items():
        if any(re.search(p, key) for p in key_map.drop):
            continue
        for pattern, replacement in key_map.rules:
            if re.search(pattern, key):
                renamed[re.sub(pattern, replacement, key)] = value
                break
        else:
            unmatched.append(key)
    if unmatched:
        raise KeyError(
            f"{len(unmatched)} checkpoint keys match no rule of this source (wrong --from, or another method's "
            f"checkpoint?): {unmatched[:10]}"
        )
    return renamed


def merge_split_qkv(state_dict: dict[str, torch.Tensor], qkv_bias: str) -> dict[str, torch.Tensor]:
    """`attn.{q,k,v}_split.{weight,bias}` -> `attn.qkv.weight` and either `attn.qkv.bias` ("full") or
    `attn.q_bias`/`attn.v_bias` ("qv", where a key bias, if present, must be zero)."""
    out = {k: v for k, v in state_dict.items() if "_split." not in k}
    prefixes = sorted({k.split(".q_split.")[0] for k in state_dict if ".q_split." in k})
    for prefix in prefixes:
        parts = {n: state_dict.get(f"{prefix}.{n}_split.weight") for n in "qkv"}
        if any(p is None for p in parts.values()):
            raise KeyError(f"{prefix}: query, key and value weights must all be present")
        out[f"{prefix}.qkv.weight"] = torch.cat([parts["q"], parts["k"], parts["v"]])
        biases = {n: state_dict.get(f"{prefix}.{n}_split.bias") for n in "qkv"}
        if qkv_bias == "full":
            zeros = torch.zeros_like(parts["q"][:, 0])
            out[f"{prefix}.qkv.bias"] = torch.cat([b if b is not None else zeros for b in biases.values()])
        elif qkv_bias == "qv":
            if biases["k"] is not None and biases["k"].abs().max() > 0:
                raise ValueError(f"{prefix}: a non-zero key bias cannot be expressed with BEiT-style q/v biases")
            out[f"{prefix}.q_bias"], out[f"{prefix}.v_bias"] = biases["q"], biases["v"]
    return out


def split_fused_qkv(state_dict: dict[str, torch.Tensor], qkv_bias: str) -> dict[str, torch.Tensor]:
    """Inverse of `merge_split_qkv`: our fused layout -> `attn.{q,k,v}_split.*` (key bias zero for "qv")."""
    out = {k: v for k, v in state_dict.items() if not re.search(r"\.attn\.(qkv\.|q_bias$|v_bias$)", k)}
    for key in [k for k in state_dict if k.endswith(".attn.qkv.weight")]:
        prefix = key[: -len(".qkv.weight")]
        for name, weight in zip("qkv", state_dict[key].chunk(3)):
            out[f"{prefix}.{name}_split.weight"] = weight
        if qkv_bias == "full":
            for name, bias in zip("qkv", state_dict[f"{prefix}.qkv.bias"].chunk(3)):
                out[f"{prefix}.{name}_split.bias"] = bias
        elif qkv_bias == "qv":
            q_bias = state_dict[f"{prefix}.q_bias"]
            out[f"{prefix}.q_split.bias"], out[f"{prefix}.k_split.bias"] = q_bias, torch.zeros_like(q_bias)
            out[f"{prefix}.v_split.bias"] = state_dict[f"{prefix}.v_bias"]
    return out


def convert_state_dict(state_dict: dict[str, torch.Tensor], key_map: KeyMap, qkv_bias: str) -> dict[str, torch.Tensor]:
    return merge_split_qkv(rename_keys(state_dict, key_map), qkv_bias)


def invert_key_map(key_map: KeyMap) -> KeyMap:
    """Our names -> the source's, for rules whose replacement is a plain prefix (no regex groups beyond \\1, \\2)."""
    inverse = []
    for pattern, replacement in key_map.rules:
        src = pattern.lstrip("^").rstrip("$")
        groups = iter([r"(\d+)", r"(q|k|v)"])
        dst_pattern = "^" + re.sub(r"\\\d", lambda _: next(groups), re.escape(replacement).replace(r"\\", "\\"))
        src_replacement = src.replace(r"(\d+)", r"\1").replace(r"(q|k|v)", r"\2").replace("\\.", ".")
        inverse.append((dst_pattern + ("$" if pattern.endswith("$") else ""), src_replacement))
    return KeyMap(rules=inverse)


def load_converted(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Strict load with a report that names every missing, unexpected and mis-shaped key."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
              for k, v in state_dict.items() if k in own and own[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise ValueError(
            "checkpoint does not fit the model config:\n"
            f"  missing ({len(missing)}): {missing[:10]}\n  unexpected ({len(unexpected)}): {unexpected[:10]}\n"
            f"  shape mismatches ({len(shapes)}): {shapes[:10]}"
        )
    model.load_state_dict(state_dict, strict=True)


# ----------------------------------------------------------------------------------------------- sources

MAE_OFFICIAL = KeyMap(
    rules=[
        (r"^(cls_token|pos_embed)$", r"vit.\1"),
        (r"^patch_embed\.proj\.", "vit.patch_embed.proj."),
        (r"^blocks\.", "vit.blocks."),
        (r"^norm\.", "vit.norm."),
        (r"^fc_norm\.", "fc_norm."),
        (r"^head\.", "head."),
        (r"^mask_token$", "decoder.mask_token"),
        (r"^decoder_pos_embed$", "decoder.pos_embed"),
        (r"^decoder_embed\.", "decoder.embed."),
        (r"^decoder_blocks\.", "decoder.blocks."),
        (r"^decoder_norm\.", "decoder.norm."),
        (r"^decoder_pred\.", "decoder.pred."),
    ]
)

# Heads of the published ViT sizes, by width. Shapes do not reveal the head count, so it comes from this table
# (or --num_attention_heads), never from a file name.
HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Load foreign weights without executing code: safetensors, or torch files with `weights_only=True`.
    Training checkpoints keep the weights under "model", "state_dict", "module" (official repos, mmpretrain) or
    "model_state" (SlowFast); those are unwrapped."""
    import os

    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, pickled code, not a torch file at all
        raise ValueError(
            f"cannot read {path} as a weights-only torch checkpoint ({type(error).__name__}: {str(error)[:200]}). "
            "The file may be truncated, or it pickles code, which we refuse to execute; re-save it as a state dict "
            "or safetensors"
        ) from error
    for key in ("model", "state_dict", "module", "model_state"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return obj


def block_count(state_dict: dict[str, torch.Tensor], prefix: str) -> int:
    ids = {int(m.group(1)) for k in state_dict for m in [re.match(re.escape(prefix) + r"(\d+)\.", k)] if m}
    return max(ids) + 1 if ids else 0


def heads_for(width: int, override: int | None) -> int:
    if override:
        return override
    if width not in HEADS_BY_WIDTH:
        raise ValueError(f"no standard head count for width {width}; pass --num_attention_heads")
    return HEADS_BY_WIDTH[width]


def mae_config_from_official(state_dict: dict[str, torch.Tensor], num_heads: int | None = None) -> dict:
    """Config fields read off an official MAE state dict's shapes (decoder fields only when a decoder is present)."""
    width = state_dict["cls_token"].shape[-1]
    patch_weight = state_dict["patch_embed.proj.weight"]
    patch = patch_weight.shape[-1]
    grid = int(math.isqrt(state_dict["pos_embed"].shape[1] - 1)) if "pos_embed" in state_dict else 224 // patch
    fields = dict(hidden_size=width, patch_size=patch, num_channels=patch_weight.shape[1], image_size=grid * patch,
                  num_hidden_layers=block_count(state_dict, "blocks."), num_attention_heads=heads_for(width, num_heads),
                  intermediate_size=state_dict["blocks.0.mlp.fc1.weight"].shape[0])
    if "decoder_embed.weight" in state_dict:
        dec = state_dict["decoder_embed.weight"].shape[0]
        fields.update(decoder_hidden_size=dec, decoder_num_hidden_layers=block_count(state_dict, "decoder_blocks."),
                      decoder_num_attention_heads=16 if dec == 512 else max(dec // 32, 1),
                      decoder_intermediate_size=state_dict["decoder_blocks.0.mlp.fc1.weight"].shape[0])
    if "head.weight" in state_dict:
        fields.update(num_labels=state_dict["head.weight"].shape[0],
                      pooling="mean" if "fc_norm.weight" in state_dict else "cls", train_position_embeddings=True)
    return fields


def resize_position_tables(state_dict: dict[str, torch.Tensor], new_grid: int) -> None:
    """Resample, in place and in our key names, every absolute position table (`*pos_embed`, cls row kept,
    bicubic) and every relative position bias table (offset grid per head, the 3 cls rows kept) for another
    patch grid."""
    from hf_mim.modeling.vit import resize_position_table, resize_relative_position_table

    for key, table in state_dict.items():
        if key.endswith("pos_embed"):
            state_dict[key] = resize_position_table(table, (new_grid, new_grid))
        elif key.endswith("relative_position_bias_table"):
            state_dict[key] = resize_relative_position_table(table, (new_grid, new_grid))


def recompute_fixed_position_tables(model: torch.nn.Module) -> list[str]:
    """After a resize, give every frozen sin-cos table (`pos_embed` that takes no gradient, e.g. MAE's encoder in
    pretraining and its decoder, CAE's encoder) the exact table of the new grid: it is a function of the grid, and
    the bicubic resample of `resize_position_tables` is only close to it. Learned tables keep the resample, as
    the official fine-tuning code does. Returns the names rewritten."""
    rewritten = []
    for name, module in model.named_modules():
        table = getattr(module, "pos_embed", None)
        if isinstance(table, torch.nn.Parameter) and not table.requires_grad and hasattr(module, "position_table"):
            with torch.no_grad():
                table.copy_(module.position_table().to(table.dtype))
            rewritten.append(f"{name}.pos_embed" if name else "pos_embed")
    return rewritten


def vit_config_from_converted(state_dict: dict[str, torch.Tensor], num_heads: int | None = None,
                              default_position_embedding: str = "learned") -> dict:
    """Backbone config fields read off a state dict already in our key names, so one reader serves every source.

    Heads come from a relative position table when there is one (its columns), else from the standard ViT sizes
    or `num_heads`. The grid comes from the absolute or relative position table (else 224 px). The switches are
    what the tensors show: q/v or full qkv bias, layer scale (its value is loaded; the config only needs it on),
    shared or per-layer relative position bias, absolute positions (`default_position_embedding`, the method's
    own kind) or none, and for a classifier the label count and pooling (mean when there is an fc_norm).
    """
    width = state_dict["vit.cls_token"].shape[-1]
    patch_weight = state_dict["vit.patch_embed.proj.weight"]
    patch = patch_weight.shape[-1]
    depth = block_count(state_dict, "vit.blocks.")
    tables = {k: v for k, v in state_dict.items() if k.endswith("relative_position_bias_table")}
    some_table = next(iter(tables.values()), None)
    if "vit.pos_embed" in state_dict:
        grid = int(math.isqrt(state_dict["vit.pos_embed"].shape[1] - 1))
    elif some_table is not None:
        grid = (int(math.isqrt(some_table.shape[0] - 3)) + 1) // 2
    else:
        grid = 224 // patch
    block = "vit.blocks.0."
    fields = dict(
        hidden_size=width, patch_size=patch, num_channels=patch_weight.shape[1], image_size=grid * patch,
        num_hidden_layers=depth, intermediate_size=state_dict[block + "mlp.fc1.weight"].shape[0],
        num_attention_heads=some_table.shape[1] if some_table is not None else heads_for(width, num_heads),
        qkv_bias="qv" if block + "attn.q_bias" in state_dict else "full" if block + "attn.qkv.bias" in state_dict else "none",
        layer_scale_init_value=0.1 if block + "gamma_1" in state_dict else 0.0,
        relative_position_bias="shared" if "vit.rel_pos_bias.relative_position_bias_table" in state_dict
        else "per_layer" if block + "attn.relative_position_bias_table" in state_dict else "none",
        position_embedding_type=default_position_embedding if "vit.pos_embed" in state_dict else "none",
    )
    if "head.weight" in state_dict:
        fields.update(num_labels=state_dict["head.weight"].shape[0],
                      pooling="mean" if "fc_norm.weight" in state_dict else "cls")
    return fields


# ------------------------------------------------------------------------------------------ official layouts

# Buffers the official models save but that are derived from the grid; ours are rebuilt, never loaded.
RECOMPUTED_BUFFERS = [r"relative_position_index$", r"\.attn_mask$"]  # Swin: its shift masks too


def timm_vit_rules(prefix: str = "") -> list[tuple[str, str]]:
    """The timm/BEiT ViT layout the official BEiT, SimMIM, CAE and SlowFast code share (`blocks.{i}.attn.qkv`,
    `gamma_1`, `rel_pos_bias`, ...), whose block names are ours, optionally under `prefix` (e.g. "encoder.")."""
    p = f"(?:{re.escape(prefix)})?" if prefix else ""
    return [
        (rf"^{p}(cls_token|pos_embed|mask_token)$", r"vit.\1"),
        (rf"^{p}patch_embed\.proj\.", "vit.patch_embed.proj."),
        (rf"^{p}rel_pos_bias\.relative_position_bias_table$", "vit.rel_pos_bias.relative_position_bias_table"),
        (rf"^{p}blocks\.", "vit.blocks."),
        (rf"^{p}norm\.", "vit.norm."),
        (r"^fc_norm\.", "fc_norm."),
        (r"^head\.", "head."),
    ]


# microsoft/unilm beit: pretraining (shared table, mask token, lm_head) or fine-tuned (per-layer tables, fc_norm, head).
BEIT_UNILM = KeyMap(rules=[*timm_vit_rules(), (r"^lm_head\.", "lm_head.")], drop=RECOMPUTED_BUFFERS)

# microsoft/SimMIM ViT: pretraining under `encoder.` with the `decoder.0` 1x1 conv, or the fine-tuned plain layout.
SIMMIM_OFFICIAL = KeyMap(rules=[*timm_vit_rules("encoder."), (r"^decoder\.0\.", "decoder.0.")], drop=RECOMPUTED_BUFFERS)

# facebookresearch/SlowFast MaskMViT in its ViT configuration. Pretraining deletes the encoder's final norm: the
# head's own LayerNorm (`pred_head.transforms.0.0`) sits where ours is. Fine-tuning (USE_MEAN_POOLING) applies
# `norm` after the mean of the patch tokens, i.e. our fc_norm, and `head.projection` is the classifier.
MASKFEAT_SLOWFAST = KeyMap(rules=[
    (r"^pred_head\.transforms\.0\.0\.", "vit.norm."),
    (r"^pred_head\.projections\.0\.", "pred_head."),
    (r"^norm\.", "fc_norm."),
    (r"^head\.projection\.", "head."),
    *timm_vit_rules(),
])

# lxtGH/CAE: the encoder is kept; the teacher, the regressor/decoder neck and the regressor's mask token are
# dropped (the official fine-tuning code drops them too). A pretraining `encoder.norm` stays `vit.norm`; our
# classifier loads it into fc_norm.
CAE_OFFICIAL = KeyMap(
    rules=timm_vit_rules("encoder."),
    drop=[*RECOMPUTED_BUFFERS, r"^teacher\.", r"^pretext_neck\.", r"^mask_token$", r"^encoder_to_decoder"],
)


# open-mmlab/mmpretrain ViT and BEiT-ViT backbones with a linear classification head.
MMPRETRAIN_RULES = [
    (r"^backbone\.(cls_token|pos_embed|mask_token)$", r"vit.\1"),
    (r"^backbone\.patch_embed\.projection\.", "vit.patch_embed.proj."),
    (r"^backbone\.rel_pos_bias\.relative_position_bias_table$", "vit.rel_pos_bias.relative_position_bias_table"),
    (r"^backbone\.layers\.(\d+)\.ln1\.", r"vit.blocks.\1.norm1."),
    (r"^backbone\.layers\.(\d+)\.ln2\.", r"vit.blocks.\1.norm2."),
    (r"^backbone\.layers\.(\d+)\.attn\.", r"vit.blocks.\1.attn."),
    (r"^backbone\.layers\.(\d+)\.ffn\.layers\.0\.0\.", r"vit.blocks.\1.mlp.fc1."),
    (r"^backbone\.layers\.(\d+)\.ffn\.layers\.1\.", r"vit.blocks.\1.mlp.fc2."),
    (r"^backbone\.layers\.(\d+)\.gamma_(1|2)$", r"vit.blocks.\1.gamma_\2"),
    (r"^backbone\.ln1\.", "vit.norm."),  # final_norm
    (r"^backbone\.ln2\.", "fc_norm."),  # out_type="avg_featmap": the norm after mean pooling
    (r"^head\.fc\.", "head."),  # LinearClsHead
]

# mmpretrain MaskFeat: MaskFeatViT backbone + LinearNeck (the HOG head); the HOG generator's filters are dropped.
MASKFEAT_MMPRETRAIN = KeyMap(rules=[*MMPRETRAIN_RULES, (r"^neck\.fc\.", "pred_head.")],
                             drop=[r"^target_generator\."])

# mmpretrain CAE: the backbone is kept; the teacher, CAENeck and the DALL-E target generator are dropped.
CAE_MMPRETRAIN = KeyMap(rules=MMPRETRAIN_RULES,
                        drop=[*RECOMPUTED_BUFFERS, r"^teacher\.", r"^neck\.", r"^target_generator\."])


def dropped_keys(state_dict: dict[str, torch.Tensor], key_map: KeyMap) -> list[str]:
    """The keys the source's map discards on purpose, less the derived buffers: what a summary should name."""
    return [k for k in state_dict if any(re.search(p, k) for p in key_map.drop)
            and not any(re.search(p, k) for p in RECOMPUTED_BUFFERS)]


def key_groups(keys) -> list[str]:
    """Keys collapsed to their first name for a report: `teacher.blocks.3.attn.qkv.weight` -> `teacher.*`."""
    return sorted({k.split(".")[0] + (".*" if "." in k else "") for k in keys})
