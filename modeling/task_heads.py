"""The two model bodies every method shares: the encoder alone (features, `AutoModel`) and the encoder with a
pooled classification head (fine-tuning, `pipeline("image-classification")`).

They keep the encoder under the same attribute (`vit`) as the pretraining model, so weights move between the
three classes of a method without renaming; the pretraining-only keys are simply not loaded.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.utils import logging

from .vit import pool_features

logger = logging.get_logger(__name__)

# from_pretrained's keywords that locate the files; the config is read with the same ones
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")


def run_encoder(model, pixel_values: torch.Tensor, output_hidden_states: bool | None = None, **kwargs):
    """`model.vit`'s (tokens, hidden states) on every patch; `output_hidden_states` None follows the config.
    `kwargs` (bool_masked_pos, interpolate_pos_encoding) go to the encoder."""
    output_hidden_states = bool(output_hidden_states or model.config.output_hidden_states)
    return model.vit(pixel_values, output_hidden_states=output_hidden_states, **kwargs)


class EncoderModelMixin:
    """`<M>Model`: all patches through the encoder; `pooler_output` pooled as `config.pooling` says.
    `bool_masked_pos` (B, L) optionally replaces patches by the mask token, where the encoder has one."""

    _keys_to_ignore_on_load_unexpected = [r"^(?!vit\.)"]

    def __init__(self, config):
        super().__init__(config)
        self.vit = self.encoder_class(config)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None,
                interpolate_pos_encoding: bool = False, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, **kwargs) -> BaseModelOutputWithPooling:
        hidden, all_hidden = run_encoder(self, pixel_values, output_hidden_states, bool_masked_pos=bool_masked_pos,
                                         interpolate_pos_encoding=interpolate_pos_encoding)
        out = BaseModelOutputWithPooling(
            last_hidden_state=hidden, pooler_output=pool_features(hidden, self.config.pooling), hidden_states=all_hidden
        )
        return out if return_dict is not False else out.to_tuple()


class FinetuneLoadingMixin:
    """A classifier that, loaded from a pretraining (or feature) folder, builds itself with the method's fine-tuning
    switches (`finetune_config`), whatever its encoder family."""

    @classmethod
    def finetune_config(cls, config: PretrainedConfig, saved: PretrainedConfig | None = None) -> dict:
        """Make a config read from a pretraining (or feature) folder the classifier's, in place: the method's
        fine-tuning switches (`type(config).finetune_overrides`, e.g. MAE's trainable positions, per-layer relative
        position bias for BEiT/SimMIM/CAE, drop path 0.1) on every field still at its `saved` value (fields the caller
        changed are kept), and `architectures` naming this class, so it is applied once. A classifier's config (image
        or video) is left alone. Returns the fields changed, {field: (old, new)}."""
        if any(name.endswith("Classification") for name in (config.architectures or [])):
            return {}
        saved = config if saved is None else saved
        changes = {}
        for field, value in type(config).finetune_overrides.items():
            old = getattr(config, field)
            if old == getattr(saved, field, old) and old != value:
                changes[field] = (old, value)
                setattr(config, field, value)
        config.architectures = [cls.__name__]
        return changes

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """As `PreTrainedModel.from_pretrained`; from a pretraining folder the config first gets the method's
        fine-tuning switches (`finetune_config`, logged in one line)."""
        if pretrained_model_name_or_path is None:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        hub = {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
        saved = cls.config_class.from_pretrained(pretrained_model_name_or_path, **hub)
        config = kwargs.get("config")
        if isinstance(config, PretrainedConfig):
            config = copy.deepcopy(config)
        else:  # the keywords that are config fields (num_labels=3, ...) set the config, as transformers does
            config = copy.deepcopy(saved)
            fields = (set(saved.to_dict()) | {"num_labels"}) - {"dtype", "torch_dtype"}
            for key in [k for k in kwargs if k in fields]:
                setattr(config, key, kwargs.pop(key))
        changes = cls.finetune_config(config, saved)
        if changes:
            logger.warning(
                "%s holds a %s checkpoint: building the classifier with the fine-tuning switches %s",
                pretrained_model_name_or_path, (saved.architectures or ["pretraining"])[0],
                ", ".join(f"{field}={new!r} (was {old!r})" for field, (old, new) in changes.items()),
            )
        kwargs["config"] = config
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)


class ImageClassificationMixin(FinetuneLoadingMixin):
    """`<M>ForImageClassification`: encoder -> pooling (cls after the final norm, or mean + `fc_norm`) -> `head`.

    `labels` may be class ids (B,) or soft targets (B, num_labels) from mixup/cutmix; `config.label_smoothing`
    applies to ids.

    Loaded from a pretraining folder (`AutoModelForImageClassification.from_pretrained(folder, num_labels=N)`, as
    the Trainer and the example scripts do), the classifier is the one the method's fine-tuning recipe builds:
    see `finetune_config`.
    """

    # pretraining-only encoder parts: the mask token, the shared relative position table (copied into per-layer
    # tables where the method says so), the final norm under mean pooling
    _keys_to_ignore_on_load_unexpected = [
        r"^(?!vit\.|fc_norm\.|head\.)", r"^vit\.mask_token$", r"^vit\.rel_pos_bias\.", r"^vit\.norm\.",
    ]

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        mean_pooling = config.pooling == "mean"
        self.vit = self.encoder_class(config, add_final_norm=not mean_pooling)
        # no mask token: nothing is masked in fine-tuning, and an unused trainable parameter would break DDP
        self.vit.mask_token = None
        self.fc_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if mean_pooling else None
        self.head = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None,
                interpolate_pos_encoding: bool = False, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, **kwargs) -> ImageClassifierOutput:
        hidden, all_hidden = run_encoder(self, pixel_values, output_hidden_states,
                                         interpolate_pos_encoding=interpolate_pos_encoding)
        pooled = pool_features(hidden, self.config.pooling)
        if self.fc_norm is not None:
            pooled = self.fc_norm(pooled)
        logits = self.head(pooled)
        loss = None
        if labels is not None:
            loss = classification_loss(logits, labels, getattr(self.config, "label_smoothing", 0.0))
        out = ImageClassifierOutput(loss=loss, logits=logits, hidden_states=all_hidden)
        return out if return_dict is not False else out.to_tuple()


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy against class ids, or against soft targets of the same shape as the logits."""
    logits = logits.float()
    if labels.shape == logits.shape and labels.is_floating_point():
        return torch.sum(-labels * F.log_softmax(logits, dim=-1), dim=-1).mean()
    return F.cross_entropy(logits, labels.long(), label_smoothing=label_smoothing)
