"""What BEiT and CAE share as models predicting a frozen dVAE's visual tokens: tokenizing the codebook view, and
the "tokens" picture, which needs the tokenizer's decoder.

The pretraining model keeps only the dVAE's encoder as a module (its state-dict keys are `tokenizer.*`). The
decoder of a tokenizer loaded with `load_tokenizer` is kept beside the model, outside its modules: it is not
saved, moved or trained with the model, and a model loaded from a folder has none until `load_tokenizer`.
"""

from __future__ import annotations

import math

import torch
from transformers import initialization as init
from transformers.utils import logging

from .mim_base import PictureView
from .modeling_dvae import DvaeConv2d, check_map_pixels_range

logger = logging.get_logger(__name__)


def init_tokenizer_conv(conv: DvaeConv2d) -> None:
    """DALL-E's draw for the frozen tokenizer's convolutions until real weights are loaded: w ~ N(0, 1/(n_in k^2)),
    b = 0."""
    init.normal_(conv.w, std=1.0 / math.sqrt(conv.in_channels * conv.kernel_size**2))
    init.zeros_(conv.b)


class VisualTokenizerMixin:
    """For a pretraining model with a frozen `tokenizer` (a `DvaeEncoder`) and `config.codebook_image_size`."""

    def train(self, mode: bool = True):
        """The tokenizer stays in eval mode whatever the model's mode."""
        super().train(mode)
        if self.tokenizer is not None:
            self.tokenizer.train(False)
        return self

    def check_tokenizer_fits(self, dvae_config) -> None:
        """A tokenizer must have the head's vocabulary and give one token per patch at codebook_image_size."""
        self.check_needs_tokenizer()
        if dvae_config.vocab_size != self.config.vocab_size:
            raise ValueError(
                f"the tokenizer has vocab_size={dvae_config.vocab_size} but this model's token head predicts "
                f"vocab_size={self.config.vocab_size}; build the model with vocab_size={dvae_config.vocab_size} "
                "(e.g. --config_overrides vocab_size=...) or use a tokenizer of this vocabulary"
            )
        factor = dvae_config.downsample_factor
        if self.config.codebook_image_size != self.config.grid_size * factor:
            raise ValueError(
                f"the tokenizer downsamples by {factor}, so codebook_image_size={self.config.codebook_image_size} "
                f"would not give one token per patch of the {self.config.grid_size}x{self.config.grid_size} grid; set "
                f"codebook_image_size={self.config.grid_size * factor}"
            )

    def keep_tokenizer_decoder(self, dvae_model) -> None:
        """Hold `dvae_model` for decoding pictures, or nothing when its decoder was never trained."""
        trained = bool(getattr(dvae_model.config, "decoder_trained", False))
        object.__setattr__(self, "_tokenizer_dvae", dvae_model if trained else None)  # not a submodule

    @torch.no_grad()
    def tokenize(self, codebook_pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) map_pixels'd tokenizer view -> (B, L) token ids, row-major: the argmax of fp32 logits with
        autocast off, since half precision flips near-ties and the tokens are the targets."""
        if codebook_pixel_values.ndim != 4 or codebook_pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"codebook_pixel_values must be (batch, {self.config.num_channels}, {self.config.codebook_image_size}, "
                f"{self.config.codebook_image_size}), got {tuple(codebook_pixel_values.shape)}"
            )
        check_map_pixels_range(codebook_pixel_values, "codebook_pixel_values", owner=self)
        with torch.autocast(device_type=codebook_pixel_values.device.type, enabled=False):
            logits = self.tokenizer(codebook_pixel_values.float())
        return logits.argmax(dim=1).flatten(1)

    @torch.no_grad()
    def tokens_picture_view(self, batch: dict, bool_masked_pos: torch.Tensor,
                            predicted_ids: torch.Tensor) -> PictureView | None:
        """The "tokens" view: `predicted_ids` are the argmax tokens at the masked patches, batch-major then
        row-major (the order `bool_masked_pos` selects). None without a trained decoder or true tokens."""
        dvae = getattr(self, "_tokenizer_dvae", None)
        if dvae is None:
            logger.warning_once(
                "no picture of the token predictions: the tokenizer has no trained decoder here (load one with "
                "load_tokenizer(MimDvaeModel.from_pretrained(...)) from a dVAE whose decoder_trained is True)"
            )
            return None
        if batch.get("labels") is not None:
            true_ids = batch["labels"].flatten(1).long()
        elif batch.get("codebook_pixel_values") is not None:
            true_ids = self.tokenize(batch["codebook_pixel_values"])
        else:
            return None
        mixed = true_ids.clone()
        mixed[bool_masked_pos] = predicted_ids.reshape(-1).to(mixed.device)
        rows = batch["pixel_values"].shape[-2] // self.config.patch_size
        grid = (true_ids.shape[0], rows, true_ids.shape[1] // rows)
        device = next(dvae.parameters()).device
        predicted, target = (dvae.decode(ids.reshape(grid).to(device)).to(true_ids.device) for ids in (mixed, true_ids))
        return PictureView("tokens", bool_masked_pos, predicted, target)
