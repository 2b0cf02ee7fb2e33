"""dVAE tokenizer: DALL-E's key layout, shapes, the ELBO's pieces against hand formulas, schedules, training, and
the safe reader of OpenAI's pickled `encoder.pkl` (a fake one is pickled here from a throw-away `dall_e` package)."""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
import types
from collections import OrderedDict

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hf_mim.dalle_pickle import (
    dvae_config_from_dalle_state_dict,
    dvae_from_dalle_encoder,
    load_dalle_encoder_state_dict,
)
from hf_mim.modeling.configuration_dvae import MimDvaeConfig
from hf_mim.modeling.modeling_dvae import (
    MimDvaeModel,
    batch_kl_to_uniform,
    codebook_statistics,
    gumbel_temperature,
    kl_to_uniform,
    kl_weight_schedule,
    logit_laplace_nll,
    map_pixels,
    negative_code_information,
    unmap_pixels,
)


def tiny_config(**overrides) -> MimDvaeConfig:
    fields = dict(vocab_size=64, hidden_size=16, num_blocks_per_group=1, decoder_init_size=8, image_size=32)
    fields.update(overrides)
    return MimDvaeConfig(**fields)


@pytest.fixture(scope="module")
def tiny_model() -> MimDvaeModel:
    torch.manual_seed(0)
    return MimDvaeModel(tiny_config()).eval()


def mapped_images(batch=2, size=32, seed=0) -> torch.Tensor:
    return map_pixels(torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)))


# ------------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    "overrides, field",
    [({"vocab_size": 1}, "vocab_size"), ({"hidden_size": 18}, "hidden_size"), ({"num_groups": 0}, "num_groups"),
     ({"num_blocks_per_group": 0}, "num_blocks_per_group"), ({"image_size": 100}, "image_size"),
     ({"kl_weight": -1.0}, "kl_weight"), ({"temperature_end": 0.0}, "temperature_end"),
     ({"codebook_diversity_weight": -0.5}, "codebook_diversity_weight")],
)
def test_config_rejects_impossible_values_by_name(overrides, field):
    with pytest.raises(ValueError, match=field):
        MimDvaeConfig(**overrides)


def test_config_defaults_are_dalle():
    config = MimDvaeConfig()
    assert (config.vocab_size, config.hidden_size, config.num_groups, config.num_blocks_per_group) == (8192, 256, 4, 2)
    assert (config.num_channels, config.decoder_init_size, config.image_size) == (3, 128, 112)
    assert config.model_type == "mim_dvae" and config.kl_weight == 6.6 and config.downsample_factor == 8


# ------------------------------------------------------------------------------------ DALL-E key layout


def dalle_encoder_shapes(n_hid=256, vocab=8192, groups=4, blocks=2, channels=3) -> dict[str, tuple]:
    """Written from DALL-E's published architecture, not from our modules: 7x7 input conv, groups at n, 2n, 4n, 8n whose
    blocks have res_path 3x3, 3x3, 3x3, 1x1 through width out/4 and a 1x1 id_path when the width changes."""
    shapes = {"blocks.input.w": (n_hid, channels, 7, 7), "blocks.input.b": (n_hid,)}
    n_in = n_hid
    for g in range(1, groups + 1):
        n_out = n_hid * 2 ** (g - 1)
        hid = n_out // 4
        for i in range(1, blocks + 1):
            p = f"blocks.group_{g}.block_{i}."
            if n_in != n_out:
                shapes[p + "id_path.w"], shapes[p + "id_path.b"] = (n_out, n_in, 1, 1), (n_out,)
            convs = [(hid, n_in, 3), (hid, hid, 3), (hid, hid, 3), (n_out, hid, 1)]
            for j, (o, c, k) in enumerate(convs, 1):
                shapes[f"{p}res_path.conv_{j}.w"], shapes[f"{p}res_path.conv_{j}.b"] = (o, c, k, k), (o,)
            n_in = n_out
    shapes["blocks.output.conv.w"], shapes["blocks.output.conv.b"] = (vocab, n_in, 1, 1), (vocab,)
    return shapes


def test_default_encoder_state_dict_is_dalles():
    with torch.device("meta"):
        model = MimDvaeModel(MimDvaeConfig())
    encoder = {k[len("encoder."):]: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("encoder.")}
    # 2 (input) + 4 groups x 2 blocks x 4 convs x 2 + 3 id_paths x 2 + 2 (output)
    assert len(encoder) == 2 + 4 * 2 * 4 * 2 + 3 * 2 + 2 == 74
    assert encoder == dalle_encoder_shapes()
    assert encoder["blocks.input.w"] == (256, 3, 7, 7)
    assert encoder["blocks.group_1.block_1.res_path.conv_1.w"] == (64, 256, 3, 3)
    assert encoder["blocks.group_2.block_1.id_path.b"] == (512,)
    assert encoder["blocks.output.conv.w"] == (8192, 2048, 1, 1)
    assert "blocks.group_1.block_1.id_path.w" not in encoder  # identity, no parameters


def test_default_decoder_mirrors_dalle_decoder():
    with torch.device("meta"):
        model = MimDvaeModel(MimDvaeConfig())
    decoder = {k[len("decoder."):]: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("decoder.")}
    assert decoder["blocks.input.w"] == (128, 8192, 1, 1)
    assert decoder["blocks.group_1.block_1.id_path.w"] == (2048, 128, 1, 1)
    assert decoder["blocks.group_1.block_1.res_path.conv_1.w"] == (512, 128, 1, 1)  # 1x1 first in the decoder
    assert decoder["blocks.group_1.block_1.res_path.conv_4.w"] == (512 * 4, 512, 3, 3)
    assert decoder["blocks.group_4.block_2.res_path.conv_4.w"] == (256, 64, 3, 3)
    assert decoder["blocks.output.conv.w"] == (6, 256, 1, 1)
    assert len(decoder) == 2 + 4 * 2 * 4 * 2 + 4 * 2 + 2  # every group's first block changes width here
    assert model.decoder.blocks.group_1.block_1.post_gain == 1 / 64


def test_init_is_dalles():
    torch.manual_seed(0)
    model = MimDvaeModel(tiny_config(hidden_size=32))
    w = model.encoder.blocks.group_2.block_1.res_path.conv_1.w  # n_in 32, k 3
    assert abs(w.std().item() - 1 / math.sqrt(32 * 9)) < 0.1 / math.sqrt(32 * 9)
    assert torch.all(model.decoder.blocks.output.conv.b == 0)


# ------------------------------------------------------------------------------------------- tokenizing


@pytest.mark.parametrize("size, grid", [(112, 14), (224, 28)])
def test_logits_and_indices_shapes(tiny_model, size, grid):
    x = mapped_images(batch=2, size=size)
    logits = tiny_model.get_codebook_logits(x)
    ids = tiny_model.get_codebook_indices(x)
    assert logits.shape == (2, 64, grid, grid) and logits.dtype == torch.float32
    assert ids.shape == (2, grid, grid) and ids.dtype == torch.long and not ids.requires_grad
    assert torch.equal(ids, logits.argmax(1))
    assert tiny_model.decode(ids).shape == (2, 3, size, size)


def test_tokenizer_runs_fp32_under_autocast(tiny_model):
    x = mapped_images()
    reference = tiny_model.get_codebook_logits(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = tiny_model.get_codebook_logits(x)
    assert logits.dtype == torch.float32 and torch.equal(logits, reference)


@pytest.mark.parametrize(
    "bad, match",
    [(torch.rand(3, 32, 32), "4-D"), ((torch.rand(1, 3, 32, 32) * 255).to(torch.uint8), "floating point"),
     (torch.rand(1, 1, 32, 32), "channels"), (torch.rand(1, 3, 30, 32), "multiples of 8"),
     (torch.randn(1, 3, 32, 32) * 2, "ImageNet-normalised")],
)
def test_bad_inputs_are_refused_clearly(tiny_model, bad, match):
    with pytest.raises(ValueError, match=match):
        tiny_model.get_codebook_indices(bad)


def test_range_check_on_the_cpu_runs_on_every_call(tiny_model):
    """On an accelerator the [0, 1] check stops after the first good batch (it is a host sync); on the CPU it is
    free and must keep catching a bad batch that follows good ones."""
    tiny_model.get_codebook_indices(map_pixels(torch.rand(1, 3, 32, 32)))
    assert tiny_model._map_pixels_range_checked
    with pytest.raises(ValueError, match=r"pixel_values range \[-.*is outside \[0, 1\]"):
        tiny_model.get_codebook_indices(torch.randn(1, 3, 32, 32) * 2)


def test_map_unmap_round_trip():
    x = torch.rand(2, 3, 8, 8)
    mapped = map_pixels(x)
    assert mapped.min() >= 0.1 and mapped.max() <= 0.9
    torch.testing.assert_close(unmap_pixels(mapped), x)
    torch.testing.assert_close(map_pixels(torch.tensor([0.0, 1.0])), torch.tensor([0.1, 0.9]))
    assert torch.equal(unmap_pixels(torch.tensor([0.0, 1.0])), torch.tensor([0.0, 1.0]))  # clamped
    assert MimDvaeModel.map_pixels is map_pixels and MimDvaeModel.unmap_pixels is unmap_pixels


def test_save_load_round_trip(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = MimDvaeModel.from_pretrained(tmp_path).eval()
    fields = lambda config: {k: v for k, v in config.to_dict().items() if k != "_name_or_path"}  # noqa: E731
    assert fields(loaded.config) == fields(tiny_model.config)
    reference = tiny_model.state_dict()
    assert loaded.state_dict().keys() == reference.keys()
    assert all(torch.equal(v, reference[k]) for k, v in loaded.state_dict().items())
    x = mapped_images()
    assert torch.equal(loaded.get_codebook_logits(x), tiny_model.get_codebook_logits(x))
    ids = tiny_model.get_codebook_indices(x)
    assert torch.equal(loaded.decode(ids), tiny_model.decode(ids))


# ------------------------------------------------------------------------------------- image processor


def test_processor_gives_the_tokenizer_view_of_beit():
    """The tokenizer's own processor and BEiT's codebook view are one transform: Lanczos to the side, [0, 1],
    map_pixels; `do_map_pixels=False` gives the [0, 1] image."""
    from hf_mim.modeling.image_processing_beit import MimBeitImageProcessor
    from hf_mim.modeling.image_processing_dvae import MimDvaeImageProcessor

    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    processor = MimDvaeImageProcessor.for_model_config(tiny_config())
    mapped = processor(image, return_tensors="pt").pixel_values
    plain = processor(image, return_tensors="pt", do_map_pixels=False).pixel_values
    beit = MimBeitImageProcessor(size={"height": 32, "width": 32}, codebook_image_size=32)
    view = beit(image, return_tensors="pt", return_codebook_pixels=True).codebook_pixel_values
    assert mapped.shape == (1, 3, 32, 32) and torch.equal(mapped, view)
    torch.testing.assert_close(mapped, map_pixels(plain), rtol=0, atol=1e-6)
    assert plain.min() >= 0 and plain.max() <= 1 and mapped.min() >= 0.1 - 1e-6 and mapped.max() <= 0.9 + 1e-6


def test_processor_saves_with_the_model_and_loads_by_auto_class(tiny_model, tmp_path):
    from transformers import AutoImageProcessor

    import hf_mim  # noqa: F401
    from hf_mim.modeling.image_processing_dvae import MimDvaeImageProcessor

    tiny_model.save_pretrained(tmp_path)
    MimDvaeImageProcessor.for_model_config(tiny_model.config).save_pretrained(tmp_path)
    assert (tmp_path / "image_processing_dvae.py").exists()  # remote code of the auto_map entry
    auto_map = tiny_model.config.auto_map
    assert auto_map["AutoImageProcessor"] == "image_processing_dvae.MimDvaeImageProcessor"
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(processor, MimDvaeImageProcessor) and processor.size == {"height": 32, "width": 32}
    codes = tiny_model.get_codebook_indices(processor(PIL.Image.new("RGB", (20, 30)), return_tensors="pt").pixel_values)
    assert codes.shape == (1, 4, 4)
    script = (  # a process without hf_mim: the folder's own code
        "import sys; sys.modules['hf_mim'] = None\n"
        "from PIL import Image\nfrom transformers import AutoImageProcessor, AutoModel\n"
        f"folder = {str(tmp_path)!r}\n"
        "model = AutoModel.from_pretrained(folder, trust_remote_code=True)\n"
        "processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)\n"
        "pixels = processor(Image.new('RGB', (20, 30)), return_tensors='pt').pixel_values\n"
        "print(type(processor).__name__, type(model).__module__.startswith('hf_mim'), "
        "model.get_codebook_indices(pixels).tolist())\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split(" ", 2)[:2] == ["MimDvaeImageProcessor", "False"]
    assert result.stdout.split(" ", 2)[2].strip() == str(codes.tolist())


# ----------------------------------------------------------------------------------------- ELBO pieces


def test_kl_to_uniform_zero_for_uniform_and_hand_value_for_peaked():
    assert kl_to_uniform(torch.full((2, 16, 3, 3), 1.7)).abs().max() < 1e-6
    probs = torch.tensor([0.7, 0.1, 0.1, 0.1])
    logits = probs.log().view(1, 4, 1, 1) + 5.0  # shift-invariant
    expected = 0.7 * math.log(0.7 * 4) + 3 * 0.1 * math.log(0.1 * 4)
    assert kl_to_uniform(logits).item() == pytest.approx(expected, rel=1e-5)
    one_hot = torch.tensor([[[[60.0]], [[0.0]], [[0.0]], [[0.0]]]])
    assert kl_to_uniform(one_hot).item() == pytest.approx(math.log(4), rel=1e-5)  # the maximum, log K


def test_logit_laplace_nll_matches_density_formula():
    g = torch.Generator().manual_seed(0)
    x = 0.1 + 0.8 * torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64)
    mu, log_b = torch.randn(2, 2, 3, 4, 4, generator=g, dtype=torch.float64)
    b = log_b.exp()
    density = torch.exp(-torch.abs(torch.log(x / (1 - x)) - mu) / b) / (2 * b * x * (1 - x))
    torch.testing.assert_close(logit_laplace_nll(x, mu, log_b), -density.log())
    # a proper density on (0, 1): integrates to 1
    grid = torch.linspace(1e-6, 1 - 1e-6, 200_001, dtype=torch.float64)
    mu, log_b = torch.tensor(0.3, dtype=torch.float64), torch.tensor(-0.7, dtype=torch.float64)
    pdf = torch.exp(-logit_laplace_nll(grid, mu, log_b))
    assert torch.trapezoid(pdf, grid).item() == pytest.approx(1.0, abs=1e-3)


def test_codebook_statistics_by_hand():
    perplexity, usage = codebook_statistics(torch.tensor([[0, 0], [1, 1]]), vocab_size=4)
    assert perplexity.item() == pytest.approx(2.0) and usage.item() == pytest.approx(0.5)
    perplexity, usage = codebook_statistics(torch.arange(8), vocab_size=8)
    assert perplexity.item() == pytest.approx(8.0) and usage.item() == 1.0


def test_forward_is_the_negative_elbo_of_its_parts(tiny_model):
    x = mapped_images()
    logits = tiny_model.get_codebook_logits(x)
    noise = -torch.empty_like(logits).exponential_(generator=torch.Generator().manual_seed(1)).log()
    seen = {}
    hook = tiny_model.decoder.register_forward_pre_hook(lambda module, args: seen.setdefault("codes", args[0]))
    try:
        out = tiny_model(x, temperature=0.5, kl_weight=2.0, gumbel_noise=noise)
    finally:
        hook.remove()
    # the relaxed sample itself reaches the decoder (no straight-through)
    torch.testing.assert_close(seen["codes"], F.softmax((logits + noise) / 0.5, dim=1))
    location, log_scale = tiny_model.decode_parameters(seen["codes"])
    num_values = 3 * 32 * 32
    nll = logit_laplace_nll(x, location, log_scale)
    torch.testing.assert_close(out.reconstruction_loss, nll.sum((1, 2, 3)).mean() / num_values)
    torch.testing.assert_close(out.kl_loss, kl_to_uniform(logits).sum((1, 2)).mean() / num_values)
    torch.testing.assert_close(out.loss, out.reconstruction_loss + 2.0 * out.kl_loss)
    torch.testing.assert_close(out.reconstruction, unmap_pixels(torch.sigmoid(location)))
    assert out.reconstruction.min() >= 0 and out.reconstruction.max() <= 1
    assert out.logits.shape == (2, 64, 4, 4) and 1 <= out.codebook_perplexity <= 64 and 0 < out.codebook_usage <= 1
    default_weight = tiny_model(x, temperature=0.5, gumbel_noise=noise)  # kl_weight=None -> config.kl_weight
    torch.testing.assert_close(default_weight.loss, out.reconstruction_loss + tiny_model.config.kl_weight * out.kl_loss)
    assert len(tiny_model(x, gumbel_noise=noise, return_dict=False)) == 8
    diverse = tiny_model(x, temperature=0.5, kl_weight=2.0, diversity_weight=3.0, gumbel_noise=noise)
    # -I(cell; code) = KL(average q || U) - mean KL(q || U), from the two KLs computed on their own
    torch.testing.assert_close(out.diversity_loss, batch_kl_to_uniform(logits) - kl_to_uniform(logits).mean())
    torch.testing.assert_close(diverse.loss, out.loss + 3.0 * out.diversity_loss)


def test_batch_kl_to_uniform_is_zero_only_for_equal_use_of_codes():
    # two positions, each certain, on different codes of 4: the average is (0.5, 0.5, 0, 0), KL = log 4 - log 2
    two_codes = torch.full((1, 4, 1, 2), -60.0)
    two_codes[0, 0, 0, 0] = two_codes[0, 1, 0, 1] = 60.0
    assert batch_kl_to_uniform(two_codes).item() == pytest.approx(math.log(2), abs=1e-5)
    every_code = torch.full((1, 4, 2, 2), -60.0)
    for k in range(4):
        every_code[0, k, k // 2, k % 2] = 60.0
    assert batch_kl_to_uniform(every_code).item() == pytest.approx(0.0, abs=1e-5)
    assert kl_to_uniform(every_code).mean().item() == pytest.approx(math.log(4), rel=1e-5)  # the ELBO's KL is maximal


def test_negative_code_information_rewards_confident_cells_spread_over_the_codebook_not_flat_posteriors():
    """The diversity term must not be met by flat posteriors (a KL(average q || U) term alone is: it scored 0 on
    them and flattened the demo tokenizer's posteriors at weight 1)."""
    flat = torch.zeros(1, 4, 2, 2)
    assert negative_code_information(flat).item() == pytest.approx(0.0, abs=1e-6)
    every_code = torch.full((1, 4, 2, 2), -60.0)
    for k in range(4):
        every_code[0, k, k // 2, k % 2] = 60.0
    assert negative_code_information(every_code).item() == pytest.approx(-math.log(4), rel=1e-5)  # the minimum
    one_code = torch.full((1, 4, 2, 2), -60.0)
    one_code[0, 0] = 60.0  # confident but collapsed: no information either
    assert negative_code_information(one_code).item() == pytest.approx(0.0, abs=1e-5)
    # two codes, each on half the cells: -log 2
    two_codes = torch.full((1, 4, 2, 2), -60.0)
    two_codes[0, 0, 0] = two_codes[0, 1, 1] = 60.0
    assert negative_code_information(two_codes).item() == pytest.approx(-math.log(2), rel=1e-5)


def test_negative_code_information_has_finite_gradients_when_a_code_is_never_picked():
    """A code whose average probability underflows to 0 in float32 (here: logit -200 in every cell) once made
    the gradient NaN (x log x has an infinite slope at 0): a width-32 demo tokenizer at weight 1 stopped on a
    NaN loss at update ~155. The value must still equal its definition, computed in float64."""
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, 3)
    logits[:, 3] = -200.0
    logits.requires_grad_(True)
    value = negative_code_information(logits)
    value.backward()
    assert torch.isfinite(logits.grad).all()
    q = torch.softmax(logits.detach().double(), dim=1)
    mean_q = q.mean(dim=(0, 2, 3))
    expected = -(q * q.log()).sum(dim=1).mean() + (mean_q * mean_q.log()).nansum()
    assert value.item() == pytest.approx(expected.item(), abs=1e-6)


def test_reseeding_dead_codes_puts_more_codes_in_use_and_keeps_the_decodings():
    """A k-means split: on a toy batch where an untrained encoder picks a handful of codes, the dead ones take
    part of the used codes' cells, and those cells decode as before (the split code copies the decoder column)."""
    torch.manual_seed(0)
    model = MimDvaeModel(tiny_config(vocab_size=64)).eval()
    images = mapped_images(batch=16, seed=1)  # 256 cells
    before = model.get_codebook_indices(images)
    decoded = model.decode(before)
    dead = model.reseed_dead_codes(images, torch.Generator().manual_seed(0))
    after = model.get_codebook_indices(images)
    used_before, used_after = before.unique().numel(), after.unique().numel()
    assert dead == 64 - used_before and used_after > 2 * used_before, (used_before, used_after)
    torch.testing.assert_close(model.decode(after), decoded, rtol=0, atol=1e-3)


def test_gradients_reach_encoder_and_decoder():
    torch.manual_seed(0)
    model = MimDvaeModel(tiny_config()).train()
    model(mapped_images(), temperature=1.0).loss.backward()
    for name in ("encoder.blocks.input.w", "encoder.blocks.output.conv.w",
                 "decoder.blocks.input.w", "decoder.blocks.output.conv.w"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_schedules_endpoints():
    assert gumbel_temperature(0) == 1.0
    assert gumbel_temperature(150_000) == gumbel_temperature(10**7) == 1 / 16
    assert gumbel_temperature(75_000) == pytest.approx((1 + 1 / 16) / 2)  # cosine midpoint
    temps = [gumbel_temperature(s) for s in range(0, 150_001, 5000)]
    assert all(a >= b for a, b in zip(temps, temps[1:]))
    assert kl_weight_schedule(0) == 0.0
    assert kl_weight_schedule(2500) == pytest.approx(3.3)
    assert kl_weight_schedule(5000) == kl_weight_schedule(10**7) == 6.6


def test_a_few_training_steps_reduce_the_loss():
    """Piecewise-constant 8x8 cells: exactly what one token per cell can describe, so the ELBO drops fast."""
    torch.manual_seed(0)
    model = MimDvaeModel(tiny_config()).train()
    cells = torch.rand(4, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    x = map_pixels(F.interpolate(cells, scale_factor=8, mode="nearest"))
    noise = -torch.empty(4, 64, 4, 4).exponential_(generator=torch.Generator().manual_seed(2)).log()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = model(x, temperature=1.0, kl_weight=1.0, gumbel_noise=noise).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        final = model(x, temperature=1.0, kl_weight=1.0, gumbel_noise=noise).loss.item()
    assert all(math.isfinite(v) for v in losses)
    assert final < losses[0] - 0.2, (losses[0], final)


# ---------------------------------------------------------------------------------- safe encoder.pkl


def build_fake_dall_e():
    """A throw-away `dall_e` package with the class names, attribute names and forward of OpenAI's encoder."""

    class Conv2d(nn.Module):
        def __init__(self, n_in, n_out, kw):
            super().__init__()
            self.n_in, self.n_out, self.kw = n_in, n_out, kw
            self.use_float16, self.device, self.requires_grad = True, torch.device("cpu"), False
            self.w = nn.Parameter(torch.randn(n_out, n_in, kw, kw) / math.sqrt(n_in * kw * kw), requires_grad=False)
            self.b = nn.Parameter(torch.randn(n_out) * 0.1, requires_grad=False)

        def forward(self, x):
            return F.conv2d(x, self.w, self.b, padding=(self.kw - 1) // 2)

    class EncoderBlock(nn.Module):
        def __init__(self, n_in, n_out, n_layers):
            super().__init__()
            self.n_in, self.n_out, self.n_layers = n_in, n_out, n_layers
            self.n_hid, self.post_gain = n_out // 4, 1 / n_layers**2
            self.id_path = Conv2d(n_in, n_out, 1) if n_in != n_out else nn.Identity()
            h = self.n_hid
            self.res_path = nn.Sequential(OrderedDict([
                ("relu_1", nn.ReLU()), ("conv_1", Conv2d(n_in, h, 3)),
                ("relu_2", nn.ReLU()), ("conv_2", Conv2d(h, h, 3)),
                ("relu_3", nn.ReLU()), ("conv_3", Conv2d(h, h, 3)),
                ("relu_4", nn.ReLU()), ("conv_4", Conv2d(h, n_out, 1))]))

        def forward(self, x):
            return self.id_path(x) + self.post_gain * self.res_path(x)

    class Encoder(nn.Module):
        def __init__(self, n_hid=8, n_blk_per_group=1, vocab_size=16, input_channels=3):
            super().__init__()
            self.group_count, self.n_hid, self.n_blk_per_group = 4, n_hid, n_blk_per_group
            self.input_channels, self.vocab_size, self.use_mixed_precision = input_channels, vocab_size, True
            n_layers = 4 * n_blk_per_group
            stages, width = [("input", Conv2d(input_channels, n_hid, 7))], n_hid
            for g in range(1, 5):
                group = []
                for i in range(n_blk_per_group):
                    group.append((f"block_{i + 1}", EncoderBlock(width, n_hid * 2 ** (g - 1), n_layers)))
                    width = n_hid * 2 ** (g - 1)
                if g < 4:
                    group.append(("pool", nn.MaxPool2d(kernel_size=2)))
                stages.append((f"group_{g}", nn.Sequential(OrderedDict(group))))
            output = [("relu", nn.ReLU()), ("conv", Conv2d(width, vocab_size, 1))]
            stages.append(("output", nn.Sequential(OrderedDict(output))))
            self.blocks = nn.Sequential(OrderedDict(stages))

        def forward(self, x):
            return self.blocks(x)

    package, encoder_module, utils_module = (types.ModuleType(n) for n in ("dall_e", "dall_e.encoder", "dall_e.utils"))
    for cls, module in ((Conv2d, utils_module), (EncoderBlock, encoder_module), (Encoder, encoder_module)):
        cls.__module__, cls.__qualname__ = module.__name__, cls.__name__
        setattr(module, cls.__name__, cls)
    package.encoder, package.utils = encoder_module, utils_module
    return {"dall_e": package, "dall_e.encoder": encoder_module, "dall_e.utils": utils_module}


@pytest.fixture(scope="module")
def fake_encoder_pkl(tmp_path_factory):
    """Pickle a whole fake Encoder as OpenAI did, then forget the `dall_e` package so nothing can import it."""
    modules = build_fake_dall_e()
    assert not any(name in sys.modules for name in modules)
    sys.modules.update(modules)
    try:
        torch.manual_seed(0)
        encoder = modules["dall_e.encoder"].Encoder(n_hid=8, n_blk_per_group=2, vocab_size=16)
        path = tmp_path_factory.mktemp("dalle") / "encoder.pkl"
        torch.save(encoder, path)
    finally:
        for name in modules:
            sys.modules.pop(name, None)
    return path, encoder


def test_safe_loader_reads_whole_module_pickle(fake_encoder_pkl):
    path, encoder = fake_encoder_pkl
    with pytest.raises(ModuleNotFoundError):  # proof the file really needs `dall_e` to unpickle normally
        torch.load(path, weights_only=False)
    state_dict = load_dalle_encoder_state_dict(path)
    assert "dall_e" not in sys.modules
    expected = encoder.state_dict()
    assert list(state_dict) == list(expected)
    assert state_dict.keys() == dalle_encoder_shapes(n_hid=8, vocab=16, groups=4, blocks=2).keys()
    for key, value in expected.items():
        assert torch.equal(state_dict[key], value), key


def test_converted_model_reproduces_the_dalle_encoder(fake_encoder_pkl):
    path, encoder = fake_encoder_pkl
    model, report = dvae_from_dalle_encoder(path)
    assert report.ok and len(report.loaded) == len(encoder.state_dict())
    config = model.config
    assert (config.hidden_size, config.vocab_size, config.num_groups, config.num_blocks_per_group) == (8, 16, 4, 2)
    assert config.decoder_trained is False
    x = mapped_images(batch=2, size=32)
    with torch.no_grad():
        torch.testing.assert_close(model.get_codebook_logits(x), encoder(x))


def test_converter_reports_missing_and_unexpected_keys(fake_encoder_pkl):
    path, _ = fake_encoder_pkl
    state_dict = load_dalle_encoder_state_dict(path)
    config = dvae_config_from_dalle_state_dict(state_dict)
    broken = dict(state_dict)
    broken.pop("blocks.group_2.block_1.id_path.w")
    broken["blocks.extra.w"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing \(1\).*id_path\.w.*unexpected \(1\).*blocks\.extra\.w"):
        dvae_from_dalle_encoder(broken, config=config)
    _, report = dvae_from_dalle_encoder(broken, config=config, strict=False)
    assert report.missing == ["blocks.group_2.block_1.id_path.w"] and report.unexpected == ["blocks.extra.w"]


class _RunsAShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w')",))


@pytest.mark.parametrize("payload, refused", [(_RunsAShellCommand, "system"), (_EvalsCode, "eval")])
def test_malicious_pickle_is_refused_without_running(tmp_path, payload, refused):
    marker = tmp_path / "pwned"
    path = tmp_path / "encoder.pkl"
    torch.save({"blocks.input.w": payload(marker)}, path)
    with pytest.raises(pickle.UnpicklingError, match=refused):
        load_dalle_encoder_state_dict(path)
    assert not marker.exists()


def test_non_encoder_file_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a DALL-E encoder"):
        load_dalle_encoder_state_dict(path)


def test_convert_script_turns_encoder_pkl_into_a_loadable_tokenizer(fake_encoder_pkl, tmp_path):
    from helpers import load_script
    from transformers import AutoModel

    import hf_mim  # noqa: F401

    convert = load_script("convert_checkpoint")
    path, encoder = fake_encoder_pkl
    summary = convert.main(["--from", "dalle-encoder", "--checkpoint", str(path), "--output_dir", str(tmp_path / "tok")])
    tokenizer = AutoModel.from_pretrained(tmp_path / "tok")
    assert summary["keys"] == len(encoder.state_dict()) and tokenizer.config.decoder_trained is False
    images = mapped_images(size=32)
    with torch.no_grad():
        torch.testing.assert_close(tokenizer.get_codebook_logits(images), encoder(images).float(), rtol=0, atol=1e-5)
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(tmp_path / "tok")  # what the tokenizer reads, saved beside it
    assert type(processor).__name__ == "MimDvaeImageProcessor" and processor.size["height"] == 112
    black = processor(PIL.Image.new("RGB", (50, 60)), return_tensors="pt").pixel_values
    assert black.shape == (1, 3, 112, 112) and torch.allclose(black, torch.full_like(black, 0.1))
