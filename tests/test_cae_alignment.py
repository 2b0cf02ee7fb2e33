"""CAE's alignment check (issue 5): with the regressor removed, the pixel decoder fed with the ENCODER's outputs for
all patches reconstructs held-out images better than the mean image, for a CAE trained on the embedded sample, and an
untrained CAE of the same config does not.

The trained model predicts raw (processor-normalised) pixels, norm_pix_loss=False: with norm-pix targets the
reconstruction is de-standardised with each true patch's own mean and std, which alone beats the mean image, so
even an untrained CAE "passes" (measured: 0.96 vs 1.61) and the check would tell nothing. In raw pixel space the
mean image is the best prediction that ignores the image, so beating it means the decoder reads the encoder's outputs.
"""

import pytest
import torch
from PIL import Image

from helpers import TINY_OVERRIDES, load_script
from hf_mim.cae_alignment import alignment_check, alignment_picture, decode_encoder_outputs, held_out_pixel_values
from hf_mim.modeling.image_processing_cae import MimCaeImageProcessor
from hf_mim.modeling.modeling_cae import MimCaeForPreTraining

OVERRIDES = TINY_OVERRIDES["cae"] + ",decoder_target=pixels,norm_pix_loss=False"
# ~20 s on one busy CPU core; trained ratio ~0.45, untrained ~2.1
TRAIN_ARGS = ["--per_device_train_batch_size", "32", "--max_train_steps", "200", "--base_learning_rate", "3e-3",
              "--logging_steps", "50", "--report_to", "none"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from accelerate.state import AcceleratorState, GradientState

    out = tmp_path_factory.mktemp("cae_alignment") / "cae-pixels"
    pretrain = load_script("pretrain")
    summary = pretrain.main(["--method", "cae", "--config_overrides", OVERRIDES, "--output_dir", str(out),
                             *TRAIN_ARGS])
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    assert summary["steps"] == 200
    model = MimCaeForPreTraining.from_pretrained(out).eval()
    processor = MimCaeImageProcessor.from_pretrained(out)
    return model, processor, out


@pytest.fixture(scope="module")
def test_images(trained):
    _, processor, _ = trained
    pixel_values = held_out_pixel_values(processor, num_images=64)  # the embedded sample's TEST split, no augmentation
    assert pixel_values.shape[0] == 64
    return pixel_values


def untrained_like(model):
    torch.manual_seed(0)
    return MimCaeForPreTraining(model.config).eval()


def test_trained_decoder_beats_the_mean_image_from_encoder_outputs(trained, test_images):
    model, *_ = trained
    result = alignment_check(model, test_images)
    assert result["decoder_mse"] < result["mean_image_mse"], result
    assert result["ratio"] == pytest.approx(result["decoder_mse"] / result["mean_image_mse"])


def test_an_untrained_cae_does_not_pass(trained, test_images):
    model, *_ = trained
    result = alignment_check(untrained_like(model), test_images)
    assert result["decoder_mse"] > result["mean_image_mse"], result


def test_decode_encoder_outputs_shape_mode_and_positions(trained, test_images):
    model, *_ = trained
    config = model.config
    x = test_images[:4]
    model.train()
    predicted = decode_encoder_outputs(model, x)
    assert model.training  # mode restored
    model.eval()
    num_patches = (config.image_size // config.patch_size) ** 2
    assert predicted.shape == (4, num_patches, config.patch_size**2 * config.num_channels)
    assert torch.isfinite(predicted).all()
    # per image, independent of the rest of the batch, and deterministic (eval mode, no drop path)
    assert torch.allclose(decode_encoder_outputs(model, x[:1]), predicted[:1], atol=1e-5)
    # the decoder sees the positions: the same token at every position decodes differently
    latent = torch.zeros(1, num_patches, config.decoder_hidden_size)
    pos = model.positions((config.grid_size, config.grid_size), latent.device, latent.dtype)
    with torch.no_grad():
        out = model.decoder(latent, pos)
    assert not torch.allclose(out[0, 0], out[0, -1])


def test_picture_has_three_rows_one_column_per_image(trained, test_images):
    model, processor, _ = trained
    picture = alignment_picture(model, test_images[:5], processor.image_mean, processor.image_std)
    assert isinstance(picture, Image.Image)
    cell = model.config.image_size * 4 + 2  # image_grid's scale 4 and gap 2
    assert picture.height == 3 * cell
    assert picture.width == 90 + 5 * cell


def test_token_models_are_refused():
    from types import SimpleNamespace

    with pytest.raises(ValueError, match="decoder_target='pixels'"):
        model = SimpleNamespace(config=SimpleNamespace(decoder_target="tokens"))
        decode_encoder_outputs(model, torch.zeros(1, 3, 32, 32))


def test_cli_writes_the_picture_into_the_card_once(trained):
    from hf_mim.cae_alignment import CARD_START, main

    model, _, out = trained
    first = main(["--model", str(out), "--add_to_card", "--num_images", "16"])
    main(["--model", str(out), "--add_to_card", "--num_images", "16"])
    card = (out / "README.md").read_text()
    assert (out / "alignment.png").exists() and "](alignment.png)" in card
    assert card.count(CARD_START) == 1 and "Command that produced this model" in card  # the rest of the card kept
    assert f"{first['decoder_mse']:.4f}" in card
    assert Image.open(out / "alignment.png").height == 3 * (model.config.image_size * 4 + 2)
