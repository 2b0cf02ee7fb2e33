"""CAE: the behaviour the CAE paper and code pin down, checked against references written out here, plus the shared battery."""

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from hf_mim.modeling.configuration_cae import MimCaeConfig
from hf_mim.modeling.configuration_dvae import MimDvaeConfig
from hf_mim.modeling.image_processing_cae import MimCaeImageProcessor
from hf_mim.modeling.masking import block_mask
from hf_mim.modeling.modeling_cae import (
    AttentiveProbe,
    CaeRegressor,
    MimCaeForImageClassification,
    MimCaeForPreTraining,
    MimCaeModel,
)
from hf_mim.modeling.modeling_dvae import MimDvaeModel
from hf_mim.modeling.vit import patchify, relative_position_index, sincos_position_table
from helpers import TINY_TOKENIZER, assert_refused
from model_tester import MimModelTests

TINY = dict(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, regressor_num_hidden_layers=2, decoder_num_hidden_layers=1,
            num_masking_patches=32, min_num_patches=4, vocab_size=64, tokenizer_config=TINY_TOKENIZER,
            codebook_image_size=64)
GRID = 8  # 32 px / 4 px patches


def tiny_config(**overrides):
    return MimCaeConfig(**{**TINY, **overrides})


def exact_block_masks(batch_size, num_masked=32, seed=0):
    rng = random.Random(seed)
    masks = [block_mask(GRID, GRID, num_masked, 4, exact=True, rng=rng).reshape(-1) for _ in range(batch_size)]
    return torch.from_numpy(np.stack(masks))


def inputs(batch_size=2, seed=0, num_masked=32):
    generator = torch.Generator().manual_seed(seed)
    return {
        "pixel_values": torch.randn(batch_size, 3, 32, 32, generator=generator),
        "bool_masked_pos": exact_block_masks(batch_size, num_masked, seed),
        "codebook_pixel_values": 0.1 + 0.8 * torch.rand(batch_size, 3, 64, 64, generator=generator),
    }


def build(config=None, seed=0, **overrides):
    torch.manual_seed(seed)
    return MimCaeForPreTraining(config or tiny_config(**overrides)).eval()


def model_and_batch():
    """The tiny model, a batch and its mask."""
    model, batch = build(), inputs()
    return model, batch, batch["bool_masked_pos"]


def randomize_(module, seed=1):
    """Non-trivial values everywhere (biases, LayerNorm affine, layer scales) so no term of the math hides at 0 or 1."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3 + (1.0 if param.ndim == 1 else 0.0))
    return module


class TestCaeModels(MimModelTests):
    method = "cae"
    compiles_to_one_graph = False

    def tiny_config(self, **overrides):
        return tiny_config(**overrides)

    def pretraining_inputs(self, config, batch_size=2, seed=0):
        return inputs(batch_size, seed)

    def check_pretraining_output(self, config, out):
        assert out.logits.shape == (2, 32, config.vocab_size)
        assert out.latent_pred.shape == out.latent_target.shape == (2, 32, config.hidden_size)
        assert out.bool_masked_pos.sum(dim=1).tolist() == [32, 32]


# --------------------------------------------------------------------------------------- regressor reference


def layer_norm(x, norm):
    return F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, norm.eps)


def reference_regressor(regressor, queries, visible, pos_masked, pos_visible, variant="official"):
    """CAE's RegressorBlock written out head by head. `variant` breaks one rule of §5, to show the check can fail."""
    for block in regressor.blocks:
        attn = block.cross_attn
        num_heads, head_dim = attn.num_heads, attn.head_dim
        context = torch.cat([visible, queries], dim=1) if variant != "context_without_queries" else visible
        pos_context = torch.cat([pos_visible, pos_masked], dim=1) if variant != "context_without_queries" else pos_visible
        q_in = layer_norm(queries + pos_masked, block.norm1_q)
        k_in = layer_norm(context + pos_context, block.norm1_k)
        v_in = layer_norm(context + pos_context if variant == "position_on_values" else context, block.norm1_v)
        heads = []
        for h in range(num_heads):
            rows = slice(h * head_dim, (h + 1) * head_dim)
            q = q_in @ attn.q.weight[rows].T + attn.q_bias[rows]
            k = k_in @ attn.k.weight[rows].T  # no key bias
            v = v_in @ attn.v.weight[rows].T + attn.v_bias[rows]
            weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head_dim), dim=-1)
            heads.append(weights @ v)
        attended = torch.cat(heads, dim=-1) @ attn.proj.weight.T + attn.proj.bias
        x = queries + block.gamma_1_cross * attended
        if variant != "no_norm_after_attention":
            x = layer_norm(x, block.norm2_cross)
        hidden = F.gelu(x @ block.mlp_cross.fc1.weight.T + block.mlp_cross.fc1.bias)
        queries = x + block.gamma_2_cross * (hidden @ block.mlp_cross.fc2.weight.T + block.mlp_cross.fc2.bias)
    return layer_norm(queries, regressor.norm)


def regressor_case(seed=0):
    config = tiny_config(regressor_num_hidden_layers=2)
    torch.manual_seed(seed)
    regressor = randomize_(CaeRegressor(config).eval(), seed)
    generator = torch.Generator().manual_seed(seed + 10)
    mask_token = torch.randn(1, 1, 32, generator=generator)
    visible = torch.randn(2, 20, 32, generator=generator)
    queries = mask_token.expand(2, 12, -1)
    table = sincos_position_table(GRID, GRID, 32, "cae")[1:]
    ids = torch.stack([torch.randperm(64, generator=generator) for _ in range(2)])
    pos_visible, pos_masked = table[ids[:, :20]], table[ids[:, 20:32]]
    return regressor, (queries, visible, pos_masked, pos_visible)


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_regressor_matches_the_written_out_official_block(dtype, atol):
    regressor, args = regressor_case()
    regressor, args = regressor.to(dtype), [a.to(dtype) for a in args]
    with torch.no_grad():
        got = regressor(*args)
        expected = reference_regressor(regressor, *args)
    assert got.shape == (2, 12, 32)
    torch.testing.assert_close(got, expected, rtol=0, atol=atol)


@pytest.mark.parametrize("variant", ["position_on_values", "context_without_queries", "no_norm_after_attention"])
def test_regressor_reference_tells_each_rule_apart(variant):
    regressor, args = regressor_case()
    with torch.no_grad():
        got = regressor(*args)
        wrong = reference_regressor(regressor, *args, variant=variant)
    assert (got - wrong).abs().max() > 1e-3


def test_regressor_drop_path_is_linspace_to_the_rate_separately_for_regressor_and_decoder():
    model = MimCaeForPreTraining(tiny_config(regressor_num_hidden_layers=4, decoder_num_hidden_layers=3))
    assert [b.drop_path.drop_prob for b in model.regressor.blocks] == pytest.approx([0, 0.1 / 3, 0.2 / 3, 0.1])
    assert [b.drop_path.drop_prob for b in model.decoder.blocks] == pytest.approx([0, 0.05, 0.1])


# ------------------------------------------------------------------------------------------------ pipeline


def test_encoder_sees_visible_patches_with_cae_order_positions_like_boolean_indexing():
    """The official encoder: x[~mask].reshape(B, -1, D) + the sin-cos rows of the same positions, cls in front."""
    model, batch, mask = model_and_batch()
    with torch.no_grad():
        latent, ids_visible, ids_masked, _ = model.encode(batch["pixel_values"], mask)
        embedded = model.vit.patch_embed(batch["pixel_values"])
        table = sincos_position_table(GRID, GRID, 32, "cae").unsqueeze(0).expand(2, -1, -1)
        visible = embedded[~mask].reshape(2, -1, 32) + table[:, 1:][~mask].reshape(2, -1, 32)
        x = torch.cat([model.vit.cls_token.expand(2, -1, -1), visible], dim=1)
        for block in model.vit.blocks:
            x = block(x)
        expected = model.vit.norm(x)
    torch.testing.assert_close(latent, expected, rtol=0, atol=1e-6)
    assert torch.equal(ids_masked, torch.nonzero(mask)[:, 1].reshape(2, -1))
    assert torch.equal(ids_visible, torch.nonzero(~mask)[:, 1].reshape(2, -1))


def test_alignment_target_is_the_encoder_on_the_masked_patches_only():
    model, batch, mask = model_and_batch()
    with torch.no_grad():
        out = model(**batch)
        # the encoder run on the inverted mask: its "visible" patches are the masked ones
        expected, _, _, _ = model.encode(batch["pixel_values"], ~mask)
    torch.testing.assert_close(out.latent_target, expected[:, 1:], rtol=0, atol=0)
    assert not out.latent_target.requires_grad


def test_loss_is_token_cross_entropy_plus_lambda_times_mse():
    model, batch, mask = model_and_batch()
    with torch.no_grad():
        out = model(**batch)
        token_ids = model.tokenizer(batch["codebook_pixel_values"]).argmax(dim=1).flatten(1)
        cross_entropy = F.cross_entropy(out.logits.reshape(-1, 64), token_ids[mask])
        mse = ((out.latent_pred - out.latent_target) ** 2).mean()
    torch.testing.assert_close(out.reconstruction_loss, cross_entropy, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.alignment_loss, mse, rtol=0, atol=1e-7)
    assert torch.equal(out.loss, out.reconstruction_loss + 2.0 * out.alignment_loss)
    assert out.loss.dtype == out.reconstruction_loss.dtype == out.alignment_loss.dtype == torch.float32


def test_alignment_weight_changes_only_the_mse_part():
    batch = inputs()
    with torch.no_grad():
        base = build()(**batch)
        weighted = build(alignment_weight=5.0)(**batch)
    assert torch.equal(base.reconstruction_loss, weighted.reconstruction_loss)
    assert torch.equal(base.alignment_loss, weighted.alignment_loss)
    torch.testing.assert_close(weighted.loss - base.loss, 3.0 * base.alignment_loss, rtol=1e-6, atol=1e-6)


def test_labels_replace_the_tokenizer():
    model = build()
    batch = inputs()
    with torch.no_grad():
        token_ids = model.tokenizer(batch["codebook_pixel_values"]).argmax(dim=1)  # (B, h, w)
        from_view = model(**batch)
        from_labels = model(pixel_values=batch["pixel_values"], bool_masked_pos=batch["bool_masked_pos"], labels=token_ids)
    assert torch.equal(from_view.loss, from_labels.loss)
    with pytest.raises(ValueError, match="codebook_pixel_values"):
        model(pixel_values=batch["pixel_values"], bool_masked_pos=batch["bool_masked_pos"])
    with pytest.raises(ValueError, match="outside"):
        model(**{**batch, "codebook_pixel_values": batch["codebook_pixel_values"] * 4 - 2})


def test_alignment_loss_sends_gradients_only_through_the_prediction():
    """Backprop of the alignment term alone equals backprop of MSE(latent_pred, target.detach()); a target that
    kept its graph (computed here on purpose) gives other encoder gradients, so the comparison can fail."""

    def encoder_grads(loss_fn):
        model = build()
        loss_fn(model).backward()
        return {n: p.grad.clone() for n, p in model.vit.named_parameters() if p.grad is not None}

    batch = inputs()

    def ours(model):
        return model(**batch).alignment_loss

    def detached_by_hand(model):
        out = model(**batch)
        return F.mse_loss(out.latent_pred, out.latent_target.detach())

    def target_with_graph(model):
        out = model(**batch)
        target, _, _, _ = model.encode(batch["pixel_values"], ~batch["bool_masked_pos"])
        return F.mse_loss(out.latent_pred, target[:, 1:])

    got, expected, leaky = encoder_grads(ours), encoder_grads(detached_by_hand), encoder_grads(target_with_graph)
    assert got.keys() == expected.keys() and "blocks.0.attn.qkv.weight" in got
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0)
    assert any((leaky[n] - got[n]).abs().max() > 1e-6 for n in got)


def test_teacher_runs_in_the_models_mode_so_drop_path_is_active_in_training():
    model = build(drop_path_rate=0.5)
    batch = inputs(batch_size=4)
    with torch.no_grad():
        assert torch.equal(model(**batch).latent_target, model(**batch).latent_target)
        model.train()
        torch.manual_seed(0)
        targets = [model(**batch).latent_target for _ in range(4)]
    assert not all(torch.equal(targets[0], target) for target in targets[1:])


def test_momentum_zero_keeps_no_second_copy_of_the_encoder():
    model = build()
    assert model.teacher is None
    assert not any(key.startswith("teacher.") for key in model.state_dict())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.update_teacher()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_momentum_teacher_is_a_frozen_ema_updated_only_by_update_teacher():
    model = build(teacher_momentum=0.9)
    teacher, encoder = dict(model.teacher.named_parameters()), dict(model.vit.named_parameters())
    assert teacher.keys() == encoder.keys()
    assert all(torch.equal(teacher[n], encoder[n]) for n in teacher)  # starts as a copy
    assert not any(p.requires_grad for p in teacher.values())
    with torch.no_grad():
        for p in encoder.values():
            p.add_(torch.randn_like(p))  # an optimizer step
    old = {n: p.clone() for n, p in teacher.items()}
    model.train()(**inputs())  # forward and loss leave the teacher alone
    assert all(torch.equal(old[n], teacher[n]) for n in teacher)
    model.update_teacher()
    for name in teacher:
        torch.testing.assert_close(teacher[name], 0.9 * old[name] + 0.1 * encoder[name], rtol=0, atol=1e-6)


def test_momentum_teacher_computes_the_target():
    model = build(teacher_momentum=0.5)
    batch = inputs()
    with torch.no_grad():
        before = model(**batch)
        for p in model.teacher.parameters():
            p.mul_(1.5)
        after = model(**batch)
    assert torch.equal(before.latent_pred, after.latent_pred)
    assert not torch.allclose(before.latent_target, after.latent_target)


def test_pixel_target_regresses_norm_pix_of_masked_patches():
    model = build(decoder_target="pixels")
    assert model.tokenizer is None and not any(k.startswith("tokenizer.") for k in model.state_dict())
    batch = inputs()
    mask = batch["bool_masked_pos"]
    out = model(pixel_values=batch["pixel_values"], bool_masked_pos=mask)
    assert out.logits.shape == (2, 32, 4 * 4 * 3) and torch.isfinite(out.loss)
    target = patchify(batch["pixel_values"], 4)[mask].reshape(2, 32, 48)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    torch.testing.assert_close(out.reconstruction_loss, ((out.logits - target) ** 2).mean(), rtol=0, atol=1e-6)
    out.loss.backward()
    assert model.decoder.head.weight.grad is not None
    with pytest.raises(ValueError, match="no tokenizer"):
        model.load_tokenizer(MimDvaeModel(MimDvaeConfig(**TINY_TOKENIZER)))


def test_a_wider_decoder_projects_latents_and_targets():
    model = build(decoder_hidden_size=48, decoder_num_attention_heads=4)
    out = model(**inputs())
    assert out.latent_pred.shape == out.latent_target.shape == (2, 32, 48) and torch.isfinite(out.loss)
    positions = model.positions((GRID, GRID), "cpu", torch.float32)
    torch.testing.assert_close(positions[0], sincos_position_table(GRID, GRID, 48, "cae")[1:], rtol=0, atol=0)


def test_masks_with_different_counts_in_a_batch_are_refused():
    model = build()
    batch = inputs()
    batch["bool_masked_pos"][0, torch.nonzero(~batch["bool_masked_pos"][0])[0]] = True
    with pytest.raises(ValueError, match="same number of masked patches"):
        model(**batch)
    with pytest.raises(ValueError, match="return_bool_masked_pos"):
        model(pixel_values=batch["pixel_values"], codebook_pixel_values=batch["codebook_pixel_values"])


# ------------------------------------------------------------------------------------------ init and tokenizer


def test_xavier_override_init():
    model = MimCaeForPreTraining(tiny_config())
    fc1 = model.vit.blocks[0].mlp.fc1.weight  # (64, 32): xavier bound sqrt(6 / 96)
    assert fc1.abs().max() <= math.sqrt(6 / 96) and fc1.std() > 0.8 * math.sqrt(2 / 96)
    q = model.regressor.blocks[0].cross_attn.q.weight
    assert q.abs().max() <= math.sqrt(6 / 64) and q.std() > 0.8 * math.sqrt(2 / 64)
    head = model.decoder.head.weight  # (64, 32)
    assert head.abs().max() <= math.sqrt(6 / 96) and model.decoder.head.bias.abs().sum() == 0
    for tensor in (model.vit.patch_embed.proj.weight, model.vit.cls_token, model.mask_token):
        assert tensor.abs().max() <= 0.02 and tensor.std() > 0.005
    assert model.vit.blocks[1].attn.proj.weight.std() > 0.8 * math.sqrt(2 / 64)  # no depth rescale
    for block in [*model.vit.blocks, *model.decoder.blocks]:
        assert torch.all(block.gamma_1 == 0.1) and torch.all(block.gamma_2 == 0.1)
    assert all(torch.all(b.gamma_1_cross == 0.1) for b in model.regressor.blocks)
    assert not model.vit.pos_embed.requires_grad
    torch.testing.assert_close(model.vit.pos_embed[0], sincos_position_table(GRID, GRID, 32, "cae"))
    # CAE order: the first quarter is sin(row), zero along the first row
    assert model.vit.pos_embed[0, 1 : 1 + GRID, :8].abs().max() == 0 and model.vit.pos_embed[0, 1 + GRID, 1] != 0


def test_tokenizer_is_frozen_in_eval_and_loads_a_dvae():
    model = build()
    assert not any(p.requires_grad for p in model.tokenizer.parameters())
    model.train()
    assert model.vit.training and not model.tokenizer.training
    torch.manual_seed(5)
    dvae = MimDvaeModel(MimDvaeConfig(**TINY_TOKENIZER, image_size=64)).eval()
    model.load_tokenizer(dvae)
    view = inputs()["codebook_pixel_values"]
    assert torch.equal(model.tokenize(view), dvae.get_codebook_indices(view).flatten(1))
    assert not any(p.requires_grad for p in model.tokenizer.parameters())
    with pytest.raises(ValueError, match="vocab_size=32"):
        model.load_tokenizer(MimDvaeModel(MimDvaeConfig(**{**TINY_TOKENIZER, "vocab_size": 32})))
    with pytest.raises(ValueError, match="downsamples by 4"):
        model.load_tokenizer(MimDvaeModel(MimDvaeConfig(**{**TINY_TOKENIZER, "num_groups": 3})))


def test_a_teacher_missing_from_the_checkpoint_starts_as_the_loaded_encoder(tmp_path):
    build().save_pretrained(tmp_path)  # momentum 0: no teacher weights saved
    config = MimCaeConfig.from_pretrained(tmp_path)
    config.teacher_momentum = 0.9
    model = MimCaeForPreTraining.from_pretrained(tmp_path, config=config)
    teacher, encoder = model.teacher.state_dict(), model.vit.state_dict()
    assert teacher.keys() == encoder.keys() and all(torch.equal(teacher[k], encoder[k]) for k in teacher)


def test_frozen_parts_stay_frozen_after_from_pretrained(tmp_path):
    build(teacher_momentum=0.5).save_pretrained(tmp_path)
    loaded = MimCaeForPreTraining.from_pretrained(tmp_path)
    frozen = [n for n, p in loaded.named_parameters() if not p.requires_grad]
    assert "vit.pos_embed" in frozen and "teacher.blocks.0.attn.qkv.weight" in frozen
    assert "tokenizer.blocks.input.w" in frozen and "vit.blocks.0.attn.qkv.weight" not in frozen


# ------------------------------------------------------------------------------------------------ fine-tuning


def test_fine_tuning_load_starts_fc_norm_from_the_final_norm_and_zero_relative_bias(tmp_path):
    pretrained = build()
    with torch.no_grad():
        pretrained.vit.norm.weight.uniform_(0.5, 1.5)
        pretrained.vit.norm.bias.uniform_(-1, 1)
    pretrained.save_pretrained(tmp_path / "pretrain")
    config = MimCaeConfig.from_pretrained(tmp_path / "pretrain")
    config.update({**MimCaeConfig.finetune_overrides, "num_labels": 3})
    model, info = MimCaeForImageClassification.from_pretrained(tmp_path / "pretrain", config=config,
                                                               output_loading_info=True)
    assert torch.equal(model.fc_norm.weight, pretrained.vit.norm.weight)
    assert torch.equal(model.fc_norm.bias, pretrained.vit.norm.bias)
    assert info["missing_keys"] == {"head.weight", "head.bias", "vit.blocks.0.attn.relative_position_bias_table",
                                    "vit.blocks.1.attn.relative_position_bias_table"}
    for block in model.vit.blocks:
        assert block.attn.relative_position_bias_table.abs().sum() == 0
        assert torch.equal(block.attn.relative_position_index, relative_position_index(GRID, GRID))
    assert torch.equal(model.vit.blocks[1].mlp.fc2.weight, pretrained.vit.blocks[1].mlp.fc2.weight)
    assert not model.vit.pos_embed.requires_grad and model.head.weight.abs().max() < 1e-3

    # a fine-tuned classifier saves fc_norm under its own name and reloads exactly, its relative bias included
    with torch.no_grad():
        for block in model.vit.blocks:
            block.attn.relative_position_bias_table.normal_()
    model.save_pretrained(tmp_path / "finetuned")
    saved = load_file(tmp_path / "finetuned" / "model.safetensors")
    assert "fc_norm.weight" in saved and "vit.norm.weight" not in saved
    reloaded = MimCaeForImageClassification.from_pretrained(tmp_path / "finetuned")
    pixel_values = inputs()["pixel_values"]
    with torch.no_grad():
        assert torch.equal(model.eval()(pixel_values).logits, reloaded(pixel_values).logits)


def test_cls_pooling_classifier_keeps_the_final_norm(tmp_path):
    pretrained = build()
    pretrained.save_pretrained(tmp_path)
    model = MimCaeForImageClassification.from_pretrained(tmp_path, pooling="cls", num_labels=2)
    assert model.fc_norm is None and torch.equal(model.vit.norm.weight, pretrained.vit.norm.weight)


def test_pretraining_refuses_relative_position_bias():
    with pytest.raises(ValueError, match="relative_position_bias"):
        MimCaeForPreTraining(tiny_config(relative_position_bias="per_layer"))


# ------------------------------------------------------------------------------------------------ probe


def test_attentive_probe_shapes_and_gradients_reach_only_the_probe():
    torch.manual_seed(0)
    encoder = MimCaeModel(tiny_config())
    probe = AttentiveProbe(hidden_size=32, num_heads=4, num_labels=5)
    pixel_values = inputs(batch_size=3)["pixel_values"]
    with torch.no_grad():
        features = encoder(pixel_values=pixel_values).last_hidden_state
    logits = probe(features)
    assert logits.shape == (3, 5)
    F.cross_entropy(logits, torch.tensor([0, 1, 4])).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in probe.parameters())
    assert all(p.grad is None for p in encoder.parameters())
    # a learned query attending without positions: the order of the tokens does not matter
    with torch.no_grad():
        shuffled = probe(features[:, torch.randperm(features.shape[1])])
    torch.testing.assert_close(shuffled, logits.detach(), rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------------ processor


@pytest.mark.parametrize("mode", ["block", "random"])
def test_processor_masks_exactly_the_configured_count(mode):
    processor = MimCaeImageProcessor(mask_mode=mode)
    images = [Image.fromarray(np.full((40, 50, 3), i, dtype=np.uint8)) for i in range(16)]
    out = processor(images, return_bool_masked_pos=True, mask_seed=7, return_tensors="pt")
    assert out["bool_masked_pos"].shape == (16, 196)
    assert out["bool_masked_pos"].sum(dim=1).tolist() == [98] * 16
    again = processor(images, return_bool_masked_pos=True, mask_seed=7, return_tensors="pt")
    assert torch.equal(out["bool_masked_pos"], again["bool_masked_pos"])


def test_block_masks_are_blocks_and_random_masks_are_not():
    """Block masks come in rectangles of >= min_num_patches, so few masked cells lack a masked 4-neighbour."""

    def isolated(mask):
        padded = np.pad(mask, 1)
        neighbours = padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:]
        return int((mask & ~neighbours).sum())

    block = MimCaeImageProcessor(mask_mode="block")
    uniform = MimCaeImageProcessor(mask_mode="random")
    rng = random.Random(0)
    assert sum(isolated(block.generate_mask(rng)) for _ in range(20)) < sum(
        isolated(uniform.generate_mask(rng)) for _ in range(20))


def test_processor_codebook_view_is_lanczos_then_map_pixels():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 45, 3), dtype=np.uint8))
    processor = MimCaeImageProcessor.for_model_config(tiny_config())
    out = processor([image], return_codebook_pixels=True, return_tensors="pt")
    expected = np.asarray(image.resize((64, 64), Image.Resampling.LANCZOS), dtype=np.float32) / 255 * 0.8 + 0.1
    assert out["pixel_values"].shape == (1, 3, 32, 32)
    torch.testing.assert_close(out["codebook_pixel_values"][0], torch.from_numpy(expected).permute(2, 0, 1),
                               rtol=0, atol=1e-6)


def test_processor_follows_the_model_config(tmp_path):
    tokens = MimCaeImageProcessor.for_model_config(tiny_config())
    pixels = MimCaeImageProcessor.for_model_config(tiny_config(decoder_target="pixels", mask_mode="random"))
    assert tokens.pretraining_kwargs() == {"return_bool_masked_pos": True, "return_codebook_pixels": True}
    assert pixels.pretraining_kwargs() == {"return_bool_masked_pos": True, "return_codebook_pixels": False}
    pixels.save_pretrained(tmp_path)
    loaded = MimCaeImageProcessor.from_pretrained(tmp_path)
    assert (loaded.num_masking_patches, loaded.min_num_patches, loaded.patch_size) == (32, 4, 4)
    assert (loaded.mask_mode, loaded.decoder_target, loaded.codebook_image_size) == ("random", "pixels", 64)
    image = Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8))
    batch = loaded([image, image], **loaded.pretraining_kwargs(), return_tensors="pt")
    assert set(batch) == {"pixel_values", "bool_masked_pos"} and batch["bool_masked_pos"].sum(1).tolist() == [32, 32]


def test_processor_batch_trains_the_model():
    config = tiny_config()
    processor = MimCaeImageProcessor.for_model_config(config)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(2)]
    batch = processor(images, **processor.pretraining_kwargs(), mask_seed=0, return_tensors="pt")
    out = build(config).train()(**batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)


# ------------------------------------------------------------------------------------------------ config


def test_default_config_is_the_canonical_vit_b_16():
    config = MimCaeConfig()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 12, 12)
    assert (config.qkv_bias, config.layer_scale_init_value, config.drop_path_rate) == ("qv", 0.1, 0.1)
    assert (config.position_embedding_type, config.relative_position_bias, config.pooling) == ("sincos_cae", "none", "mean")
    assert (config.num_masking_patches, config.min_num_patches, config.mask_mode) == (98, 16, "block")
    assert (config.regressor_num_hidden_layers, config.decoder_num_hidden_layers) == (4, 4)
    assert (config.decoder_hidden_size, config.decoder_num_attention_heads, config.decoder_intermediate_size) == (768, 12, 3072)
    assert (config.decoder_layer_scale_init_value, config.alignment_weight, config.teacher_momentum) == (0.1, 2.0, 0.0)
    assert (config.vocab_size, config.codebook_image_size, config.layer_norm_eps) == (8192, 112, 1e-6)
    assert MimDvaeConfig(**config.tokenizer_config).hidden_size == 256


@pytest.mark.parametrize("field,value,needle", [
    ("mask_mode", "grid", "mask_mode"),
    ("decoder_target", "hog", "decoder_target"),
    ("teacher_momentum", 1.0, "teacher_momentum"),
    ("num_masking_patches", 64, "num_masking_patches"),
    ("codebook_image_size", 32, "codebook_image_size"),
    ("vocab_size", 128, "vocab_size"),
    ("relative_position_bias", "shared", "relative_position_bias"),
    ("position_embedding_type", "learned", "position_embedding_type"),
    ("decoder_num_attention_heads", 5, "decoder_num_attention_heads"),
    ("alignment_weight", -1.0, "alignment_weight"),
])
def test_impossible_configs_fail_naming_the_field(field, value, needle):
    assert_refused(tiny_config, {field: value}, needle)
