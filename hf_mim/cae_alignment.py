"""CAE's alignment check (Chen et al., Context Autoencoder, §"analysis"; issue 5): remove the latent regressor and
feed the ENCODER's own outputs for every patch, at their positions, to the pixel decoder.

Why it matters: during pretraining the decoder only ever sees the regressor's predictions `latent_pred`, and those are
pulled (by the alignment loss) towards the encoder's stop-gradient encoding of the masked patches. If the alignment
worked, the encoder's representations live in the very space the regressor predicts into, so the decoder, which never
saw an encoder output, still turns them into images. If the decoder reconstructs better than the dataset's mean image,
the two spaces agree; an untrained model (no alignment yet) does not.

Functions:
    decode_encoder_outputs(model, pixel_values) -> (B, L, p*p*C) per-patch predictions (norm-pix space when
        config.norm_pix_loss), the decoder applied to the encoder's patch tokens over all L positions.
    alignment_check(model, pixel_values) -> dict(decoder_mse, mean_image_mse, ratio, patch_mean_mse).
    alignment_picture(model, pixel_values, image_mean, image_std) -> PIL.Image, rows: original, decoded from encoder
        outputs (regressor removed), mean image.

Regenerate the picture for a model card (a CAE pretrained with decoder_target=pixels):

    python -m hf_mim.cae_alignment --model OUTPUT_DIR --add_to_card

writes OUTPUT_DIR/alignment.png and a section "Alignment check" with the numbers into OUTPUT_DIR/README.md (replaced,
not duplicated, when run again). Use a CAE trained with `norm_pix_loss=False` for a check that can fail: with
norm-pix targets the de-standardisation borrows each true patch's mean and std, which alone beats the mean image
(measured on the tiny demo: an UNTRAINED norm-pix CAE gives 0.96 vs 1.61), whereas in raw pixel space the mean image
is the best prediction that ignores the input, so beating it means the decoder reads the encoder's outputs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from .modeling.vit import patchify, unpatchify
from .visualize import denormalize, image_grid, readable_examples


def _check_pixel_decoder(model) -> None:
    if getattr(model.config, "decoder_target", None) != "pixels":
        raise ValueError(
            "the alignment check decodes pixels: it needs a CAE pretrained with decoder_target='pixels' "
            f"(this one has decoder_target={getattr(model.config, 'decoder_target', None)!r})"
        )


@torch.no_grad()
def decode_encoder_outputs(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """The decoder applied to the encoder's outputs for all patches, the regressor removed.

    The encoder runs exactly as for the alignment target (`latent_targets`), but over ALL patches: patch embed with
    the fixed sin-cos positions, cls prepended, blocks, final LayerNorm, then the width projection when the decoder is
    narrower. Its patch tokens stand in for `latent_pred`, and the decoder gets them with the same position table that
    `forward` gathers `pos_masked` from (`model.positions`), here at all L positions in raster order.

    Returns (B, L, patch_size**2 * C) pixel predictions, in the per-patch standardised space when
    `config.norm_pix_loss` (undo that with each patch's own mean/std, `destandardize`), else in the processor's
    normalised pixel space. Runs in eval mode (no drop path) and restores the model's mode.
    """
    _check_pixel_decoder(model)
    was_training = model.training
    model.eval()
    try:
        encoder = model.vit
        pixel_values = pixel_values.to(encoder.cls_token.device)
        patch = model.config.patch_size
        grid = (pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch)
        tokens = encoder.patch_tokens(pixel_values)  # (B, L, D), positions added, nothing masked
        latent, _ = encoder.transform(encoder.prepend_cls(tokens))  # blocks + final LN
        latent = model.to_decoder_width(latent)[:, 1:]  # patch tokens, as `latent_targets` keeps them
        pos = model.positions(grid, latent.device, latent.dtype).expand(latent.shape[0], -1, -1)
        return model.decoder(latent, pos).float()
    finally:
        model.train(was_training)


def destandardize(predicted: torch.Tensor, pixel_values: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Undo norm-pix: scale each predicted patch by its target patch's std (unbiased, as the loss) and add its mean,
    as MAE's visualisation does. (B, L, K) predictions + (B, C, H, W) images -> (B, L, K) in the image's space.

    Note that this borrows each patch's mean and spread from the true image; `alignment_check` reports
    `patch_mean_mse` (a prediction of zero, i.e. flat patches at their true means) so that borrowed part can be told
    apart from what the decoder adds."""
    target = patchify(pixel_values.float(), patch_size)
    mean = target.mean(dim=-1, keepdim=True)
    std = (target.var(dim=-1, keepdim=True) + 1e-6) ** 0.5
    return predicted.float() * std + mean


@torch.no_grad()
def reconstruct_from_encoder(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) images decoded from the encoder's outputs, in the processor's normalised pixel space."""
    pixel_values = pixel_values.float().to(model.vit.cls_token.device)
    predicted = decode_encoder_outputs(model, pixel_values)
    patch = model.config.patch_size
    if model.config.norm_pix_loss:
        predicted = destandardize(predicted, pixel_values, patch)
    grid = (pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch)
    return unpatchify(predicted, patch, model.config.num_channels, grid)


@torch.no_grad()
def alignment_check(model, pixel_values: torch.Tensor) -> dict:
    """The paper's alignment check as numbers, all MSEs in the processor's normalised pixel space:

    decoder_mse: the decoder fed with the encoder's outputs (regressor removed), de-standardised, vs the images.
    mean_image_mse: the mean image of the batch given (the best constant image) vs the images.
    ratio: decoder_mse / mean_image_mse; below 1 means the encoder's outputs are decodable, i.e. they live in the
        space the regressor was trained to predict into.
    patch_mean_mse: each patch replaced by its own true mean (what de-standardising a zero prediction gives). With
        norm_pix_loss on, this borrowed information alone beats the mean image, so read decoder_mse against
        patch_mean_mse there; with norm_pix_loss off the mean-image comparison is the meaningful one.
    """
    pixel_values = pixel_values.float().to(model.vit.cls_token.device)
    reconstruction = reconstruct_from_encoder(model, pixel_values)
    decoder_mse = float((reconstruction - pixel_values).pow(2).mean())
    mean_image = pixel_values.mean(dim=0, keepdim=True)
    mean_image_mse = float((mean_image - pixel_values).pow(2).mean())
    patch = model.config.patch_size
    patches = patchify(pixel_values, patch)
    patch_mean_mse = float((patches - patches.mean(dim=-1, keepdim=True)).pow(2).mean())
    return {"decoder_mse": decoder_mse, "mean_image_mse": mean_image_mse,
            "ratio": decoder_mse / max(mean_image_mse, 1e-12), "patch_mean_mse": patch_mean_mse}


@torch.no_grad()
def alignment_picture(model, pixel_values: torch.Tensor, image_mean, image_std, mean_image: torch.Tensor | None = None):
    """PIL picture for the model card, one column per image, rows: original; decoded from the encoder's outputs with
    the regressor removed; the mean image (`mean_image` (C, H, W) or (1, C, H, W) in the normalised space, e.g. over
    the images the numbers were computed on; default the mean of `pixel_values`). `image_mean`/`image_std` are the
    processor's."""
    pixel_values = pixel_values.float().to(model.vit.cls_token.device)
    reconstruction = reconstruct_from_encoder(model, pixel_values).cpu()
    pixel_values = pixel_values.cpu()
    if mean_image is None:
        mean_image = pixel_values.mean(dim=0, keepdim=True)
    mean_image = mean_image.float().cpu().reshape(1, *pixel_values.shape[1:]).expand_as(pixel_values)
    rows = [denormalize(pixel_values, image_mean, image_std), denormalize(reconstruction, image_mean, image_std),
            denormalize(mean_image, image_mean, image_std)]
    return image_grid(rows, ["original", "enc->decoder", "mean image"])


def held_out_pixel_values(processor, num_images: int = 64, dataset_name=None, split: str = "test") -> torch.Tensor:
    """`num_images` images of the split (the embedded sample's test split by default) through `processor`, no
    augmentation and no mask."""
    from .data import SeededImageDataset, collate, load_image_dataset

    data = load_image_dataset(dataset_name, None, split)
    dataset = SeededImageDataset(data, processor)
    return collate(readable_examples(dataset, num_images))["pixel_values"]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description="CAE alignment check: decode the encoder's outputs, regressor removed.")
    p.add_argument("--model", required=True, help="a CAE pretraining folder (decoder_target=pixels)")
    p.add_argument("--output", help="where to save the picture (PNG); default MODEL/alignment.png with --add_to_card")
    p.add_argument("--add_to_card", action="store_true", help="add the picture and numbers to MODEL/README.md")
    p.add_argument("--dataset_name", default=None, help="default: the embedded Fashion-MNIST sample")
    p.add_argument("--split", default="test")
    p.add_argument("--num_images", type=int, default=64, help="images for the numbers")
    p.add_argument("--num_pictured", type=int, default=8, help="columns of the picture")
    args = p.parse_args(argv)

    from .modeling.image_processing_cae import MimCaeImageProcessor
    from .modeling.modeling_cae import MimCaeForPreTraining

    model = MimCaeForPreTraining.from_pretrained(args.model).eval()
    processor = MimCaeImageProcessor.from_pretrained(args.model)
    pixel_values = held_out_pixel_values(processor, args.num_images, args.dataset_name, args.split)
    result = alignment_check(model, pixel_values)
    output = args.output or (str(Path(args.model) / "alignment.png") if args.add_to_card else None)
    if output:
        alignment_picture(model, pixel_values[: args.num_pictured], processor.image_mean,
                          processor.image_std, mean_image=pixel_values.mean(dim=0)).save(output)
    if args.add_to_card:
        add_to_card(Path(args.model) / "README.md", Path(output), result, model.config, len(pixel_values), args.split)
    print(json.dumps(result, indent=2))
    return result


CARD_START, CARD_END = "<!-- cae-alignment-check -->", "<!-- /cae-alignment-check -->"


def add_to_card(card: Path, picture: Path, result: dict, config, num_images: int, split: str) -> None:
    """Append (or replace) the "Alignment check" section of a model card: the picture and the numbers."""
    try:
        picture_ref = picture.resolve().relative_to(card.parent.resolve()).as_posix()
    except ValueError:
        picture_ref = str(picture)
    space = "per-patch normalised, de-standardised with each true patch's mean/std" if config.norm_pix_loss else "raw"
    section = (
        f"{CARD_START}\n## Alignment check\n\n"
        "The regressor is removed and the decoder is fed the encoder's own outputs for all patches, at their "
        "positions. If the alignment loss did its job, the encoder's representations live in the space the regressor "
        "predicts into, so the decoder, which only ever saw regressor outputs, still turns them into images.\n\n"
        f"![alignment check]({picture_ref})\n\n"
        "Rows: original; decoded from the encoder's outputs (regressor removed); mean image.\n\n"
        f"| {num_images} `{split}` images, normalised pixel space | MSE |\n|---|---|\n"
        f"| decoder on encoder outputs ({space} pixel targets) | {result['decoder_mse']:.4f} |\n"
        f"| mean image | {result['mean_image_mse']:.4f} |\n"
        f"| ratio | {result['ratio']:.3f} |\n"
        f"| each patch at its own true mean | {result['patch_mean_mse']:.4f} |\n{CARD_END}\n"
    )
    text = card.read_text() if card.exists() else ""
    if CARD_START in text and CARD_END in text:
        before, rest = text.split(CARD_START, 1)
        text = before + section.rstrip("\n") + rest.split(CARD_END, 1)[1]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    card.write_text(text)


if __name__ == "__main__":
    main()
