"""MAE configuration: defaults are the canonical ViT-B/16 checkpoint (facebookresearch/mae)."""

from .configuration_vit import MimViTConfig, check_choice, check_divisible, check_ratio


class MimMaeConfig(MimViTConfig):
    """ViT encoder on visible patches only + a light decoder regressing pixels of the removed patches.

    Encoder defaults: full qkv bias, no layer scale, fixed sin-cos positions in MAE order, LayerNorm eps 1e-6.
    Decoder: `decoder_hidden_size` 512, 8 blocks, 16 heads, MLP 2048, its own sin-cos table.
    `mask_ratio` 0.75 of patches removed; `norm_pix_loss` regresses per-patch standardised pixels.
    """

    model_type = "mim_mae"
    _auto_class = "AutoConfig"
    # What the fine-tuning recipe changes: positions become trainable, drop path 0.1.
    finetune_overrides = {"train_position_embeddings": True, "drop_path_rate": 0.1, "pooling": "mean"}

    backbone_defaults = dict(qkv_bias="full", layer_scale_init_value=0.0, position_embedding_type="sincos_mae",
                             train_position_embeddings=False, relative_position_bias="none", pooling="mean")
    backbone_fixed = {"use_mask_token": False}  # MAE never puts mask tokens in the encoder

    def __init__(self, mask_ratio: float = 0.75, norm_pix_loss: bool = True, decoder_hidden_size: int = 512,
                 decoder_num_hidden_layers: int = 8, decoder_num_attention_heads: int = 16,
                 decoder_intermediate_size: int = 2048, **kwargs):
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.decoder_hidden_size = decoder_hidden_size
        self.decoder_num_hidden_layers = decoder_num_hidden_layers
        self.decoder_num_attention_heads = decoder_num_attention_heads
        self.decoder_intermediate_size = decoder_intermediate_size
        super().__init__(**self.backbone_kwargs(kwargs))
        check_ratio("mask_ratio", mask_ratio)
        check_choice("position_embedding_type", self.position_embedding_type, ("sincos_mae", "learned"))
        if self.relative_position_bias != "none":
            raise ValueError("MAE drops masked tokens, so relative_position_bias must be 'none' for pretraining")
        check_divisible("decoder_hidden_size", decoder_hidden_size, "decoder_num_attention_heads", decoder_num_attention_heads)
        check_divisible("decoder_hidden_size", decoder_hidden_size, "4 (sin-cos quarters); decoder_hidden_size", 4)
