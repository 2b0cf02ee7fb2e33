"""CAE configuration: defaults are the canonical ViT-B/16 checkpoint of lxtGH/CAE (800 epochs)."""

from .configuration_beit import VisualTokenConfigMixin
from .configuration_dvae import MimDvaeConfig
from .configuration_vit import (PER_LAYER_BIAS_FINETUNE, BlockMaskConfigMixin, MimViTConfig, check_choice,
                                 check_divisible)

MASK_MODES = ("block", "random")
DECODER_TARGETS = ("tokens", "pixels")


class MimCaeConfig(VisualTokenConfigMixin, BlockMaskConfigMixin, MimViTConfig):
    """ViT encoder on the visible patches only; a latent regressor (cross-attention from mask queries to the visible
    latents) predicts the masked patches' representations, aligned with the encoder's own (stop-gradient) encoding
    of the masked patches, and a decoder maps the predictions to the tokenizer's visual tokens.

    Encoder defaults: BEiT-style q/v bias, layer scale 0.1, drop path 0.1, fixed sin-cos positions in CAE axis order
    (rows first), no relative position bias, mean pooling, LayerNorm eps 1e-6.

    Masking (made by the image processor): `num_masking_patches` 98 of 196, exactly, in blocks of at least
    `min_num_patches` 16 (`mask_mode="block"`), or uniformly at random (`mask_mode="random"`).
    The count must be the same for every image of a batch: the encoder reshapes the visible tokens to one length.

    Regressor: `regressor_num_hidden_layers` cross-attention blocks; decoder: `decoder_num_hidden_layers`
    self-attention blocks on the masked queries only. Both run at `decoder_hidden_size` (default: hidden_size;
    a different width adds a Linear + LayerNorm after the encoder) with `decoder_num_attention_heads` heads (default:
    num_attention_heads), MLP `decoder_intermediate_size` (default 4x) and layer scale `decoder_layer_scale_init_value`.
    Their drop-path rates rise from 0 to `drop_path_rate`, separately for the regressor and the decoder.

    Loss = reconstruction + `alignment_weight` * MSE(latent_pred, stopgrad(latent_target)).
    decoder_target: "tokens" (cross-entropy against the dVAE tokenizer's ids, `vocab_size` classes; the tokenizer
        is built from `tokenizer_config`, a `MimDvaeConfig` dict, and reads a `codebook_image_size` view) or "pixels"
        (MSE on the masked patches' pixels, per-patch normalised when `norm_pix_loss`).
    teacher_momentum: 0 (official) computes the alignment target with the encoder's own weights under no_grad;
        > 0 keeps a frozen EMA copy `teacher`, updated by `MimCaeForPreTraining.update_teacher()` after each
        optimizer step.
    """

    model_type = "mim_cae"
    _auto_class = "AutoConfig"
    # `norm` -> `fc_norm` is done when the classifier loads a pretraining checkpoint
    finetune_overrides = PER_LAYER_BIAS_FINETUNE

    backbone_defaults = dict(qkv_bias="qv", layer_scale_init_value=0.1, drop_path_rate=0.1,
                             position_embedding_type="sincos_cae", train_position_embeddings=False,
                             relative_position_bias="none", pooling="mean", layer_norm_eps=1e-6)
    backbone_fixed = {"use_mask_token": False}  # CAE's mask token lives in the regressor, never in the encoder
    block_mask_defaults = {"num_masking_patches": 98, "min_num_patches": 16}
    block_mask_aspect = False

    def __init__(
        self,
        mask_mode: str = "block",
        regressor_num_hidden_layers: int = 4,
        decoder_num_hidden_layers: int = 4,
        decoder_hidden_size: int | None = None,
        decoder_num_attention_heads: int | None = None,
        decoder_intermediate_size: int | None = None,
        decoder_layer_scale_init_value: float = 0.1,
        alignment_weight: float = 2.0,
        teacher_momentum: float = 0.0,
        decoder_target: str = "tokens",
        norm_pix_loss: bool = True,
        vocab_size: int = 8192,
        tokenizer_config: dict | None = None,
        codebook_image_size: int | None = None,
        **kwargs,
    ):
        super().__init__(**self.backbone_kwargs(kwargs))
        self.mask_mode = mask_mode
        self.regressor_num_hidden_layers = regressor_num_hidden_layers
        self.decoder_num_hidden_layers = decoder_num_hidden_layers
        self.decoder_hidden_size = self.hidden_size if decoder_hidden_size is None else decoder_hidden_size
        self.decoder_num_attention_heads = (
            self.num_attention_heads if decoder_num_attention_heads is None else decoder_num_attention_heads
        )
        self.decoder_intermediate_size = (
            4 * self.decoder_hidden_size if decoder_intermediate_size is None else decoder_intermediate_size
        )
        self.decoder_layer_scale_init_value = decoder_layer_scale_init_value
        self.alignment_weight = alignment_weight
        self.teacher_momentum = teacher_momentum
        self.decoder_target = decoder_target
        self.norm_pix_loss = norm_pix_loss
        tokenizer_config = {"vocab_size": vocab_size} if tokenizer_config is None else tokenizer_config
        tokenizer = self.set_tokenizer_fields(vocab_size, tokenizer_config, codebook_image_size)
        self.validate_cae(tokenizer)

    @property
    def needs_tokenizer(self) -> bool:
        return self.decoder_target == "tokens"

    def validate_cae(self, tokenizer: MimDvaeConfig) -> None:
        check_choice("position_embedding_type", self.position_embedding_type, ("sincos_cae",))
        check_choice("qkv_bias", self.qkv_bias, ("qv", "none"))
        # per-layer RPB is the fine-tuning switch; pretraining drops tokens, so MimCaeForPreTraining refuses it
        check_choice("relative_position_bias", self.relative_position_bias, ("none", "per_layer"))
        if self.train_position_embeddings:
            raise ValueError("train_position_embeddings must be False: CAE keeps its sin-cos table fixed")
        check_choice("mask_mode", self.mask_mode, MASK_MODES)
        check_choice("decoder_target", self.decoder_target, DECODER_TARGETS)
        self.validate_block_mask("CAE")
        for name in ("regressor_num_hidden_layers", "decoder_num_hidden_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        check_divisible("decoder_hidden_size", self.decoder_hidden_size, "decoder_num_attention_heads",
                        self.decoder_num_attention_heads)
        check_divisible("decoder_hidden_size", self.decoder_hidden_size, "4 (the sin-cos quarters); decoder_hidden_size", 4)
        if self.decoder_intermediate_size <= 0:
            raise ValueError(f"decoder_intermediate_size must be > 0, got {self.decoder_intermediate_size}")
        if self.decoder_layer_scale_init_value < 0:
            raise ValueError(
                f"decoder_layer_scale_init_value must be >= 0 (0 turns it off), got {self.decoder_layer_scale_init_value}"
            )
        if not self.alignment_weight >= 0:
            raise ValueError(f"alignment_weight must be >= 0, got {self.alignment_weight!r}")
        if not 0.0 <= self.teacher_momentum < 1.0:
            raise ValueError(
                f"teacher_momentum must be in [0, 1): 0 reuses the encoder's weights, m > 0 keeps an EMA teacher; "
                f"got {self.teacher_momentum!r}"
            )
        self.validate_tokenizer_fields(tokenizer)
