"""SimMIM on a Swin Transformer (the official `SwinTransformerForSimMIM`): every stride-4 patch embedding through
the Swin encoder, masked ones replaced by a learned mask token; the last stage (stride 32) -> SimMIM's one-layer
head (1x1 conv + PixelShuffle(32)) -> L1 on the masked pixels, as for the ViT."""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput

from .configuration_simmim_swin import MimSimMIMSwinConfig
from .mim_base import MimPreTrainedModel, required_mask
from .modeling_simmim import (MimSimMIMPreTrainingOutput, ReconstructionPictureMixin, pixel_shuffle_head,
                              reconstruction_output)
from .swin import SwinEncoder, init_swin_module
from .task_heads import FinetuneLoadingMixin, classification_loss


class MimSimMIMSwinPreTrainedModel(MimPreTrainedModel):
    """The encoder surface of a Swin: no cls token (probes pool the last-stage tokens), layer ids by SimMIM's Swin
    rule, and the official weight-decay exemptions."""

    config_class = MimSimMIMSwinConfig
    base_model_prefix = "swin"
    _no_split_modules = ["SwinBlock"]
    has_cls_token = False

    def _init_weights(self, module: nn.Module) -> None:
        """Official SimMIM Swin init (`SwinTransformer._init_weights`): Linear trunc-normal(0.02), biases 0,
        LayerNorm (1, 0), relative position tables, mask token and absolute positions trunc-normal(0.02); the
        patch-embedding and head convolutions as PyTorch draws them (the official code leaves them alone)."""
        init_swin_module(module, self.config.initializer_range)

    def layer_ids(self) -> dict[int, int]:
        """{id(parameter): layer id} for layer-wise lr decay, ids 0 .. num_blocks + 1 (see
        `SwinEncoder.layer_ids`); parameters outside the encoder (heads) take the top id, num_blocks + 1."""
        ids = self.swin.layer_ids()
        top = self.swin.num_blocks + 1
        return {id(p): ids.get(id(p), top) for p in self.parameters()}

    def no_weight_decay_parameters(self) -> list[nn.Parameter]:
        return self.swin.no_weight_decay_parameters()


class MimSimMIMSwinModel(MimSimMIMSwinPreTrainedModel):
    """The Swin encoder, for features: `last_hidden_state` (B, L_last, num_features) after the final norm,
    `pooler_output` their mean. `bool_masked_pos` (B, L) optionally replaces patches by the mask token."""

    _keys_to_ignore_on_load_unexpected = [r"^(?!swin\.)"]

    def __init__(self, config: MimSimMIMSwinConfig):
        super().__init__(config)
        self.swin = SwinEncoder(config, use_mask_token=config.use_mask_token)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None,
                **kwargs) -> BaseModelOutputWithPooling:
        if bool_masked_pos is not None:
            bool_masked_pos = bool_masked_pos.flatten(1).bool()
        output_hidden_states = bool(output_hidden_states or self.config.output_hidden_states)
        hidden, all_hidden = self.swin(pixel_values, bool_masked_pos, output_hidden_states)
        out = BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=hidden.mean(dim=1),
                                         hidden_states=all_hidden)
        return out if return_dict is not False else out.to_tuple()


class MimSimMIMSwinForPreTraining(ReconstructionPictureMixin, MimSimMIMSwinPreTrainedModel):
    """`swin` (all stride-4 patches, masked ones -> mask token) -> last stage as (B, C, H/32, W/32) -> `decoder`
    (1x1 conv to encoder_stride**2 * channels, PixelShuffle(encoder_stride)) -> (B, C, H, W) -> L1 on the masked
    pixels. `decoder.0` is the key of the official SimMIM and of transformers' SwinForMaskedImageModeling."""

    def __init__(self, config: MimSimMIMSwinConfig):
        super().__init__(config)
        self.swin = SwinEncoder(config)
        self.decoder = pixel_shuffle_head(config.num_features, config.encoder_stride, config.num_channels)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None,
                **kwargs) -> MimSimMIMPreTrainingOutput:
        """
        pixel_values: (B, C, H, W) the normalised image; it is also the reconstruction target.
        bool_masked_pos: (B, L) or (B, H/4, W/4), True = masked, on the stride-`patch_size` grid (the processor's
            `return_bool_masked_pos=True` gives it, each 32 px mask cell spread over its 8x8 patches).
        """
        bool_masked_pos = required_mask(self, bool_masked_pos)
        output_hidden_states = bool(output_hidden_states or self.config.output_hidden_states)
        hidden, all_hidden = self.swin(pixel_values, bool_masked_pos, output_hidden_states)
        grid = self.config.grid_size
        return reconstruction_output(self.decoder(self.swin.feature_map(hidden)), pixel_values, bool_masked_pos,
                                     (grid, grid), self.config.patch_size, all_hidden, return_dict)


class MimSimMIMSwinForImageClassification(FinetuneLoadingMixin, MimSimMIMSwinPreTrainedModel):
    """Swin encoder -> final LayerNorm on every last-stage token -> global average pool -> linear `head`, as the
    official Swin classifier (and transformers' SwinForImageClassification). No mask token: nothing is masked in
    fine-tuning, and an unused trainable parameter would break DDP. `labels`: class ids (B,) or soft targets
    (B, num_labels) from mixup/cutmix; `config.label_smoothing` applies to ids. Loaded from a pretraining folder it
    gets the fine-tuning switches (`config.finetune_overrides`: drop path 0.1)."""

    _keys_to_ignore_on_load_unexpected = [r"^swin\.mask_token$", r"^decoder\."]

    def __init__(self, config: MimSimMIMSwinConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.swin = SwinEncoder(config, use_mask_token=False)
        self.head = nn.Linear(config.num_features, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None,
                **kwargs) -> ImageClassifierOutput:
        output_hidden_states = bool(output_hidden_states or self.config.output_hidden_states)
        hidden, all_hidden = self.swin(pixel_values, output_hidden_states=output_hidden_states)
        logits = self.head(hidden.mean(dim=1))
        loss = None
        if labels is not None:
            loss = classification_loss(logits, labels, getattr(self.config, "label_smoothing", 0.0))
        out = ImageClassifierOutput(loss=loss, logits=logits, hidden_states=all_hidden)
        return out if return_dict is not False else out.to_tuple()
