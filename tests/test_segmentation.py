"""UperNet on an hf-mim backbone: built from a pretraining folder, saved, reloaded, run by the pipeline."""

import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForSemanticSegmentation, pipeline

from hf_mim.backbones import register_backbones, segmentation_image_processor, upernet_from_pretrained_encoder
from hf_mim.methods import METHODS

register_backbones()

TINY_MAE = dict(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                intermediate_size=64, decoder_hidden_size=16, decoder_num_hidden_layers=1,
                decoder_num_attention_heads=2, decoder_intermediate_size=32)
LABELS = {0: "background", 1: "shirt", 2: "shoe"}


def test_upernet_round_trip_and_pipeline(tmp_path):
    torch.manual_seed(0)
    pretrained = METHODS["mae"].pretraining_class(METHODS["mae"].config_class(**TINY_MAE))
    pretrained.save_pretrained(tmp_path / "pretrained")
    model = upernet_from_pretrained_encoder(tmp_path / "pretrained", LABELS, hidden_size=16, auxiliary_channels=8)
    model.eval()
    torch.testing.assert_close(model.backbone.vit.blocks[2].mlp.fc1.weight, pretrained.vit.blocks[2].mlp.fc1.weight)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.full((2, 32, 32), 255)
    labels[:, :16] = 1
    with torch.no_grad():
        out = model(pixels, labels=labels)
    assert tuple(out.logits.shape) == (2, 3, 32, 32) and torch.isfinite(out.loss)
    model.save_pretrained(tmp_path / "seg")
    segmentation_image_processor(32, [0.5] * 3, [0.25] * 3).save_pretrained(tmp_path / "seg")
    reloaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path / "seg").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixels).logits, out.logits, rtol=0, atol=0)
    segmenter = pipeline("image-segmentation", model=str(tmp_path / "seg"))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    results = segmenter(image)
    assert results and all(r["label"] in LABELS.values() and r["mask"].size == (50, 40) for r in results)
