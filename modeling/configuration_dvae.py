"""dVAE tokenizer configuration: defaults are OpenAI's DALL-E dVAE, the visual tokenizer of BEiT
and CAE, at the 112 px tokenizer view those methods feed it."""

from .configuration_vit import CheckedConfig


class MimDvaeConfig(CheckedConfig):
    """Fully convolutional discrete VAE: `num_groups` groups of `num_blocks_per_group` residual blocks.

    Architecture (names as DALL-E's `Encoder`/`Decoder` arguments):
    vocab_size: codebook size, the number of token classes (8192).
    hidden_size: n_hid, the width of the first encoder group; group g is 2**(g-1) * hidden_size wide.
    num_groups: groups of blocks; every group but the last halves (encoder) or doubles (decoder) the resolution,
        so one token covers 2**(num_groups-1) pixels a side (8 for the default 4 groups).
    num_blocks_per_group: residual blocks per group; their residual branch is scaled by 1/(num_groups*blocks)**2.
    num_channels: image channels (3); the decoder predicts 2 * num_channels logit-Laplace parameters.
    decoder_init_size: n_init, width of the decoder's 1x1 input conv from the (relaxed) one-hot codes.
    image_size: the tokenizer view's side (112 for BEiT/CAE, giving a 14x14 token grid); any multiple of the
        downsampling factor works, the network is fully convolutional.

    Training (scripts/train_tokenizer.py, DALL-E paper appendix A.2):
    kl_weight: beta of the KL(q || uniform) term once warmed up (6.6); kl_warmup_steps: linear 0 -> kl_weight.
    temperature_start / temperature_end / temperature_anneal_steps: Gumbel-softmax temperature 1 -> 1/16.
    codebook_diversity_weight: weight of -I(cell; code), the mean per-cell posterior entropy minus the entropy
        of the batch-average posterior: cells confident in one code, codes used evenly (0 = DALL-E's objective;
        short runs collapse onto a few dozen codes without it; the CPU demo recipe uses it).
    decoder_trained: False when only the encoder is meaningful (converted from DALL-E's published encoder.pkl),
        so `decode` and `forward` warn that reconstructions come from a random decoder.
    """

    model_type = "mim_dvae"
    _auto_class = "AutoConfig"

    def __init__(
        self,
        vocab_size: int = 8192,
        hidden_size: int = 256,
        num_groups: int = 4,
        num_blocks_per_group: int = 2,
        num_channels: int = 3,
        decoder_init_size: int = 128,
        image_size: int = 112,
        kl_weight: float = 6.6,
        kl_warmup_steps: int = 5000,
        temperature_start: float = 1.0,
        temperature_end: float = 1.0 / 16,
        temperature_anneal_steps: int = 150_000,
        decoder_trained: bool = True,
        codebook_diversity_weight: float = 0.0,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_groups = num_groups
        self.num_blocks_per_group = num_blocks_per_group
        self.num_channels = num_channels
        self.decoder_init_size = decoder_init_size
        self.image_size = image_size
        self.kl_weight = kl_weight
        self.kl_warmup_steps = kl_warmup_steps
        self.temperature_start = temperature_start
        self.temperature_end = temperature_end
        self.temperature_anneal_steps = temperature_anneal_steps
        self.decoder_trained = decoder_trained
        self.codebook_diversity_weight = codebook_diversity_weight
        super().__init__(**kwargs)
        self._validate()

    @property
    def downsample_factor(self) -> int:
        """Pixels per token side: every encoder group but the last ends with a 2x2 max-pool."""
        return 2 ** (self.num_groups - 1)

    def _validate(self) -> None:
        def at_least(name: str, minimum: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")

        at_least("vocab_size", 2)
        at_least("hidden_size", 4)
        at_least("num_groups", 1)
        at_least("num_blocks_per_group", 1)
        at_least("num_channels", 1)
        at_least("decoder_init_size", 1)
        at_least("image_size", 1)
        at_least("kl_warmup_steps", 0)
        at_least("temperature_anneal_steps", 0)
        if self.hidden_size % 4:
            # a block's inner width is its output width / 4 (DALL-E requires n_out % 4 == 0)
            raise ValueError(f"hidden_size must be divisible by 4, got {self.hidden_size}")
        if self.image_size % self.downsample_factor:
            raise ValueError(
                f"image_size ({self.image_size}) must be divisible by the downsampling factor "
                f"2**(num_groups-1) = {self.downsample_factor}"
            )
        for name in ("kl_weight", "codebook_diversity_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("temperature_start", "temperature_end"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 (the Gumbel-softmax divides by it), got {getattr(self, name)!r}")
