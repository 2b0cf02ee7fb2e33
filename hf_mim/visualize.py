"""Pictures for the model cards: a model's `picture_view` drawn by its kind (pixels, HOG glyphs, tokenizer
decodings) in rows under the masked input, correctly de-normalised."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw


def denormalize(pixel_values: torch.Tensor, mean, std) -> torch.Tensor:
    """Undo the processor's normalisation: (B, C, H, W) -> values in [0, 1]."""
    mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (pixel_values.float().cpu() * std + mean).clamp(0, 1)


def mask_to_pixels(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, L) patch mask, True = masked, on a grid of the image's aspect -> (B, 1, H, W) pixel mask."""
    rows = round(math.sqrt(mask.shape[1] * height / width))
    grid = mask.float().reshape(mask.shape[0], 1, rows, mask.shape[1] // rows)
    return grid.repeat_interleave(height // rows, dim=2).repeat_interleave(width // grid.shape[-1], dim=3).cpu()


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


def readable_examples(dataset, num_images: int) -> list[dict]:
    """The first `num_images` samples of `dataset` that decoded (skipped files left out)."""
    examples = []
    for index in range(len(dataset)):
        example = dataset[index]
        if "skipped" not in example:
            examples.append(example)
        if len(examples) == num_images:
            break
    return examples


@torch.no_grad()
def pretraining_picture(model, dataset, processor, captions: dict[str, str], num_images: int = 8):
    """(picture, caption) for the model card of a pretraining run, or None when the model has nothing to show.

    Runs the model in eval mode on the first `num_images` readable training samples with their pretraining masks
    and draws the model's `picture_view` by its kind; `captions[kind]` says what the rows show (the method's
    entry), and the loss on these images is added to it."""
    from .data import collate

    examples = readable_examples(dataset, num_images)
    if not examples:
        return None
    batch = collate(examples)
    batch.pop("num_skipped")
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    was_training = model.training
    model.eval()
    outputs = model(**batch)
    view = model.picture_view(batch, outputs)
    model.train(was_training)
    if view is None:
        return None
    shown = batch["pixel_values"] if view.frames is None else view.frames  # a video model shows chosen frames
    rows, labels = RENDERERS[view.kind](model, view, shown.float().cpu(), processor)
    shown_what = "Training images" if view.frames is None else "Columns: the first frame of every tubelet, clip by clip"
    return image_grid(rows, labels), f"{captions[view.kind]} {shown_what}, loss {float(outputs.loss):.4f}."


def masked_input(view, pixel_values: torch.Tensor, processor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input with the masked patches grey, pixel mask, input), the two images in [0, 1]."""
    original = denormalize(pixel_values, processor.image_mean, processor.image_std)
    pixel_mask = mask_to_pixels(view.bool_masked_pos, *pixel_values.shape[-2:])
    return original * (1 - pixel_mask) + 0.5 * pixel_mask, pixel_mask, original


def pixel_rows(model, view, pixel_values, processor):
    """Prediction in the input's normalised pixel space: masked input, prediction, prediction with the visible
    patches pasted back, original."""
    masked, pixel_mask, original = masked_input(view, pixel_values, processor)
    predicted = denormalize(view.predicted.cpu(), processor.image_mean, processor.image_std)
    pasted = original * (1 - pixel_mask) + predicted * pixel_mask
    return [masked, predicted, pasted, original], ["masked", "predicted", "pred+visible", "original"]


def hog_rows(model, view, pixel_values, processor):
    """HOG vectors per patch: masked input, then glyphs of the targets and of the predictions per cell."""
    from .hog_glyphs import render_hog_glyphs

    height, width = pixel_values.shape[-2:]

    def glyph_row(vectors: torch.Tensor) -> torch.Tensor:
        histograms = model.cell_histograms(vectors.float().cpu(), (height, width))
        tiles = [np.asarray(render_hog_glyphs(h).resize((width, height), Image.Resampling.BILINEAR)) / 255.0
                 for h in histograms]
        return torch.tensor(np.stack(tiles), dtype=torch.float32)[:, None].repeat(1, 3, 1, 1)

    masked = masked_input(view, pixel_values, processor)[0]
    return [masked, glyph_row(view.target), glyph_row(view.predicted)], ["masked", "HOG target", "HOG predicted"]


def token_rows(model, view, pixel_values, processor):
    """Tokenizer decodings in [0, 1]: masked input, predicted tokens at the masked patches, all true tokens."""
    masked = masked_input(view, pixel_values, processor)[0]
    return ([masked, view.predicted.float().cpu().clamp(0, 1), view.target.float().cpu().clamp(0, 1)],
            ["masked", "predicted", "true tokens"])


RENDERERS = {"pixels": pixel_rows, "hog": hog_rows, "tokens": token_rows}
