"""scripts/convert_checkpoint.py: official and transformers layouts load strictly; wrong files fail by name."""

import pytest
import torch
from transformers import AutoModel, ViTMAEConfig, ViTMAEForPreTraining

from helpers import load_script

convert = load_script("convert_checkpoint")


def official_mae_state_dict(width=32, depth=2, patch=4, grid=8, decoder=16, decoder_depth=1, finetuned=False):
    """Keys and shapes exactly as facebookresearch/mae names them, written out from the layout (not from our model)."""
    g = torch.Generator().manual_seed(0)
    t = lambda *shape: torch.randn(*shape, generator=g) * 0.02  # noqa: E731
    sd = {"cls_token": t(1, 1, width), "pos_embed": t(1, grid * grid + 1, width),
          "patch_embed.proj.weight": t(width, 3, patch, patch), "patch_embed.proj.bias": t(width)}

    def block(prefix, dim):
        return {f"{prefix}.norm1.weight": t(dim), f"{prefix}.norm1.bias": t(dim),
                f"{prefix}.attn.qkv.weight": t(3 * dim, dim), f"{prefix}.attn.qkv.bias": t(3 * dim),
                f"{prefix}.attn.proj.weight": t(dim, dim), f"{prefix}.attn.proj.bias": t(dim),
                f"{prefix}.norm2.weight": t(dim), f"{prefix}.norm2.bias": t(dim),
                f"{prefix}.mlp.fc1.weight": t(4 * dim, dim), f"{prefix}.mlp.fc1.bias": t(4 * dim),
                f"{prefix}.mlp.fc2.weight": t(dim, 4 * dim), f"{prefix}.mlp.fc2.bias": t(dim)}

    for i in range(depth):
        sd.update(block(f"blocks.{i}", width))
    if finetuned:
        sd.update({"fc_norm.weight": t(width), "fc_norm.bias": t(width), "head.weight": t(7, width), "head.bias": t(7)})
        return sd
    sd.update({"norm.weight": t(width), "norm.bias": t(width), "mask_token": t(1, 1, decoder),
               "decoder_pos_embed": t(1, grid * grid + 1, decoder), "decoder_embed.weight": t(decoder, width),
               "decoder_embed.bias": t(decoder), "decoder_norm.weight": t(decoder), "decoder_norm.bias": t(decoder),
               "decoder_pred.weight": t(patch * patch * 3, decoder), "decoder_pred.bias": t(patch * patch * 3)})
    for i in range(decoder_depth):
        sd.update(block(f"decoder_blocks.{i}", decoder))
    return sd


@pytest.mark.parametrize("sizes", [dict(), dict(width=768, depth=12, patch=16, grid=14, decoder=512, decoder_depth=8)],
                         ids=["tiny", "vit-b-16"])
def test_official_mae_pretraining_checkpoint_loads_strictly(tmp_path, sizes):
    sd = official_mae_state_dict(**sizes)
    path = tmp_path / "mae.pth"
    torch.save({"model": sd, "epoch": 799}, path)
    heads = [] if sizes else ["--num_attention_heads", "4"]
    summary = convert.main(["--from", "mae-official", "--checkpoint", str(path), "--output_dir", str(tmp_path / "out"), *heads])
    assert summary["keys"] == len(sd) and not summary["classifier"]
    model = AutoModel.from_pretrained(tmp_path / "out")
    assert torch.equal(model.vit.blocks[1].attn.qkv.weight, sd["blocks.1.attn.qkv.weight"])
    card = (tmp_path / "out" / "README.md").read_text()
    assert "converted from facebookresearch/mae" in card
    assert f"python scripts/convert_checkpoint.py --from mae-official --checkpoint {path}" in card  # the whole command


def test_official_mae_finetuned_checkpoint_becomes_a_classifier_at_another_resolution(tmp_path):
    path = tmp_path / "ft.pth"
    torch.save({"model": official_mae_state_dict(finetuned=True)}, path)
    summary = convert.main(["--from", "mae-official", "--checkpoint", str(path), "--output_dir", str(tmp_path / "o"),
                            "--num_attention_heads", "4", "--image_size", "48"])
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(tmp_path / "o")
    assert summary["classifier"] and model.config.num_labels == 7 and model.config.image_size == 48
    assert model(pixel_values=torch.randn(1, 3, 48, 48)).logits.shape == (1, 7)


def test_resizing_recomputes_frozen_sincos_tables_and_resamples_learned_ones(tmp_path):
    from transformers import AutoModelForImageClassification, AutoModelForPreTraining

    from hf_mim.modeling.vit import resize_position_table, sincos_position_table

    sd = official_mae_state_dict()  # width 32, decoder 16, grid 8
    sd["pos_embed"] = sincos_position_table(8, 8, 32).unsqueeze(0)
    sd["decoder_pos_embed"] = sincos_position_table(8, 8, 16).unsqueeze(0)
    torch.save({"model": sd}, tmp_path / "pt.pth")
    convert.main(["--from", "mae-official", "--checkpoint", str(tmp_path / "pt.pth"), "--output_dir", str(tmp_path / "pt"),
                  "--num_attention_heads", "4", "--image_size", "48"])
    model = AutoModelForPreTraining.from_pretrained(tmp_path / "pt")
    exact = sincos_position_table(12, 12, 32).unsqueeze(0)
    assert torch.equal(model.vit.pos_embed, exact)
    assert torch.equal(model.decoder.pos_embed, sincos_position_table(12, 12, 16).unsqueeze(0))
    assert (resize_position_table(sd["pos_embed"], (12, 12)) - exact).abs().max() > 1e-3  # the resample is not it

    learned = official_mae_state_dict(finetuned=True)
    torch.save({"model": learned}, tmp_path / "ft.pth")
    convert.main(["--from", "mae-official", "--checkpoint", str(tmp_path / "ft.pth"), "--output_dir", str(tmp_path / "ft"),
                  "--num_attention_heads", "4", "--image_size", "48"])
    classifier = AutoModelForImageClassification.from_pretrained(tmp_path / "ft")
    torch.testing.assert_close(classifier.vit.pos_embed, resize_position_table(learned["pos_embed"], (12, 12)))


def test_official_mae_encoder_only_checkpoint_becomes_the_encoder(tmp_path):
    """The published `mae_pretrain_vit_*.pth` files hold the encoder without the decoder."""
    sd = {k: v for k, v in official_mae_state_dict().items() if not k.startswith("decoder_") and k != "mask_token"}
    torch.save({"model": sd}, tmp_path / "encoder.pth")
    summary = convert.main(["--from", "mae-official", "--checkpoint", str(tmp_path / "encoder.pth"),
                            "--output_dir", str(tmp_path / "o"), "--num_attention_heads", "4"])
    assert summary["model_class"] == "MimMaeModel" and summary["dropped"] == []
    model = AutoModel.from_pretrained(tmp_path / "o")
    assert torch.equal(model.vit.norm.weight, sd["norm.weight"])


def test_transformers_vit_mae_folder_converts_with_equal_outputs(tmp_path):
    torch.manual_seed(0)
    config = ViTMAEConfig(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=64, decoder_hidden_size=16, decoder_num_hidden_layers=1,
                          decoder_num_attention_heads=2, decoder_intermediate_size=32, layer_norm_eps=1e-6)
    ViTMAEForPreTraining(config).save_pretrained(tmp_path / "hf")
    summary = convert.main(["--from", "hf-vit-mae", "--checkpoint", str(tmp_path / "hf"), "--output_dir", str(tmp_path / "o")])
    assert summary["max_abs_difference"] < 1e-5


def test_a_checkpoint_of_another_method_is_refused_by_key_name(tmp_path):
    sd = official_mae_state_dict()
    sd["lm_head.weight"] = torch.zeros(8192, 32)
    torch.save(sd, tmp_path / "beit.pth")
    with pytest.raises(KeyError, match="lm_head.weight"):
        convert.main(["--from", "mae-official", "--checkpoint", str(tmp_path / "beit.pth"), "--output_dir", str(tmp_path / "o"),
                      "--num_attention_heads", "4"])


def test_truncated_and_code_carrying_files_are_refused(tmp_path):
    path = tmp_path / "mae.pth"
    torch.save({"model": official_mae_state_dict()}, path)
    data = path.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        convert.main(["--from", "mae-official", "--checkpoint", str(tmp_path / "cut.pth"), "--output_dir", str(tmp_path / "o")])
    torch.save({"model": official_mae_state_dict(), "hook": Exploit()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="refuse to execute"):
        convert.main(["--from", "mae-official", "--checkpoint", str(tmp_path / "evil.pth"), "--output_dir", str(tmp_path / "o")])
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(FileNotFoundError):
        convert.main(["--from", "mae-official", "--checkpoint", str(tmp_path / "missing.pth"), "--output_dir", str(tmp_path / "o")])


class Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))
