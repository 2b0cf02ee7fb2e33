"""Timing helpers for `scripts/benchmark.py`: backbone sizes, analytic FLOP counts, interleaved (round-robin)
timing with paired ratios, and per-method builders that put our model and the `transformers` peer of the same
method side by side, with the same weights where a key map exists and always with an equivalent config.

Why interleaved: on a shared or thermally throttled machine the speed drifts over seconds. Timing A for a minute
and then B for a minute folds that drift into the comparison; stepping A, B, B, A, A, B, ... and dividing the two
times of each round (peer / ours) cancels it, and the median of those per-round ratios is robust to the odd slow
round. A ratio above 1 means our implementation is faster.
"""

from __future__ import annotations

import contextlib
import gc
import random
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

# ----------------------------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class BackboneSize:
    """A ViT encoder shape; the MLP is 4x the width, as in every published ViT."""

    name: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    image_size: int = 224
    patch_size: int = 16

    @property
    def intermediate_size(self) -> int:
        return 4 * self.hidden_size

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def config_kwargs(self) -> dict:
        return dict(image_size=self.image_size, patch_size=self.patch_size, hidden_size=self.hidden_size,
                    num_hidden_layers=self.num_hidden_layers, num_attention_heads=self.num_attention_heads,
                    intermediate_size=self.intermediate_size)


SIZES = {
    "tiny": BackboneSize("tiny", 192, 12, 3),
    "small": BackboneSize("small", 384, 12, 6),
    "base": BackboneSize("base", 768, 12, 12),
}


def parse_custom_size(text: str) -> BackboneSize:
    """"width,depth,heads,image,patch" -> a size named custom-<width>x<depth>."""
    try:
        width, depth, heads, image, patch = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--custom_size takes width,depth,heads,image,patch (five integers), got {text!r}") from None
    if min(width, depth, heads, image, patch) <= 0 or width % heads or image % patch:
        raise ValueError(f"--custom_size {text!r}: width must divide by heads and image by patch, all positive")
    return BackboneSize(f"custom-{width}x{depth}", width, depth, heads, image, patch)


# ----------------------------------------------------------------------------------------------- FLOPs


def encoder_flops(tokens: int, width: int, depth: int, mlp: int) -> float:
    """Forward FLOPs of `depth` pre-norm blocks over `tokens` tokens, one image, multiply-add = 2 FLOPs.

    Per block: qkv 6ND^2 + output projection 2ND^2 + MLP 4NDM + q.k^T 2N^2D + attn.v 2N^2D. LayerNorm, softmax,
    GELU and residual adds are left out (under 1% at ViT-B), as in the usual model-FLOP-utilisation count.
    """
    n, d = tokens, width
    return float(depth * (8 * n * d * d + 4 * n * d * mlp + 4 * n * n * d))


def patch_embed_flops(num_patches: int, patch: int, channels: int, width: int) -> float:
    return float(2 * num_patches * channels * patch * patch * width)


def inference_flops(size: BackboneSize, channels: int = 3) -> float:
    """Encoder over all patches plus the cls token: ViT-B/16 at 224 px = 35.1 GFLOP per image."""
    return (patch_embed_flops(size.num_patches, size.patch_size, channels, size.hidden_size)
            + encoder_flops(size.num_patches + 1, size.hidden_size, size.num_hidden_layers, size.intermediate_size))


def _encoder_forward_flops(config) -> tuple[float, int, int]:
    """Patch embed + encoder over every patch and the cls token; also (tokens L, per-patch pixel outputs)."""
    size = BackboneSize("cfg", config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
                        config.image_size, config.patch_size)
    channels = getattr(config, "num_channels", 3)
    embed = patch_embed_flops(size.num_patches, size.patch_size, channels, size.hidden_size)
    encoder = encoder_flops(size.num_patches + 1, size.hidden_size, size.num_hidden_layers, config.intermediate_size)
    return embed + encoder, size.num_patches, config.patch_size**2 * channels


def mae_forward_flops(config, num_masked: float) -> float:
    """Patch embed of every patch, encoder over cls + kept tokens, decoder embed, decoder blocks over all 1 + L
    tokens and the pixel head (MAE-ViT-B/16: 19.6 GFLOP, so 58.7 with the 3x rule)."""
    _, length, patch_out = _encoder_forward_flops(config)
    channels = getattr(config, "num_channels", 3)
    width, keep, dec = config.hidden_size, int(length * (1 - config.mask_ratio)), config.decoder_hidden_size
    return (patch_embed_flops(length, config.patch_size, channels, width)
            + encoder_flops(keep + 1, width, config.num_hidden_layers, config.intermediate_size)
            + 2 * (keep + 1) * width * dec
            + encoder_flops(length + 1, dec, config.decoder_num_hidden_layers, config.decoder_intermediate_size)
            + 2 * (length + 1) * dec * patch_out)


def token_head_forward_flops(config, num_masked: float) -> float:
    """Encoder over all tokens, token head at the `num_masked` masked positions only (BEiT)."""
    return _encoder_forward_flops(config)[0] + 2 * num_masked * config.hidden_size * getattr(config, "vocab_size", 8192)


def pixel_head_forward_flops(config, num_masked: float) -> float:
    """Encoder over all tokens, 1x1 conv head on every patch (p*p*C outputs, SimMIM)."""
    encoder, length, patch_out = _encoder_forward_flops(config)
    return encoder + 2 * length * config.hidden_size * patch_out


def training_flops(method, config, num_masked: float) -> float:
    """Per image of one pretraining step, counting only the work the method needs (targets such as a tokenizer
    or HOG, and losses, are not counted), with the 3x rule: backward costs twice the forward."""
    from .methods import backbone_of_config

    return 3 * method.peer(backbone_of_config(config)).forward_flops(config, num_masked)


def video_encoder_flops(config) -> float:
    """Tubelet embedding of every token + the encoder over cls + all t*h*w tokens, one clip."""
    tokens = config.num_patches
    embed = 2 * tokens * config.num_channels * config.tubelet_size * config.patch_size**2 * config.hidden_size
    return float(embed + encoder_flops(tokens + 1, config.hidden_size, config.num_hidden_layers,
                                       config.intermediate_size))


def video_hog_head_forward_flops(config, num_masked: float) -> float:
    """MaskFeat video: the encoder over every token, the linear HOG head on every tubelet token."""
    return video_encoder_flops(config) + 2 * config.num_patches * config.hidden_size * config.target_dim


# ----------------------------------------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_pil_backend(processor_class):
    """The same image processor without hf-mim's shortcuts (transformers' own PIL-backend input handling, image
    preparation, resize and normalize; extra views from the prepared arrays): the input pipeline's peer, and the
    reference its pixels must equal bit for bit."""
    from transformers.image_processing_backends import PilBackend

    return type(f"Plain{processor_class.__name__}", (processor_class,), {
        "_preprocess_image_like_inputs": PilBackend._preprocess_image_like_inputs,
        "process_image": PilBackend.process_image, "resize": PilBackend.resize, "normalize": PilBackend.normalize})


def round_robin(fns: dict[str, Callable[[], object]], warmup: int, repeats: int, device: torch.device,
                cpu_times: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Run every function `warmup` times, then `repeats` timed rounds, the order reversed every other round
    (A B, B A, A B, ...) so neither side always runs first. Returns wall-clock seconds per call, by name; fills
    `cpu_times`, if given, with this process's CPU seconds per call (user + system, all threads): on a CPU shared
    with other jobs, time spent waiting for a core counts in the wall clock but not here."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    if cpu_times is not None:
        cpu_times.update({name: [] for name in names})
    gc.collect()
    for round_index in range(repeats):
        for name in names if round_index % 2 == 0 else names[::-1]:
            synchronize(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            fns[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
            if cpu_times is not None:
                cpu_times[name].append(time.process_time() - cpu_start)
    return times


def summarize(seconds: list[float]) -> dict:
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds),
            "times_s": list(seconds)}


def paired_ratio(ours: list[float], peer: list[float]) -> dict:
    """peer_time / our_time per round, then the median: > 1 means we are faster."""
    ratios = [p / o for o, p in zip(ours, peer)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "per_round": ratios}


def autocast_context(device: torch.device, dtype: str):
    if dtype == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step_fn(model, optimizer, call, inputs, device, dtype) -> Callable[[], None]:
    """One optimisation step: forward, loss, backward, AdamW. No host sync inside (no `.item()`)."""

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(device, dtype):
            loss = call(model, inputs)
        loss.backward()
        optimizer.step()

    return step


def inference_fn(model, call, inputs, device, dtype) -> Callable[[], None]:
    def run():
        with torch.no_grad(), autocast_context(device, dtype):
            call(model, inputs)

    return run


def make_optimizer(model: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """The same AdamW for both sides: every trainable tensor, one group, MAE's betas, the fused kernel (what the
    transformers Trainer uses by default, on CPU too; torch's unfused CPU AdamW is much slower and would dilute
    the comparison of the models)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05, fused=True)


def count_trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------------------------- methods


@dataclass
class Pair:
    """Our model and the peer for one phase, the shared inputs and how to call each."""

    ours: torch.nn.Module
    peer: torch.nn.Module
    inputs: dict
    call_ours: Callable
    call_peer: Callable


@dataclass
class MethodPairs:
    method: str
    config: object  # our config
    peer_config: object
    weights: str  # how the peer's weights relate to ours
    train: Pair
    inference: Pair
    num_masked: float  # mean masked tokens per image (BEiT's head FLOPs)
    notes: list[str]
    # FLOPs per image where the encoder is no plain ViT of the benchmark size (a Swin); None: the ViT counts
    train_flops: float | None = None
    inference_flops: float | None = None


def loss_of(output) -> torch.Tensor:
    return output["loss"] if isinstance(output, dict) or hasattr(output, "keys") else output[0]


def first_tensor(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else next(iter(output.values()))


def method_masks(method, config, batch_size: int, seed: int) -> torch.Tensor:
    """(B, L) bool masks drawn by the method's own image processor mask generator (BEiT blocks, SimMIM 32-px
    cells), so the benchmark masks exactly what training masks."""
    processor = method.image_processor_class.for_model_config(config)
    rng = random.Random(seed)
    masks = np.stack([processor.generate_mask(rng).reshape(-1) for _ in range(batch_size)])
    return torch.from_numpy(masks.astype(bool))


def share_weights(method, ours: torch.nn.Module, peer: torch.nn.Module, qkv_bias: str, key_map=None) -> str:
    """Copy the peer's weights into ours with `key_map` (default: the method's peer's; strict load); say which
    map, or why not."""
    from . import convert, convert_swin

    key_map = key_map or method.benchmark_peer.key_map
    names = [f"{module.__name__}.{name}" for module in (convert, convert_swin)
             for name, value in vars(module).items() if value is key_map]
    label = names[0] if names else "the method's key map"
    # Frozen parts the peer lacks (BEiT's tokenizer) keep our own weights; everything trainable must come across.
    own = ours.state_dict()
    trainable = {name for name, p in ours.named_parameters() if p.requires_grad}
    try:
        converted = convert.convert_state_dict(peer.state_dict(), key_map, qkv_bias=qkv_bias)
        converted.update({k: v for k, v in own.items() if k not in converted and k not in trainable})
        convert.load_converted(ours, converted)
    except (KeyError, ValueError, RuntimeError) as error:
        return f"independent random init ({label} does not load: {type(error).__name__}: {str(error)[:200]})"
    return f"shared ({label})"


@dataclass(frozen=True)
class BenchmarkPeer:
    """The `transformers` implementation of a method that `scripts/benchmark.py` times ours against."""

    description: str  # the peer's class, as the report names it
    build: Callable  # (method, our config, batch_size, seed) -> MethodPairs
    key_map: object  # an hf_mim.convert.KeyMap from the peer's weights to ours
    forward_flops: Callable  # (our config, mean masked tokens per image) -> forward FLOPs per image
    size_overrides: Callable = lambda size: {}  # (BackboneSize) -> our config fields at that size
    # (BackboneSize) -> all our config fields for an encoder family whose shape is not a ViT's (a Swin); None: the
    # ViT shape of the size plus `size_overrides`
    config_kwargs: Callable | None = None


def chosen_backbone(method, family: str | None = None):
    """The method's backbone `family` (`--backbone`), or its default (image ViT) one."""
    return method.backbones[family] if family else method.backbone()


def build_pairs(method_name: str, size: BackboneSize, batch_size: int, device: torch.device, seed: int = 0,
                overrides: str = "", family: str | None = None) -> MethodPairs:
    """Our pretraining + encoder models and transformers' peers for one method, backbone family and size. The
    models stay on the CPU (the caller moves one side at a time, to measure each side's memory); the inputs go
    to `device`."""
    import hf_mim

    method = hf_mim.get_method(method_name)
    backbone = chosen_backbone(method, family)
    peer = method.peer(backbone)
    if peer is None:
        raise ValueError(f"no transformers peer is known for method {method_name!r}; benchmark one of "
                         f"{', '.join(methods_with_peers(family))}")
    torch.manual_seed(seed)
    pairs = peer.build(method, our_config(method, size, overrides, backbone), batch_size, seed)
    for pair in (pairs.train, pairs.inference):
        pair.inputs = {k: v.to(device) for k, v in pair.inputs.items()}
    pairs.train.ours.train()
    pairs.train.peer.train()
    pairs.inference.ours.eval()
    pairs.inference.peer.eval()
    return pairs


def methods_with_peers(family: str | None = None) -> list[str]:
    """The methods with a transformers peer for their backbone `family` (default: their default backbone)."""
    import hf_mim

    return [name for name, method in hf_mim.METHODS.items()
            if (family is None or family in method.backbones) and method.peer(chosen_backbone(method, family))]


def our_config(method, size: BackboneSize, overrides: str = "", backbone=None):
    """The method's canonical config at this backbone size, with the fields its peer needs at that size (e.g.
    mask sizes that scale with the grid off 14x14). `overrides` ("k=v,k=v", as pretrain.py's --config_overrides)
    sets the fields this method's config has and skips the others, so one string can shrink, say, MAE's decoder
    without touching BEiT."""
    backbone = backbone or method.backbone()
    peer = method.peer(backbone)
    if peer is not None and peer.config_kwargs is not None:  # a family whose shape is not a ViT's (a Swin)
        kwargs = peer.config_kwargs(size)
    else:
        kwargs = {**size.config_kwargs(), **(peer.size_overrides(size) if peer is not None else {})}
    config_class = backbone.config_class
    config = config_class(**kwargs)
    if overrides:
        fields = dict(item.split("=", 1) for item in overrides.split(",") if item)
        known = ",".join(f"{k}={v}" for k, v in fields.items() if hasattr(config, k))
        if known:
            config.update_from_string(known)
            config = config_class(**config.to_dict())  # re-validate the combination
    return config


def beit_size_overrides(size: BackboneSize) -> dict:
    """Off the 14x14 grid, BEiT's block mask keeps ~40% of the patches (75 of 196) and its 16-patch minimum."""
    grid = size.image_size // size.patch_size
    if grid == 14:
        return {}
    return dict(num_masking_patches=max(1, round(grid * grid * 75 / 196)),
                min_num_patches=max(1, round(grid * grid * 16 / 196)))


# SimMIM's plain-ViT configuration: what transformers' ViTForMaskedImageModeling implements.
SIMMIM_PLAIN_VIT = dict(qkv_bias="full", layer_scale_init_value=0.0, relative_position_bias="none",
                        position_embedding_type="learned", drop_path_rate=0.0)


def simmim_size_overrides(size: BackboneSize) -> dict:
    """The plain ViT, and off the 14x14 grid mask cells of 2x2 patches."""
    grid = size.image_size // size.patch_size
    if grid != 14 and size.image_size % (2 * size.patch_size) == 0:
        return {**SIMMIM_PLAIN_VIT, "mask_patch_size": 2 * size.patch_size}
    return dict(SIMMIM_PLAIN_VIT)


def _encoder_copy(model_class, config, pretraining_model) -> torch.nn.Module:
    """Our `<M>Model` holding the pretraining model's encoder weights (same `vit.` names)."""
    encoder = model_class(config)
    own = set(encoder.state_dict())
    encoder.load_state_dict({k: v for k, v in pretraining_model.state_dict().items() if k in own}, strict=True)
    return encoder


def _pixels(config, batch_size: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, config.num_channels, config.image_size, config.image_size, generator=generator)


def encoder_pair(method, config, ours, peer_backbone, peer_encoder, pixels, strict: bool = False) -> Pair:
    """Both encoders over all patches: our `<M>Model` with the pretraining model's weights, and the peer's
    encoder class with the weights of the peer pretraining model's backbone module (`strict`: every key)."""
    peer_encoder.load_state_dict(peer_backbone.state_dict(), strict=strict)
    return Pair(_encoder_copy(method.model_class, config, ours), peer_encoder, {"pixel_values": pixels},
                lambda m, x: first_tensor(m(**x)), lambda m, x: first_tensor(m(**x)))


def call_with_loss(model, inputs) -> torch.Tensor:
    return loss_of(model(**inputs))


def build_mae_pairs(method, config, batch_size, seed) -> MethodPairs:
    from transformers import ViTMAEConfig, ViTMAEForPreTraining, ViTMAEModel

    common = dict(
        hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads, intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act, image_size=config.image_size, patch_size=config.patch_size,
        num_channels=config.num_channels, qkv_bias=config.qkv_bias == "full", layer_norm_eps=config.layer_norm_eps,
        decoder_hidden_size=config.decoder_hidden_size, decoder_num_hidden_layers=config.decoder_num_hidden_layers,
        decoder_num_attention_heads=config.decoder_num_attention_heads,
        decoder_intermediate_size=config.decoder_intermediate_size, norm_pix_loss=config.norm_pix_loss,
    )
    peer_config = ViTMAEConfig(mask_ratio=config.mask_ratio, **common)
    peer = ViTMAEForPreTraining(peer_config)
    ours = method.pretraining_class(config)
    weights = share_weights(method, ours, peer, config.qkv_bias)
    pixels = _pixels(config, batch_size, seed)
    noise = torch.rand(batch_size, config.num_patches, generator=torch.Generator().manual_seed(seed + 1))
    train = Pair(ours, peer, {"pixel_values": pixels, "noise": noise}, call_with_loss, call_with_loss)
    # transformers' ViTMAEModel always shuffles; with mask_ratio 0 it keeps every patch (the encoder it offers for
    # features). Ours encodes all patches without the shuffle.
    inference = encoder_pair(method, config, ours, peer.vit, ViTMAEModel(ViTMAEConfig(mask_ratio=0.0, **common)),
                             pixels, strict=True)
    removed = config.num_patches - int(config.num_patches * (1 - config.mask_ratio))
    return MethodPairs(method.name, config, peer_config, weights, train, inference, removed, [])


VIDEOMAE_MASK_RATIO = 0.9  # VideoMAE's tube masking: the same 90% of the frame grid in every frame


def videomae_config(config):
    """transformers' VideoMAE at our video encoder's size, its decoder as VideoMAE-B's (half the width, 4 blocks)."""
    from transformers import VideoMAEConfig

    return VideoMAEConfig(
        image_size=config.image_size, patch_size=config.patch_size, num_channels=config.num_channels,
        num_frames=config.num_frames, tubelet_size=config.tubelet_size, hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size, hidden_act=config.hidden_act, layer_norm_eps=config.layer_norm_eps,
        decoder_hidden_size=config.hidden_size // 2, decoder_num_hidden_layers=4,
        decoder_num_attention_heads=max(1, config.num_attention_heads // 2),
        decoder_intermediate_size=2 * config.hidden_size, use_mean_pooling=True,
    )


def build_videomae_pairs(method, config, batch_size, seed) -> MethodPairs:
    """MaskFeat video (ours) against VideoMAEForPreTraining / VideoMAEModel of the same encoder size. No key map:
    VideoMAE has fixed sin-cos positions, q/v-only biases and no cls token, so each side keeps its own init."""
    from transformers import VideoMAEForPreTraining, VideoMAEModel

    from .methods import backbone_of_config

    backbone = backbone_of_config(config)
    peer_config = videomae_config(config)
    ours, peer = backbone.pretraining_class(config), VideoMAEForPreTraining(peer_config)
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(batch_size, config.num_frames, config.num_channels, config.image_size, config.image_size,
                         generator=generator)
    processor = backbone.image_processor_class.for_model_config(config)
    grid = (config.temporal_size, config.grid_size, config.grid_size)
    rng = np.random.default_rng(seed)
    mask = torch.from_numpy(np.stack([processor.generate_mask(grid, rng).reshape(-1) for _ in range(batch_size)]))
    frame_grid = config.grid_size**2
    tube = torch.rand(batch_size, frame_grid, generator=generator).argsort(1) < round(VIDEOMAE_MASK_RATIO * frame_grid)
    tube = tube.repeat(1, config.temporal_size)
    train = Pair(ours, peer, {"pixel_values": pixels, "bool_masked_pos": mask, "peer_masked_pos": tube},
                 lambda m, x: loss_of(m(pixel_values=x["pixel_values"], bool_masked_pos=x["bool_masked_pos"])),
                 lambda m, x: loss_of(m(pixel_values=x["pixel_values"], bool_masked_pos=x["peer_masked_pos"])))
    inference = Pair(_encoder_copy(backbone.model_class, config, ours), VideoMAEModel(peer_config),
                     {"pixel_values": pixels}, lambda m, x: first_tensor(m(**x)), lambda m, x: first_tensor(m(**x)))
    notes = [
        "targets differ: ours regresses the per-frame HOG of the masked tubelets (40% cube masks), VideoMAE the "
        "normalised pixels of its 90% tube-masked tokens",
        "pretraining work differs: our encoder runs over every token (+ cls), VideoMAE's over the visible 10% and "
        "its decoder (half width, 4 blocks) over all; inference is the same encoder work (all tokens, same width, "
        "depth, heads, MLP; ours adds one cls token)",
    ]
    return MethodPairs(method.name, config, peer_config, "independent random init (no key map to VideoMAE)", train,
                       inference, float(mask.sum()) / batch_size, notes, inference_flops=video_encoder_flops(config))


def video_size_overrides(size: BackboneSize) -> dict:
    """VideoMAE-B's clip: 16 frames in tubelets of 2."""
    return {"num_frames": 16, "tubelet_size": 2}


def build_beit_pairs(method, config, batch_size, seed) -> MethodPairs:
    from transformers import BeitConfig, BeitForMaskedImageModeling, BeitModel

    notes = []
    if config.qkv_bias != "qv":
        notes.append(f"our qkv_bias is {config.qkv_bias!r}; transformers' BEiT always has q/v biases")
    vocab = getattr(config, "vocab_size", 8192)
    peer_config = BeitConfig(
        hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads, intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act, image_size=config.image_size, patch_size=config.patch_size,
        num_channels=config.num_channels, vocab_size=vocab, layer_norm_eps=config.layer_norm_eps,
        layer_scale_init_value=config.layer_scale_init_value, drop_path_rate=config.drop_path_rate,
        use_mask_token=True, use_absolute_position_embeddings=config.position_embedding_type == "learned",
        use_relative_position_bias=config.relative_position_bias == "per_layer",
        use_shared_relative_position_bias=config.relative_position_bias == "shared",
        use_mean_pooling=True,  # one LayerNorm before lm_head, as BEiT's pretraining model has
    )
    peer = BeitForMaskedImageModeling(peer_config)
    ours = method.pretraining_class(config)
    weights = share_weights(method, ours, peer, config.qkv_bias)
    pixels = _pixels(config, batch_size, seed)
    mask = method_masks(method, config, batch_size, seed)
    token_ids = torch.randint(0, vocab, (batch_size, config.num_patches), generator=torch.Generator().manual_seed(seed))
    # ours takes the token ids of the whole grid, transformers' those of the masked patches
    inputs = {"pixel_values": pixels, "bool_masked_pos": mask, "labels": token_ids, "peer_labels": token_ids[mask]}
    call_ours = lambda m, x: loss_of(m(pixel_values=x["pixel_values"], bool_masked_pos=x["bool_masked_pos"],  # noqa: E731
                                       labels=x["labels"]))
    call_peer = lambda m, x: loss_of(m(pixel_values=x["pixel_values"], bool_masked_pos=x["bool_masked_pos"],  # noqa: E731
                                       labels=x["peer_labels"]))
    train = Pair(ours, peer, inputs, call_ours, call_peer)
    # mean pooling + LayerNorm, like ours
    inference = encoder_pair(method, config, ours, peer.beit, BeitModel(peer_config, add_pooling_layer=True), pixels)
    return MethodPairs(method.name, config, peer_config, weights, train, inference, float(mask.sum()) / batch_size,
                       notes)


def build_simmim_pairs(method, config, batch_size, seed) -> MethodPairs:
    from transformers import ViTConfig, ViTForMaskedImageModeling, ViTModel

    peer_config = ViTConfig(
        hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads, intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act, image_size=config.image_size, patch_size=config.patch_size,
        num_channels=config.num_channels, qkv_bias=True, layer_norm_eps=config.layer_norm_eps,
        encoder_stride=getattr(config, "encoder_stride", config.patch_size),
    )
    peer = ViTForMaskedImageModeling(peer_config)
    ours = method.pretraining_class(config)
    weights = share_weights(method, ours, peer, config.qkv_bias)
    pixels = _pixels(config, batch_size, seed)
    mask = method_masks(method, config, batch_size, seed)
    train = Pair(ours, peer, {"pixel_values": pixels, "bool_masked_pos": mask}, call_with_loss, call_with_loss)
    inference = encoder_pair(method, config, ours, peer.vit, ViTModel(peer_config, add_pooling_layer=False), pixels)
    return MethodPairs(method.name, config, peer_config, weights, train, inference, float(mask.sum()) / batch_size, [])


# SimMIM's Swin shapes by benchmark size, at its pretraining input (192 px, window 6): Swin-T, Swin-S, Swin-B.
SWIN_SIZES = {
    "tiny": dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24]),
    "small": dict(embed_dim=96, depths=[2, 2, 18, 2], num_heads=[3, 6, 12, 24]),
    "base": dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32]),
}


def swin_config_kwargs(size: BackboneSize) -> dict:
    """Swin-T/S/B for the sizes tiny/small/base (the ViT widths' usual Swin counterparts), at 192 px, window 6."""
    if size.name not in SWIN_SIZES:
        raise ValueError(f"a Swin has no {size.name!r} size here: use --sizes {','.join(SWIN_SIZES)} (and "
                         "--config_overrides image_size=...,window_size=... for another input)")
    return dict(SWIN_SIZES[size.name], image_size=192, patch_size=4, window_size=6, encoder_stride=32,
                drop_path_rate=0.0)


def swin_forward_flops(config, num_masked: float = 0.0) -> float:
    """Patch embedding, every stage's blocks (window attention: 4 N w^2 C for q.k^T and attn.v), the patch
    mergings (2 N/4 x 4C x 2C each), and SimMIM's 1x1 conv head on the last stage; one image, multiply-add = 2."""
    grid, patch, channels = config.image_size // config.patch_size, config.patch_size, config.num_channels
    flops = patch_embed_flops(grid * grid, patch, channels, config.embed_dim)
    for stage, depth in enumerate(config.depths):
        width, tokens = config.embed_dim * 2**stage, (grid // 2**stage) ** 2
        mlp, window_tokens = int(width * config.mlp_ratio), config.window_size**2
        flops += depth * (8 * tokens * width**2 + 4 * tokens * width * mlp + 4 * tokens * window_tokens * width)
        if stage < config.num_stages - 1:
            flops += 2 * (tokens // 4) * (4 * width) * (2 * width)
    return float(flops + swin_head_flops(config))


def build_swin_simmim_pairs(method, config, batch_size, seed) -> MethodPairs:
    """Ours and transformers' SwinForMaskedImageModeling (the same network: SimMIM's Swin), weights shared; the
    encoders (ours and SwinModel) for inference."""
    from transformers import SwinConfig, SwinForMaskedImageModeling, SwinModel

    from .convert_swin import HF_SWIN

    backbone = method.backbone("swin")
    peer_config = SwinConfig(
        image_size=config.image_size, patch_size=config.patch_size, num_channels=config.num_channels,
        embed_dim=config.embed_dim, depths=config.depths, num_heads=config.num_heads, window_size=config.window_size,
        mlp_ratio=config.mlp_ratio, qkv_bias=config.qkv_bias, hidden_act=config.hidden_act,
        drop_path_rate=config.drop_path_rate, use_absolute_embeddings=config.use_absolute_embeddings,
        layer_norm_eps=config.layer_norm_eps, encoder_stride=config.encoder_stride,
    )
    peer = SwinForMaskedImageModeling(peer_config)
    ours = backbone.pretraining_class(config)
    weights = share_weights(method, ours, peer, "full", key_map=HF_SWIN)
    pixels = _pixels(config, batch_size, seed)
    mask = method_masks(method, config, batch_size, seed)
    train = Pair(ours, peer, {"pixel_values": pixels, "bool_masked_pos": mask}, call_with_loss, call_with_loss)
    encoder = backbone.model_class(config)
    encoder.load_state_dict({k: v for k, v in ours.state_dict().items() if k.startswith("swin.")})
    peer_encoder = SwinModel(peer_config, add_pooling_layer=False)
    peer_encoder.load_state_dict(peer.swin.state_dict(), strict=False)  # SwinModel has no mask token by default
    inference = Pair(encoder, peer_encoder, {"pixel_values": pixels}, lambda m, x: first_tensor(m(**x)),
                     lambda m, x: first_tensor(m(**x)))
    forward = swin_forward_flops(config)  # 3x rule for the training step; the encoder alone for inference
    return MethodPairs(method.name, config, peer_config, weights, train, inference, float(mask.sum()) / batch_size,
                       [], train_flops=3 * forward, inference_flops=forward - swin_head_flops(config))


def swin_head_flops(config) -> float:
    """SimMIM's 1x1 conv head on the last stage's tokens."""
    last_tokens = (config.grid_size // 2 ** (config.num_stages - 1)) ** 2
    return float(2 * last_tokens * config.num_features * config.encoder_stride**2 * config.num_channels)


def eval_loss_gap(pair: Pair) -> dict:
    """Both pretraining models in eval mode (no drop path) on the shared inputs: with shared weights the losses
    must agree to float tolerance, which shows the two configs describe the same network."""
    modes = (pair.ours.training, pair.peer.training)
    pair.ours.eval()
    pair.peer.eval()
    try:
        with torch.no_grad():
            ours = float(pair.call_ours(pair.ours, pair.inputs))
            peer = float(pair.call_peer(pair.peer, pair.inputs))
    finally:
        pair.ours.train(modes[0])
        pair.peer.train(modes[1])
    return {"ours": ours, "peer": peer, "abs_diff": abs(ours - peer)}


def mfu(flops_per_image: float, batch_size: int, seconds: float, peak_tflops: float | None) -> float | None:
    if not peak_tflops or seconds <= 0:
        return None
    return flops_per_image * batch_size / seconds / (peak_tflops * 1e12)

