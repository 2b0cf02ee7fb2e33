"""SimMIM on a Swin encoder: parity with transformers' SwinForMaskedImageModeling / SwinForImageClassification
(weights copied through hf_mim.convert_swin), config checks naming the field, the official masking, init and
layer-id rules, save/load, gradient checkpointing and remote code."""

import copy
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import SwinConfig, SwinForImageClassification, SwinForMaskedImageModeling

from hf_mim.convert import load_converted, rename_keys
from hf_mim.convert_swin import (
    SIMMIM_SWIN_OFFICIAL,
    config_from_hf_swin,
    convert_hf_swin_state_dict,
    resize_window_bias_tables,
)
from hf_mim.modeling.configuration_simmim_swin import MimSimMIMSwinConfig
from hf_mim.modeling.image_processing_simmim_swin import MimSimMIMSwinImageProcessor
from hf_mim.modeling.masking import simmim_mask
from hf_mim.modeling.mim_base import PictureView
from hf_mim.modeling.modeling_simmim_swin import (
    MimSimMIMSwinForImageClassification,
    MimSimMIMSwinForPreTraining,
    MimSimMIMSwinModel,
)
from hf_mim.modeling.swin import WindowAttention, shifted_window_mask, window_relative_position_index
from hf_mim.training import enable_activation_checkpointing

# 32 px, patch 4: stage grids 8 and 4 with window 4, so stage 0 shifts its second block and stage 1 (one window)
# does not.
TINY = dict(image_size=32, patch_size=4, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4,
            encoder_stride=8)
# Swin-T's widths, depths and heads at 96 px, window 3: grids 24, 12, 6, 3.
SWIN_T_SHAPED = dict(image_size=96, patch_size=4, embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
                     window_size=3, encoder_stride=32)


def tiny_config(**overrides):
    return MimSimMIMSwinConfig(**{**TINY, "mask_patch_size": 8, **overrides})


def masks(config, batch_size, seed):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([
        simmim_mask(config.image_size, config.mask_patch_size, config.patch_size, config.mask_ratio, rng).reshape(-1)
        for _ in range(batch_size)
    ]))


def inputs(config, batch_size=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    size = config.image_size
    return {"pixel_values": torch.randn(batch_size, 3, size, size, generator=generator),
            "bool_masked_pos": masks(config, batch_size, seed)}


def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    """Every parameter random and non-trivial (mask token, norms, bias tables too), so parity tests them all."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2 + (1.0 if param.ndim == 1 else 0.0))


def hf_and_ours(hf_class, our_class, fields, **hf_kwargs):
    torch.manual_seed(0)
    reference = hf_class(SwinConfig(**fields, **hf_kwargs)).eval()
    randomize_(reference)
    ours = our_class(config_from_hf_swin(reference.config, mask_patch_size=fields["patch_size"] * 2)).eval()
    load_converted(ours, convert_hf_swin_state_dict(reference.state_dict()))
    return reference, ours


# ----------------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("fields", [TINY, SWIN_T_SHAPED], ids=["tiny", "swin-t-shaped"])
def test_pretraining_equals_transformers_swin_for_masked_image_modeling(fields):
    reference, ours = hf_and_ours(SwinForMaskedImageModeling, MimSimMIMSwinForPreTraining, fields)
    batch = inputs(ours.config)
    with torch.no_grad():
        expected = reference(**batch)
        got = ours(**batch)
    torch.testing.assert_close(got.reconstruction, expected.reconstruction, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.loss, expected.loss, rtol=0, atol=1e-5)
    assert got.bool_masked_pos.dtype == torch.bool and torch.equal(got.bool_masked_pos, batch["bool_masked_pos"])


def test_classifier_equals_transformers_swin_for_image_classification():
    reference, ours = hf_and_ours(SwinForImageClassification, MimSimMIMSwinForImageClassification, TINY,
                                  num_labels=5)
    pixel_values = inputs(ours.config)["pixel_values"]
    labels = torch.tensor([1, 4])
    with torch.no_grad():
        expected = reference(pixel_values=pixel_values, labels=labels)
        got = ours(pixel_values=pixel_values, labels=labels)
    torch.testing.assert_close(got.logits, expected.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.loss, expected.loss, rtol=0, atol=1e-5)


def test_features_equal_transformers_swin_model_pooler():
    reference, classifier = hf_and_ours(SwinForImageClassification, MimSimMIMSwinForImageClassification, TINY,
                                        num_labels=5)
    ours = MimSimMIMSwinModel(classifier.config).eval()
    result = ours.load_state_dict(classifier.state_dict(), strict=False)
    assert result.missing_keys == ["swin.mask_token"] and result.unexpected_keys == ["head.weight", "head.bias"]
    pixel_values = inputs(ours.config)["pixel_values"]
    with torch.no_grad():
        expected = reference.swin(pixel_values=pixel_values, output_hidden_states=True)
        got = ours(pixel_values=pixel_values, output_hidden_states=True)
    torch.testing.assert_close(got.last_hidden_state, expected.last_hidden_state, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.pooler_output, expected.pooler_output, rtol=0, atol=1e-5)
    assert [h.shape for h in got.hidden_states] == [(2, 64, 16), (2, 16, 32), (2, 16, 32)]


def test_key_map_reads_the_names_transformers_writes_to_disk(tmp_path):
    torch.manual_seed(0)
    reference = SwinForMaskedImageModeling(SwinConfig(**TINY))
    reference.save_pretrained(tmp_path)
    on_disk = load_file(tmp_path / "model.safetensors")
    assert any(".attention.self.query." in k for k in on_disk)  # the legacy layout, not the in-memory one
    from_disk, from_memory = convert_hf_swin_state_dict(on_disk), convert_hf_swin_state_dict(reference.state_dict())
    assert from_disk.keys() == from_memory.keys()
    assert all(torch.equal(from_disk[k], from_memory[k]) for k in from_memory)


def test_official_simmim_key_map_drops_derived_buffers_and_strips_the_encoder_prefix():
    model = MimSimMIMSwinForPreTraining(tiny_config())
    official = {("encoder." + k[len("swin."):] if k.startswith("swin.") else k): v
                for k, v in model.state_dict().items()}
    official["encoder.layers.0.blocks.1.attn_mask"] = torch.zeros(4, 16, 16)
    official["encoder.layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(16, 16, dtype=torch.long)
    renamed = rename_keys(official, SIMMIM_SWIN_OFFICIAL)
    assert renamed.keys() == model.state_dict().keys()


def test_window_bias_tables_resample_for_another_window_size():
    """Pretraining's window 4 -> fine-tuning's window 8 (64 px): tables (7*7, heads) -> (15*15, heads), loadable."""
    torch.manual_seed(0)
    state_dict = MimSimMIMSwinForImageClassification(tiny_config(num_labels=2)).state_dict()
    table = state_dict["swin.layers.1.blocks.0.attn.relative_position_bias_table"]
    with torch.no_grad():
        table.copy_(torch.arange(7.0).repeat_interleave(7)[:, None].expand(-1, 4))  # bias = row offset + 3
    changed = resize_window_bias_tables(state_dict, 8)
    assert len(changed) == 4 and not resize_window_bias_tables(state_dict, 8)
    resized = state_dict["swin.layers.1.blocks.0.attn.relative_position_bias_table"]
    assert resized.shape == (225, 4)
    torch.testing.assert_close(resized.reshape(15, 15, 4)[7, 7], torch.full((4,), 3.0))  # offset 0 stays 0's value
    column = resized.reshape(15, 15, 4)[:, 0, 0]  # extreme offsets map onto the new extremes
    assert column[0].item() == 0.0 and abs(column[-1].item() - 6.0) < 1e-5 and torch.all(column.diff() > 0)
    larger = MimSimMIMSwinForImageClassification(tiny_config(image_size=64, window_size=8, num_labels=2))
    load_converted(larger, state_dict)


def test_unknown_key_fails_naming_it():
    with pytest.raises(KeyError, match="swin.embeddings.cls_token"):
        convert_hf_swin_state_dict({"swin.embeddings.cls_token": torch.zeros(1)})


# ----------------------------------------------------------------------------------------------- config


def test_defaults_are_the_official_swin_base_pretraining_config():
    config = MimSimMIMSwinConfig()
    assert (config.image_size, config.patch_size, config.window_size, config.embed_dim) == (192, 4, 6, 128)
    assert (config.depths, config.num_heads) == ([2, 2, 18, 2], [4, 8, 16, 32])
    assert (config.encoder_stride, config.num_features, config.grid_size) == (32, 1024, 48)
    assert (config.mask_patch_size, config.mask_ratio, config.drop_path_rate) == (32, 0.6, 0.0)
    assert config.layer_norm_eps == 1e-5 and config.qkv_bias and not config.use_absolute_embeddings


@pytest.mark.parametrize("overrides, field", [
    ({"window_size": 3}, "window_size=3"),  # tiles neither the 8 nor the 4 grid
    ({"window_size": 8}, "window_size=8"),  # larger than stage 1's 4x4 grid
    ({"num_heads": [3, 4]}, "num_heads[0]=3"),
    ({"num_heads": [2]}, "num_heads has 1"),
    ({"depths": [2, 0]}, "depths must be"),
    ({"image_size": 36}, "image_size=36"),
    ({"mask_patch_size": 6}, "mask_patch_size=6"),
    ({"mask_patch_size": 12, "image_size": 32}, "mask_patch_size=12"),
    ({"encoder_stride": 4}, "encoder_stride=4"),
    ({"mask_ratio": 1.0}, "mask_ratio"),
    ({"drop_path_rate": 1.0}, "drop_path_rate"),
    ({"hidden_act": "nope"}, "hidden_act='nope'"),
])
def test_bad_config_fails_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        tiny_config(**overrides)


def test_config_round_trips_and_accepts_transformers_derived_fields(tmp_path):
    config = tiny_config()
    config.save_pretrained(tmp_path)
    assert MimSimMIMSwinConfig.from_pretrained(tmp_path).to_diff_dict() == config.to_diff_dict()
    hf_dict = SwinConfig(**TINY).to_dict()
    assert "hidden_size" in hf_dict
    assert MimSimMIMSwinConfig(**{**hf_dict, "mask_patch_size": 8}).hidden_size == 32


# ----------------------------------------------------------------------------------------------- masking


def test_processor_masks_at_the_model_patch_size_as_the_official_generator():
    """192 px, 32 px cells, patch 4: 6x6 cells, ceil(0.6 * 36) = 22 masked, each over 8x8 patches of a 48x48 grid."""
    processor = MimSimMIMSwinImageProcessor.for_model_config(MimSimMIMSwinConfig())
    image = np.random.default_rng(0).integers(0, 256, (200, 210, 3), dtype=np.uint8)
    out = processor(image, return_bool_masked_pos=True, mask_seed=3, return_tensors="pt")
    mask = out["bool_masked_pos"]
    assert mask.shape == (1, 48 * 48) and int(mask.sum()) == 22 * 64
    cells = mask.reshape(48, 48)[::8, ::8]
    assert torch.equal(mask.reshape(48, 48), cells.repeat_interleave(8, 0).repeat_interleave(8, 1))


def test_mask_token_replaces_masked_stride_4_embeddings():
    """The official SwinTransformerForSimMIM rule: x * (1 - w) + mask_token * w on the normed patch embeddings."""
    model = MimSimMIMSwinForPreTraining(tiny_config()).eval()
    batch = inputs(model.config)
    encoder = model.swin
    with torch.no_grad():
        plain = encoder.patch_embed.norm(
            torch.nn.functional.conv2d(batch["pixel_values"], encoder.patch_embed.proj.weight,
                                       encoder.patch_embed.proj.bias, stride=4).flatten(2).transpose(1, 2))
        w = batch["bool_masked_pos"].unsqueeze(-1).float()
        expected = plain * (1 - w) + encoder.mask_token * w
        torch.testing.assert_close(encoder.patch_tokens(batch["pixel_values"], batch["bool_masked_pos"]), expected)
        # only the masked pixels score: changing a visible pixel's target leaves the loss alone
        pixel_mask = batch["bool_masked_pos"].reshape(2, 8, 8).repeat_interleave(4, 1).repeat_interleave(4, 2)
        reconstruction = model(**batch).reconstruction
        expected_loss = ((reconstruction - batch["pixel_values"]).abs() * pixel_mask[:, None]).sum() / (
            pixel_mask.sum() * 3 + 1e-5 * 3)
        torch.testing.assert_close(model(**batch).loss, expected_loss)


def test_missing_or_misshaped_mask_fails_with_the_fix():
    model = MimSimMIMSwinForPreTraining(tiny_config()).eval()
    pixel_values = inputs(model.config)["pixel_values"]
    with pytest.raises(ValueError, match="return_bool_masked_pos=True"):
        model(pixel_values=pixel_values)
    with pytest.raises(ValueError, match=r"bool_masked_pos must be \(batch, num_patches\)=\(2, 64\)"):
        model(pixel_values=pixel_values, bool_masked_pos=torch.zeros(2, 16, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(40x40\) doesn't match the model \(32x32\)"):
        model(pixel_values=torch.zeros(1, 3, 40, 40), bool_masked_pos=torch.zeros(1, 100, dtype=torch.bool))


def test_shift_mask_and_bias_index_follow_the_official_construction():
    """The official loops: regions [0, g-w), [g-w, g-s), [g-s, g) per axis, -100 between different regions."""
    grid, window, shift = 8, 4, 2
    labels = torch.zeros(grid, grid)
    count = 0
    for rows in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for cols in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            labels[rows, cols] = count
            count += 1
    windows = labels.reshape(2, 4, 2, 4).permute(0, 2, 1, 3).reshape(4, 16)
    expected = (windows[:, None, :] - windows[:, :, None]).ne(0).float() * -100.0
    assert torch.equal(shifted_window_mask(grid, window, shift), expected)
    assert shifted_window_mask(grid, window, 0) is None
    coords = torch.stack(torch.meshgrid(torch.arange(3), torch.arange(3), indexing="ij")).flatten(1)
    offsets = (coords[:, :, None] - coords[:, None, :]) + 2
    assert torch.equal(window_relative_position_index(3), offsets[0] * 5 + offsets[1])


# ----------------------------------------------------------------------------------------------- training


def test_layer_ids_follow_simmims_swin_rule():
    """get_swin_layer: patch embed and mask token 0; block j of stage i sum(depths[:i]) + j + 1; patch merging =
    last block of its stage; final norm and heads num_blocks + 1."""
    model = MimSimMIMSwinForPreTraining(tiny_config(depths=[2, 3], num_heads=[2, 4]))
    ids = model.layer_ids()
    by_name = {name: ids[id(p)] for name, p in model.named_parameters()}
    assert by_name["swin.mask_token"] == by_name["swin.patch_embed.proj.weight"] == 0
    assert by_name["swin.patch_embed.norm.bias"] == 0
    assert by_name["swin.layers.0.blocks.0.attn.qkv.weight"] == 1
    assert by_name["swin.layers.0.blocks.1.mlp.fc2.bias"] == 2
    assert by_name["swin.layers.0.downsample.reduction.weight"] == by_name["swin.layers.0.downsample.norm.weight"] == 2
    assert by_name["swin.layers.1.blocks.0.norm1.weight"] == 3
    assert by_name["swin.layers.1.blocks.2.attn.relative_position_bias_table"] == 5
    assert by_name["swin.norm.weight"] == by_name["decoder.0.weight"] == 6
    assert len(by_name) == len(list(model.parameters()))


def test_no_weight_decay_parameters_are_the_official_exemptions():
    model = MimSimMIMSwinForPreTraining(tiny_config(use_absolute_embeddings=True))
    exempt = {id(p) for p in model.swin.no_weight_decay_parameters()}
    names = {n for n, p in model.named_parameters() if id(p) in exempt}
    assert names == {"swin.mask_token", "swin.absolute_pos_embed"} | {
        f"swin.layers.{s}.blocks.{b}.attn.relative_position_bias_table" for s in (0, 1) for b in (0, 1)}


def test_official_init():
    torch.manual_seed(0)
    model = MimSimMIMSwinForPreTraining(tiny_config(embed_dim=32, num_heads=[2, 4]))
    qkv = model.swin.layers[0].blocks[0].attn.qkv
    assert abs(qkv.weight.std().item() - 0.02) < 0.003  # timm's bounds are +-2 absolute: no visible cut
    assert torch.all(qkv.bias == 0) and torch.all(model.swin.layers[0].downsample.norm.weight == 1)
    table = model.swin.layers[1].blocks[0].attn.relative_position_bias_table
    assert 0.01 < table.std().item() < 0.03
    assert 0.01 < model.swin.mask_token.std().item() < 0.03
    conv = model.decoder[0]  # PyTorch's default draw: U(+-1/sqrt(fan_in)) for the bias
    bound = 1 / conv.weight[0].numel() ** 0.5
    assert conv.bias.abs().max() <= bound and conv.bias.abs().max() > bound / 2


def test_gradient_checkpointing_recomputes_blocks_and_changes_nothing():
    config = tiny_config(drop_path_rate=0.2)  # random drop-path masks must replay in the recompute
    torch.manual_seed(0)
    plain = MimSimMIMSwinForPreTraining(config).train()
    checkpointed = copy.deepcopy(plain)
    enable_activation_checkpointing(checkpointed)
    batch = inputs(config, seed=1)
    results = []
    for model in (plain, checkpointed):
        calls = []
        hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in model.modules()
                 if isinstance(m, WindowAttention)]
        torch.manual_seed(5)
        loss = model(**batch).loss
        loss.backward()
        for hook in hooks:
            hook.remove()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}, len(calls)))
    (loss_plain, grads_plain, calls_plain), (loss_ckpt, grads_ckpt, calls_ckpt) = results
    assert calls_ckpt > calls_plain, "no block was recomputed in the backward pass"
    assert torch.equal(loss_plain, loss_ckpt)
    assert all(g is not None for g in grads_plain.values()), "a parameter got no gradient"
    for name, grad in grads_plain.items():
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_torch_compile_traces_to_one_graph():
    """Windows, rolls and masks are fixed by the config: no data-dependent shape, no graph break."""
    model = MimSimMIMSwinForPreTraining(tiny_config()).train()
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(**inputs(model.config))
    torch._dynamo.reset()
    assert explanation.graph_break_count == 0, [str(b.reason)[:300] for b in explanation.break_reasons]


def test_encoder_surface_is_the_last_stage_without_cls_token():
    model = MimSimMIMSwinForPreTraining(tiny_config()).eval()
    pixels = inputs(model.config)["pixel_values"]
    tokens = model.encoder_tokens(pixels)
    assert model.encoder is model.swin and model.has_cls_token is False
    assert tokens.shape == (2, 16, 32)  # (32 / 8)**2 last-stage tokens of width 16 * 2
    torch.testing.assert_close(tokens, model.swin(pixels)[0], rtol=0, atol=0)
    # after the final LayerNorm (at its init, weight 1 and bias 0): every token has mean 0
    torch.testing.assert_close(tokens.mean(dim=-1), torch.zeros(2, 16), rtol=0, atol=1e-5)
    assert model.config.num_hidden_layers == 4 and model.config.num_attention_heads == 4
    assert model.config.needs_tokenizer is False


def test_processor_defaults_are_the_official_swin_pretraining_input():
    processor = MimSimMIMSwinImageProcessor()
    assert (processor.size["height"], processor.patch_size, processor.mask_patch_size) == (192, 4, 32)
    mask = processor(np.zeros((200, 210, 3), np.uint8), return_bool_masked_pos=True,
                     return_tensors="pt")["bool_masked_pos"]
    assert mask.shape == (1, 48 * 48) and int(mask.sum()) == 1408


def test_picture_view_and_after_optimizer_step():
    model = MimSimMIMSwinForPreTraining(tiny_config()).eval()
    batch = inputs(model.config)
    out = model(**batch)
    view = model.picture_view(batch, out)
    assert isinstance(view, PictureView) and view.kind == "pixels" and view.target is None
    assert view.predicted is out.reconstruction and torch.equal(view.bool_masked_pos, batch["bool_masked_pos"])
    assert model.after_optimizer_step() is None


# ----------------------------------------------------------------------------------------------- saving


def test_save_load_round_trip_is_exact_and_rebuilds_window_buffers(tmp_path):
    torch.manual_seed(0)
    model = MimSimMIMSwinForPreTraining(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    saved = load_file(tmp_path / "model.safetensors")
    assert not [k for k in saved if "relative_position_index" in k or "shift_mask" in k]
    loaded = MimSimMIMSwinForPreTraining.from_pretrained(tmp_path).eval()
    batch = inputs(model.config)
    assert torch.equal(model(**batch).loss, loaded(**batch).loss)
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    for (name, buffer), (_, fresh) in zip(loaded.named_buffers(), model.named_buffers()):
        assert torch.equal(buffer, fresh), name


def test_pretrained_encoder_moves_to_features_and_classifier(tmp_path):
    torch.manual_seed(0)
    pretrain = MimSimMIMSwinForPreTraining(tiny_config())
    pretrain.save_pretrained(tmp_path)
    features = MimSimMIMSwinModel.from_pretrained(tmp_path)
    classifier = MimSimMIMSwinForImageClassification.from_pretrained(tmp_path, num_labels=3)
    source = pretrain.state_dict()
    assert all(torch.equal(v, source[k]) for k, v in features.state_dict().items())
    shared = [k for k in classifier.state_dict() if k.startswith("swin.")]
    assert "swin.norm.weight" in shared and "swin.mask_token" not in classifier.state_dict()
    assert all(torch.equal(classifier.state_dict()[k], source[k]) for k in shared)


def test_remote_code_loads_without_hf_mim(tmp_path):
    """A fresh process where `import hf_mim` fails loads the folder with trust_remote_code=True and reconstructs."""
    torch.manual_seed(0)
    config = tiny_config()
    model = MimSimMIMSwinForPreTraining(config).eval()
    model.save_pretrained(tmp_path)
    MimSimMIMSwinImageProcessor.for_model_config(config).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert {"AutoConfig", "AutoModel", "AutoModelForMaskedImageModeling", "AutoModelForImageClassification",
            "AutoImageProcessor"} <= set(saved["auto_map"])
    batch = inputs(config)
    torch.save(batch, tmp_path / "inputs.pt")
    with torch.no_grad():
        expected = model(**batch).reconstruction
    script = textwrap.dedent(f"""
        import sys
        sys.modules["hf_mim"] = None  # make `import hf_mim` fail in this process
        import numpy as np
        import torch
        from transformers import (AutoImageProcessor, AutoModel, AutoModelForImageClassification,
                                  AutoModelForMaskedImageModeling)
        folder = {str(tmp_path)!r}
        model = AutoModelForMaskedImageModeling.from_pretrained(folder, trust_remote_code=True).eval()
        assert not type(model).__module__.startswith("hf_mim"), type(model).__module__
        features = AutoModel.from_pretrained(folder, trust_remote_code=True)
        classifier = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True, num_labels=2)
        processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
        image = np.zeros((40, 40, 3), dtype=np.uint8)
        mask = processor(image, return_bool_masked_pos=True, return_tensors="pt")["bool_masked_pos"]
        assert mask.shape == (1, 64), mask.shape
        with torch.no_grad():
            torch.save(model(**torch.load(folder + "/inputs.pt")).reconstruction, folder + "/remote.pt")
        print(type(model).__name__, type(features).__name__, type(classifier).__name__, type(processor).__name__)
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["MimSimMIMSwinForPreTraining", "MimSimMIMSwinModel",
                                     "MimSimMIMSwinForImageClassification", "MimSimMIMSwinImageProcessor"]
    torch.testing.assert_close(torch.load(tmp_path / "remote.pt"), expected, rtol=0, atol=1e-6)


def test_classifier_from_a_pretraining_folder_gets_the_fine_tuning_switches(tmp_path):
    from transformers import AutoModelForImageClassification

    import hf_mim  # noqa: F401

    MimSimMIMSwinForPreTraining(tiny_config()).save_pretrained(tmp_path)
    classifier = AutoModelForImageClassification.from_pretrained(tmp_path, num_labels=3)
    assert type(classifier).__name__ == "MimSimMIMSwinForImageClassification"
    assert classifier.config.drop_path_rate == 0.1 and classifier.config.num_labels == 3
    assert classifier.config.architectures == ["MimSimMIMSwinForImageClassification"]
    # a drop path rate the caller gives is kept
    assert AutoModelForImageClassification.from_pretrained(tmp_path, drop_path_rate=0.2).config.drop_path_rate == 0.2
