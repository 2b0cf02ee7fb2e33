"""SimMIM on a Swin Transformer: field names of transformers' `SwinConfig`, defaults of the official SimMIM Swin-B
pretraining config (microsoft/SimMIM `simmim_pretrain__swin_base__img192_window6__800ep.yaml`)."""

from transformers import PretrainedConfig
from transformers.activations import ACT2FN

from .configuration_vit import check_divisible, check_ratio


class MimSimMIMSwinConfig(PretrainedConfig):
    """A Swin encoder over all stride-`patch_size` patches, masked ones replaced by a learned mask token; a 1x1 conv +
    PixelShuffle(encoder_stride) head reconstructs the normalised image from the last stage, scored by L1 on the
    masked pixels only.

    depths / num_heads: blocks and attention heads per stage; stage i has width embed_dim * 2**i on a grid of
    (image_size / patch_size) / 2**i. window_size: side of the attention windows, which must tile every stage's
    grid (a stage whose grid is one window does not shift). mlp_ratio: MLP width / block width.
    qkv_bias: biases on query, key and value. use_absolute_embeddings: learned absolute positions added to the
    patch embeddings (off in Swin and SimMIM). encoder_stride: total downsampling, patch_size * 2**(stages - 1)
    (32), which the head's PixelShuffle undoes.
    mask_patch_size: side in pixels of a mask cell (32); the processor spreads each cell over the
    (mask_patch_size / patch_size)**2 stride-4 patches it covers. mask_ratio: fraction of the cells masked,
    ceil(ratio * cells) exactly (192 px: 22 of 36 cells, 1408 of 2304 patches). use_mask_token: whether the
    feature model (`AutoModel`) has the mask token (False for an encoder converted from weights without one; the
    pretraining model always has it, the classifier never).
    """

    model_type = "mim_simmim_swin"
    _auto_class = "AutoConfig"
    # What the official fine-tuning recipes change (Swin-B at 192 px window 6 or 224 px window 7): drop path 0.1.
    # The pretraining configs set DROP_PATH_RATE 0.0.
    finetune_overrides = {"drop_path_rate": 0.1}

    def __init__(
        self,
        image_size: int = 192,
        patch_size: int = 4,
        num_channels: int = 3,
        embed_dim: int = 128,
        depths: list[int] = (2, 2, 18, 2),
        num_heads: list[int] = (4, 8, 16, 32),
        window_size: int = 6,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        hidden_dropout_prob: float = 0.0,
        attention_probs_dropout_prob: float = 0.0,
        drop_path_rate: float = 0.0,
        hidden_act: str = "gelu",
        use_absolute_embeddings: bool = False,
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        encoder_stride: int = 32,
        mask_patch_size: int = 32,
        mask_ratio: float = 0.6,
        use_mask_token: bool = True,
        **kwargs,
    ):
        # written by transformers' SwinConfig or asked of every hf-mim config; derived here from depths and heads
        for derived in ("hidden_size", "num_layers", "num_hidden_layers", "num_attention_heads"):
            kwargs.pop(derived, None)
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.embed_dim = embed_dim
        self.depths = list(depths)
        self.num_heads = list(num_heads)
        self.window_size = window_size
        self.mlp_ratio = mlp_ratio
        self.qkv_bias = qkv_bias
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.drop_path_rate = drop_path_rate
        self.hidden_act = hidden_act
        self.use_absolute_embeddings = use_absolute_embeddings
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.encoder_stride = encoder_stride
        self.mask_patch_size = mask_patch_size
        self.mask_ratio = mask_ratio
        self.use_mask_token = use_mask_token
        super().__init__(**kwargs)
        self.validate_swin()

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def num_features(self) -> int:
        """Width of the last stage: what the head, the pooler and probes see."""
        return self.embed_dim * 2 ** (self.num_stages - 1)

    @property
    def hidden_size(self) -> int:
        return self.num_features

    @property
    def num_hidden_layers(self) -> int:
        """Blocks over all stages (the depth layer-wise lr decay counts)."""
        return sum(self.depths)

    @property
    def num_attention_heads(self) -> int:
        """Heads of the last stage, whose tokens the probes (and an attentive probe's heads) see."""
        return self.num_heads[-1]

    @property
    def needs_tokenizer(self) -> bool:
        """SimMIM regresses pixels: no visual tokenizer."""
        return False

    def architecture_summary(self) -> str:
        return (f"{self.model_type}, image {self.image_size}, patch {self.patch_size}, Swin stages {self.depths} "
                f"of widths {[self.embed_dim * 2**i for i in range(self.num_stages)]}, heads {self.num_heads}, "
                f"window {self.window_size}")

    @property
    def total_stride(self) -> int:
        return self.patch_size * 2 ** (self.num_stages - 1)

    @property
    def grid_size(self) -> int:
        """Side of the stride-`patch_size` grid, which is also the grid of `bool_masked_pos`."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    def validate_swin(self) -> None:
        """Fail at config time, naming the field, rather than deep inside a forward pass."""
        self.check_stage_lists()
        if self.hidden_act not in ACT2FN:
            raise ValueError(f"hidden_act={self.hidden_act!r} is not an activation transformers knows; use e.g. 'gelu'")
        check_divisible("image_size", self.image_size, "patch_size * 2**(len(depths) - 1)", self.total_stride)
        for stage, heads in enumerate(self.num_heads):
            width = self.embed_dim * 2**stage
            check_divisible(f"stage {stage} width (embed_dim * 2**{stage})", width, f"num_heads[{stage}]", heads)
            grid = self.grid_size // 2**stage
            check_divisible(f"stage {stage} grid (image_size / patch_size / 2**{stage})", grid, "window_size",
                            self.window_size)
        check_divisible("mask_patch_size", self.mask_patch_size, "patch_size", self.patch_size)
        check_divisible("image_size", self.image_size, "mask_patch_size", self.mask_patch_size)
        check_ratio("mask_ratio", self.mask_ratio)
        if self.encoder_stride != self.total_stride:
            raise ValueError(
                f"encoder_stride={self.encoder_stride} must equal patch_size * 2**(len(depths) - 1) = "
                f"{self.total_stride}: the PixelShuffle head upsamples the last stage by encoder_stride, and the "
                "reconstruction must have the input's size"
            )
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        if not self.mlp_ratio > 0 or int(self.embed_dim * self.mlp_ratio) < 1:
            raise ValueError(f"mlp_ratio must be > 0 (MLP width = block width x mlp_ratio), got {self.mlp_ratio}")

    def check_stage_lists(self) -> None:
        for name in ("depths", "num_heads"):
            values = getattr(self, name)
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
                raise ValueError(f"{name} must be a non-empty list of positive integers (one per stage), got {values}")
        if len(self.depths) != len(self.num_heads):
            raise ValueError(
                f"depths has {len(self.depths)} stages but num_heads has {len(self.num_heads)}: give one head count "
                "per stage"
            )
