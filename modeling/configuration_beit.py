"""BEiT v1 configuration: defaults are the canonical BEiT-B/16 pretraining checkpoint (microsoft/unilm)."""

from .configuration_dvae import MimDvaeConfig
from .configuration_vit import BEIT_STYLE_BACKBONE, PER_LAYER_BIAS_FINETUNE, BlockMaskConfigMixin, MimViTConfig

# The tokenizer fields that fix the encoder's architecture (and so its state dict); training fields stay out.
TOKENIZER_ARCHITECTURE_FIELDS = (
    "vocab_size", "hidden_size", "num_groups", "num_blocks_per_group", "num_channels", "image_size",
)


class VisualTokenConfigMixin:
    """The fields of a method predicting a frozen dVAE's visual tokens (BEiT, CAE): `vocab_size` classes,
    `tokenizer_config` (the tokenizer's `MimDvaeConfig` fields; None: DALL-E's encoder with `vocab_size` classes)
    and `codebook_image_size`, the tokenizer view's side (None: grid_size x the tokenizer's downsampling)."""

    def set_tokenizer_fields(self, vocab_size: int, tokenizer_config: dict | None,
                             codebook_image_size: int | None) -> MimDvaeConfig:
        """Set the three fields and return the tokenizer's config."""
        self.vocab_size = vocab_size
        self.tokenizer_config = dict(tokenizer_config) if tokenizer_config is not None else None
        tokenizer = self.tokenizer_config_object()
        if codebook_image_size is None:
            codebook_image_size = self.grid_size * tokenizer.downsample_factor
        self.codebook_image_size = codebook_image_size
        return tokenizer

    def tokenizer_config_object(self) -> MimDvaeConfig:
        """The `MimDvaeConfig` the frozen tokenizer is built from (DALL-E's encoder when `tokenizer_config` is None)."""
        fields = self.tokenizer_config if self.tokenizer_config is not None else {"vocab_size": self.vocab_size}
        unknown = sorted(set(fields) - set(MimDvaeConfig().to_dict()))
        if unknown:
            raise ValueError(f"tokenizer_config has fields MimDvaeConfig does not know: {unknown}")
        try:
            return MimDvaeConfig(**fields)
        except (TypeError, ValueError) as error:
            raise ValueError(f"tokenizer_config is not a valid MimDvaeConfig: {error}") from error

    def validate_tokenizer_fields(self, tokenizer: MimDvaeConfig) -> None:
        """The head's classes are the tokenizer's codes, its images the model's, and one token per patch."""
        if isinstance(self.vocab_size, bool) or not isinstance(self.vocab_size, int) or self.vocab_size < 2:
            raise ValueError(f"vocab_size must be an integer >= 2, got {self.vocab_size!r}")
        if tokenizer.vocab_size != self.vocab_size:
            raise ValueError(
                f"tokenizer_config has vocab_size={tokenizer.vocab_size} but the token head predicts vocab_size="
                f"{self.vocab_size} classes; make them equal"
            )
        if self.needs_tokenizer and tokenizer.num_channels != self.num_channels:
            raise ValueError(
                f"tokenizer_config has num_channels={tokenizer.num_channels} but the images have num_channels="
                f"{self.num_channels}; make them equal"
            )
        factor = tokenizer.downsample_factor
        if self.codebook_image_size != self.grid_size * factor:
            raise ValueError(
                f"codebook_image_size={self.codebook_image_size} must be grid_size x the tokenizer's downsampling = "
                f"{self.grid_size} x {factor} = {self.grid_size * factor}, so there is one token per patch"
            )


class MimBeitConfig(VisualTokenConfigMixin, BlockMaskConfigMixin, MimViTConfig):
    """All patches through the encoder, masked ones replaced by a learned mask token; a linear head predicts the
    visual token of each masked patch, the target being a frozen dVAE tokenizer's argmax on a second view.

    Encoder defaults: BEiT-style q/v bias, layer scale 0.1, drop path 0.1, no absolute positions, one relative
    position bias table shared by every block, mean pooling (+ fc_norm) for classification, LayerNorm eps 1e-6.
    vocab_size: classes of the token head, the tokenizer's codebook size (8192 for DALL-E's dVAE).
    num_masking_patches / min_num_patches / max_num_patches / min_aspect / max_aspect: the block-wise mask
       : 75 of 196 patches in blocks of at least 16, aspect in [0.3, 1/0.3] (max_aspect None).
        The processor draws it; the count may fall short of num_masking_patches and differs between images.
    tokenizer_config: the frozen tokenizer's `MimDvaeConfig` fields; None means DALL-E's encoder with `vocab_size`
        classes. `MimBeitForPreTraining.load_tokenizer` writes the loaded tokenizer's fields here.
    codebook_image_size: side of the tokenizer's view, grid_size x the tokenizer's downsampling (112 for 224/16),
        so there is one token per patch. None derives it.
    """

    model_type = "mim_beit"
    _auto_class = "AutoConfig"
    finetune_overrides = PER_LAYER_BIAS_FINETUNE
    backbone_defaults = BEIT_STYLE_BACKBONE
    block_mask_defaults = {"num_masking_patches": 75, "min_num_patches": 16}

    def __init__(self, vocab_size: int = 8192, tokenizer_config: dict | None = None,
                 codebook_image_size: int | None = None, **kwargs):
        super().__init__(**self.backbone_kwargs(kwargs))
        # None stays None in config.json, so `--config_overrides vocab_size=N` needs no matching dict edit
        tokenizer = self.set_tokenizer_fields(vocab_size, tokenizer_config, codebook_image_size)
        self.validate_beit(tokenizer)

    @property
    def needs_tokenizer(self) -> bool:
        return True

    def validate_beit(self, tokenizer: MimDvaeConfig) -> None:
        self.check_no_sincos("BEiT")
        self.check_mask_token("BEiT")
        self.validate_block_mask("BEiT")
        self.validate_tokenizer_fields(tokenizer)
