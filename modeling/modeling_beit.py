"""BEiT v1 (Bao et al. 2022): block-wise masking, all patches through the encoder with masked ones replaced by a
mask token, a linear head predicting the frozen dVAE tokenizer's visual token of each masked patch. Layout of the pipeline as microsoft/unilm `beit/modeling_pretrain.py`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers.utils import ModelOutput

from .beit_init import SharedToPerLayerBiasMixin, init_relative_bias_and_layer_scale, residual_depth_scale
from .configuration_beit import TOKENIZER_ARCHITECTURE_FIELDS, MimBeitConfig
from .losses import masked_token_cross_entropy
from .mim_base import MimPreTrainedModel, PictureView, required_mask
from .modeling_dvae import DvaeConv2d, DvaeEncoder
from .task_heads import EncoderModelMixin, ImageClassificationMixin, run_encoder
from .visual_tokens import VisualTokenizerMixin, init_tokenizer_conv
from .vit import ViTEncoder, init_layer_norm, zero_bias

# BEiT fine-tuning starts the classifier near zero: trunc-normal(0.02) (timm's +-2 absolute bounds), then x 0.001.
HEAD_INIT_SCALE = 1e-3


def trunc_normal_(tensor: torch.Tensor, std: float, a: float, b: float) -> torch.Tensor:
    """N(0, std^2) truncated to [a, b] by the inverse CDF in one pass (timm's and BEiT's algorithm).

    torch's own trunc_normal_ rejection-samples whole tensors, about 14 rounds at +-1 std, which takes over a
    minute for a ViT-B on two CPU cores. Like `transformers.initialization`, it leaves tensors loaded from a
    checkpoint (flagged `_is_hf_initialized`) untouched.
    """
    if getattr(tensor, "_is_hf_initialized", False) or tensor.is_meta:
        return tensor

    def cdf(x: float) -> float:
        return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0

    with torch.no_grad():
        values = torch.empty(tensor.shape, dtype=torch.float32, device=tensor.device)
        values.uniform_(2 * cdf(a / std) - 1, 2 * cdf(b / std) - 1).erfinv_().mul_(std * math.sqrt(2.0))
        tensor.copy_(values.clamp_(min=a, max=b))
    return tensor


@dataclass
class MimBeitPreTrainingOutput(ModelOutput):
    """
    loss: cross-entropy of the token head against the tokenizer's ids, averaged over every masked patch of the batch.
    logits: (N_masked, vocab_size) token-head logits at the masked patches, batch-major then row-major order
        (`bool_masked_pos` selects them); N_masked = bool_masked_pos.sum() can differ between images.
    accuracy: fraction of masked patches whose argmax equals the target token (0 when nothing is masked).
    labels: (N_masked,) the target token ids at the masked patches.
    bool_masked_pos: (B, L) True = masked (replaced by the mask token).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    accuracy: torch.FloatTensor | None = None
    labels: torch.LongTensor | None = None
    bool_masked_pos: torch.BoolTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


class MimBeitPreTrainedModel(SharedToPerLayerBiasMixin, MimPreTrainedModel):
    config_class = MimBeitConfig

    def _init_weights(self, module: nn.Module) -> None:
        """BEiT init: trunc-normal(0.02) cut at +-1 std for Linear and conv weights and the
        cls/mask tokens, zero biases, LayerNorm (1, 0), zero relative-position tables; the residual output
        projections of block l are drawn at std 0.02/sqrt(2 l) (the official init-then-divide, in one draw, so it
        cannot be applied twice, and `transformers.initialization` skips tensors loaded from a checkpoint).
        The classifier head is trunc-normal(0.02) x 0.001 as BEiT fine-tuning does; the frozen tokenizer gets
        DALL-E's N(0, 1/(n_in k^2)) until real weights are loaded."""
        if init_relative_bias_and_layer_scale(module, self.config.grid_size, self.config.layer_scale_init_value):
            return
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if module is getattr(self, "head", None):
                trunc_normal_(module.weight, std=std * HEAD_INIT_SCALE, a=-2 * HEAD_INIT_SCALE, b=2 * HEAD_INIT_SCALE)
            else:
                scaled = std * residual_depth_scale(self.vit, module)
                trunc_normal_(module.weight, std=scaled, a=-scaled, b=scaled)
            zero_bias(module)
        elif isinstance(module, nn.Conv2d):
            trunc_normal_(module.weight, std=std, a=-std, b=std)
            zero_bias(module)
        elif isinstance(module, nn.LayerNorm):
            init_layer_norm(module)
        elif isinstance(module, ViTEncoder):
            for token in (module.cls_token, module.mask_token, module.pos_embed):
                if token is not None:
                    trunc_normal_(token, std=std, a=-std, b=std)
        elif isinstance(module, DvaeConv2d):
            init_tokenizer_conv(module)


class MimBeitModel(EncoderModelMixin, MimBeitPreTrainedModel):
    """BEiT encoder over all patches, for features: `AutoModel.from_pretrained(...)`. `bool_masked_pos` (B, L)
    optionally replaces patches by the mask token, as in pretraining."""


class MimBeitForPreTraining(VisualTokenizerMixin, MimBeitPreTrainedModel):
    """`encode` (all patches, masked ones -> mask token, shared relative position bias) -> `lm_head` at the masked
    positions only -> cross-entropy against the frozen `tokenizer`'s ids.

    `tokenizer` is the encoder of a dVAE (`MimDvaeModel.encoder`), built from `config.tokenizer_config`: frozen
    (requires_grad False, so no optimizer step, weight decay or DDP gradient), always in eval mode, run in fp32
    under no_grad. Load trained weights with `load_tokenizer(MimDvaeModel.from_pretrained(...))`; they are saved
    with the model, so a pretraining checkpoint resumes with its targets.
    """

    def __init__(self, config: MimBeitConfig):
        super().__init__(config)
        self.vit = ViTEncoder(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.tokenizer = DvaeEncoder(config.tokenizer_config_object())
        self.tokenizer.requires_grad_(False)
        self.post_init()

    @torch.no_grad()
    def load_tokenizer(self, dvae_model) -> None:
        """Copy a trained or converted `MimDvaeModel`'s encoder in as the frozen tokenizer. A tokenizer of another
        size (e.g. one trained by scripts/train_tokenizer.py) replaces the current module and `config.tokenizer_config`;
        its vocabulary must match the token head and its downsampling must give one token per patch."""
        tokenizer_config = dvae_model.config
        self.check_tokenizer_fits(tokenizer_config)
        architecture = {name: getattr(tokenizer_config, name) for name in TOKENIZER_ARCHITECTURE_FIELDS}
        current = self.config.tokenizer_config_object()
        if any(getattr(current, name) != value for name, value in architecture.items() if name != "image_size"):
            self.tokenizer = DvaeEncoder(tokenizer_config).to(self.lm_head.weight.device)
        self.tokenizer.load_state_dict(dvae_model.encoder.state_dict(), strict=True)
        self.tokenizer.float().requires_grad_(False).train(False)
        self.config.tokenizer_config = architecture
        self.keep_tokenizer_decoder(dvae_model)

    def forward(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None,
                codebook_pixel_values: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                interpolate_pos_encoding: bool = False, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, **kwargs) -> MimBeitPreTrainingOutput:
        """
        pixel_values: (B, C, H, W) the normalised encoder view.
        bool_masked_pos: (B, L) or (B, h, w), True = masked (the processor's `return_bool_masked_pos=True`).
        codebook_pixel_values: (B, C, S, S) the tokenizer view (`return_codebook_pixels=True`), tokenized here...
        labels: ...unless the token ids of the whole grid, (B, L) or (B, h, w), are given instead.
        """
        bool_masked_pos = required_mask(self, bool_masked_pos)
        if labels is not None:
            if labels.ndim < 2:
                raise ValueError(
                    f"labels must be the token ids of the whole grid, (batch, num_patches), got {tuple(labels.shape)}; "
                    "the model selects the masked ones itself (transformers' BEiT takes them pre-selected instead)"
                )
            token_ids = labels.flatten(1).long()
        elif codebook_pixel_values is not None:
            token_ids = self.tokenize(codebook_pixel_values)
        else:
            raise ValueError(
                "MimBeitForPreTraining needs the tokenizer's targets: pass codebook_pixel_values (the processor's "
                "return_codebook_pixels=True view) or labels, the token ids (batch, num_patches) of the whole grid"
            )
        if token_ids.shape != bool_masked_pos.shape:
            raise ValueError(
                f"the targets cover {tuple(token_ids.shape)} (batch, tokens) but bool_masked_pos is "
                f"{tuple(bool_masked_pos.shape)}: the tokenizer view must be codebook_image_size="
                f"{self.config.codebook_image_size} px, giving one token per patch"
            )
        hidden, all_hidden = run_encoder(self, pixel_values, output_hidden_states, bool_masked_pos=bool_masked_pos,
                                         interpolate_pos_encoding=interpolate_pos_encoding)
        # the token head runs only where a prediction is scored; counts differ per image, so index the whole batch
        logits = self.lm_head(hidden[:, 1:][bool_masked_pos])
        targets = token_ids[bool_masked_pos]
        if targets.numel():
            loss = masked_token_cross_entropy(logits, targets)
            accuracy = (logits.detach().argmax(dim=-1) == targets).float().mean()
        else:  # nothing masked: a zero loss that still reaches every parameter (DDP needs a full graph)
            loss = logits.float().sum() * 0.0 + hidden.float().sum() * 0.0
            accuracy = torch.zeros((), device=logits.device)
        out = MimBeitPreTrainingOutput(loss=loss, logits=logits, accuracy=accuracy, labels=targets,
                                       bool_masked_pos=bool_masked_pos, hidden_states=all_hidden)
        return out if return_dict is not False else out.to_tuple()

    def picture_view(self, batch: dict, outputs: MimBeitPreTrainingOutput) -> PictureView | None:
        """"tokens": the tokenizer's decoder on the true tokens with the argmax predictions at the masked patches."""
        return self.tokens_picture_view(batch, outputs.bool_masked_pos, outputs.logits.argmax(dim=-1))


class MimBeitForImageClassification(ImageClassificationMixin, MimBeitPreTrainedModel):
    """BEiT encoder + mean pooling + fc_norm + linear head (BEiT fine-tuning), or cls pooling.

    The classifier has no mask token (nothing is masked in fine-tuning; an unused trainable parameter would also
    break DDP). Built with `relative_position_bias="per_layer"` from a pretraining checkpoint, each block's table
    starts as a copy of the shared one (see `after_loading`).
    """

