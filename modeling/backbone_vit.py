"""Every hf-mim ViT encoder as a transformers backbone (`AutoBackbone`), for dense tasks such as UperNet.

The backbone keeps the encoder under the attribute the method models use (`vit`), so
`AutoBackbone.from_pretrained(pretraining_or_converted_folder, out_indices=[4, 6, 8, 12])` loads the encoder
weights (relative position bias and layer scale included) and ignores the pretraining heads. It returns the
chosen blocks' patch tokens as (B, C, H/p, W/p) maps and, with `add_fpn`, turns four of them into the pyramid of
BEiT/MAE/CAE's segmentation code: 4x up (deconv, BatchNorm, GELU, deconv), 2x up (deconv), identity, 2x down
(max-pool), laid out as transformers' `BeitBackbone` so its weights copy over.

Stages follow transformers' convention: "stem" (index 0) is the embedding output, "stage{i}" the output of block i.
The official BEiT/MAE segmentation indices [3, 5, 7, 11] of ViT-B (0-based blocks) are out_indices [4, 6, 8, 12].
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.backbone_utils import BackboneConfigMixin, BackboneMixin, filter_output_hidden_states
from transformers.modeling_outputs import BackboneOutput
from transformers.utils.generic import can_return_tuple

from .modeling_beit import MimBeitPreTrainedModel
from .modeling_cae import MimCaePreTrainedModel
from .modeling_mae import MimMaePreTrainedModel
from .modeling_maskfeat import MimMaskFeatPreTrainedModel
from .modeling_simmim import MimSimMIMPreTrainedModel
from .vit import ViTEncoder

BACKBONE_FIELDS = ("out_indices", "out_features", "add_fpn", "reshape_hidden_states")
PYRAMID_LEVELS = 4


def stage_names(num_hidden_layers: int) -> list[str]:
    return ["stem"] + [f"stage{i}" for i in range(1, num_hidden_layers + 1)]


def default_out_indices(num_hidden_layers: int) -> list[int]:
    """Blocks at 1/3, 1/2, 2/3 and all of the depth: ViT-B's [4, 6, 8, 12] and ViT-L's [8, 12, 16, 24], the
    official segmentation choices. Where those collide (depth 4, 5, 7), four evenly spaced blocks; encoders
    shallower than 4 blocks get all of theirs."""
    depth = num_hidden_layers
    if depth < PYRAMID_LEVELS:
        return list(range(1, depth + 1))
    thirds = [depth // 3, depth // 2, 2 * depth // 3, depth]
    if len(set(thirds)) == PYRAMID_LEVELS:
        return thirds
    return [round(depth * (level + 1) / PYRAMID_LEVELS) for level in range(PYRAMID_LEVELS)]


class _StageSelection(BackboneConfigMixin):
    """Only transformers' own alignment and checks of out_features / out_indices against stage names."""

    def __init__(self, names: list[str]):
        self.stage_names = names


def aligned_out_indices(names: list[str], out_features=None, out_indices=None) -> list[int]:
    """Positive stage indices from out_features and/or out_indices, checked as transformers' backbones check them."""
    selection = _StageSelection(names)
    selection.set_output_features_output_indices(out_features, out_indices)
    return [names.index(feature) for feature in selection.out_features]


def set_backbone_fields(config, out_indices=None, out_features=None, add_fpn=None, reshape_hidden_states=None):
    """Write the backbone choices onto a method config (plain attributes, so they are saved in config.json and
    travel inside a UperNetConfig's `backbone_config`). Arguments left None keep what the config already has;
    a config without any gets `default_out_indices`. The pyramid (`add_fpn`) is on for exactly 4 stages unless
    said otherwise. Returns the config."""
    names = stage_names(config.num_hidden_layers)
    stages_given = out_indices is not None or out_features is not None
    if not stages_given:
        out_indices = getattr(config, "out_indices", None)
        if out_indices is None:
            out_indices = default_out_indices(config.num_hidden_layers)
    config.out_indices = aligned_out_indices(names, out_features, None if out_indices is None else list(out_indices))
    config.stage_names = names
    if reshape_hidden_states is not None or not hasattr(config, "reshape_hidden_states"):
        config.reshape_hidden_states = True if reshape_hidden_states is None else bool(reshape_hidden_states)
    if add_fpn is None and not stages_given:  # new stages re-decide the pyramid unless add_fpn is given too
        add_fpn = getattr(config, "add_fpn", None)
    config.add_fpn = len(config.out_indices) == PYRAMID_LEVELS if add_fpn is None else bool(add_fpn)
    if config.add_fpn and (len(config.out_indices) != PYRAMID_LEVELS or not config.reshape_hidden_states):
        raise ValueError(
            f"add_fpn=True builds a {PYRAMID_LEVELS}-level pyramid from {PYRAMID_LEVELS} (B, C, h, w) maps: pass "
            f"exactly {PYRAMID_LEVELS} out_indices (got {config.out_indices}) with reshape_hidden_states=True, or "
            "add_fpn=False"
        )
    return config


class FpnUpBlock(nn.Module):
    """4x upsampling: ConvTranspose -> BatchNorm -> GELU -> ConvTranspose (names as transformers' BEiT)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.conv_transpose1 = nn.ConvTranspose2d(hidden_size, hidden_size, kernel_size=2, stride=2)
        self.normalization = nn.BatchNorm2d(hidden_size)
        self.activation = nn.GELU()
        self.conv_transpose2 = nn.ConvTranspose2d(hidden_size, hidden_size, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_transpose2(self.activation(self.normalization(self.conv_transpose1(x))))


class FpnNeck(nn.Module):
    """Four same-resolution maps (h, w) -> (4h, 4w), (2h, 2w), (h, w), (h/2, w/2)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.fpn1 = FpnUpBlock(hidden_size)
        self.fpn2 = nn.ConvTranspose2d(hidden_size, hidden_size, kernel_size=2, stride=2)
        self.fpn4 = nn.MaxPool2d(kernel_size=2, stride=2)

    def forward(self, maps: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return self.fpn1(maps[0]), self.fpn2(maps[1]), maps[2], self.fpn4(maps[3])


class MimBackboneMixin(BackboneMixin):
    """What every hf-mim backbone shares: the stage choice kept on the config (`set_fields`, saved with it and
    inside a UperNetConfig's backbone_config), `out_indices` / `out_features` read from it, and a save that
    `AutoBackbone` reloads (this file and its siblings copied for remote code)."""

    has_attentions = False  # SDPA attention: no attention maps to return
    set_fields = staticmethod(set_backbone_fields)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """The method's own Auto entries (pretraining, classification) name other classes, so they are left out."""
        config_class = type(self.config)
        self.config.auto_map = {"AutoConfig": f"{config_class.__module__.rsplit('.', 1)[-1]}.{config_class.__name__}"}
        type(self)._auto_class = "AutoBackbone"
        return PreTrainedModel.save_pretrained(self, save_directory, *args, **kwargs)

    @property
    def out_indices(self) -> list[int]:
        return list(self.config.out_indices)

    @out_indices.setter
    def out_indices(self, out_indices) -> None:
        self.set_fields(self.config, out_indices=out_indices)

    @property
    def out_features(self) -> list[str]:
        return [self.stage_names[i] for i in self.config.out_indices]

    @out_features.setter
    def out_features(self, out_features) -> None:
        self.set_fields(self.config, out_features=out_features)


class MimViTBackbone(MimBackboneMixin):
    """The backbone body shared by every method; `Mim<M>Backbone` below pairs it with the method's
    PreTrainedModel base (config class, weight init, loading rules).

    The encoder sees every patch (no mask token, no final norm: features are taken from the blocks' outputs) and
    interpolates its absolute position table for other input sizes.
    """

    _keys_to_ignore_on_load_unexpected = [r"^(?!vit\.)", r"^vit\.norm\.", r"^vit\.mask_token$"]
    # per-layer tables a shared-table checkpoint lacks; the pyramid neck, which no encoder checkpoint holds
    _keys_to_ignore_on_load_missing = [r"^vit\.blocks\.\d+\.attn\.relative_position_bias_table$", r"^fpn\."]

    def __init__(self, config, out_indices=None, out_features=None, add_fpn=None, reshape_hidden_states=None,
                 **kwargs):
        set_backbone_fields(config, out_indices, out_features, add_fpn, reshape_hidden_states)
        super().__init__(config, **kwargs)
        self.vit = ViTEncoder(config, add_final_norm=False)
        self.vit.mask_token = None
        self.fpn = FpnNeck(config.hidden_size) if config.add_fpn else nn.Identity()
        self.post_init()

    def _init_transformers_backbone(self) -> None:
        self.stage_names = self.config.stage_names
        self.num_features = [self.config.hidden_size] * len(self.stage_names)

    def _init_weights(self, module: nn.Module) -> None:
        """The neck as transformers' BEiT initialises it; the encoder by the method's own rule."""
        if isinstance(module, nn.ConvTranspose2d):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)
        else:
            super()._init_weights(module)

    def feature_map(self, hidden_state: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(B, 1 + h*w, C) tokens -> (B, C, h, w) patch map (cls dropped), or as they are."""
        if not self.config.reshape_hidden_states:
            return hidden_state
        return hidden_state[:, 1:].transpose(1, 2).reshape(hidden_state.shape[0], -1, *grid)

    @can_return_tuple
    @filter_output_hidden_states
    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None,
                output_attentions: bool | None = None, return_dict: bool | None = None,
                **kwargs) -> BackboneOutput:
        """pixel_values (B, C, H, W), H and W multiples of the patch size -> `feature_maps`, one per out feature
        ((B, C, H/p, W/p) each, or the pyramid (4H/p, 2H/p, H/p, H/2p) with add_fpn)."""
        patch = self.config.patch_size
        grid = (pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch)
        _, hidden_states = self.vit(pixel_values, interpolate_pos_encoding=True, output_hidden_states=True)
        maps = tuple(self.feature_map(hidden_states[i], grid) for i in self.config.out_indices)
        return BackboneOutput(feature_maps=self.fpn(maps), hidden_states=hidden_states)


class MimBeitBackbone(MimViTBackbone, MimBeitPreTrainedModel):
    """BEiT encoder as a backbone (shared or per-layer relative position bias, layer scale)."""


class MimMaeBackbone(MimViTBackbone, MimMaePreTrainedModel):
    """MAE encoder as a backbone (all patches; sin-cos positions resampled for other input sizes)."""


class MimSimMIMBackbone(MimViTBackbone, MimSimMIMPreTrainedModel):
    """SimMIM encoder as a backbone."""


class MimMaskFeatBackbone(MimViTBackbone, MimMaskFeatPreTrainedModel):
    """MaskFeat encoder as a backbone."""


class MimCaeBackbone(MimViTBackbone, MimCaePreTrainedModel):
    """CAE encoder as a backbone (no teacher, regressor or decoder)."""


BACKBONE_CLASSES = (MimBeitBackbone, MimMaeBackbone, MimSimMIMBackbone, MimMaskFeatBackbone, MimCaeBackbone)
