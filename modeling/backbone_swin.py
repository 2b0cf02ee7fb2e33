"""The SimMIM Swin encoder as a transformers backbone (`AutoBackbone`), for dense tasks such as UperNet.

Swin is already a pyramid: stage i (1-based) works at stride patch_size * 2**(i-1) with width embed_dim * 2**(i-1).
The backbone returns the chosen stages' outputs before their patch merging, each through a LayerNorm of its own
(as transformers' `SwinBackbone` and Swin's official segmentation code), as (B, C_i, H/s_i, W/s_i) maps. Stage
names follow transformers: "stem" (index 0) is the patch embedding, "stage{i}" the output of stage i; the default
is every stage. The encoder keeps the attribute the method models use (`swin`), so
`AutoBackbone.from_pretrained(simmim_swin_folder)` loads the pretrained encoder and ignores the pretraining head.
Swin's windows and shift masks are laid out for `config.image_size`: pass `image_size=...` when loading to
segment at another size (the relative position tables depend on the window only).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.backbone_utils import filter_output_hidden_states
from transformers.modeling_outputs import BackboneOutput
from transformers.utils.generic import can_return_tuple

from .backbone_vit import MimBackboneMixin, aligned_out_indices
from .modeling_simmim_swin import MimSimMIMSwinPreTrainedModel
from .swin import SwinEncoder


def swin_stage_names(config) -> list[str]:
    return ["stem"] + [f"stage{i}" for i in range(1, len(config.depths) + 1)]


def swin_stage_widths(config) -> list[int]:
    return [config.embed_dim] + [config.embed_dim * 2**i for i in range(len(config.depths))]


def set_swin_backbone_fields(config, out_indices=None, out_features=None):
    """Write the chosen stages onto the config (saved with it, and inside a UperNetConfig's backbone_config);
    None keeps what the config has, else every stage. Returns the config."""
    names = swin_stage_names(config)
    if out_indices is None and out_features is None:
        out_indices = getattr(config, "out_indices", None) or list(range(1, len(names)))
    config.out_indices = aligned_out_indices(names, out_features, None if out_indices is None else list(out_indices))
    config.stage_names = names
    config.add_fpn = False  # already multi-scale
    config.reshape_hidden_states = True
    return config


class MimSimMIMSwinBackbone(MimBackboneMixin, MimSimMIMSwinPreTrainedModel):
    """SimMIM Swin encoder as a backbone: stage outputs (before patch merging), each LayerNorm-ed, as maps."""

    set_fields = staticmethod(set_swin_backbone_fields)
    _keys_to_ignore_on_load_unexpected = [r"^(?!swin\.)", r"^swin\.norm\.", r"^swin\.mask_token$"]
    _keys_to_ignore_on_load_missing = [r"^hidden_states_norms\."]

    def __init__(self, config, out_indices=None, out_features=None, **kwargs):
        set_swin_backbone_fields(config, out_indices, out_features)
        super().__init__(config, **kwargs)
        self.swin = SwinEncoder(config, use_mask_token=False)
        self.swin.norm = None  # the stages get norms of their own
        widths = swin_stage_widths(config)
        self.hidden_states_norms = nn.ModuleDict({
            name: nn.LayerNorm(widths[index], eps=config.layer_norm_eps)
            for index, name in enumerate(self.config.stage_names) if index in self.config.out_indices
        })
        self.post_init()

    def _init_transformers_backbone(self) -> None:
        self.stage_names = self.config.stage_names
        self.num_features = swin_stage_widths(self.config)

    def layer_ids(self) -> dict[int, int]:
        """The encoder's layer-wise lr decay ids (`SwinEncoder.layer_ids`); the stage norms take the top id."""
        ids = self.swin.layer_ids()
        return {id(p): ids.get(id(p), self.swin.num_blocks + 1) for p in self.parameters()}

    def no_weight_decay_parameters(self) -> list[nn.Parameter]:
        return self.swin.no_weight_decay_parameters()

    def stage_outputs(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """[embeddings, stage 1 output, ...], each (B, L_i, C_i) before that stage's patch merging."""
        x = self.swin.pos_drop(self.swin.patch_tokens(pixel_values))
        outputs = [x]
        for stage in self.swin.layers:
            for block in stage.blocks:
                x = block(x)
            outputs.append(x)
            if stage.downsample is not None:
                x = stage.downsample(x, stage.grid_size)
        return outputs

    @can_return_tuple
    @filter_output_hidden_states
    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None,
                output_attentions: bool | None = None, return_dict: bool | None = None,
                **kwargs) -> BackboneOutput:
        """pixel_values (B, C, image_size, image_size) -> `feature_maps`, one (B, C_i, h_i, w_i) per out feature."""
        hidden_states = self.stage_outputs(pixel_values)
        maps = tuple(SwinEncoder.feature_map(self.hidden_states_norms[self.stage_names[i]](hidden_states[i]))
                     for i in self.config.out_indices)
        return BackboneOutput(feature_maps=maps, hidden_states=tuple(hidden_states))


SWIN_BACKBONE_CLASSES = (MimSimMIMSwinBackbone,)
