"""MaskFeat configuration: defaults are the official ViT-B/16 image pretraining config (facebookresearch/SlowFast
`in1k_VIT_B_MaskFeat_PT.yaml`)."""

from .configuration_vit import BlockMaskConfigMixin, MimViTConfig, check_divisible


class MimMaskFeatConfig(BlockMaskConfigMixin, MimViTConfig):
    """All patches through the encoder, masked ones replaced by a learned mask token; a linear head on the final
    LayerNorm predicts, at each masked patch, its histograms of oriented gradients (HOG), scored by MSE.

    Encoder defaults: timm-style full qkv bias, no layer scale, drop path 0, learned absolute positions, no
    relative position bias, LayerNorm eps 1e-6, mean pooling (+ a new fc_norm) for classification.
    num_masking_patches / min_num_patches / max_num_patches / min_aspect / max_aspect: the block-wise mask
        with the early stop: round(0.4 * 196) = 78 of 196 patches in blocks of at least
        78 // 5 = 15, aspect in [0.3, 1/0.3] (max_aspect None). The count may fall short and differs between images.
    hog_nbins: orientation bins over 180 degrees (9).
    hog_cell_size: pixels per HOG cell side (8); each patch has (patch_size / hog_cell_size)^2 cells.
    hog_gaussian_window: 0 = no Gaussian weighting of the gradient magnitudes (the official SlowFast image model);
        a positive w tiles a w x w Gaussian over the image (mmpretrain's reproduction uses 16).
    The head predicts `target_dim` = num_channels * hog_nbins * (patch_size / hog_cell_size)^2 values per patch
    (3 * 9 * 4 = 108 at the defaults).
    """

    model_type = "mim_maskfeat"
    _auto_class = "AutoConfig"
    # What the fine-tuning recipe changes: drop path 0.1, mean pooling of the patch tokens into a
    # new LayerNorm; learned absolute positions and everything else stay.
    finetune_overrides = {"drop_path_rate": 0.1, "pooling": "mean"}

    backbone_defaults = dict(qkv_bias="full", layer_scale_init_value=0.0, drop_path_rate=0.0,
                             position_embedding_type="learned", relative_position_bias="none", use_mask_token=True,
                             pooling="mean", layer_norm_eps=1e-6)
    block_mask_defaults = {"num_masking_patches": 78, "min_num_patches": 15}

    def __init__(self, hog_nbins: int = 9, hog_cell_size: int = 8, hog_gaussian_window: int = 0,
                 encoder_stride: int | None = None, **kwargs):
        super().__init__(**self.backbone_kwargs(kwargs))
        self.hog_nbins = hog_nbins
        self.hog_cell_size = hog_cell_size
        self.hog_gaussian_window = hog_gaussian_window
        self.encoder_stride = self.patch_size if encoder_stride is None else encoder_stride
        self.validate_maskfeat()

    @property
    def target_dim(self) -> int:
        """Length of one patch's HOG target (108 for ViT-B/16 with 9 bins, 8-px cells and RGB)."""
        return hog_patch_dim(self)

    def validate_maskfeat(self) -> None:
        self.check_mask_token("MaskFeat")
        self.validate_block_mask("MaskFeat")
        check_hog_fields(self)
        if self.encoder_stride != self.patch_size:
            raise ValueError(f"encoder_stride={self.encoder_stride} must equal patch_size={self.patch_size}: the head "
                             "predicts one HOG target per patch")


def hog_patch_dim(config) -> int:
    """One patch's HOG vector of one image: num_channels * hog_nbins * (patch_size / hog_cell_size)^2."""
    return config.num_channels * config.hog_nbins * (config.patch_size // config.hog_cell_size) ** 2


def check_hog_fields(config) -> None:
    """The HOG fields of an image or video MaskFeat config, each named with its fix."""
    if isinstance(config.hog_nbins, bool) or not isinstance(config.hog_nbins, int) or config.hog_nbins < 1:
        raise ValueError(
            f"hog_nbins must be a positive integer (orientation bins; MaskFeat uses 9), got {config.hog_nbins!r}"
        )
    check_divisible("patch_size", config.patch_size, "hog_cell_size", config.hog_cell_size)
    if config.hog_gaussian_window is None or config.hog_gaussian_window < 0:
        raise ValueError(
            f"hog_gaussian_window must be 0 (off, the official image model) or a positive window size, got "
            f"{config.hog_gaussian_window!r}"
        )
    if config.hog_gaussian_window:
        check_divisible("image_size", config.image_size, "hog_gaussian_window", config.hog_gaussian_window)
