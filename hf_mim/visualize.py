"""Pictures for the model cards: rows of masked input / prediction / original, correctly de-normalised."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw


def denormalize(pixel_values: torch.Tensor, mean, std) -> torch.Tensor:
    """Undo the processor's normalisation: (B, C, H, W) -> values in [0, 1]."""
    mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (pixel_values.float().cpu() * std + mean).clamp(0, 1)


def mask_to_pixels(mask: torch.Tensor, patch_size: int, height: int, width: int) -> torch.Tensor:
    """(B, L) patch mask, 1 = masked -> (B, 1, H, W) pixel mask."""
    grid = mask.float().reshape(mask.shape[0], 1, height // patch_size, width // patch_size)
    return grid.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3).cpu()


def image_grid(rows: list[torch.Tensor], labels: list[str], scale: int = 4, gap: int = 2) -> Image.Image:
    """Stack rows of images in [0, 1] ((B, 3, H, W) each) into one picture with a label per row."""
    batch, _, height, width = rows[0].shape
    label_width = 90
    cell_h, cell_w = height * scale, width * scale
    canvas = Image.new("RGB", (label_width + batch * (cell_w + gap), len(rows) * (cell_h + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (row, label) in enumerate(zip(rows, labels)):
        y = r * (cell_h + gap)
        draw.text((4, y + cell_h // 2 - 5), label, fill="black")
        for b in range(batch):
            array = (row[b].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            tile = Image.fromarray(array).resize((cell_w, cell_h), Image.Resampling.NEAREST)
            canvas.paste(tile, (label_width + b * (cell_w + gap), y))
    return canvas


def reconstruction_picture(original: torch.Tensor, predicted: torch.Tensor, pixel_mask: torch.Tensor,
                           mean, std) -> Image.Image:
    """Rows: masked input (masked patches grey), prediction, prediction with visible patches pasted, original.
    `original`/`predicted` are in the processor's normalised space; `pixel_mask` (B, 1, H, W), 1 = masked."""
    original01 = denormalize(original, mean, std)
    predicted01 = denormalize(predicted, mean, std)
    masked = original01 * (1 - pixel_mask) + 0.5 * pixel_mask
    pasted = original01 * (1 - pixel_mask) + predicted01 * pixel_mask
    return image_grid([masked, predicted01, pasted, original01],
                      ["masked", "predicted", "pred+visible", "original"])


@torch.no_grad()
def pretraining_picture(model, dataset, processor, num_images: int = 8, seed: int = 0):
    """(picture, caption) for the model card of a pretraining run, or None when the method has no pixel view.

    Uses the first `num_images` readable training samples with their pretraining masks; the model runs in eval
    mode. MAE de-standardises its norm-pix prediction per patch; SimMIM-style outputs carry `reconstruction`.
    """
    from .data import collate

    examples = []
    for index in range(len(dataset)):
        example = dataset[index]
        if "skipped" not in example:
            examples.append(example)
        if len(examples) == num_images:
            break
    if not examples:
        return None
    batch = collate(examples)
    batch.pop("num_skipped")
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    was_training = model.training
    model.eval()
    out = model(**batch)
    model.train(was_training)
    pixel_values = batch["pixel_values"]
    height, width = pixel_values.shape[-2:]
    patch = model.config.patch_size
    mean, std = processor.image_mean, processor.image_std
    if hasattr(model, "cell_histograms"):  # MaskFeat: HOG glyphs, target vs predicted
        picture = hog_picture(model, pixel_values, out, mean, std)
        return picture, (f"Rows: input with masked patches grey; HOG target glyphs; predicted HOG glyphs (meaningful at "
                         f"the masked patches). Training images, loss {float(out.loss):.4f}.")
    if hasattr(model, "reconstruct_pixels"):
        predicted, mask = model.reconstruct_pixels(batch, out)
    elif hasattr(model, "reconstruct"):  # MAE
        predicted, mask = model.reconstruct(pixel_values, out.logits), out.mask
    else:
        return None
    picture = reconstruction_picture(pixel_values.cpu(), predicted.cpu(), mask_to_pixels(mask, patch, height, width),
                                     mean, std)
    caption = (f"Rows: input with masked patches grey; prediction; prediction with the visible patches pasted back; "
               f"original. Training images, loss {float(out.loss):.4f}.")
    return picture, caption


def hog_picture(model, pixel_values: torch.Tensor, out, mean, std) -> Image.Image:
    """MaskFeat's view: the masked input, then glyphs of the HOG targets and of the predictions per cell."""
    from .hog_glyphs import render_hog_glyphs

    height, width = pixel_values.shape[-2:]
    size = (height, width)

    def glyph_row(vectors: torch.Tensor) -> torch.Tensor:
        histograms = model.cell_histograms(vectors.float().cpu(), size)
        tiles = [np.asarray(render_hog_glyphs(h).resize((width, height), Image.Resampling.BILINEAR)) / 255.0
                 for h in histograms]
        return torch.tensor(np.stack(tiles), dtype=torch.float32)[:, None].repeat(1, 3, 1, 1)

    original = denormalize(pixel_values, mean, std)
    pixel_mask = mask_to_pixels(out.bool_masked_pos, model.config.patch_size, height, width)
    masked = original * (1 - pixel_mask) + 0.5 * pixel_mask
    return image_grid([masked, glyph_row(out.hog_targets), glyph_row(out.logits)],
                      ["masked", "HOG target", "HOG predicted"])
