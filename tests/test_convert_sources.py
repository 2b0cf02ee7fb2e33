"""scripts/convert_checkpoint.py for the official BEiT, SimMIM, MaskFeat and CAE layouts and the transformers BEiT and
ViT-MIM folders: every official state dict below is written out from the source's layout (module names and shapes
of its code), not from our model, for a tiny size and for ViT-B/16."""

import json

import pytest
import torch
from PIL import Image
from transformers import (AutoModel, AutoModelForImageClassification, AutoModelForPreTraining, BeitConfig,
                          BeitForImageClassification, BeitForMaskedImageModeling, BeitImageProcessor, ViTConfig,
                          ViTForMaskedImageModeling)
from transformers.initialization import no_init_weights

import hf_mim  # noqa: F401  (registers the Auto classes)
from hf_mim.convert import HF_BEIT, HF_VIT_MIM, invert_key_map, rename_keys, split_fused_qkv
from hf_mim.modeling.vit import resize_relative_position_table

from helpers import load_script

convert = load_script("convert_checkpoint")

# width, depth, heads, patch, grid; the tiny grid (16) is large enough for every method's default mask counts
TINY = dict(width=32, depth=4, heads=4, patch=2, grid=16, vocab=64)
TINY_HOG = dict(TINY, patch=8)  # MaskFeat's 8-px HOG cells need patches of at least 8 px
VIT_B = dict(width=768, depth=12, heads=12, patch=16, grid=14, vocab=8192)


class Layout:
    """Random tensors under official names; `t` draws a tensor of a shape."""

    def __init__(self, width, depth, heads, patch, grid, vocab, seed=0):
        self.width, self.depth, self.heads, self.patch, self.grid, self.vocab = width, depth, heads, patch, grid, vocab
        self.generator = torch.Generator().manual_seed(seed)
        self.table_rows = (2 * grid - 1) ** 2 + 3
        self.tokens = grid * grid + 1

    def t(self, *shape):
        return torch.randn(*shape, generator=self.generator) * 0.02

    def norm(self, name, dim=None):
        dim = dim or self.width
        return {f"{name}.weight": 1 + self.t(dim), f"{name}.bias": self.t(dim)}

    def linear(self, name, out_dim, in_dim, bias=True):
        return {f"{name}.weight": self.t(out_dim, in_dim), **({f"{name}.bias": self.t(out_dim)} if bias else {})}

    def index(self):
        return torch.zeros(self.tokens, self.tokens, dtype=torch.long)

    def timm_block(self, prefix, qkv="qv", layer_scale=True, table=False):
        """A block of the timm/BEiT layout (unilm BEiT, SimMIM, CAE, SlowFast's ViT configuration)."""
        return self.block(prefix, ("norm1", "norm2", "mlp.fc1", "mlp.fc2"), qkv, layer_scale, table)

    def mmpretrain_layer(self, prefix, qkv="full", layer_scale=False, table=False):
        """mmpretrain's TransformerEncoderLayer / BEiTTransformerEncoderLayer (ln1, attn, ln2, ffn.layers)."""
        return self.block(prefix, ("ln1", "ln2", "ffn.layers.0.0", "ffn.layers.1"), qkv, layer_scale, table)

    def block(self, prefix, names, qkv, layer_scale, table):
        """One pre-norm block whose norms and MLP layers are called `names` (norm1, norm2, fc1, fc2)."""
        d = self.width
        norm1, norm2, fc1, fc2 = names
        sd = {**self.norm(f"{prefix}.{norm1}"), **self.linear(f"{prefix}.attn.qkv", 3 * d, d, bias=qkv == "full"),
              **self.linear(f"{prefix}.attn.proj", d, d), **self.norm(f"{prefix}.{norm2}"),
              **self.linear(f"{prefix}.{fc1}", 4 * d, d), **self.linear(f"{prefix}.{fc2}", d, 4 * d)}
        if qkv == "qv":
            sd.update({f"{prefix}.attn.q_bias": self.t(d), f"{prefix}.attn.v_bias": self.t(d)})
        if layer_scale:
            sd.update({f"{prefix}.gamma_1": 0.1 + self.t(d), f"{prefix}.gamma_2": 0.1 + self.t(d)})
        if table:
            sd.update({f"{prefix}.attn.relative_position_bias_table": self.t(self.table_rows, self.heads),
                       f"{prefix}.attn.relative_position_index": self.index()})
        return sd

    def embeddings(self, prefix="", pos=False, mask=False, proj="proj"):
        sd = {f"{prefix}cls_token": self.t(1, 1, self.width),
              **self.linear(f"{prefix}patch_embed.{proj}", self.width, 3 * self.patch * self.patch)}
        sd[f"{prefix}patch_embed.{proj}.weight"] = sd[f"{prefix}patch_embed.{proj}.weight"].reshape(
            self.width, 3, self.patch, self.patch)
        if pos:
            sd[f"{prefix}pos_embed"] = self.t(1, self.tokens, self.width)
        if mask:
            sd[f"{prefix}mask_token"] = self.t(1, 1, self.width)
        return sd

    def classifier(self, norm="fc_norm", head="head", labels=5):
        return {**self.norm(norm), **self.linear(head, labels, self.width)}

    def cae_regressor_block(self, prefix, names=("norm1_q", "norm1_k", "norm1_v", "norm2_cross"), mlp="mlp_cross"):
        d = self.width
        sd = {k: v for name in names for k, v in self.norm(f"{prefix}.{name}").items()}
        for name in "qkv":
            sd[f"{prefix}.cross_attn.{name}.weight"] = self.t(d, d)
        sd.update({f"{prefix}.cross_attn.q_bias": self.t(d), f"{prefix}.cross_attn.v_bias": self.t(d),
                   **self.linear(f"{prefix}.cross_attn.proj", d, d),
                   f"{prefix}.gamma_1_cross": self.t(d), f"{prefix}.gamma_2_cross": self.t(d)})
        if mlp == "mlp_cross":
            sd.update({**self.linear(f"{prefix}.mlp_cross.fc1", 4 * d, d), **self.linear(f"{prefix}.mlp_cross.fc2", d, 4 * d)})
        else:
            sd.update({**self.linear(f"{prefix}.ffn.layers.0.0", 4 * d, d), **self.linear(f"{prefix}.ffn.layers.1", d, 4 * d)})
        return sd


# --------------------------------------------------------------------------------------------- the layouts


def beit_unilm(L: Layout, finetuned: bool) -> dict:
    """microsoft/unilm beit/modeling_pretrain.py and modeling_finetune.py (use_mean_pooling: norm is Identity)."""
    if finetuned:
        sd = L.embeddings()
        for i in range(L.depth):
            sd.update(L.timm_block(f"blocks.{i}", table=True))
        return {**sd, **L.classifier()}
    sd = {**L.embeddings(mask=True), "rel_pos_bias.relative_position_bias_table": L.t(L.table_rows, L.heads),
          "rel_pos_bias.relative_position_index": L.index()}
    for i in range(L.depth):
        sd.update(L.timm_block(f"blocks.{i}"))
    return {**sd, **L.norm("norm"), **L.linear("lm_head", L.vocab, L.width)}


def simmim_official(L: Layout, finetuned: bool) -> dict:
    """microsoft/SimMIM models/simmim.py (SimMIM(encoder=VisionTransformerForSimMIM), USE_SHARED_RPB) and the
    fine-tuning VisionTransformer (USE_RPB, USE_MEAN_POOLING)."""
    if finetuned:
        return beit_unilm(L, finetuned=True)
    sd = {**L.embeddings("encoder.", mask=True),
          "encoder.rel_pos_bias.relative_position_bias_table": L.t(L.table_rows, L.heads),
          "encoder.rel_pos_bias.relative_position_index": L.index()}
    for i in range(L.depth):
        sd.update(L.timm_block(f"encoder.blocks.{i}"))
    stride = L.patch
    return {**sd, **L.norm("encoder.norm"), "decoder.0.weight": L.t(stride * stride * 3, L.width, 1, 1),
            "decoder.0.bias": L.t(stride * stride * 3)}


def maskfeat_slowfast(L: Layout, finetuned: bool) -> dict:
    """facebookresearch/SlowFast MaskMViT with in1k_VIT_B_MaskFeat_PT.yaml (norm and head deleted, MSSeparateHead
    with one LayerNorm transform and one projection) and the MViT fine-tuned with USE_MEAN_POOLING."""
    sd = L.embeddings(pos=True, mask=not finetuned)
    for i in range(L.depth):
        sd.update(L.timm_block(f"blocks.{i}", qkv="full", layer_scale=False))
    if finetuned:
        return {**sd, **L.classifier(norm="norm", head="head.projection")}
    hog_dim = 9 * (L.patch // 8) ** 2 * 3
    return {**sd, **L.norm("pred_head.transforms.0.0"), **L.linear("pred_head.projections.0", hog_dim, L.width)}


def maskfeat_mmpretrain(L: Layout, finetuned: bool) -> dict:
    """open-mmlab/mmpretrain MaskFeat (MaskFeatViT + LinearNeck + HOGGenerator with a 16-px Gaussian window) and the
    VisionTransformer(out_type="avg_featmap", final_norm=False) + LinearClsHead benchmark."""
    sd = L.embeddings("backbone.", pos=True, mask=not finetuned, proj="projection")
    for i in range(L.depth):
        sd.update(L.mmpretrain_layer(f"backbone.layers.{i}"))
    if finetuned:
        return {**sd, **L.classifier(norm="backbone.ln2", head="head.fc")}
    hog_dim = 9 * (L.patch // 8) ** 2 * 3
    return {**sd, **L.norm("backbone.ln1"), **L.linear("neck.fc", hog_dim, L.width),
            "target_generator.weight_x": L.t(3, 1, 3, 3), "target_generator.weight_y": L.t(3, 1, 3, 3),
            "target_generator.gaussian_kernel": L.t(16, 16)}


def cae_official(L: Layout, finetuned: bool) -> dict:
    """lxtGH/CAE models/modeling_cae.py (encoder, teacher, pretext_neck, mask_token) and modeling_finetune.py
    (sin-cos pos_embed, per-layer tables, fc_norm)."""
    if finetuned:
        return {**beit_unilm(L, finetuned=True), "pos_embed": L.t(1, L.tokens, L.width)}
    sd = {}
    for owner in ("encoder", "teacher"):
        sd.update(L.embeddings(f"{owner}.", pos=True))
        for i in range(L.depth):
            sd.update(L.timm_block(f"{owner}.blocks.{i}"))
        sd.update(L.norm(f"{owner}.norm"))
    for i in range(2):
        sd.update(L.cae_regressor_block(f"pretext_neck.regressor_blocks.{i}"))
        sd.update(L.timm_block(f"pretext_neck.decoder_blocks.{i}"))
    return {**sd, **L.norm("pretext_neck.norm"), **L.norm("pretext_neck.norm2"),
            **L.linear("pretext_neck.head", L.vocab, L.width), "mask_token": L.t(1, 1, L.width)}


def cae_mmpretrain(L: Layout, finetuned: bool) -> dict:
    """open-mmlab/mmpretrain CAE (CAEPretrainViT backbone and teacher, CAENeck, DALL-E target generator) and the
    BEiTViT(use_rel_pos_bias, avg_featmap) + LinearClsHead benchmark."""
    if finetuned:
        sd = L.embeddings("backbone.", pos=True, proj="projection")
        for i in range(L.depth):
            sd.update(L.mmpretrain_layer(f"backbone.layers.{i}", qkv="qv", layer_scale=True, table=True))
        return {**sd, **L.classifier(norm="backbone.ln2", head="head.fc")}
    sd = {}
    for owner in ("backbone", "teacher"):
        sd.update(L.embeddings(f"{owner}.", pos=True, proj="projection"))
        for i in range(L.depth):
            sd.update(L.mmpretrain_layer(f"{owner}.layers.{i}", qkv="qv", layer_scale=True))
        sd.update(L.norm(f"{owner}.ln1"))
    names = ("norm1_q_cross", "norm1_k_cross", "norm1_v_cross", "norm2_cross")
    for i in range(2):
        sd.update(L.cae_regressor_block(f"neck.regressors.{i}", names, mlp="ffn"))
        sd.update(L.mmpretrain_layer(f"neck.decoders.{i}", qkv="qv", layer_scale=True))
    return {**sd, **L.norm("neck.norm_regressor"), **L.norm("neck.norm_decoder"),
            **L.linear("neck.head", L.vocab, L.width), "neck.mask_token": L.t(1, 1, L.width),
            "target_generator.encoder.blocks.input.w": L.t(8, 3, 7, 7),
            "target_generator.encoder.blocks.input.b": L.t(8)}


# (source, builder, finetuned, size, wrapper key, {source key: our key}, summary's dropped groups)
CASES = [
    ("beit-unilm", beit_unilm, False, TINY, "model",
     {"blocks.1.attn.qkv.weight": "vit.blocks.1.attn.qkv.weight", "blocks.1.attn.q_bias": "vit.blocks.1.attn.q_bias",
      "blocks.2.gamma_2": "vit.blocks.2.gamma_2", "mask_token": "vit.mask_token",
      "rel_pos_bias.relative_position_bias_table": "vit.rel_pos_bias.relative_position_bias_table"}, ["lm_head.*"]),
    ("beit-unilm", beit_unilm, True, TINY, "model",
     {"blocks.3.attn.relative_position_bias_table": "vit.blocks.3.attn.relative_position_bias_table",
      "fc_norm.weight": "fc_norm.weight", "head.bias": "head.bias"}, []),
    ("beit-unilm", beit_unilm, True, VIT_B, "model",
     {"blocks.11.attn.qkv.weight": "vit.blocks.11.attn.qkv.weight", "blocks.0.attn.v_bias": "vit.blocks.0.attn.v_bias",
      "blocks.3.attn.relative_position_bias_table": "vit.blocks.3.attn.relative_position_bias_table"}, []),
    ("simmim-official", simmim_official, False, TINY, "model",
     {"encoder.blocks.1.attn.qkv.weight": "vit.blocks.1.attn.qkv.weight", "decoder.0.weight": "decoder.0.weight",
      "encoder.rel_pos_bias.relative_position_bias_table": "vit.rel_pos_bias.relative_position_bias_table",
      "encoder.norm.bias": "vit.norm.bias"}, []),
    ("simmim-official", simmim_official, True, TINY, "model",
     {"blocks.3.attn.relative_position_bias_table": "vit.blocks.3.attn.relative_position_bias_table"}, []),
    ("simmim-official", simmim_official, False, VIT_B, "model",
     {"encoder.blocks.7.attn.q_bias": "vit.blocks.7.attn.q_bias", "decoder.0.bias": "decoder.0.bias"}, []),
    ("maskfeat-slowfast", maskfeat_slowfast, False, TINY_HOG, "model_state",
     {"blocks.1.attn.qkv.bias": "vit.blocks.1.attn.qkv.bias", "pred_head.transforms.0.0.weight": "vit.norm.weight",
      "pred_head.projections.0.weight": "pred_head.weight", "pos_embed": "vit.pos_embed"}, []),
    ("maskfeat-slowfast", maskfeat_slowfast, True, TINY_HOG, "model_state",
     {"norm.weight": "fc_norm.weight", "head.projection.weight": "head.weight"}, []),
    ("maskfeat-slowfast", maskfeat_slowfast, False, VIT_B, "model_state",
     {"blocks.11.mlp.fc2.weight": "vit.blocks.11.mlp.fc2.weight", "pred_head.projections.0.bias": "pred_head.bias"}, []),
    ("maskfeat-mmpretrain", maskfeat_mmpretrain, False, TINY_HOG, "state_dict",
     {"backbone.layers.1.ffn.layers.0.0.weight": "vit.blocks.1.mlp.fc1.weight", "neck.fc.weight": "pred_head.weight",
      "backbone.ln1.weight": "vit.norm.weight", "backbone.patch_embed.projection.weight": "vit.patch_embed.proj.weight"},
     ["target_generator.*"]),
    ("maskfeat-mmpretrain", maskfeat_mmpretrain, True, TINY_HOG, "state_dict",
     {"backbone.ln2.weight": "fc_norm.weight", "head.fc.weight": "head.weight"}, []),
    ("maskfeat-mmpretrain", maskfeat_mmpretrain, True, VIT_B, "state_dict",
     {"backbone.layers.11.attn.qkv.weight": "vit.blocks.11.attn.qkv.weight",
      "backbone.layers.4.ffn.layers.1.weight": "vit.blocks.4.mlp.fc2.weight"}, []),
    ("cae-official", cae_official, False, TINY, "model",
     {"encoder.blocks.1.attn.q_bias": "vit.blocks.1.attn.q_bias", "encoder.norm.weight": "vit.norm.weight",
      "encoder.pos_embed": "vit.pos_embed"}, ["mask_token", "pretext_neck.*", "teacher.*"]),
    ("cae-official", cae_official, True, TINY, "model",
     {"blocks.3.attn.relative_position_bias_table": "vit.blocks.3.attn.relative_position_bias_table",
      "pos_embed": "vit.pos_embed"}, []),
    ("cae-official", cae_official, True, VIT_B, "model",
     {"blocks.11.gamma_1": "vit.blocks.11.gamma_1", "blocks.3.attn.relative_position_bias_table":
      "vit.blocks.3.attn.relative_position_bias_table"}, []),
    ("cae-mmpretrain", cae_mmpretrain, False, TINY, "state_dict",
     {"backbone.layers.1.gamma_1": "vit.blocks.1.gamma_1", "backbone.layers.0.attn.v_bias": "vit.blocks.0.attn.v_bias"},
     ["neck.*", "target_generator.*", "teacher.*"]),
    ("cae-mmpretrain", cae_mmpretrain, True, TINY, "state_dict",
     {"backbone.layers.3.attn.relative_position_bias_table": "vit.blocks.3.attn.relative_position_bias_table"}, []),
    ("cae-mmpretrain", cae_mmpretrain, True, VIT_B, "state_dict",
     {"backbone.layers.11.attn.q_bias": "vit.blocks.11.attn.q_bias", "head.fc.weight": "head.weight"}, []),
]


def case_id(case):
    return f"{case[0]}-{'finetuned' if case[2] else 'pretraining'}-{'vit-b' if case[3] is VIT_B else 'tiny'}"


def save_official(tmp_path, builder, finetuned, size, wrapper, name="official.pth"):
    sd = builder(Layout(**size), finetuned)
    path = tmp_path / name
    torch.save({wrapper: sd, "epoch": 799}, path)
    return sd, path


def load_output(out, summary):
    """The saved model through the Auto class that fits it (the encoder for AutoModel, ...)."""
    if summary["classifier"]:
        return AutoModelForImageClassification.from_pretrained(out)
    if summary["model_class"].endswith("ForPreTraining"):
        return AutoModelForPreTraining.from_pretrained(out)
    return AutoModel.from_pretrained(out)


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_official_checkpoint_converts_and_loads_strictly(tmp_path, case):
    source, builder, finetuned, size, wrapper, same, dropped = case
    sd, path = save_official(tmp_path, builder, finetuned, size, wrapper)
    out = tmp_path / "out"
    heads = [] if size is VIT_B else ["--num_attention_heads", str(size["heads"])]
    summary = convert.main(["--from", source, "--checkpoint", str(path), "--output_dir", str(out), *heads])
    assert summary["classifier"] == finetuned and summary["dropped"] == dropped
    model = load_output(out, summary)
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (size["width"], size["depth"])
    assert model.config.image_size == size["grid"] * size["patch"]
    ours = model.state_dict()
    for source_key, our_key in same.items():
        assert torch.equal(ours[our_key], sd[source_key]), (source_key, our_key)
    card = (out / "README.md").read_text()
    assert f"--from {source}" in card and (not dropped or "left out: " + ", ".join(dropped) in card)


def test_mmpretrain_maskfeat_keeps_its_gaussian_window_and_the_sources_normalisation(tmp_path):
    _, path = save_official(tmp_path, maskfeat_mmpretrain, False, TINY_HOG, "state_dict")
    summary = convert.main(["--from", "maskfeat-mmpretrain", "--checkpoint", str(path), "--output_dir", str(tmp_path / "o"),
                            "--num_attention_heads", "4"])
    assert summary["model_class"] == "MimMaskFeatForPreTraining"
    assert json.loads((tmp_path / "o" / "config.json").read_text())["hog_gaussian_window"] == 16
    processor = json.loads((tmp_path / "o" / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == pytest.approx([0.485, 0.456, 0.406])


def test_beit_pretraining_to_per_layer_tables_copies_the_shared_table(tmp_path):
    sd, path = save_official(tmp_path, beit_unilm, False, TINY, "model")
    out = tmp_path / "out"
    summary = convert.main(["--from", "beit-unilm", "--checkpoint", str(path), "--output_dir", str(out),
                            "--config_overrides", "relative_position_bias=per_layer"])
    ours = AutoModel.from_pretrained(out).state_dict()
    assert "vit.rel_pos_bias.relative_position_bias_table" not in ours
    for i in range(TINY["depth"]):
        assert torch.equal(ours[f"vit.blocks.{i}.attn.relative_position_bias_table"],
                           sd["rel_pos_bias.relative_position_bias_table"])
    # BEiT's own code defaults to mean = std = 0.5 unless --imagenet_default_mean_and_std; --normalization says which
    assert summary["image_mean"] == [0.5, 0.5, 0.5]
    summary = convert.main(["--from", "beit-unilm", "--checkpoint", str(path), "--output_dir", str(tmp_path / "in1k"),
                            "--normalization", "imagenet-default"])
    assert summary["image_std"] == pytest.approx([0.229, 0.224, 0.225])


# ------------------------------------------------------------------------------------------ table resizing


def test_relative_position_table_resize_keeps_cls_rows_and_is_the_identity_at_the_same_grid():
    table = torch.randn((2 * 4 - 1) ** 2 + 3, 2)
    resized = resize_relative_position_table(table, (6, 6))
    assert resized.shape == ((2 * 6 - 1) ** 2 + 3, 2)
    assert torch.equal(resized[-3:], table[-3:])
    assert resize_relative_position_table(table, (4, 4)) is table
    constant = torch.full_like(table, 0.25)
    torch.testing.assert_close(resize_relative_position_table(constant, (6, 6)), torch.full_like(resized, 0.25))
    # the zero offset stays at the centre of the offset grid
    centre = lambda t, g: t[:-3].reshape(2 * g - 1, 2 * g - 1, -1)[g - 1, g - 1]  # noqa: E731
    torch.testing.assert_close(centre(resized, 6), centre(table, 4))


def test_finetuned_beit_converted_at_another_resolution_runs_there(tmp_path):
    sd, path = save_official(tmp_path, beit_unilm, True, TINY, "model")
    out = tmp_path / "out"
    convert.main(["--from", "beit-unilm", "--checkpoint", str(path), "--output_dir", str(out), "--image_size", "48"])
    model = AutoModelForImageClassification.from_pretrained(out).eval()
    table = model.vit.blocks[3].attn.relative_position_bias_table
    assert model.config.image_size == 48 and table.shape == ((2 * 24 - 1) ** 2 + 3, TINY["heads"])
    assert torch.equal(table[-3:], sd["blocks.3.attn.relative_position_bias_table"][-3:])
    with torch.no_grad():
        assert model(pixel_values=torch.randn(1, 3, 48, 48)).logits.shape == (1, 5)


# ------------------------------------------------------------------------------------------ wrong checkpoints


def test_wrong_source_truncated_file_and_missing_key_fail_by_name(tmp_path):
    sd, path = save_official(tmp_path, cae_mmpretrain, True, TINY, "state_dict")
    args = ["--output_dir", str(tmp_path / "o"), "--num_attention_heads", "4"]
    with pytest.raises(KeyError, match=r"wrong --from.*backbone\.layers\.0"):
        convert.main(["--from", "cae-official", "--checkpoint", str(path), *args])
    data = path.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        convert.main(["--from", "cae-mmpretrain", "--checkpoint", str(tmp_path / "cut.pth"), *args])
    torch.save({"state_dict": {k: v for k, v in sd.items() if k != "backbone.layers.1.attn.proj.weight"}},
               tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"missing \(1\).*vit\.blocks\.1\.attn\.proj\.weight"):
        convert.main(["--from", "cae-mmpretrain", "--checkpoint", str(tmp_path / "missing.pth"), *args])
    torch.save({"state_dict": {k: v for k, v in sd.items() if k != "backbone.cls_token"}}, tmp_path / "nocls.pth")
    with pytest.raises(ValueError, match=r"not a open-mmlab/mmpretrain CAE.*vit\.cls_token"):
        convert.main(["--from", "cae-mmpretrain", "--checkpoint", str(tmp_path / "nocls.pth"), *args])


# ------------------------------------------------------------------------------------------ transformers folders


def randomize_(model, seed=0):
    """Every parameter random (relative tables and layer scales too), so the comparison covers them all."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(1 + 0.1 * noise if "layernorm" in name and name.endswith("weight") else 0.05 * noise)
    return model


def hf_beit_config(**overrides):
    return BeitConfig(image_size=32, patch_size=2, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, vocab_size=64, use_absolute_position_embeddings=False,
                      layer_scale_init_value=0.1, use_mean_pooling=True, **overrides)


def test_transformers_beit_masked_image_model_converts_with_equal_outputs_and_back(tmp_path):
    with no_init_weights():
        reference = randomize_(BeitForMaskedImageModeling(hf_beit_config(use_shared_relative_position_bias=True,
                                                                          use_mask_token=True)))
    reference.save_pretrained(tmp_path / "hf")
    BeitImageProcessor(image_mean=[0.1, 0.2, 0.3], image_std=[0.4, 0.5, 0.6]).save_pretrained(tmp_path / "hf")
    summary = convert.main(["--from", "hf-beit", "--checkpoint", str(tmp_path / "hf"), "--output_dir", str(tmp_path / "o")])
    assert summary["max_abs_difference"] < 1e-5 and summary["dropped"] == ["lm_head.*"]
    assert summary["image_mean"] == [0.1, 0.2, 0.3] and summary["image_std"] == [0.4, 0.5, 0.6]
    ours = AutoModel.from_pretrained(tmp_path / "o")
    assert ours.config.layer_norm_eps == reference.config.layer_norm_eps  # transformers' 1e-12, not our 1e-6
    back = rename_keys(split_fused_qkv(ours.state_dict(), "qv"), invert_key_map(HF_BEIT))
    source = {k: v for k, v in reference.state_dict().items() if not k.startswith("lm_head.")}
    key_biases = {k for k in back if k.endswith("k_proj.bias")}  # BEiT has no key bias: ours are fixed zeros
    assert set(back) - key_biases == set(source) and all(back[k].abs().sum() == 0 for k in key_biases)
    for key, value in source.items():
        assert torch.equal(back[key], value), key


def test_transformers_beit_classifier_converts_and_classifies_through_the_pipeline(tmp_path):
    from transformers import pipeline

    labels = {0: "cat", 1: "dog", 2: "bird"}
    config = hf_beit_config(use_relative_position_bias=True, id2label=labels, label2id={v: k for k, v in labels.items()})
    with no_init_weights():
        reference = randomize_(BeitForImageClassification(config))
    reference.save_pretrained(tmp_path / "hf")
    summary = convert.main(["--from", "hf-beit", "--checkpoint", str(tmp_path / "hf"), "--output_dir", str(tmp_path / "o")])
    assert summary["classifier"] and summary["max_abs_difference"] < 1e-5
    saved = json.loads((tmp_path / "o" / "preprocessor_config.json").read_text())  # the official evaluation crop
    assert saved["size"] == {"height": config.image_size, "width": config.image_size} and saved["do_center_crop"]
    assert saved["crop_pct"] == 0.875
    classify = pipeline("image-classification", model=str(tmp_path / "o"))
    predictions = classify(Image.new("RGB", (40, 30), (200, 80, 20)), top_k=3)
    assert {p["label"] for p in predictions} == set(labels.values())


def test_transformers_vit_masked_image_model_converts_with_equal_outputs_and_back(tmp_path):
    config = ViTConfig(image_size=32, patch_size=4, encoder_stride=4, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=4, intermediate_size=64)
    with no_init_weights():
        reference = randomize_(ViTForMaskedImageModeling(config))
    reference.save_pretrained(tmp_path / "hf")
    summary = convert.main(["--from", "hf-vit-mim", "--checkpoint", str(tmp_path / "hf"), "--output_dir", str(tmp_path / "o")])
    assert summary["model_class"] == "MimSimMIMForPreTraining" and summary["max_abs_difference"] < 1e-5
    ours = AutoModelForPreTraining.from_pretrained(tmp_path / "o")
    back = rename_keys(split_fused_qkv(ours.state_dict(), "full"), invert_key_map(HF_VIT_MIM))
    source = reference.state_dict()
    assert set(back) == set(source)
    for key, value in source.items():
        assert torch.equal(back[key], value), key
