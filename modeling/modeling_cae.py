"""CAE (Chen et al., Context Autoencoder, IJCV 2023): block masks with an exact count, encoder on the visible patches
only, a latent regressor that predicts the masked patches' representations from the visible ones, aligned with the
encoder's own stop-gradient encoding of the masked patches, and a decoder from those predictions to visual tokens.
Parameter names follow lxtGH/CAE `models/modeling_cae_helper.py` (RegressorBlock).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration_cae import MimCaeConfig
from .losses import masked_token_cross_entropy, normalize_patch_targets
from .masking import split_by_mask
from .mim_base import MimPreTrainedModel, PictureView, unstandardize_patches
from .modeling_dvae import DvaeConv2d, DvaeEncoder
from .task_heads import EncoderModelMixin, ImageClassificationMixin
from .visual_tokens import VisualTokenizerMixin, init_tokenizer_conv
from .vit import (
    Attention,
    Block,
    DropPath,
    Mlp,
    ViTEncoder,
    init_layer_norm,
    patchify,
    qv_biases,
    relative_position_index,
    sincos_position_table,
    unpatchify,
    zero_bias,
)


@dataclass
class MimCaePreTrainingOutput(ModelOutput):
    """
    loss: reconstruction_loss + alignment_weight * alignment_loss.
    reconstruction_loss: cross-entropy of the masked patches' visual tokens (decoder_target="tokens"), or the MSE of
        their (per-patch normalised) pixels ("pixels"); fp32.
    alignment_loss: mean over all elements of (latent_pred - latent_target)^2; fp32.
    logits: (B, L_masked, vocab_size) token logits, or (B, L_masked, patch_size**2 * C) pixels, for the masked
        patches in ascending patch order.
    latent_pred: (B, L_masked, D_dec) the regressor's prediction of the masked patches' representations.
    latent_target: (B, L_masked, D_dec) the encoder's (or EMA teacher's) encoding of the masked patches, no grad.
    bool_masked_pos: (B, L) True = masked.
    hidden_states: the encoder's hidden states on the visible patches, when asked.
    """

    loss: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    alignment_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    latent_pred: torch.FloatTensor | None = None
    latent_target: torch.FloatTensor | None = None
    bool_masked_pos: torch.BoolTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


# ------------------------------------------------------------------------------------------------ modules


class CrossAttention(nn.Module):
    """Multi-head attention of queries (B, Nq, D) over separate keys and values (B, Nk, D).

    Separate q/k/v Linears without bias; with qkv_bias "qv", learnable `q_bias` and `v_bias` and no key bias.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: str = "qv", attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.q_bias, self.v_bias = qv_biases(dim, qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        q = self.split_heads(F.linear(query, self.q.weight, self.q_bias))
        k = self.split_heads(F.linear(key, self.k.weight))
        v = self.split_heads(F.linear(value, self.v.weight, self.v_bias))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        out = out.transpose(1, 2).reshape(query.shape[0], query.shape[1], -1)
        return self.proj_drop(self.proj(out))


class RegressorBlock(GradientCheckpointingLayer):
    """CAE's latent-regressor block:

    x = q + DropPath(gamma_1 * CrossAttn(LN_q(q + pos_q), LN_k(kv + pos_kv), LN_v(kv)))   (no position on V)
    x = LN2(x)                                                                             (the residual stream)
    x = x + DropPath(gamma_2 * MLP(x))
    """

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, *, qkv_bias: str = "qv", layer_scale: float = 0.1,
                 drop_path: float = 0.0, eps: float = 1e-6, act: str = "gelu", drop: float = 0.0,
                 attn_drop: float = 0.0):
        super().__init__()
        self.norm1_q = nn.LayerNorm(dim, eps=eps)
        self.norm1_k = nn.LayerNorm(dim, eps=eps)
        self.norm1_v = nn.LayerNorm(dim, eps=eps)
        self.cross_attn = CrossAttention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2_cross = nn.LayerNorm(dim, eps=eps)
        self.mlp_cross = Mlp(dim, mlp_dim, act, drop)
        self.layer_scale = float(layer_scale)
        if layer_scale > 0:
            self.gamma_1_cross = nn.Parameter(torch.full((dim,), float(layer_scale)))
            self.gamma_2_cross = nn.Parameter(torch.full((dim,), float(layer_scale)))
        else:  # the official code's frozen vector of ones is the identity
            self.gamma_1_cross = self.gamma_2_cross = None

    def forward(self, queries: torch.Tensor, context: torch.Tensor, pos_queries: torch.Tensor,
                pos_context: torch.Tensor) -> torch.Tensor:
        attn = self.cross_attn(
            self.norm1_q(queries + pos_queries), self.norm1_k(context + pos_context), self.norm1_v(context)
        )
        if self.gamma_1_cross is not None:
            attn = attn * self.gamma_1_cross
        x = self.norm2_cross(queries + self.drop_path(attn))
        mlp = self.mlp_cross(x)
        if self.gamma_2_cross is not None:
            mlp = mlp * self.gamma_2_cross
        return x + self.drop_path(mlp)


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """linspace(0, rate, depth), as the official neck (a single block gets 0)."""
    return torch.linspace(0, rate, depth).tolist()


def neck_block_kwargs(config: MimCaeConfig, depth: int) -> list[dict]:
    """The keywords of each of `depth` regressor or decoder blocks: the decoder width, heads, MLP and layer scale,
    the encoder's qkv bias, norm, activation and dropouts, drop path rising from 0 to drop_path_rate."""
    shared = dict(
        dim=config.decoder_hidden_size, num_heads=config.decoder_num_attention_heads,
        mlp_dim=config.decoder_intermediate_size, qkv_bias=config.qkv_bias,
        layer_scale=config.decoder_layer_scale_init_value, eps=config.layer_norm_eps, act=config.hidden_act,
        drop=config.hidden_dropout_prob, attn_drop=config.attention_probs_dropout_prob,
    )
    return [{**shared, "drop_path": rate} for rate in drop_path_rates(config.drop_path_rate, depth)]


class CaeRegressor(nn.Module):
    """Mask queries (B, Lm, D) cross-attend [visible latents; current queries] -> LN -> latent_pred (B, Lm, D)."""

    def __init__(self, config: MimCaeConfig):
        super().__init__()
        self.blocks = nn.ModuleList(
            RegressorBlock(**kwargs) for kwargs in neck_block_kwargs(config, config.regressor_num_hidden_layers)
        )
        self.norm = nn.LayerNorm(config.decoder_hidden_size, eps=config.layer_norm_eps)

    def forward(self, queries: torch.Tensor, visible: torch.Tensor, pos_masked: torch.Tensor,
                pos_visible: torch.Tensor) -> torch.Tensor:
        pos_context = torch.cat([pos_visible, pos_masked], dim=1)
        for block in self.blocks:
            queries = block(queries, torch.cat([visible, queries], dim=1), pos_masked, pos_context)
        return self.norm(queries)


class CaeDecoder(nn.Module):
    """latent_pred + pos_masked -> self-attention blocks over the masked queries only -> LN -> `head`
    (vocab_size token logits, or patch_size**2 * C pixels)."""

    def __init__(self, config: MimCaeConfig):
        super().__init__()
        dim = config.decoder_hidden_size
        self.blocks = nn.ModuleList(
            Block(**kwargs, layer_id=i)
            for i, kwargs in enumerate(neck_block_kwargs(config, config.decoder_num_hidden_layers))
        )
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        out = config.vocab_size if config.decoder_target == "tokens" else config.patch_size**2 * config.num_channels
        self.head = nn.Linear(dim, out)

    def forward(self, latent_pred: torch.Tensor, pos_masked: torch.Tensor) -> torch.Tensor:
        x = latent_pred + pos_masked
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


class AttentiveProbe(nn.Module):
    """Attentive probing head (CAE's evaluation): one learned query cross-attends the frozen encoder's tokens,
    then LayerNorm and a linear classifier. (B, N, D) hidden states -> (B, num_labels) logits.

    Only the probe is trained: feed it `last_hidden_state` computed under `torch.no_grad()` (or from an encoder
    with requires_grad False).
    """

    def __init__(self, hidden_size: int, num_heads: int, num_labels: int, eps: float = 1e-6):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size={hidden_size} must be a multiple of num_heads={num_heads}")
        self.query = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.norm_q = nn.LayerNorm(hidden_size, eps=eps)
        self.norm_k = nn.LayerNorm(hidden_size, eps=eps)
        self.norm_v = nn.LayerNorm(hidden_size, eps=eps)
        self.cross_attn = CrossAttention(hidden_size, num_heads, qkv_bias="qv")
        self.norm = nn.LayerNorm(hidden_size, eps=eps)
        self.head = nn.Linear(hidden_size, num_labels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.query, std=0.02, a=-0.02, b=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.head.weight, std=0.01)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        query = self.query.expand(hidden_states.shape[0], -1, -1).to(hidden_states.dtype)
        pooled = self.cross_attn(self.norm_q(query), self.norm_k(hidden_states), self.norm_v(hidden_states))
        return self.head(self.norm(pooled[:, 0]))


# ------------------------------------------------------------------------------------------------- models


class MimCaePreTrainedModel(MimPreTrainedModel):
    config_class = MimCaeConfig
    _no_split_modules = ["Block", "RegressorBlock"]
    _keep_in_fp32_modules = ["tokenizer"]

    def _init_weights(self, module: nn.Module) -> None:
        """CAE's init with its xavier override: every Linear xavier-uniform with zero bias (encoder,
        regressor, decoder, token head), LayerNorm (1, 0), the patch conv, cls token and mask token trunc-normal(0.02)
        cut at +-1 std, layer scales at their init values, per-layer relative position bias tables zero; the EMA
        teacher starts as a copy of the encoder.

        transformers 5 calls this per module and skips modules of custom code with no parameters of their own, so
        each case is keyed on the module that holds the tensors (the Conv2d, not PatchEmbed). The
        `transformers.initialization` functions leave tensors loaded from a checkpoint alone."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if module is getattr(self, "head", None):  # the classifier starts tiny, as CAE/BEiT fine-tuning does
                init.trunc_normal_(module.weight, std=std * 1e-3)
            else:
                init.xavier_uniform_(module.weight)
            zero_bias(module)
        elif isinstance(module, nn.LayerNorm):
            init_layer_norm(module)
        elif isinstance(module, nn.Conv2d):  # the patch embedding
            init.trunc_normal_(module.weight, std=std, a=-std, b=std)
            init.zeros_(module.bias)
        elif isinstance(module, ViTEncoder):
            if module is getattr(self, "teacher", None):  # after self.vit, which comes first in the module order
                for target, source in zip(module.parameters(), self.vit.parameters()):
                    init.copy_(target, source)
            else:
                init.trunc_normal_(module.cls_token, std=std, a=-std, b=std)
                init.copy_(module.pos_embed, module.position_table())
        elif isinstance(module, Block) and module.gamma_1 is not None:
            decoder = getattr(self, "decoder", None)
            in_decoder = decoder is not None and any(module is block for block in decoder.blocks)
            value = self.config.decoder_layer_scale_init_value if in_decoder else self.config.layer_scale_init_value
            init.constant_(module.gamma_1, value)
            init.constant_(module.gamma_2, value)
        elif isinstance(module, RegressorBlock) and module.gamma_1_cross is not None:
            init.constant_(module.gamma_1_cross, self.config.decoder_layer_scale_init_value)
            init.constant_(module.gamma_2_cross, self.config.decoder_layer_scale_init_value)
        elif isinstance(module, Attention) and module.relative_position_bias_table is not None:
            init.zeros_(module.relative_position_bias_table)
            # a non-persistent buffer: from_pretrained allocates it empty, so it is rebuilt here
            grid = self.config.grid_size
            init.copy_(module.relative_position_index, relative_position_index(grid, grid))
        elif isinstance(module, DvaeConv2d):
            init_tokenizer_conv(module)
        elif isinstance(module, MimCaeForPreTraining):
            init.trunc_normal_(module.mask_token, std=std, a=-std, b=std)


class MimCaeModel(EncoderModelMixin, MimCaePreTrainedModel):
    """CAE encoder over all patches (no masking), for features: `AutoModel.from_pretrained("org/cae-vit-base")`."""


class MimCaeForPreTraining(VisualTokenizerMixin, MimCaePreTrainedModel):
    """`encode` (visible patches) -> `latent_targets` (stop-gradient encoding of the masked patches) -> `regressor`
    (latent_pred) -> `decoder` (masked patches only) -> loss = CE(tokens) + alignment_weight * MSE(latents).

    Inputs: `pixel_values` (B, C, H, W) and `bool_masked_pos` (B, L) from `MimCaeImageProcessor`
    (`return_bool_masked_pos=True`), plus `codebook_pixel_values` (the tokenizer view) or `labels` (B, L) token
    ids for decoder_target="tokens".
    """

    # a momentum > 0 checkpoint loaded with momentum 0, a token checkpoint loaded with decoder_target="pixels"
    _keys_to_ignore_on_load_unexpected = [r"^teacher\.", r"^tokenizer\."]

    def __init__(self, config: MimCaeConfig):
        super().__init__(config)
        if config.relative_position_bias != "none":
            raise ValueError(
                "CAE pretraining encodes only the visible patches, so relative_position_bias must be 'none' "
                f"(got {config.relative_position_bias!r}; 'per_layer' is the fine-tuning switch)"
            )
        self.vit = ViTEncoder(config)
        dim = config.decoder_hidden_size
        if dim != config.hidden_size:  # MAE's projection, as the official code when the widths differ
            self.encoder_to_decoder = nn.Linear(config.hidden_size, dim)
            self.encoder_to_decoder_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        else:
            self.encoder_to_decoder = self.encoder_to_decoder_norm = None
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.regressor = CaeRegressor(config)
        self.decoder = CaeDecoder(config)
        # momentum 0: the target is the encoder itself under no_grad (no second copy of the weights)
        self.teacher = ViTEncoder(config) if config.teacher_momentum > 0 else None
        if self.teacher is not None:
            self.teacher.requires_grad_(False)
        # the frozen dVAE encoder (keys as `MimDvaeModel.encoder`): requires_grad False, always eval, fp32, no_grad
        self.tokenizer = DvaeEncoder(config.tokenizer_config_object()) if config.decoder_target == "tokens" else None
        if self.tokenizer is not None:
            self.tokenizer.requires_grad_(False)
        self.post_init()

    # ---- pieces ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def load_tokenizer(self, dvae_model) -> None:
        """Copy a trained or converted `MimDvaeModel`'s encoder in as the frozen tokenizer; a tokenizer of another
        size replaces the module and `config.tokenizer_config`. Raises ValueError when its vocabulary differs from
        vocab_size or its downsampling gives no token per patch at codebook_image_size."""
        dvae_config = dvae_model.config
        self.check_tokenizer_fits(dvae_config)
        fields = ("vocab_size", "hidden_size", "num_groups", "num_blocks_per_group", "num_channels")
        self.config.tokenizer_config = {
            **{name: getattr(dvae_config, name) for name in fields}, "image_size": self.config.codebook_image_size
        }
        tokenizer = DvaeEncoder(self.config.tokenizer_config_object())
        tokenizer.load_state_dict(dvae_model.encoder.state_dict(), strict=True)
        self.tokenizer = tokenizer.to(self.vit.cls_token.device, torch.float32).requires_grad_(False).train(False)
        self.keep_tokenizer_decoder(dvae_model)

    def positions(self, grid: tuple[int, int], device, dtype) -> torch.Tensor:
        """(1, L, D_dec) fixed sin-cos table (CAE order) of the regressor and decoder, without the cls row."""
        if self.encoder_to_decoder is None:
            return self.vit.resized_pos_embed(grid)[:, 1:].to(dtype)
        table = sincos_position_table(grid[0], grid[1], self.config.decoder_hidden_size, "cae")
        return table[1:].unsqueeze(0).to(device=device, dtype=dtype)

    def to_decoder_width(self, latent: torch.Tensor) -> torch.Tensor:
        if self.encoder_to_decoder is None:
            return latent
        return self.encoder_to_decoder_norm(self.encoder_to_decoder(latent))

    def encode(self, pixel_values, bool_masked_pos, interpolate_pos_encoding=False, output_hidden_states=False):
        """Visible patches (+ cls) through the encoder. Returns latent (B, 1 + Lv, D), ids_visible (B, Lv),
        ids_masked (B, Lm), hidden states."""
        tokens = self.vit.patch_tokens(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        visible, _, ids_visible, ids_masked = split_by_mask(tokens, bool_masked_pos)
        latent, hidden_states = self.vit.transform(self.vit.prepend_cls(visible), output_hidden_states)
        return latent, ids_visible, ids_masked, hidden_states

    @torch.no_grad()
    def latent_targets(self, pixel_values, ids_masked, interpolate_pos_encoding=False) -> torch.Tensor:
        """The alignment target: the masked patches (+ cls) through the encoder (momentum 0) or the EMA teacher,
        under no_grad; patch tokens after the final LN, (B, Lm, D_dec). As in the official code, the teacher runs
        in the model's mode, so drop path is active in training."""
        teacher = self.teacher if self.teacher is not None else self.vit
        tokens = teacher.patch_tokens(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        masked = torch.gather(tokens, 1, ids_masked.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        latent, _ = teacher.transform(teacher.prepend_cls(masked))
        return self.to_decoder_width(latent)[:, 1:].detach()

    @torch.no_grad()
    def update_teacher(self) -> None:
        """EMA step theta_teacher <- m * theta_teacher + (1 - m) * theta_encoder, m = config.teacher_momentum.
        Call it after `optimizer.step()` (scripts/pretrain.py does); a no-op with momentum 0."""
        if self.teacher is None:
            return
        momentum = self.config.teacher_momentum
        for target, source in zip(self.teacher.parameters(), self.vit.parameters()):
            target.lerp_(source.detach().to(target.dtype), 1.0 - momentum)

    def after_optimizer_step(self) -> None:
        """The EMA teacher follows the encoder (`update_teacher`)."""
        self.update_teacher()

    def token_targets(self, bool_masked_pos, ids_masked, codebook_pixel_values=None, labels=None) -> torch.Tensor:
        """Visual-token ids of the masked patches, (B, Lm): from `labels`, the ids of the whole grid (B, L) or
        (B, h, w), else from the frozen tokenizer on the codebook view."""
        if labels is None:
            if codebook_pixel_values is None:
                raise ValueError(
                    "decoder_target='tokens' needs codebook_pixel_values (call the image processor with "
                    "return_codebook_pixels=True) or labels (B, num_patches) token ids"
                )
            labels = self.tokenize(codebook_pixel_values)
        labels = labels.flatten(1).to(ids_masked.device)
        if labels.shape != bool_masked_pos.shape:
            raise ValueError(
                f"the token targets cover {tuple(labels.shape)} (batch, tokens) but bool_masked_pos is "
                f"{tuple(bool_masked_pos.shape)}: the tokenizer view must be codebook_image_size="
                f"{self.config.codebook_image_size} px, one token per patch"
            )
        return torch.gather(labels.long(), 1, ids_masked)

    def pixel_targets(self, pixel_values, ids_masked) -> torch.Tensor:
        patches = patchify(pixel_values, self.config.patch_size)
        patches = torch.gather(patches, 1, ids_masked.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        return normalize_patch_targets(patches) if self.config.norm_pix_loss else patches.float()

    # ---- pipeline ----------------------------------------------------------------------------------------

    def forward(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None,
                codebook_pixel_values: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                interpolate_pos_encoding: bool = False, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, **kwargs) -> MimCaePreTrainingOutput:
        if bool_masked_pos is None:
            raise ValueError(
                "CAE needs bool_masked_pos (B, num_patches) with the same count per image: call MimCaeImageProcessor "
                "with return_bool_masked_pos=True"
            )
        output_hidden_states = bool(output_hidden_states or self.config.output_hidden_states)
        bool_masked_pos = bool_masked_pos.reshape(bool_masked_pos.shape[0], -1).bool()
        patch = self.config.patch_size
        grid = (pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch)

        latent, ids_visible, ids_masked, hidden_states = self.encode(
            pixel_values, bool_masked_pos, interpolate_pos_encoding, output_hidden_states
        )
        latent_target = self.latent_targets(pixel_values, ids_masked, interpolate_pos_encoding)

        visible = self.to_decoder_width(latent)[:, 1:]
        pos = self.positions(grid, visible.device, visible.dtype).expand(visible.shape[0], -1, -1)
        pos_visible = torch.gather(pos, 1, ids_visible.unsqueeze(-1).expand(-1, -1, pos.shape[-1]))
        pos_masked = torch.gather(pos, 1, ids_masked.unsqueeze(-1).expand(-1, -1, pos.shape[-1]))
        queries = self.mask_token.to(visible.dtype).expand(visible.shape[0], ids_masked.shape[1], -1)
        latent_pred = self.regressor(queries, visible, pos_masked, pos_visible)
        logits = self.decoder(latent_pred, pos_masked)

        if self.config.decoder_target == "tokens":
            targets = self.token_targets(bool_masked_pos, ids_masked, codebook_pixel_values, labels)
            reconstruction_loss = masked_token_cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        else:
            reconstruction_loss = F.mse_loss(logits.float(), self.pixel_targets(pixel_values, ids_masked))
        alignment_loss = F.mse_loss(latent_pred.float(), latent_target.float())
        loss = reconstruction_loss + self.config.alignment_weight * alignment_loss
        out = MimCaePreTrainingOutput(
            loss=loss, reconstruction_loss=reconstruction_loss, alignment_loss=alignment_loss, logits=logits,
            latent_pred=latent_pred, latent_target=latent_target, bool_masked_pos=bool_masked_pos,
            hidden_states=hidden_states,
        )
        return out if return_dict is not False else out.to_tuple()

    def picture_view(self, batch: dict, outputs: MimCaePreTrainingOutput) -> PictureView | None:
        """"tokens" (the tokenizer's decoder on the true tokens with the argmax predictions at the masked
        patches), or with decoder_target="pixels" the "pixels" view: the visible patches as given, the masked ones
        predicted (de-standardised with each patch's own mean and std when norm_pix_loss)."""
        if self.config.decoder_target == "tokens":
            return self.tokens_picture_view(batch, outputs.bool_masked_pos, outputs.logits.argmax(dim=-1))
        pixel_values, mask = batch["pixel_values"], outputs.bool_masked_pos
        patches = patchify(pixel_values.float(), self.config.patch_size)
        predicted = outputs.logits.float().reshape(-1, patches.shape[-1])
        if self.config.norm_pix_loss:
            predicted = unstandardize_patches(predicted, patches[mask])
        patches[mask] = predicted
        grid = (pixel_values.shape[-2] // self.config.patch_size, pixel_values.shape[-1] // self.config.patch_size)
        return PictureView("pixels", mask, unpatchify(patches, self.config.patch_size, self.config.num_channels, grid))


FINAL_NORM_TO_FC_NORM = {r"^vit\.norm\.": "fc_norm."}


class MimCaeForImageClassification(ImageClassificationMixin, MimCaePreTrainedModel):
    """CAE encoder + mean pooling + fc_norm + linear head (CAE fine-tuning), or cls pooling.

    Loading a pretraining (or feature) checkpoint into a mean-pooling classifier starts `fc_norm` from the pretrained
    final LayerNorm (`vit.norm` -> `fc_norm`, as the official fine-tuning script renames it); with the fine-tuning
    config (`MimCaeConfig.finetune_overrides`, applied by scripts/finetune.py) the per-layer relative position bias
    tables start at zero.
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        config = kwargs.get("config")
        if not isinstance(config, PretrainedConfig):  # (remote code passes its own copy of the config class)
            hub = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")
            config = cls.config_class.from_pretrained(
                config if config is not None else pretrained_model_name_or_path,
                **{k: kwargs[k] for k in hub if k in kwargs},
            )
        pooling = kwargs.get("pooling", config.pooling)
        if pooling == "mean" and kwargs.get("key_mapping") is None:
            kwargs["key_mapping"] = dict(FINAL_NORM_TO_FC_NORM)
            loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
            model = loaded[0] if isinstance(loaded, tuple) else loaded
            # the names are canonical now: save fc_norm as fc_norm, not renamed back to the checkpoint's vit.norm
            model._weight_conversions = None
            return loaded
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
