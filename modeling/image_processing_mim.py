"""The image processor every method starts from: PIL/numpy backend, bicubic resize, ImageNet normalisation, and an
opt-in `bool_masked_pos` drawn by the method's mask generator.

One backend is pinned (PIL) because the torchvision backend gives different bicubic numbers; training and
evaluation must see the same pixels. Masks are opt-in processor kwargs, as in transformers' Flava processor.

Three shortcuts keep the PIL backend's numbers bit for bit (a property test compares them) and cut the time of the
processor, most of a data-loader worker's time:
- an RGB PIL image is resized before it becomes an array (the backend converts it to numpy and back to PIL to
  resize), and a tokenizer view is resized from it too;
- a uint8 image that already has the target size is not sent through PIL (whose same-size resize is a copy);
- normalisation runs on a contiguous array, not the strided channels-first view of PIL's channels-last memory.
On a 224 px image the processor drops from 1.24 to 0.52 ms.
"""

import random

import numpy as np
import PIL.Image
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature, get_size_dict
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling, SizeDict
from transformers.processing_utils import ImagesKwargs

from .masking import block_mask


HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I", "F")
# DALL-E's map_pixels: [0, 1] -> [eps, 1 - eps] (modeling_dvae.map_pixels on tensors; a test pins the two together)
LOGIT_LAPLACE_EPS = 0.1


def map_pixels(x: np.ndarray) -> np.ndarray:
    return (1 - 2 * LOGIT_LAPLACE_EPS) * x + LOGIT_LAPLACE_EPS


def to_8_bit(image: PIL.Image.Image) -> PIL.Image.Image:
    """A 16-bit, 32-bit or float PIL image -> 8-bit greyscale scaled by its own range; other modes unchanged.

    PIL's `convert("RGB")` clips these modes (every value above 255 turns white), which would erase the picture.
    Training decodes with the same function (`hf_mim.data.to_rgb`), so inference sees the same pixels.
    """
    if image.mode not in HIGH_BIT_DEPTH_MODES:
        return image
    array = np.asarray(image, dtype=np.float64)
    low, high = float(array.min()), float(array.max())
    scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
    return PIL.Image.fromarray(scaled.round().astype(np.uint8), mode="L")


def official_crop_pct(image_size: int) -> float:
    """MAE's and BEiT's rule (SimMIM, CAE and MaskFeat evaluate the same way): 224/256 up to 224 px, else 1."""
    return 224 / 256 if image_size <= 224 else 1.0


def as_size_dict(size) -> SizeDict:
    """Any `size` form transformers accepts (an int, {"height", "width"}, {"shortest_edge"[, "longest_edge"]}, a
    SizeDict) as a SizeDict; an int means a square, as in transformers' processors."""
    return size if isinstance(size, SizeDict) else SizeDict(**get_size_dict(size))


def set_fields(size: SizeDict) -> dict:
    """The fields a SizeDict sets, for messages: {'shortest_edge': 32} rather than eight keys."""
    return {key: value for key, value in dict(size).items() if value is not None}


def resize_size_for_crop(size: SizeDict, crop_pct: float) -> SizeDict:
    """The resize before an evaluation centre crop: `size` / crop_pct, as timm and transformers' PoolFormer do. A
    square or a shortest edge resizes the short side (aspect kept); a non-square height/width both sides."""
    if size.shortest_edge:
        return SizeDict(shortest_edge=int(size.shortest_edge / crop_pct))
    if size.height and size.width:
        if size.height == size.width:
            return SizeDict(shortest_edge=int(size.height / crop_pct))
        return SizeDict(height=int(size.height / crop_pct), width=int(size.width / crop_pct))
    raise ValueError(f"crop_pct={crop_pct} needs size {{'height': h, 'width': w}} or {{'shortest_edge': s}}, "
                     f"got {set_fields(size)}")


def check_crop_pct(crop_pct: float | None) -> None:
    if crop_pct is not None and not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct={crop_pct}: the centre crop's share of the resized short side must be in "
                         "(0, 1], e.g. 0.875 (resize to 256, crop 224) or 1 (the whole short side)")


def is_plain_rgb(image) -> bool:
    """An 8-bit RGB PIL image without a transparency colour: transformers' RGB conversion leaves it as it is."""
    return isinstance(image, PIL.Image.Image) and image.mode == "RGB" and "transparency" not in image.info


def integer_range_beyond_8_bits(image) -> tuple[int, int] | None:
    """(min, max) of an integer array or tensor (16-bit, int32, ...) whose values leave 0..255, which PIL cannot
    take; None for anything else."""
    dtype = str(getattr(image, "dtype", ""))
    if "int" not in dtype or dtype.endswith("uint8"):
        return None
    values = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)  # torch lacks uint16 min
    low, high = int(values.min()), int(values.max())
    return (low, high) if low < 0 or high > 255 else None


class MimImageProcessorKwargs(ImagesKwargs, total=False):
    """
    return_bool_masked_pos (`bool`, defaults to `False`):
        Also return `bool_masked_pos` (batch, num_patches), True = masked, from the method's mask generator.
    mask_seed (`int`, *optional*):
        Seed of the mask generator for this call; the same seed gives the same masks. None draws fresh masks.
    crop_pct (`float`, *optional*):
        The evaluation crop: resize the short side to `size` / crop_pct, then centre-crop `crop_size` (timm's and
        transformers' PoolFormer convention, so `size` stays the model's input). None resizes straight to `size`.
    """

    return_bool_masked_pos: bool
    mask_seed: int
    crop_pct: float


class MimImageProcessor(PilBackend):
    valid_kwargs = MimImageProcessorKwargs
    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BICUBIC
    size = {"height": 224, "width": 224}
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    return_bool_masked_pos = False
    mask_seed = None
    crop_pct = None
    codebook_resample = PILImageResampling.LANCZOS  # the tokenizer view of BEiT and CAE
    config_fields = ()  # the config fields (mask sizes, tokenizer view size) that `for_model_config` copies

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        check_crop_pct(self.crop_pct)

    def to_dict(self) -> dict:
        """Without `image_processor_type`, AutoImageProcessor resolves the class from the model config: the
        registered one where hf_mim is installed, else the `auto_map` entry of config.json (remote code)."""
        data = super().to_dict()
        data.pop("image_processor_type", None)
        return data

    def _prepare_images_structure(self, images, expected_ndims: int = 3):
        """A 2-D array or tensor is one greyscale image (transformers cannot tell it from a batch and stops);
        integer pixels beyond 0..255 stop with the conversion to use, rather than fail inside PIL."""
        batch = images if isinstance(images, (list, tuple)) else [images]
        for image in batch:
            if (span := integer_range_beyond_8_bits(image)) is not None:
                raise ValueError(
                    f"the image processor takes 8-bit pixels (0-255) or floats in [0, 1]; this {image.dtype} image "
                    f"spans {span[0]}..{span[1]}. Scale it to 0..255 first, or pass a greyscale one as "
                    "`PIL.Image.fromarray(array)`: 16-bit PIL images are scaled by their range, as in training"
                )
        if any(getattr(image, "ndim", None) == 2 for image in batch):
            batch = [image[..., None] if getattr(image, "ndim", None) == 2 else image for image in batch]
            images = batch if isinstance(images, (list, tuple)) else batch[0]
        return super()._prepare_images_structure(images, expected_ndims=expected_ndims)

    def _preprocess_image_like_inputs(self, images, *args, **kwargs):
        """Hands the inputs to `extra_views` beside the prepared arrays: a view of an RGB PIL input (a tokenizer
        view) is resized from it directly, so `process_image` may resize that input early."""
        sources = self._prepare_images_structure(images)
        return super()._preprocess_image_like_inputs(sources, *args, source_images=sources, **kwargs)

    def process_image(self, image, do_convert_rgb=None, input_data_format=None, **kwargs) -> np.ndarray:
        if isinstance(image, PIL.Image.Image):
            image = to_8_bit(image)
        size, resample = kwargs.get("size"), kwargs.get("resample")
        if resample is None:
            resample = PILImageResampling.BILINEAR  # the backend's default
        if (is_plain_rgb(image) and kwargs.get("do_resize") and not kwargs.get("do_center_crop")
                and not kwargs.get("crop_pct") and isinstance(size, SizeDict) and size.height and size.width
                and isinstance(resample, (PILImageResampling, int))):
            image = image.resize((size.width, size.height), resample=resample)  # then `resize` below is a no-op
        return super().process_image(image, do_convert_rgb=do_convert_rgb, input_data_format=input_data_format,
                                     **kwargs)

    def resized_view(self, image: np.ndarray, source, side: int, resample) -> np.ndarray:
        """A side x side (C, H, W) uint8 view of one input: from its PIL source when that is plain RGB (the pixels
        of the array path without its copies), else from the prepared array."""
        if is_plain_rgb(source):
            return np.moveaxis(np.asarray(source.resize((side, side), resample=resample)), -1, 0)
        return self.resize(image, SizeDict(height=side, width=side), resample=resample)

    def resize(self, image: np.ndarray, size: SizeDict, resample=None, reducing_gap=None, **kwargs) -> np.ndarray:
        if image.dtype == np.uint8 and size.height and size.width and image.shape[-2:] == (size.height, size.width):
            return image  # PIL returns a copy for a same-size resize; only float inputs would be requantised there
        return super().resize(image, size, resample=resample, reducing_gap=reducing_gap, **kwargs)

    def normalize(self, image: np.ndarray, mean, std, **kwargs) -> np.ndarray:
        return super().normalize(np.ascontiguousarray(image), mean, std, **kwargs)

    def generate_mask(self, rng: random.Random, image_size: tuple[int, int] | None = None) -> np.ndarray:
        """One (grid_h, grid_w) boolean mask, True = masked, for images of `image_size` (height, width) pixels
        (default: `output_size()`). Methods that mask in the data pipeline override this."""
        raise ValueError(
            f"{type(self).__name__} does not make masks: this method masks inside the model; "
            "call the processor without return_bool_masked_pos"
        )

    def output_size(self) -> tuple[int, int]:
        """(height, width) of every output image when the settings alone fix it (a centre crop, or a height/width
        `size` without crop_pct): what masks drawn outside a call, before any image is seen, are sized by."""
        if self.do_center_crop and self.crop_size is not None:
            crop = as_size_dict(self.crop_size)
            return crop.height, crop.width
        size = as_size_dict(self.size)
        if not (size.height and size.width) or self.crop_pct:
            raise ValueError(f"size={set_fields(size)} lets each image's shape set the output, "
                             "so masks cannot be sized before an image is seen: set size={'height': s, 'width': s}")
        return size.height, size.width

    def patch_grid(self, image_size: tuple[int, int] | None = None) -> tuple[int, int]:
        """(rows, columns) of `patch_size` patches in images of `image_size` pixels (default: `output_size()`)."""
        height, width = image_size or self.output_size()
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"images of {height}x{width} px do not split into {self.patch_size} px patches: set size "
                             f"to a multiple of patch_size={self.patch_size}, e.g. {{'height': s, 'width': s}}")
        return height // self.patch_size, width // self.patch_size

    @classmethod
    def for_model_config(cls, config, **kwargs):
        """The processor that feeds a model of this config: its image size, plus whatever `kwargs_from_config`
        copies (mask sizes, tokenizer view size)."""
        size = {"height": config.image_size, "width": config.image_size}
        return cls(**{"size": size, **cls.kwargs_from_config(config), **kwargs})

    @classmethod
    def normalization_saved_with(cls, model_name_or_path) -> dict:
        """`image_mean`/`image_std` of the processor saved beside a model (a converted checkpoint keeps its
        source's, e.g. BEiT's 0.5/0.5), so fine-tuning and probing feed the pixels it was pretrained on; {} when
        none is saved (the ImageNet defaults apply)."""
        try:
            saved = cls.from_pretrained(model_name_or_path)
        except OSError:
            return {}
        return {"image_mean": list(saved.image_mean), "image_std": list(saved.image_std)}

    @classmethod
    def for_evaluation(cls, config, crop_pct: float | None = None, **kwargs):
        """The processor of evaluation and inference: the shorter side resized (bicubic) to
        image_size / crop_pct, then the centre image_size square, as the official evaluation transforms of all
        five methods. `crop_pct` defaults to their rule, `official_crop_pct`; 1 keeps the whole short side.
        `size` is the model's input (transformers' convention), so clients that read it feed the right shape."""
        crop_pct = official_crop_pct(config.image_size) if crop_pct is None else crop_pct
        side = config.image_size
        return cls(**{"size": {"height": side, "width": side}, "crop_pct": crop_pct, "do_center_crop": True,
                      "crop_size": {"height": side, "width": side}, **cls.kwargs_from_config(config), **kwargs})

    def evaluation_sides(self) -> tuple[int, int]:
        """(short side after the resize, centre crop side) of an evaluation processor, for logs and cards."""
        resize = resize_size_for_crop(as_size_dict(self.size), self.crop_pct or 1.0)
        return resize.shortest_edge or min(resize.height, resize.width), self.output_size()[0]

    @classmethod
    def kwargs_from_config(cls, config) -> dict:
        """The processor settings a model config fixes: its fields named in `config_fields`."""
        return {name: getattr(config, name) for name in cls.config_fields}

    def pretraining_kwargs(self) -> dict:
        """The kwargs the pretraining data pipeline passes to this processor (masks, extra views)."""
        return {}

    def _preprocess(self, images, return_bool_masked_pos=False, mask_seed=None, return_tensors=None, **kwargs):
        resize_to = kwargs["size"]
        if kwargs.get("crop_pct") and kwargs.get("do_resize"):
            resize_to = resize_size_for_crop(resize_to, kwargs["crop_pct"])
        batch = super()._preprocess(images, return_tensors=None, **{**kwargs, "size": resize_to})
        data = dict(batch)
        image_size = self.batch_image_size(data["pixel_values"], kwargs["size"])
        rng = random.Random(mask_seed)
        if return_bool_masked_pos:
            grid_size = image_size()
            data["bool_masked_pos"] = np.stack(
                [self.generate_mask(rng, grid_size).reshape(-1) for _ in images]).astype(bool)
        data.update(self.extra_views(images, rng=rng, image_size=image_size, **kwargs))
        return BatchFeature(data=data, tensor_type=return_tensors)

    @staticmethod
    def batch_image_size(pixel_values: list[np.ndarray], size: SizeDict):
        """A function giving the one (height, width) of the processed batch, for what is drawn per patch (masks,
        noise); it raises when `size` gave the images different shapes."""
        shapes = sorted({tuple(image.shape[-2:]) for image in pixel_values})

        def image_size() -> tuple[int, int]:
            if len(shapes) != 1:
                raise ValueError(f"size={set_fields(size)} gave these images the shapes "
                                 f"{shapes}; masks and noise need one shape: set size={{'height': s, 'width': s}}")
            return shapes[0]
        return image_size

    def codebook_views(self, images, side: int, image_size, source_images=None, do_rescale=True,
                       rescale_factor=1 / 255, do_center_crop=False, crop_pct=None, **kwargs) -> np.ndarray:
        """The tokenizer view of BEiT and CAE, (batch, C, side, side) float32: each input resized (LANCZOS) from
        the input itself, not the encoder view, rescaled to [0, 1] as the main view is, then map_pixels'd into
        [0.1, 0.9]. The caller crops beforehand, so both views show the same region; an encoder view that is not
        the whole input as a square (a centre crop, an aspect-keeping resize) would not match it."""
        height, width = image_size()
        if do_center_crop or crop_pct or height != width:
            raise ValueError(
                "the tokenizer view is the whole image as a square, so pretraining inputs need the encoder view to be "
                f"one too, not a {height}x{width} centre crop or aspect-keeping resize: use size={{'height': s, "
                "'width': s}} without crop_pct or do_center_crop (`for_model_config(config)` gives it)")
        views = []
        for image, source in zip(images, source_images or [None] * len(images)):
            view = self.resized_view(image, source, side, self.codebook_resample)
            if do_rescale:
                view = self.rescale(view, rescale_factor)
            views.append(map_pixels(np.asarray(view, dtype=np.float32)).astype(np.float32))
        return np.stack(views)

    def extra_views(self, images, rng: random.Random | None = None, image_size=None, **kwargs) -> dict:
        """Further inputs made from the same images (BEiT's tokenizer view, MAE's masking noise); none by default.
        `rng` is the call's seeded generator, drawn after the masks; `image_size()` is the processed batch's one
        (height, width), raising when the images came out in different shapes (None outside a call)."""
        return {}


class BlockMaskImageProcessorKwargs(MimImageProcessorKwargs, total=False):
    """
    patch_size (`int`, defaults to 16): the model's patch size, which fixes the mask grid (size / patch_size).
    num_masking_patches (`int`), min_num_patches (`int`), max_num_patches (`int`, *optional*), min_aspect (`float`,
    defaults to 0.3), max_aspect (`float`, *optional*):
        the block-wise mask generator's settings (the method's defaults): rectangles of min..max patches and aspect
        ratio min_aspect..max_aspect (default 1 / min_aspect) are placed until num_masking_patches are masked.
    """

    patch_size: int
    num_masking_patches: int
    min_num_patches: int
    max_num_patches: int | None
    min_aspect: float
    max_aspect: float | None


class BlockMaskImageProcessor(MimImageProcessor):
    """BEiT's block-wise mask generator with its early stop (BEiT, MaskFeat): a subclass sets the counts."""

    valid_kwargs = BlockMaskImageProcessorKwargs
    config_fields = ("patch_size", "num_masking_patches", "min_num_patches", "max_num_patches", "min_aspect",
                     "max_aspect")
    patch_size = 16
    num_masking_patches = 75
    min_num_patches = 16
    max_num_patches = None
    min_aspect = 0.3
    max_aspect = None

    def pretraining_kwargs(self) -> dict:
        return {"return_bool_masked_pos": True}

    def generate_mask(self, rng: random.Random, image_size: tuple[int, int] | None = None) -> np.ndarray:
        """The block-wise mask on the patch grid, (grid_h, grid_w) bool, True = masked; may mask fewer than
        num_masking_patches (the official generator stops at the first block it cannot place)."""
        height, width = self.patch_grid(image_size)
        return block_mask(
            height, width, self.num_masking_patches, self.min_num_patches, self.max_num_patches, self.min_aspect,
            self.max_aspect, exact=False, rng=rng,
        )


class TokenizerViewKwargs(ImagesKwargs, total=False):
    """
    return_codebook_pixels (`bool`, defaults to `False`):
        Also return `codebook_pixel_values` (batch, 3, codebook_image_size, codebook_image_size): the same image,
        Lanczos-resized, in [0, 1] and map_pixels'd, the frozen tokenizer's input.
    codebook_image_size (`int`, defaults to 112): side of the tokenizer view (patch grid x tokenizer downsampling,
        8 for DALL-E's dVAE).
    """

    return_codebook_pixels: bool
    codebook_image_size: int


class TokenizerViewMixin:
    """The tokenizer view of the methods predicting a frozen dVAE's visual tokens (BEiT, CAE), made whenever a
    call passes `return_codebook_pixels=True`."""

    return_codebook_pixels = False
    codebook_image_size = 112

    def extra_views(self, images, rng: random.Random | None = None, return_codebook_pixels=False,
                    codebook_image_size=None, **kwargs) -> dict:
        """The tokenizer view of each input image (from the input itself, not the resized encoder view)."""
        if not return_codebook_pixels:
            return {}
        side = codebook_image_size or self.codebook_image_size
        return {"codebook_pixel_values": self.codebook_views(images, side, **kwargs)}
