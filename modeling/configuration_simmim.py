"""SimMIM configuration: defaults are the official ViT-B/16 pretraining config (microsoft/SimMIM
`simmim_pretrain__vit_base__img224__800ep.yaml`)."""

from .configuration_vit import BEIT_STYLE_BACKBONE, PER_LAYER_BIAS_FINETUNE, MimViTConfig, check_divisible, check_ratio

# The switches that turn SimMIM's ViT into the plain ViT of transformers' `ViTForMaskedImageModeling` (full qkv
# bias, no layer scale, learned absolute positions, no relative position bias): `MimSimMIMConfig(**PLAIN_VIT)`.
PLAIN_VIT = dict(qkv_bias="full", layer_scale_init_value=0.0, relative_position_bias="none",
                 position_embedding_type="learned", drop_path_rate=0.0)


class MimSimMIMConfig(MimViTConfig):
    """All patches through the encoder, masked ones replaced by a learned mask token; a 1x1 conv + PixelShuffle
    "one-layer head" reconstructs the normalised image, scored by L1 on the masked pixels only.

    Encoder defaults: BEiT-style q/v bias, layer scale 0.1, drop path 0.1, no absolute positions, one relative
    position bias table shared by every block, LayerNorm eps 1e-6, mean pooling (+ fc_norm) for classification.
    mask_patch_size: side in pixels of a mask cell (32); each cell covers (mask_patch_size / patch_size)^2 patches.
    mask_ratio: fraction of the cells masked, ceil(ratio * cells) exactly (0.6 -> 30 of 49 cells, 120 of 196 patches).
    encoder_stride: upsampling factor of the PixelShuffle head; for a ViT it is the patch size (None -> patch_size).
    """

    model_type = "mim_simmim"
    _auto_class = "AutoConfig"
    finetune_overrides = PER_LAYER_BIAS_FINETUNE
    backbone_defaults = BEIT_STYLE_BACKBONE

    def __init__(self, mask_patch_size: int = 32, mask_ratio: float = 0.6, encoder_stride: int | None = None,
                 **kwargs):
        super().__init__(**self.backbone_kwargs(kwargs))
        self.mask_patch_size = mask_patch_size
        self.mask_ratio = mask_ratio
        self.encoder_stride = self.patch_size if encoder_stride is None else encoder_stride
        self.validate_simmim()

    def validate_simmim(self) -> None:
        self.check_no_sincos("SimMIM's ViT")
        self.check_mask_token("SimMIM")
        check_mask_cells(self)
        if self.encoder_stride != self.patch_size:
            raise ValueError(
                f"encoder_stride={self.encoder_stride} must equal patch_size={self.patch_size}: the PixelShuffle head "
                "upsamples the patch grid by encoder_stride, and the reconstruction must have the input's size"
            )


def check_mask_cells(config) -> None:
    """SimMIM's mask fields: cells of mask_patch_size pixels tile the image and cover whole patches, and a share
    of them strictly between 0 and 1 is masked."""
    check_divisible("image_size", config.image_size, "mask_patch_size", config.mask_patch_size)
    check_divisible("mask_patch_size", config.mask_patch_size, "patch_size", config.patch_size)
    check_ratio("mask_ratio", config.mask_ratio)
