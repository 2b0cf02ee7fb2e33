"""The backbone fields every method config shares, the one table of field ranges every hf-mim config obeys, and the
checks that catch impossible shapes at config time.

Field names follow transformers' ViT (`hidden_size`, `num_hidden_layers`, ...) so `--config_overrides` reads the
same for every method. Each method's config subclasses this and sets the defaults of its canonical checkpoint.

Every field of every hf-mim config has a rule in `FIELD_RULES` (its type and range, keyed by name, the same meaning
in every method). `CheckedConfig` applies a field's rule whenever the field is set (construction, `setattr`,
`from_pretrained(..., field=value)`, `update`), and re-runs the whole class's construction checks (the rules that
tie fields together) in `validate()`, which `update_from_string`, `save_pretrained` and every model's `__init__`
call. So a config cannot reach a model with a field out of range, however it was changed.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass

from transformers import PretrainedConfig
from transformers.activations import ACT2FN

QKV_BIAS_STYLES = ("full", "qv", "none")
POSITION_EMBEDDING_TYPES = ("learned", "sincos_mae", "sincos_cae", "none")
RELATIVE_POSITION_BIAS_MODES = ("none", "shared", "per_layer")
POOLING_MODES = ("cls", "mean")


@dataclass(frozen=True)
class FieldRule:
    """What one config field may hold: a type (int, float, bool, str or dict), an optional range with open or closed
    ends, a set of choices, and whether None is allowed (`none_means` says what None stands for)."""

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None
    none_means: str | None = None
    about: str = ""

    def allowed(self) -> str:
        if self.choices is not None:
            shown = ", ".join(map(repr, self.choices[:8])) + (", ..." if len(self.choices) > 8 else "")
            text = f"one of {shown}"
        else:
            text = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a dict"}[
                self.kind]
            if self.low is not None and self.high is not None:
                text += f" in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
            elif self.low is not None:
                text += f" {'>' if self.low_open else '>='} {self.low:g}"
        if self.none_means is not None:
            text += f", or None ({self.none_means})"
        return text + (f" ({self.about})" if self.about else "")

    def problem(self, value) -> str | None:
        """None when `value` obeys the rule, else "wrong type" or "out of range"."""
        if value is None:
            return None if self.none_means is not None else "of the wrong type"
        numeric = (int, float) if self.kind is float else (self.kind,)
        if isinstance(value, bool) and self.kind is not bool or not isinstance(value, numeric):
            return "of the wrong type"
        if self.choices is not None and value not in self.choices:
            return "out of range"
        if self.low is not None and not (value > self.low if self.low_open else value >= self.low):
            return "out of range"
        if self.high is not None and not (value < self.high if self.high_open else value <= self.high):
            return "out of range"
        return None

    def check(self, name: str, value) -> None:
        problem = self.problem(value)
        if problem is not None:
            raise ValueError(f"{name}={value!r} is {problem}: {name} must be {self.allowed()}")

    def parse(self, name: str, text: str):
        """A `--config_overrides` string as this field's type, or an error naming the field."""
        text = text.strip()
        if self.none_means is not None and text.lower() in ("none", "null"):
            return None
        try:
            if self.kind is bool:
                return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}[text.lower()]
            return self.kind(text) if self.kind in (int, float, str) else None
        except (KeyError, ValueError):
            pass
        raise ValueError(f"{name}={text!r} is of the wrong type: {name} must be {self.allowed()}")


def count(low: int = 1, about: str = "", none_means: str | None = None) -> FieldRule:
    return FieldRule(int, low=low, about=about, none_means=none_means)


def number(low: float, high: float | None = None, *, low_open: bool = False, high_open: bool = False,
           about: str = "", none_means: str | None = None) -> FieldRule:
    return FieldRule(float, low=low, high=high, low_open=low_open, high_open=high_open, about=about,
                     none_means=none_means)


def choice(*choices: str, about: str = "") -> FieldRule:
    return FieldRule(str, choices=tuple(choices), about=about)


SWITCH = FieldRule(bool)
RATE = number(0, 1, high_open=True, about="a probability below 1")
POSITIVE = number(0, low_open=True)

# Every field of every hf-mim config: one meaning per name across the methods. A new config field needs a row here
# (tests/test_config_fields.py fails otherwise). Rules tying fields together stay in each config's constructor.
FIELD_RULES: dict[str, FieldRule] = {
    # the ViT backbone (every method)
    "image_size": count(1, "pixels per side"),
    "patch_size": count(1, "pixels per patch side"),
    "num_channels": count(1),
    "hidden_size": count(1, "width"),
    "num_hidden_layers": count(1, "encoder blocks"),
    "num_attention_heads": count(1),
    "intermediate_size": count(1, "MLP width"),
    "hidden_act": choice(*ACT2FN.keys(), about="a transformers activation name"),
    "layer_norm_eps": POSITIVE,
    "hidden_dropout_prob": RATE,
    "attention_probs_dropout_prob": RATE,
    "drop_path_rate": RATE,
    "qkv_bias": choice(*QKV_BIAS_STYLES),
    "layer_scale_init_value": number(0, about="0 turns layer scale off"),
    "position_embedding_type": choice(*POSITION_EMBEDDING_TYPES),
    "train_position_embeddings": SWITCH,
    "relative_position_bias": choice(*RELATIVE_POSITION_BIAS_MODES),
    "use_mask_token": SWITCH,
    "pooling": choice(*POOLING_MODES),
    "initializer_range": POSITIVE,
    "label_smoothing": RATE,
    # masking
    "mask_ratio": number(0, 1, low_open=True, high_open=True, about="a patch must stay visible and one be masked"),
    "mask_patch_size": count(1, "pixels per mask cell side"),
    "num_masking_patches": count(1),
    "min_num_patches": count(1, "smallest block area"),
    "max_num_patches": count(1, none_means="num_masking_patches"),
    "min_aspect": POSITIVE,
    "max_aspect": number(0, low_open=True, none_means="1 / min_aspect"),
    "mask_mode": choice("block", "random"),
    # heads, decoders, targets and losses
    "norm_pix_loss": SWITCH,
    "encoder_stride": count(1, "the prediction's upsampling factor"),
    "decoder_hidden_size": count(1),
    "decoder_num_hidden_layers": count(0, "0 predicts straight from the encoder's output"),
    "decoder_num_attention_heads": count(1),
    "decoder_intermediate_size": count(1),
    "decoder_layer_scale_init_value": number(0, about="0 turns layer scale off"),
    "regressor_num_hidden_layers": count(0),
    "alignment_weight": number(0),
    "teacher_momentum": number(0, 1, high_open=True, about="0 reuses the encoder's weights"),
    "decoder_target": choice("tokens", "pixels"),
    "hog_nbins": count(1, "orientation bins"),
    "hog_cell_size": count(1, "pixels per HOG cell side"),
    "hog_gaussian_window": count(0, "0 turns the Gaussian weighting off"),
    # the visual tokenizer (dVAE) and the methods that predict its tokens
    "vocab_size": count(2, "codebook size"),
    "tokenizer_config": FieldRule(dict, none_means="DALL-E's encoder"),
    "codebook_image_size": count(1, "side of the tokenizer's view"),
    "num_groups": count(1),
    "num_blocks_per_group": count(1),
    "decoder_init_size": count(1),
    "kl_weight": number(0),
    "codebook_diversity_weight": number(0),
    "kl_warmup_steps": count(0),
    "temperature_start": POSITIVE,
    "temperature_end": POSITIVE,
    "temperature_anneal_steps": count(0),
    "decoder_trained": SWITCH,
}


class CheckedConfig(PretrainedConfig):
    """Base of every hf-mim config: each field in `FIELD_RULES` is checked whenever it is set, and `validate()`
    re-runs the construction checks of the whole class (how fields fit together) on the current values."""

    def __setattr__(self, key, value):
        rule = FIELD_RULES.get(key)
        if rule is not None:
            rule.check(key, value)
        super().__setattr__(key, value)

    def validate(self) -> None:
        """Every check, on the config as it is now: transformers' own, then this class's constructor (the rules
        that tie fields together) run on a copy of its fields. Models call it in `__init__`."""
        super().validate()
        type(self)(**self.to_dict())

    def update_from_string(self, update_str: str) -> None:
        """transformers' "k=v,k=v" overrides, parsed as each field's type (an error names the field and what it
        takes), applied together and re-validated; nothing changes when they fail. A field left at the value its
        constructor derived (e.g. SimMIM's encoder_stride = patch_size) is derived again from the new values."""
        updates = {}
        for item in filter(None, (part.strip() for part in update_str.split(","))):
            key, sep, text = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ValueError(f"config override {item!r} is not key=value (e.g. 'mask_ratio=0.6')")
            updates[key] = self.parse_override(key, text)
        current = self.to_dict()
        followers = [name for name in self.derived_fields(current) if name not in updates]
        fresh = type(self)(**{**current, **updates, **dict.fromkeys(followers)})
        for key in (*updates, *followers):
            setattr(self, key, getattr(fresh, key))

    def parse_override(self, key: str, text: str):
        if not hasattr(self, key):
            close = difflib.get_close_matches(key, self.to_dict(), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"{key} is not a field of {type(self).__name__}{hint}")
        rule = FIELD_RULES.get(key)
        if rule is None:  # transformers' own fields: typed by the current value, as transformers does
            old = getattr(self, key)
            rule = FieldRule(type(old)) if isinstance(old, (bool, int, float, str)) else None
        if rule is None or rule.kind is dict:
            raise ValueError(f"{key} cannot be set from a string; set it in Python or in config.json")
        return rule.parse(key, text)

    def derived_fields(self, current: dict) -> list[str]:
        """Constructor arguments defaulting to None whose value is what the constructor derives from the others."""
        names = []
        for name in constructor_defaults_none(type(self)):
            if current.get(name) is None:
                continue
            try:
                derived = getattr(type(self)(**{**current, name: None}), name)
            except (TypeError, ValueError):
                continue
            if derived == current[name]:
                names.append(name)
        return names


def constructor_defaults_none(cls) -> list[str]:
    """The keyword arguments of `cls.__init__` (and its bases') whose default is None."""
    names = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is PretrainedConfig:
            continue
        for param in inspect.signature(init).parameters.values():
            if param.default is None and param.name not in names:
                names.append(param.name)
    return names


# The BEiT-style ViT that BEiT and SimMIM pretrain: q/v bias, layer scale 0.1, drop path 0.1, no absolute
# positions, one relative position bias table shared by every block, the mask token, mean pooling, eps 1e-6.
BEIT_STYLE_BACKBONE = dict(qkv_bias="qv", layer_scale_init_value=0.1, drop_path_rate=0.1,
                           position_embedding_type="none", relative_position_bias="shared", use_mask_token=True,
                           pooling="mean", layer_norm_eps=1e-6)
# The fine-tuning switches of BEiT, SimMIM and CAE: one relative position bias per block (BEiT and SimMIM start
# each from a copy of the shared pretrained table when the classifier loads a pretraining checkpoint; CAE's start
# at zero), drop path 0.1, mean pooling + fc_norm.
PER_LAYER_BIAS_FINETUNE = {"relative_position_bias": "per_layer", "drop_path_rate": 0.1, "pooling": "mean"}


class MimViTConfig(CheckedConfig):
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

    def __getattr__(self, name: str):
        # only reached for attributes the config lacks; run_mim.py reads encoder_stride of every config it is given
        if name == "encoder_stride":
            raise AttributeError(
                f"{type(self).__name__} has no encoder_stride: this method does not predict the masked pixels from "
                "(pixel_values, bool_masked_pos) alone, so transformers' run_mim.py cannot train it (SimMIM and "
                "MaskFeat can); pretrain it with scripts/pretrain.py"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    def check_mask_token(self, method: str, unit: str = "patches") -> None:
        """For the methods whose encoder sees every patch, the masked ones as a learned token."""
        if not self.use_mask_token:
            raise ValueError(
                f"use_mask_token must be True: {method} replaces the masked {unit} by a learned mask token"
            )

    def check_no_sincos(self, method: str) -> None:
        """For the BEiT-style ViT, whose positions are a relative position bias (or learned absolute ones)."""
        if self.position_embedding_type.startswith("sincos"):
            raise ValueError(
                f"position_embedding_type={self.position_embedding_type!r}: {method} uses relative position bias; "
                "choose 'none' (the official default) or 'learned' (learned absolute positions)"
            )

    def validate_backbone(self) -> None:
        """Fail at config time, naming the field, rather than deep inside a forward pass (each field's own range is
        checked when it is set, see `FIELD_RULES`)."""
        check_divisible("image_size", self.image_size, "patch_size", self.patch_size)
        check_divisible("hidden_size", self.hidden_size, "num_attention_heads", self.num_attention_heads)
        if self.position_embedding_type.startswith("sincos"):
            check_divisible("hidden_size", self.hidden_size, "4 (the four sin-cos quarters)", 4)


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

    def __init__(self, **kwargs):
        self.set_block_mask_fields(kwargs)  # set before the backbone's, which would keep them as unknown extras
        super().__init__(**kwargs)

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
