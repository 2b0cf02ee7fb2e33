"""The shared backbone: position tables, relative position index, attention conventions, patchify."""

import math

import pytest
import torch
from transformers.models.vit_mae.modeling_vit_mae import build_2d_sinusoidal_position_embedding

from hf_mim.modeling.vit import (Attention, attention_with_learned_bias, DropPath, patchify, relative_position_index, resize_position_table,
                                 sincos_position_table, unpatchify)


def test_mae_order_sincos_matches_transformers_vit_mae_table():
    ours = sincos_position_table(14, 14, 64, "mae")
    theirs = build_2d_sinusoidal_position_embedding(height=14, width=14, embed_dim=64, cls_token=True)
    half = theirs.shape[-1] // 2
    theirs = torch.cat([theirs[..., half:], theirs[..., :half]], dim=-1)  # transformers' rotation to MAE's layout
    torch.testing.assert_close(ours, theirs.reshape(ours.shape).float(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("order", ["mae", "cae"])
def test_sincos_quarters_by_hand(order):
    dim, row, col = 16, 2, 3
    table = sincos_position_table(4, 5, dim, order)
    token = 1 + row * 5 + col
    omega = [1 / 10000 ** (k / 4) for k in range(4)]
    col_part = [math.sin(col * w) for w in omega] + [math.cos(col * w) for w in omega]
    row_part = [math.sin(row * w) for w in omega] + [math.cos(row * w) for w in omega]
    expected = col_part + row_part if order == "mae" else row_part + col_part
    torch.testing.assert_close(table[token], torch.tensor(expected), rtol=0, atol=1e-6)
    assert table[0].abs().sum() == 0  # the cls row


def test_relative_position_index_layout_of_beit():
    index = relative_position_index(14, 14)
    assert index.shape == (197, 197) and index.max() == 731
    assert index[0, 5] == 729 and index[5, 0] == 730 and index[0, 0] == 731
    # patch a = (r=1, c=2) -> token 1 + 16, patch b = (0, 0) -> token 1: (1 - 0 + 13) * 27 + (2 - 0 + 13)
    assert index[17, 1] == 14 * 27 + 15
    assert torch.all(index.diagonal()[1:] == 13 * 27 + 13)


def test_qv_bias_equals_a_split_layout_whose_key_has_no_bias():
    torch.manual_seed(0)
    attn = Attention(8, 2, qkv_bias="qv").eval()
    with torch.no_grad():
        attn.q_bias.normal_()
        attn.v_bias.normal_()
    x = torch.randn(2, 5, 8)
    q = x @ attn.qkv.weight[:8].T + attn.q_bias
    k = x @ attn.qkv.weight[8:16].T
    v = x @ attn.qkv.weight[16:].T + attn.v_bias
    heads = lambda t: t.reshape(2, 5, 2, 4).transpose(1, 2)  # noqa: E731
    weights = (heads(q) @ heads(k).transpose(-1, -2) / 2.0).softmax(-1)
    expected = attn.proj((weights @ heads(v)).transpose(1, 2).reshape(2, 5, 8))
    torch.testing.assert_close(attn(x), expected, rtol=0, atol=1e-6)


def test_patchify_round_trip_and_resize_keeps_cls():
    images = torch.randn(2, 3, 12, 8)
    assert torch.equal(unpatchify(patchify(images, 4), 4, 3, (3, 2)), images)
    table = torch.randn(1, 1 + 16, 8)
    resized = resize_position_table(table, (6, 6))
    assert resized.shape == (1, 37, 8) and torch.equal(resized[:, 0], table[:, 0])


def test_drop_path_keeps_expectation_and_is_identity_in_eval():
    torch.manual_seed(0)
    layer = DropPath(0.3)
    x = torch.ones(20000, 4)
    out = layer(x)
    kept = out[:, 0].unique()
    assert len(kept) == 2 and kept[0] == 0 and abs(kept[1].item() - 1 / 0.7) < 1e-6
    assert abs(out.mean().item() - 1) < 0.02
    assert torch.equal(layer.eval()(x), x)


def test_learned_bias_attention_matches_sdpa_in_values_and_every_gradient():
    """The training path for a trainable relative position bias (bmm, broadcast bias, softmax, bmm) against SDPA."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 17, 8, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    bias = torch.randn(3, 17, 17, generator=g, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 3, 17, 8, generator=g, dtype=torch.float64)
    ours = attention_with_learned_bias(q, k, v, bias)
    grads = torch.autograd.grad((ours * upstream).sum(), (q, k, v, bias))
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0))
    expected_grads = torch.autograd.grad((expected * upstream).sum(), (q, k, v, bias))
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-12)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_attention_takes_the_learned_bias_path_only_when_the_bias_needs_a_gradient(monkeypatch):
    import hf_mim.modeling.vit as vit

    calls = []
    monkeypatch.setattr(vit, "attention_with_learned_bias", lambda *a: calls.append(1) or a[2])
    attn = Attention(16, 2, qkv_bias="qv", relative_grid_size=2).eval()
    x = torch.randn(1, 5, 16)
    attn(x)
    with torch.no_grad():
        attn(x)
    assert len(calls) == 1
    attn.relative_position_bias_table.requires_grad_(False)
    attn(x)
    assert len(calls) == 1


def test_learned_bias_stays_on_sdpa_where_a_fused_kernel_returns_its_gradient(monkeypatch):
    """On CUDA the trainable bias goes to SDPA (memory-efficient kernel with a bias gradient); elsewhere to the
    bmm path. Simulated on CPU by claiming the fused gradient: SDPA then runs, with the same values and grads."""
    import hf_mim.modeling.vit as vit

    assert vit.sdpa_returns_bias_gradient(torch.device("cuda"))
    assert not vit.sdpa_returns_bias_gradient(torch.device("cpu"))
    torch.manual_seed(0)
    attn = Attention(16, 2, qkv_bias="qv", relative_grid_size=2)
    with torch.no_grad():
        attn.relative_position_bias_table.normal_()
    x = torch.randn(2, 5, 16)
    bmm_out = attn(x)
    bmm_grad, = torch.autograd.grad(bmm_out.square().sum(), attn.relative_position_bias_table)
    calls = []
    monkeypatch.setattr(vit, "sdpa_returns_bias_gradient", lambda device: True)
    monkeypatch.setattr(vit, "attention_with_learned_bias", lambda *a: calls.append(1))
    sdpa_out = attn(x)
    sdpa_grad, = torch.autograd.grad(sdpa_out.square().sum(), attn.relative_position_bias_table)
    assert calls == []
    torch.testing.assert_close(sdpa_out, bmm_out, rtol=0, atol=1e-5)
    torch.testing.assert_close(sdpa_grad, bmm_grad, rtol=0, atol=1e-4)
