"""DALL-E's discrete VAE (Ramesh et al. 2021), the visual tokenizer of BEiT and CAE.

The encoder's state-dict keys are exactly those of OpenAI's `dall_e.encoder.Encoder` (`encoder.blocks.input.w`,
`encoder.blocks.group_1.block_1.res_path.conv_1.w`, ...) so the published weights load by name; the decoder mirrors
`dall_e.decoder.Decoder`. Tokenizing is `get_codebook_indices(map_pixels(x))`; `forward` is the training objective
(Gumbel-softmax relaxation, logit-Laplace likelihood, KL to a uniform prior).

Every entry point takes `pixel_values` already passed through `map_pixels` (values in [0.1, 0.9]), as DALL-E's
encoder does, and the reconstruction target is that same tensor.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput, logging

from .configuration_dvae import MimDvaeConfig
from .remote_code import RemoteCodeMixin

logger = logging.get_logger(__name__)

# Pixels are squeezed into [eps, 1 - eps] so the logit-Laplace likelihood never evaluates logit(0) or logit(1).
LOGIT_LAPLACE_EPS = 0.1
# reseed_dead_codes: a new code's logit lead at the cell it was split from. Small, so that a split moves only cells
# of the code it splits, not those of codes whose logits are close behind.
SPLIT_MARGIN = 0.01
ROUNDS = 3


# ------------------------------------------------------------------------------------------- pure functions


def map_pixels(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [0.1, 0.9]: the tokenizer's input space (0.8 x + 0.1). Any shape."""
    return (1 - 2 * LOGIT_LAPLACE_EPS) * x + LOGIT_LAPLACE_EPS


def unmap_pixels(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `map_pixels`, clamped to [0, 1] because decoder outputs may leave [0.1, 0.9]. Any shape."""
    return torch.clamp((x - LOGIT_LAPLACE_EPS) / (1 - 2 * LOGIT_LAPLACE_EPS), 0, 1)


def logit_laplace_nll(target: torch.Tensor, location: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Per-value negative log-likelihood of `target` in (0, 1) under the logit-Laplace distribution.

    Density (DALL-E paper eq. 2): f(x | mu, b) = exp(-|logit(x) - mu| / b) / (2 b x (1 - x)), so
    -log f = log 2 + log b + log x + log(1 - x) + |logit(x) - mu| / b, with log b = `log_scale`.
    The x(1 - x) Jacobian term does not depend on the model but keeps the value a true density in pixel space.
    All tensors broadcast, e.g. (B, C, H, W); returns the same shape.
    """
    log_x, log_1mx = torch.log(target), torch.log1p(-target)
    return math.log(2.0) + log_scale + log_x + log_1mx + (log_x - log_1mx - location).abs() * torch.exp(-log_scale)


def kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """KL(q || Uniform(K)) per grid position, q = softmax over dim 1: (B, K, h, w) -> (B, h, w).

    DALL-E computes it from the encoder logits as if they were a categorical posterior, even though training
    decodes relaxed samples (openai/DALL-E issue #26). KL = sum_k q_k log q_k + log K, in nats.
    """
    log_q = F.log_softmax(logits.float(), dim=1)
    return (log_q.exp() * log_q).sum(dim=1) + math.log(logits.shape[1])


def batch_kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """KL(q_bar || Uniform(K)) of the posterior averaged over the batch and grid, q = softmax over dim 1:
    (B, K, h, w) -> scalar, in nats; log K minus the entropy of the average code distribution.

    The per-position KL of the ELBO pulls every posterior towards uniform but leaves the argmax free to pile onto a
    few codes; this term is zero only when the codes are used equally often (wav2vec 2.0's diversity loss).
    """
    mean_q = F.softmax(logits.float(), dim=1).mean(dim=(0, 2, 3))
    return torch.special.xlogy(mean_q, mean_q).sum() + math.log(logits.shape[1])


def negative_code_information(logits: torch.Tensor) -> torch.Tensor:
    """-I(cell; code) of the posteriors q = softmax over dim 1 of (B, K, h, w) logits -> scalar, in nats:
    mean per-cell entropy H(q) minus the entropy H(q_bar) of the batch-and-grid average, in [-log K, 0].

    Minimising it asks for both halves of a used codebook: every cell confident in one code (low H(q)) and the
    codes spread evenly over the batch (high H(q_bar)), the entropy term of MaskGIT/MAGVIT-v2 tokenizers. The
    second half alone (`batch_kl_to_uniform`) is also met by flat posteriors whose argmax still collapses.
    Equal to batch_kl_to_uniform(logits) - kl_to_uniform(logits).mean().
    """
    log_q = F.log_softmax(logits.float(), dim=1)
    cell_entropy = -(log_q.exp() * log_q).sum(dim=1).mean()
    # log of the average in log space: a code no cell gives weight underflows to q_bar = 0 in float32, where
    # x log x has an infinite slope and its gradient turns the update into NaN
    cells = log_q.shape[0] * log_q.shape[2] * log_q.shape[3]
    log_mean_q = torch.logsumexp(log_q.transpose(0, 1).flatten(1), dim=1) - math.log(cells)
    return cell_entropy + (log_mean_q.exp() * log_mean_q).sum()


def sample_gumbel_like(logits: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise g = -log(E), E ~ Exponential(1) (the same as -log(-log U)), shaped like logits."""
    return -torch.empty_like(logits).exponential_().log()


def codebook_statistics(codes: torch.Tensor, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard codes of any shape -> (perplexity, usage) of the batch's code histogram.

    perplexity = exp(entropy of the batch-average code distribution): the effective number of codes in use,
    from 1 (collapse) to vocab_size (uniform). usage = fraction of the codebook used at least once.
    """
    counts = torch.bincount(codes.flatten(), minlength=vocab_size).float()
    probs = counts / counts.sum()
    entropy = -torch.special.xlogy(probs, probs).sum()
    return entropy.exp(), (counts > 0).float().mean()


def gumbel_temperature(step: int, start: float = 1.0, end: float = 1 / 16, anneal_steps: int = 150_000) -> float:
    """Relaxation temperature tau at `step`: cosine from `start` to `end` over `anneal_steps`, then `end`.

    Cosine because the DALL-E paper (appendix A.2) anneals its tau, KL weight and step size with
    cosine schedules; an exponential decay would spend more updates at low tau, where gradients are noisiest.
    """
    if anneal_steps <= 0 or step >= anneal_steps:
        return float(end)
    progress = max(step, 0) / anneal_steps
    return float(end + 0.5 * (start - end) * (1 + math.cos(math.pi * progress)))


def kl_weight_schedule(step: int, max_weight: float = 6.6, warmup_steps: int = 5000) -> float:
    """KL weight beta at `step`: linear from 0 to `max_weight` over `warmup_steps`, then fixed (openai/DALL-E #8).

    Starting at 0 lets the decoder learn to use the codes before the prior pulls the posterior towards uniform.
    """
    if warmup_steps <= 0 or step >= warmup_steps:
        return float(max_weight)
    return float(max_weight * max(step, 0) / warmup_steps)


# ------------------------------------------------------------------------------------------------- modules


class DvaeConv2d(nn.Module):
    """'Same'-padded conv whose parameters are named `w` (out, in, k, k) and `b` (out,), as in `dall_e.utils.Conv2d`,
    so the published state dict loads by name. Weights follow the input's dtype: the caller chooses precision."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.w = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.b = nn.Parameter(torch.empty(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.w.to(x.dtype), self.b.to(x.dtype), padding=(self.kernel_size - 1) // 2)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"


class DvaeResBlock(nn.Module):
    """x -> id_path(x) + post_gain * res_path(x), with res_path = 4 x (ReLU, conv) through width out/4.

    post_gain = 1 / n_layers**2 keeps the residual stream's scale fixed at init however deep the net is.
    The encoder's kernels are (3, 3, 3, 1), the decoder's (1, 3, 3, 3). id_path is a 1x1 conv only when the width
    changes (identity otherwise, with no parameters, as in DALL-E's state dict).
    """

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, kernel_sizes: tuple[int, int, int, int]):
        super().__init__()
        inner = out_channels // 4
        self.post_gain = 1.0 / num_layers**2
        self.id_path = DvaeConv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        widths = [in_channels, inner, inner, inner, out_channels]
        layers = []
        for i, kernel_size in enumerate(kernel_sizes):
            conv = DvaeConv2d(widths[i], widths[i + 1], kernel_size)
            layers += [(f"relu_{i + 1}", nn.ReLU()), (f"conv_{i + 1}", conv)]
        self.res_path = nn.Sequential(OrderedDict(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.id_path(x) + self.post_gain * self.res_path(x)


ENCODER_KERNELS = (3, 3, 3, 1)
DECODER_KERNELS = (1, 3, 3, 3)


class DvaeEncoder(nn.Module):
    """(B, C, H, W) map_pixels'd image -> (B, vocab, H/f, W/f) code logits, f = 2**(num_groups-1).

    `blocks`: input 7x7 conv C -> n; group g has blocks at width 2**(g-1) n and ends with a 2x2 max-pool except the
    last; output ReLU + 1x1 conv to vocab logits.
    """

    def __init__(self, config: MimDvaeConfig):
        super().__init__()
        n, num_layers = config.hidden_size, config.num_groups * config.num_blocks_per_group
        stages = [("input", DvaeConv2d(config.num_channels, n, 7))]
        width = n
        for g in range(1, config.num_groups + 1):
            out_width = 2 ** (g - 1) * n
            group = []
            for i in range(config.num_blocks_per_group):
                group.append((f"block_{i + 1}", DvaeResBlock(width, out_width, num_layers, ENCODER_KERNELS)))
                width = out_width
            if g < config.num_groups:
                group.append(("pool", nn.MaxPool2d(kernel_size=2)))
            stages.append((f"group_{g}", nn.Sequential(OrderedDict(group))))
        output = [("relu", nn.ReLU()), ("conv", DvaeConv2d(width, config.vocab_size, 1))]
        stages.append(("output", nn.Sequential(OrderedDict(output))))
        self.blocks = nn.Sequential(OrderedDict(stages))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.blocks(pixel_values)


class DvaeDecoder(nn.Module):
    """(B, vocab, h, w) one-hot or relaxed codes -> (B, 2C, h f, w f) logit-Laplace parameters
    (channels [:C] the location mu in logit space, [C:] the log-scale).

    `blocks`: input 1x1 conv vocab -> n_init; group g has blocks at width 2**(G-g) n followed by nearest x2
    upsampling except the last; output ReLU + 1x1 conv to 2C.
    """

    def __init__(self, config: MimDvaeConfig):
        super().__init__()
        n, num_layers = config.hidden_size, config.num_groups * config.num_blocks_per_group
        stages = [("input", DvaeConv2d(config.vocab_size, config.decoder_init_size, 1))]
        width = config.decoder_init_size
        for g in range(1, config.num_groups + 1):
            out_width = 2 ** (config.num_groups - g) * n
            group = []
            for i in range(config.num_blocks_per_group):
                group.append((f"block_{i + 1}", DvaeResBlock(width, out_width, num_layers, DECODER_KERNELS)))
                width = out_width
            if g < config.num_groups:
                group.append(("upsample", nn.Upsample(scale_factor=2, mode="nearest")))
            stages.append((f"group_{g}", nn.Sequential(OrderedDict(group))))
        output = [("relu", nn.ReLU()), ("conv", DvaeConv2d(width, 2 * config.num_channels, 1))]
        stages.append(("output", nn.Sequential(OrderedDict(output))))
        self.blocks = nn.Sequential(OrderedDict(stages))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.blocks(codes)


# ------------------------------------------------------------------------------------------------- model


@dataclass
class MimDvaeOutput(ModelOutput):
    """
    loss: negative ELBO per pixel value, reconstruction_loss + kl_weight * kl_loss.
    reconstruction_loss: logit-Laplace NLL summed over the image, divided by C*H*W (nats per value), batch mean.
    kl_loss: KL(q || uniform) summed over the h*w grid, divided by the same C*H*W, batch mean. Both terms share
        one normaliser so kl_weight keeps its ELBO meaning (DALL-E's 6.6 is relative to per-image sums).
    logits: (B, vocab, h, w) encoder logits, fp32.
    reconstruction: (B, C, H, W) decoded image in [0, 1] (unmapped), from the relaxed codes.
    codebook_perplexity: exp(entropy) of the batch histogram of argmax codes, in [1, vocab].
    codebook_usage: fraction of the vocabulary the batch's argmax codes use.
    diversity_loss: -I(cell; code), in nats (`negative_code_information`): confident cells, codes spread evenly.
    """

    loss: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    kl_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    codebook_perplexity: torch.FloatTensor | None = None
    codebook_usage: torch.FloatTensor | None = None
    diversity_loss: torch.FloatTensor | None = None


class MimDvaePreTrainedModel(RemoteCodeMixin, PreTrainedModel):
    config_class = MimDvaeConfig
    # the processor's file is copied with the model's for remote code (the model never imports it)
    auto_classes = {"AutoModel": "MimDvaeModel", "AutoImageProcessor": "image_processing_dvae.MimDvaeImageProcessor"}
    base_model_prefix = "dvae"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["DvaeResBlock"]

    def _init_weights(self, module: nn.Module) -> None:
        """DALL-E's init: w ~ N(0, 1 / (n_in k^2)) (unit-variance outputs for unit-variance inputs), b = 0."""
        if isinstance(module, DvaeConv2d):
            init.normal_(module.w, mean=0.0, std=1.0 / math.sqrt(module.in_channels * module.kernel_size**2))
            init.zeros_(module.b)


def check_map_pixels_range(pixel_values: torch.Tensor, name: str, owner: nn.Module) -> None:
    """Raise if a tokenizer input leaves [0, 1], the sign of an ImageNet-normalised view passed by mistake.

    Reading the range back is a host sync. On the CPU it costs nothing and runs on every call; on an accelerator
    it runs until `owner` has seen one good batch (the mistake is in the wiring, so the first batch shows it),
    leaving the training step free of syncs. Skipped while torch.compile traces."""
    if torch.compiler.is_compiling():
        return
    if pixel_values.device.type != "cpu" and getattr(owner, "_map_pixels_range_checked", False):
        return
    low, high = torch.aminmax(pixel_values.detach().float())
    if low < 0 or high > 1:
        raise ValueError(
            f"{name} range [{low.item():.3f}, {high.item():.3f}] is outside [0, 1]: the tokenizer reads map_pixels(x) "
            "of an un-normalised image x in [0, 1] (the processor's return_codebook_pixels view), never the "
            "ImageNet-normalised pixel_values"
        )
    owner._map_pixels_range_checked = True


class MimDvaeModel(MimDvaePreTrainedModel):
    """Encoder (image -> code logits) + decoder (codes -> logit-Laplace image parameters).

    As a frozen tokenizer: `get_codebook_indices(map_pixels(x))`. To train: `model(map_pixels(x), temperature=...,
    kl_weight=...).loss` with `gumbel_temperature(step)` and `kl_weight_schedule(step)`.
    """

    def __init__(self, config: MimDvaeConfig):
        super().__init__(config)
        self.encoder = DvaeEncoder(config)
        self.decoder = DvaeDecoder(config)
        self.post_init()

    map_pixels = staticmethod(map_pixels)
    unmap_pixels = staticmethod(unmap_pixels)

    def _check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
            raise ValueError(f"pixel_values must be a 4-D (B, C, H, W) tensor, got {shape}")
        if not pixel_values.is_floating_point():
            raise ValueError(
                f"pixel_values must be floating point map_pixels(x) with x in [0, 1], got dtype {pixel_values.dtype} "
                "(uint8 images need ToTensor-style scaling first)"
            )
        batch, channels, height, width = pixel_values.shape
        if channels != self.config.num_channels:
            raise ValueError(
                f"pixel_values has {channels} channels, the model was built for {self.config.num_channels}"
            )
        factor = self.config.downsample_factor
        if height % factor or width % factor:
            raise ValueError(f"pixel_values height and width ({height}, {width}) must be multiples of {factor}")
        check_map_pixels_range(pixel_values, "pixel_values", owner=self)

    def get_codebook_logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) map_pixels'd image -> (B, vocab, H/f, W/f) fp32 logits.

        Always fp32, autocast off: the argmax tokens are BEiT's and CAE's targets, and half precision flips
        near-ties. Half-precision inputs are upcast (lossless); non-float inputs are refused.
        """
        self._check_pixel_values(pixel_values)
        with torch.autocast(device_type=pixel_values.device.type, enabled=False):
            return self.encoder(pixel_values.float())

    @torch.no_grad()
    def get_codebook_indices(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) map_pixels'd image -> (B, H/f, W/f) long token ids (argmax over the vocabulary)."""
        return self.get_codebook_logits(pixel_values).argmax(dim=1)

    @torch.no_grad()
    def reseed_dead_codes(self, pixel_values: torch.Tensor, generator: torch.Generator | None = None) -> int:
        """Give codes that no cell of this batch picks (argmax) part of a used code's cells; returns how many were dead.

        In rounds, each used code j with two cells or more gives its cells to at most one dead code k: from a random
        cell p of j, k's row of the encoder's last 1x1 conv becomes j's plus a step along d = h_p - mean_j(h), the
        offset of p's features from the mean of j's cells, with a bias putting the boundary of j and k through that
        mean (a k-means split, as the LBG algorithm grows a codebook); rounds repeat while codes stay dead. k's
        decoder column copies j's, so decodings are unchanged at first and the two codes then drift apart.
        `pixel_values`: map_pixels'd (B, C, H, W).
        """
        output = self.encoder.blocks.output
        features = output.relu(self.encoder.blocks[:-1](pixel_values.float()))
        flat = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
        weight, bias, decoder_weight = output.conv.w, output.conv.b, self.decoder.blocks.input.w
        initially_dead = None
        for _ in range(ROUNDS):
            codes = output.conv(features).argmax(dim=1).flatten()
            counts = torch.bincount(codes, minlength=self.config.vocab_size)
            dead, splittable = (counts == 0).nonzero().flatten(), (counts > 1).nonzero().flatten()
            initially_dead = len(dead) if initially_dead is None else initially_dead
            pairs = min(len(dead), len(splittable))
            if pairs == 0:
                break
            order = torch.randperm(len(splittable), generator=generator)[:pairs]
            for code, used in zip(dead[:pairs].tolist(), splittable[order].tolist()):
                cells = (codes == used).nonzero().flatten()
                cell = cells[torch.randint(len(cells), (1,), generator=generator)].item()
                centre = flat[cells].mean(dim=0)
                direction = flat[cell] - centre
                if direction.pow(2).sum() < 1e-12:  # j's cells alike: no split of them can separate them
                    continue
                step = SPLIT_MARGIN * direction / direction.pow(2).sum()  # k over j: SPLIT_MARGIN at p, 0 at the mean
                weight[code, :, 0, 0] = weight[used, :, 0, 0] + step.to(weight.dtype)
                bias[code] = bias[used] - (step @ centre).to(bias.dtype)
                decoder_weight[:, code] = decoder_weight[:, used]
        return initially_dead

    def decode_parameters(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, vocab, h, w) codes -> fp32 (location, log_scale), each (B, C, h f, w f)."""
        stats = self.decoder(codes).float()
        return stats.split(self.config.num_channels, dim=1)

    def decode(self, one_hot_or_probs: torch.Tensor) -> torch.Tensor:
        """Codes -> image in [0, 1], (B, C, h f, w f): unmap_pixels(sigmoid(location)).

        Accepts (B, vocab, h, w) one-hot / probabilities, or (B, h, w) long token ids (one-hot encoded here).
        """
        if not self.config.decoder_trained:
            logger.warning_once("config.decoder_trained is False: the decoder is random, decode() returns noise")
        codes = one_hot_or_probs
        if codes.ndim == 3 and not codes.is_floating_point():
            codes = F.one_hot(codes, self.config.vocab_size).permute(0, 3, 1, 2).float()
        if codes.ndim != 4 or codes.shape[1] != self.config.vocab_size:
            raise ValueError(
                f"decode expects (B, {self.config.vocab_size}, h, w) codes or (B, h, w) token ids, "
                f"got {tuple(codes.shape)}"
            )
        location, _ = self.decode_parameters(codes)
        return unmap_pixels(torch.sigmoid(location))

    def forward(
        self,
        pixel_values: torch.Tensor,
        temperature: float = 1.0,
        kl_weight: float | None = None,
        diversity_weight: float | None = None,
        gumbel_noise: torch.Tensor | None = None,
        return_dict: bool | None = True,
    ) -> MimDvaeOutput | tuple:
        """Negative ELBO of a map_pixels'd batch (B, C, H, W).

        encode -> relaxed codes z = softmax((logits + g) / temperature), used in forward and backward (no
        straight-through) -> decode z -> logit-Laplace NLL of pixel_values + kl_weight * KL(q || uniform).
        + diversity_weight * -I(cell; code) (`negative_code_information`). The weights default to config.kl_weight and
        config.codebook_diversity_weight; gumbel_noise (B, vocab, h, w) makes a step deterministic in tests.
        """
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        kl_weight = self.config.kl_weight if kl_weight is None else kl_weight
        diversity_weight = self.config.codebook_diversity_weight if diversity_weight is None else diversity_weight
        logits = self.get_codebook_logits(pixel_values)
        noise = sample_gumbel_like(logits) if gumbel_noise is None else gumbel_noise.to(logits)
        soft_codes = F.softmax((logits + noise) / temperature, dim=1)
        location, log_scale = self.decode_parameters(soft_codes)

        target = pixel_values.float()
        num_values = target[0].numel()  # C * H * W: one normaliser for both terms keeps the ELBO's balance
        nll = logit_laplace_nll(target, location, log_scale)
        reconstruction_loss = nll.flatten(1).sum(1).mean() / num_values
        kl_loss = kl_to_uniform(logits).flatten(1).sum(1).mean() / num_values
        diversity_loss = negative_code_information(logits)
        loss = reconstruction_loss + kl_weight * kl_loss + diversity_weight * diversity_loss

        with torch.no_grad():
            perplexity, usage = codebook_statistics(logits.argmax(dim=1), self.config.vocab_size)
            reconstruction = unmap_pixels(torch.sigmoid(location))
        out = MimDvaeOutput(
            loss=loss, reconstruction_loss=reconstruction_loss, kl_loss=kl_loss, logits=logits,
            reconstruction=reconstruction, codebook_perplexity=perplexity, codebook_usage=usage,
            diversity_loss=diversity_loss,
        )
        return out if return_dict is not False else out.to_tuple()


__all__ = [
    "MimDvaeModel",
    "MimDvaeOutput",
    "MimDvaePreTrainedModel",
    "batch_kl_to_uniform",
    "codebook_statistics",
    "gumbel_temperature",
    "kl_to_uniform",
    "kl_weight_schedule",
    "logit_laplace_nll",
    "map_pixels",
    "negative_code_information",
    "unmap_pixels",
]
