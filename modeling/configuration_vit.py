"""The backbone fields every method config shares, with the checks that catch impossible shapes at config time.

Field names follow transformers' ViT (`hidden_size`, `num_hidden_layers`, ...) so `--config_overrides` reads the
same for every method. Each method's config subclasses this and sets the defaults of its canonical checkpoint.
"""

from transformers import PretrainedConfig

QKV_BIAS_STYLES = ("full", "qv", "none")
POSITION_EMBEDDING_TYPES = ("learned", "sincos_mae", "sincos_cae", "none")
RELATIVE_POSITION_BIAS_MODES = ("none", "shared", "per_layer")
POOLING_MODES = ("cls", "mean")


class MimViTConfig(PretrainedConfig):
    """Switches of the one ViT backbone (`vit.py`).

    qkv_bias: "full" (timm: q, k and v biases), "qv" (BEiT: learnable q and v biases, k bias fixed at zero), "none".
    layer_scale_init_value: initial value of the per-channel residual scales gamma_1/gamma_2; 0 turns them off.
    position_embedding_type: "learned", "sincos_mae" / "sincos_cae" (fixed 2-D tables, two axis orders), "none".
    train_position_embeddings: whether a sin-cos table is trained (MAE fine-tuning flips it on).
    relative_position_bias: "none", "shared" (one table for all blocks, BEiT pretraining) or "per_layer".
    pooling: "cls" (final norm, cls token) or "mean" (mean of patch tokens, then fc_norm) for classification.
    use_mask_token: the encoder replaces masked patch embeddings by a learned token (BEiT, SimMIM, MaskFeat).
    """

    model_type = "mim_vit"
    # A method config states only how it differs: the defaults of its canonical checkpoint for the backbone
    # fields, and the fields its pretraining fixes whatever the caller passes. (No annotations: configs are
    # dataclasses in transformers 5, and an annotated class attribute would become a field.)
    backbone_defaults = {}
    backbone_fixed = {}

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 16,
        num_channels: int = 3,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        layer_norm_eps: float = 1e-6,
        hidden_dropout_prob: float = 0.0,
        attention_probs_dropout_prob: float = 0.0,
        drop_path_rate: float = 0.0,
        qkv_bias: str = "full",
        layer_scale_init_value: float = 0.0,
        position_embedding_type: str = "learned",
        train_position_embeddings: bool = True,
        relative_position_bias: str = "none",
        use_mask_token: bool = False,
        pooling: str = "mean",
        initializer_range: float = 0.02,
        **kwargs,
    ):
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.drop_path_rate = drop_path_rate
        self.qkv_bias = qkv_bias
        self.layer_scale_init_value = layer_scale_init_value
        self.position_embedding_type = position_embedding_type
        self.train_position_embeddings = train_position_embeddings
        self.relative_position_bias = relative_position_bias
        self.use_mask_token = use_mask_token
        self.pooling = pooling
        self.initializer_range = initializer_range
        super().__init__(**kwargs)
        self.validate_backbone()

    @classmethod
    def backbone_kwargs(cls, kwargs: dict) -> dict:
        """The caller's keywords over the method's backbone defaults, with the method's fixed fields on top."""
        return {**cls.backbone_defaults, **kwargs, **cls.backbone_fixed}

    @property
    def needs_tokenizer(self) -> bool:
        """Whether pretraining predicts the visual tokens of a frozen dVAE tokenizer (`load_tokenizer`)."""
        return False

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    def validate_backbone(self) -> None:
        """Fail at config time, naming the field, rather than deep inside a forward pass."""
        check_choice("qkv_bias", self.qkv_bias, QKV_BIAS_STYLES)
        check_choice("position_embedding_type", self.position_embedding_type, POSITION_EMBEDDING_TYPES)
        check_choice("relative_position_bias", self.relative_position_bias, RELATIVE_POSITION_BIAS_MODES)
        check_choice("pooling", self.pooling, POOLING_MODES)
        check_divisible("image_size", self.image_size, "patch_size", self.patch_size)
        check_divisible("hidden_size", self.hidden_size, "num_attention_heads", self.num_attention_heads)
        if self.position_embedding_type.startswith("sincos"):
            check_divisible("hidden_size", self.hidden_size, "4 (the four sin-cos quarters)", 4)
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        if self.layer_scale_init_value < 0:
            raise ValueError(f"layer_scale_init_value must be >= 0 (0 turns layer scale off), got {self.layer_scale_init_value}")


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {', '.join(map(repr, choices))}")


def check_divisible(name: str, value: int, by_name: str, by: int) -> None:
    if by <= 0 or value <= 0 or value % by:
        raise ValueError(f"{name}={value} must be a positive multiple of {by_name}={by}; change one of them")


def check_ratio(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1, got {value}")


class BlockMaskConfigMixin:
    """The block-wise mask generator's fields, shared by BEiT, MaskFeat and CAE: `num_masking_patches` masked
    patches in blocks of `min_num_patches` to `max_num_patches` (None: num_masking_patches) patches, aspect
    (height / width) in [`min_aspect`, `max_aspect`] (None: 1 / min_aspect).

    A config sets its defaults in `block_mask_defaults`; `block_mask_aspect = False` leaves the aspect fields
    out (CAE's generator keeps BEiT's fixed aspect range).
    """

    block_mask_defaults = {"num_masking_patches": 75, "min_num_patches": 16}
    block_mask_aspect = True

    def set_block_mask_fields(self, kwargs: dict) -> None:
        """Take the block-mask fields out of `kwargs` (the config's other keywords), defaults filled in."""
        defaults = {"max_num_patches": None, **self.block_mask_defaults}
        if self.block_mask_aspect:
            defaults = {"min_aspect": 0.3, "max_aspect": None, **defaults}
        for name, default in defaults.items():
            setattr(self, name, kwargs.pop(name, default))

    def validate_block_mask(self, method: str) -> None:
        """A masked count that leaves a patch visible, block areas >= 1, and aspect bounds."""
        num_patches, count = self.num_patches, self.num_masking_patches
        if isinstance(count, bool) or not isinstance(count, int) or not 0 < count < num_patches:
            raise ValueError(
                f"num_masking_patches must be an integer in [1, {num_patches - 1}] (the {self.grid_size}x"
                f"{self.grid_size} grid has {num_patches} patches and one must stay visible), got {count!r}"
            )
        smallest = self.min_num_patches
        if isinstance(smallest, bool) or not isinstance(smallest, int) or smallest < 1:
            raise ValueError(f"min_num_patches must be an integer >= 1 (smallest block area to aim for), got {smallest!r}")
        if self.max_num_patches is not None and not self.max_num_patches >= 1:
            raise ValueError(
                f"max_num_patches must be >= 1, or None for num_masking_patches, got {self.max_num_patches!r}"
            )
        if not self.block_mask_aspect:
            return
        min_aspect, max_aspect = self.min_aspect, self.max_aspect
        if not min_aspect > 0:
            raise ValueError(f"min_aspect must be > 0 (block height/width ratio; {method} uses 0.3), got {min_aspect!r}")
        if max_aspect is not None and not max_aspect >= min_aspect:
            raise ValueError(
                f"max_aspect must be >= min_aspect={min_aspect}, or None for 1/min_aspect, got {max_aspect!r}"
            )
