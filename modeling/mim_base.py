"""What every method's models share: one `PreTrainedModel` base and the picture a pretraining model gives of a
batch. A method's base class only adds its `config_class` and `_init_weights`; its pretraining model adds
`picture_view` (and, where it has them, a tokenizer or a teacher).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from .remote_code import RemoteCodeMixin
from .vit import ViTEncoder

PICTURE_KINDS = ("pixels", "hog", "tokens")


@dataclass
class PictureView:
    """A pretraining model's view of one batch, drawn by `kind` alone:

    "pixels": predicted (B, C, H, W) in the input's normalised pixel space; target None (the input is the original).
    "hog": predicted and target (B, L, K) per-patch HOG vectors (the model's `cell_histograms` lays them out).
    "tokens": predicted (B, 3, h, w) in [0, 1], the tokenizer's decoding of the true tokens at the visible patches
        and the predicted ones at the masked patches; target (B, 3, h, w) in [0, 1], the decoding of all true tokens.
    bool_masked_pos: (B, L) True = masked.
    frames: None for image models (the batch's pixel_values are the originals); a video model shows chosen frames
        as images, (N, C, H, W), with the fields above per frame (N rows).
    """

    kind: str
    bool_masked_pos: torch.Tensor
    predicted: torch.Tensor
    target: torch.Tensor | None = None
    # the images the view is drawn over when they are not the batch's pixel_values: a video model's frames
    # (N, C, H, W), one row of bool_masked_pos / predicted / target per frame
    frames: torch.Tensor | None = None

    def __post_init__(self):
        if self.kind not in PICTURE_KINDS:
            raise ValueError(f"PictureView kind={self.kind!r} is not one of {PICTURE_KINDS}")


def unstandardize_patches(predicted: torch.Tensor, patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Norm-pix predictions back to pixels with each true patch's own mean and unbiased variance (the inverse of
    the norm_pix target, as MAE's official visualisation). (..., K) each."""
    return predicted * (patches.var(dim=-1, keepdim=True) + eps).sqrt() + patches.mean(dim=-1, keepdim=True)


def required_mask(model, bool_masked_pos: torch.Tensor | None, positions: str = "num_patches",
                  processor: str = "image") -> torch.BoolTensor:
    """The processor's mask as (B, L) bool, True = masked, for the pretraining models that mask in the data
    pipeline (`positions` names L in the error, `processor` the processor that makes it)."""
    if bool_masked_pos is None:
        raise ValueError(
            f"{type(model).__name__} needs bool_masked_pos (batch, {positions}), True = masked: call the "
            f"{processor} processor with return_bool_masked_pos=True (see processor.pretraining_kwargs())"
        )
    return bool_masked_pos.flatten(1).bool()


def method_auto_classes(prefix: str, module: str) -> dict[str, str]:
    """The Auto class -> class name map of the method whose base is `<prefix>PreTrainedModel` in `modeling_<m>.py`:
    `<prefix>Model`, `<prefix>ForPreTraining` (also for masked image modeling), `<prefix>ForImageClassification`,
    and `image_processing_<m>.<prefix>ImageProcessor`."""
    method = module.rsplit(".", 1)[-1].removeprefix("modeling_")
    return {
        "AutoModel": f"{prefix}Model",
        "AutoModelForPreTraining": f"{prefix}ForPreTraining",
        "AutoModelForMaskedImageModeling": f"{prefix}ForPreTraining",
        "AutoModelForImageClassification": f"{prefix}ForImageClassification",
        "AutoImageProcessor": f"image_processing_{method}.{prefix}ImageProcessor",
    }


class MimPreTrainedModel(RemoteCodeMixin, PreTrainedModel):
    """Base of every method's models. A subclass named `<prefix>PreTrainedModel` gets its `auto_classes` (the
    remote-code entries written by `save_pretrained`) from `method_auto_classes`, unless it sets them itself.

    The pretraining surface the scripts call, whatever the method: `picture_view`, `after_optimizer_step` and
    `load_tokenizer` (refused unless `config.needs_tokenizer`).
    """

    base_model_prefix = "vit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    encoder_class = ViTEncoder  # what the shared model bodies (`task_heads`) build under `base_model_prefix`
    _no_split_modules = ["Block"]
    _supports_sdpa = True
    supports_gradient_checkpointing = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        name = cls.__name__
        if name.endswith("PreTrainedModel") and "auto_classes" not in cls.__dict__:
            cls.auto_classes = method_auto_classes(name.removesuffix("PreTrainedModel"), cls.__module__)

    def post_init(self):
        super().post_init()
        # what the model builds frozen (fixed sin-cos tables, tokenizer, EMA teacher), to freeze again after loading
        self._fixed_parameter_names = {name for name, p in self.named_parameters() if not p.requires_grad}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """As `PreTrainedModel.from_pretrained`, then the parameters the model builds frozen are frozen again
        (transformers 5 loads every tensor as a trainable Parameter) and `after_loading` runs."""
        loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        for name, parameter in model.named_parameters():
            if name in model._fixed_parameter_names:
                parameter.requires_grad_(False)
        model.after_loading(pretrained_model_name_or_path, kwargs)
        return loaded

    # ---- the encoder surface the training and evaluation tools call, whatever the encoder family ----------------

    has_cls_token = True  # whether `encoder_tokens` starts with a [CLS] token (a Swin or pooled encoder has none)

    @property
    def encoder(self) -> torch.nn.Module:
        return getattr(self, self.base_model_prefix)

    def encoder_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, N, D) output tokens of the encoder (after its final norm where it has one), for probes."""
        return self.encoder(pixel_values)[0]

    def layer_ids(self) -> dict[int, int]:
        """Layer-wise lr decay ids by parameter identity: embeddings, cls/mask tokens and positions 0, block i is
        i + 1, everything else (final norm, heads) L + 1 (BEiT's rule). Families with other layouts override it."""
        encoder = self.encoder
        blocks = list(encoder.blocks)
        ids = {id(p): 0 for p in encoder.patch_embed.parameters()}
        ids.update({id(p): 0 for p in (getattr(encoder, name, None) for name in ("cls_token", "pos_embed",
                                                                                  "mask_token")) if p is not None})
        for index, block in enumerate(blocks):
            ids.update({id(p): index + 1 for p in block.parameters()})
        return {id(p): ids.get(id(p), len(blocks) + 1) for p in self.parameters()}

    def no_weight_decay_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters of rank >= 2 that AdamW must not decay (position tables, the cls token)."""
        encoder = self.encoder
        return [p for p in (getattr(encoder, "pos_embed", None), getattr(encoder, "cls_token", None))
                if isinstance(p, torch.nn.Parameter)]

    def after_loading(self, pretrained_model_name_or_path, kwargs: dict) -> None:
        """A method's own rule for the weights it just loaded (e.g. per-layer tables from a shared one)."""

    def picture_view(self, batch: dict, outputs) -> PictureView | None:
        """What to draw of `batch` and this model's `outputs` on it; None when the model has nothing to show."""
        return None

    def after_optimizer_step(self) -> None:
        """Called by the training loop after every optimizer update (CAE moves its EMA teacher here)."""

    def load_tokenizer(self, dvae_model) -> None:
        """Methods with visual-token targets copy a `MimDvaeModel` in as their frozen tokenizer; the others refuse."""
        self.check_needs_tokenizer()
        raise NotImplementedError(f"{type(self).__name__} needs a tokenizer but defines no load_tokenizer")

    def check_needs_tokenizer(self) -> None:
        if not self.config.needs_tokenizer:
            method = self.config.model_type.removeprefix("mim_")
            raise ValueError(
                f"{type(self).__name__} has no tokenizer to load: {method} pretraining here does not predict visual "
                "tokens (config.needs_tokenizer is False); drop the tokenizer"
            )
