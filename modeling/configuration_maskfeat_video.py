"""MaskFeat video configuration: the ViT backbone over space-time tubelets, per-frame HOG targets, cube masking.

Field names follow transformers' ViT and VideoMAE (`image_size`, `patch_size`, `num_frames`, `tubelet_size`,
`hidden_size`, ...). Defaults are a ViT-B/16 on 16 frames in tubelets of 2 (8 x 14 x 14 = 1568 tokens), as
VideoMAE's base model and MaskFeat's Kinetics pretraining input (16 frames, 40% of the tokens masked).
"""

from .configuration_maskfeat import check_hog_fields, hog_patch_dim
from .configuration_vit import MimViTConfig, check_choice, check_divisible, check_ratio


class MimMaskFeatVideoConfig(MimViTConfig):
    """All tubelets through the encoder, masked ones replaced by a learned mask token; a linear head on the final
    LayerNorm predicts, at each masked tubelet, the HOG of every frame it covers (the image MaskFeat HOG, frame by
    frame, concatenated over the tubelet's frames), scored by MSE.

    num_frames: frames per clip the model takes; a multiple of tubelet_size.
    tubelet_size: frames per token (the Conv3d's temporal kernel and stride).
    position_embedding_type: "learned" = separable learned tables, one over the spatial grid and one over the
        temporal positions, summed (MaskFeat's video ViT/MViT layout: h*w + t rows instead of h*w*t, and a clip of
        another length or size resamples each table alone); "none" = no position embedding.
    mask_ratio: fraction of the space-time tokens masked; round(mask_ratio * L) exactly (0.4 as MaskFeat video).
    min_num_patches / max_num_patches / min_aspect / max_aspect: the spatial face of each masked cube, as the image
        block mask: area in patches drawn uniformly in [min, max] (max None = the whole frame grid), aspect
        log-uniform in [min_aspect, max_aspect] (None = 1 / min_aspect).
    min_cube_frames / max_cube_frames: the cube's length in tubelets, uniform in [min, max] (max None = all).
    hog_nbins / hog_cell_size / hog_gaussian_window: the image MaskFeat HOG (9 bins, 8-px cells, no window).
    The head predicts `target_dim` = tubelet_size * num_channels * hog_nbins * (patch_size / hog_cell_size)^2 values
    per token (2 * 108 = 216 at the defaults).
    """

    model_type = "mim_maskfeat_video"
    _auto_class = "AutoConfig"
    finetune_overrides = {"drop_path_rate": 0.1, "pooling": "mean"}

    def __init__(
        self,
        num_frames: int = 16,
        tubelet_size: int = 2,
        qkv_bias: str = "full",
        layer_scale_init_value: float = 0.0,
        drop_path_rate: float = 0.0,
        position_embedding_type: str = "learned",
        use_mask_token: bool = True,
        pooling: str = "mean",
        layer_norm_eps: float = 1e-6,
        mask_ratio: float = 0.4,
        min_num_patches: int = 9,
        max_num_patches: int | None = None,
        min_aspect: float = 0.3,
        max_aspect: float | None = None,
        min_cube_frames: int = 1,
        max_cube_frames: int | None = None,
        hog_nbins: int = 9,
        hog_cell_size: int = 8,
        hog_gaussian_window: int = 0,
        **kwargs,
    ):
        kwargs.setdefault("relative_position_bias", "none")
        super().__init__(
            qkv_bias=qkv_bias, layer_scale_init_value=layer_scale_init_value, drop_path_rate=drop_path_rate,
            position_embedding_type=position_embedding_type, use_mask_token=use_mask_token, pooling=pooling,
            layer_norm_eps=layer_norm_eps, **kwargs,
        )
        self.num_frames = num_frames
        self.tubelet_size = tubelet_size
        self.mask_ratio = mask_ratio
        self.min_num_patches = min_num_patches
        self.max_num_patches = max_num_patches
        self.min_aspect = min_aspect
        self.max_aspect = max_aspect
        self.min_cube_frames = min_cube_frames
        self.max_cube_frames = max_cube_frames
        self.hog_nbins = hog_nbins
        self.hog_cell_size = hog_cell_size
        self.hog_gaussian_window = hog_gaussian_window
        self.validate_video()

    @property
    def temporal_size(self) -> int:
        """Tokens along time: num_frames / tubelet_size."""
        return self.num_frames // self.tubelet_size

    @property
    def num_patches_per_frame(self) -> int:
        """Patches of one frame (the image ViT's num_patches)."""
        return super().num_patches

    @property
    def num_patches(self) -> int:
        """Space-time tokens of a clip (cls excluded): temporal_size * grid_size^2."""
        return self.temporal_size * self.num_patches_per_frame

    @property
    def num_masking_patches(self) -> int:
        """Tokens the cube mask covers: round(mask_ratio * num_patches)."""
        return int(round(self.mask_ratio * self.num_patches))

    @property
    def frame_target_dim(self) -> int:
        """One frame's HOG vector at one patch (the image MaskFeat target: 108 for 16-px patches, 8-px cells)."""
        return hog_patch_dim(self)

    @property
    def target_dim(self) -> int:
        """One token's target: the HOG vectors of its tubelet's frames, concatenated."""
        return self.tubelet_size * self.frame_target_dim

    def validate_video(self) -> None:
        check_divisible("num_frames", self.num_frames, "tubelet_size", self.tubelet_size)
        check_choice("position_embedding_type", self.position_embedding_type, ("learned", "none"))
        check_choice("relative_position_bias", self.relative_position_bias, ("none",))
        if not self.use_mask_token:
            raise ValueError(
                "use_mask_token must be True: MaskFeat replaces the masked tubelets by a learned mask token"
            )
        check_ratio("mask_ratio", self.mask_ratio)
        if not 0 < self.num_masking_patches < self.num_patches:
            raise ValueError(
                f"mask_ratio={self.mask_ratio} masks {self.num_masking_patches} of {self.num_patches} tokens; at "
                "least one must be masked and one visible: raise or lower mask_ratio"
            )
        self.validate_cube_fields()
        check_hog_fields(self)

    def validate_cube_fields(self) -> None:
        frame_grid = self.num_patches_per_frame
        if isinstance(self.min_num_patches, bool) or not isinstance(self.min_num_patches, int) or not (
                1 <= self.min_num_patches <= frame_grid):
            raise ValueError(
                f"min_num_patches must be an integer in [1, {frame_grid}] (smallest spatial face of a masked cube, "
                f"in patches of the {self.grid_size}x{self.grid_size} grid), got {self.min_num_patches!r}"
            )
        if self.max_num_patches is not None and not self.min_num_patches <= self.max_num_patches:
            raise ValueError(
                f"max_num_patches must be >= min_num_patches={self.min_num_patches}, or None for the whole frame "
                f"grid, got {self.max_num_patches!r}"
            )
        if not self.min_aspect > 0:
            raise ValueError(
                f"min_aspect must be > 0 (cube face height/width ratio; 0.3 by default), got {self.min_aspect!r}"
            )
        if self.max_aspect is not None and not self.max_aspect >= self.min_aspect:
            raise ValueError(f"max_aspect must be >= min_aspect={self.min_aspect}, or None, got {self.max_aspect!r}")
        longest = self.temporal_size if self.max_cube_frames is None else self.max_cube_frames
        if not 1 <= self.min_cube_frames <= longest <= self.temporal_size:
            raise ValueError(
                f"need 1 <= min_cube_frames ({self.min_cube_frames}) <= max_cube_frames ({self.max_cube_frames}) <= "
                f"temporal_size ({self.temporal_size} = num_frames / tubelet_size); cube lengths count tubelets"
            )
