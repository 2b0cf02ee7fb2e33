"""BEiT v1: parity with transformers' BeitForMaskedImageModeling, and the behaviour the BEiT paper and code pin down."""

import math
import random

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import BeitConfig, BeitForMaskedImageModeling
from transformers.initialization import no_init_weights

import hf_mim  # noqa: F401  (registers the Auto classes)
from hf_mim.convert import HF_BEIT, convert_state_dict, load_converted
from hf_mim.modeling.configuration_beit import MimBeitConfig
from hf_mim.modeling.image_processing_beit import MimBeitImageProcessor
from hf_mim.modeling.image_processing_beit import map_pixels as map_pixels_np
from hf_mim.modeling.image_processing_mim import MimImageProcessor
from hf_mim.modeling.masking import block_mask
from hf_mim.modeling.modeling_beit import MimBeitForImageClassification, MimBeitForPreTraining, MimBeitModel
from hf_mim.modeling.modeling_dvae import MimDvaeConfig, MimDvaeModel, map_pixels
from hf_mim.modeling.vit import relative_position_index
from hf_mim.training import parameter_groups
from helpers import (
    TINY_TOKENIZER,
    assert_beit_style_vit_b,
    assert_key_map_reads_saved_layout,
    assert_refused,
    assert_round_trip_to_transformers,
    assert_tables_copied_then_kept,
    block_masks,
    parity_batch,
    per_layer_classifier,
    randomize_parameters_,
    save_with_random_shared_table,
)
from model_tester import MimModelTests

TINY = dict(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, vocab_size=64, num_masking_patches=26, min_num_patches=4,
            tokenizer_config=TINY_TOKENIZER, codebook_image_size=64)
VIT_B = dict(image_size=224, patch_size=16, vocab_size=8192, tokenizer_config=dict(TINY_TOKENIZER, vocab_size=8192))


masks = block_masks


class TestBeitModels(MimModelTests):
    method = "beit"
    tiny = TINY
    compiles_to_one_graph = False

    def mask_inputs(self, config, batch_size, seed, generator):
        side = config.codebook_image_size
        return {"bool_masked_pos": masks(config, batch_size, seed),
                "codebook_pixel_values": map_pixels(torch.rand(batch_size, 3, side, side, generator=generator))}

    def check_pretraining_output(self, config, out):
        assert out.logits.shape == (int(out.bool_masked_pos.sum()), config.vocab_size)
        assert out.labels.shape == (int(out.bool_masked_pos.sum()),)
        assert out.accuracy.ndim == 0 and 0 <= out.accuracy.item() <= 1


# ----------------------------------------------------------------------------------------------- parity


def hf_pair(**sizes):
    """transformers' BEiT with random weights and ours holding the same ones (frozen tokenizer aside)."""
    config = MimBeitConfig(**sizes)
    hf_config = BeitConfig(
        image_size=config.image_size, patch_size=config.patch_size, hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size, vocab_size=config.vocab_size, use_mask_token=True,
        use_shared_relative_position_bias=True, use_relative_position_bias=False,
        use_absolute_position_embeddings=False, layer_scale_init_value=0.1, layer_norm_eps=1e-6, use_mean_pooling=True,
    )
    with no_init_weights():  # every weight is overwritten below; skipping the init keeps ViT-B fast on a CPU
        reference = BeitForMaskedImageModeling(hf_config).eval()
        ours = MimBeitForPreTraining(config).eval()
    randomize_parameters_(reference, near={"relative_position_bias_table": (0.0, 1.0), "lambda": (0.1, 0.05)})
    converted = convert_state_dict(reference.state_dict(), HF_BEIT, qkv_bias="qv")
    converted.update({k: v for k, v in ours.state_dict().items() if k.startswith("tokenizer.")})
    load_converted(ours, converted)
    return reference, ours


@pytest.mark.parametrize("sizes,batch", [(TINY, 3), (VIT_B, 1)], ids=["tiny", "vit-b-16"])
def test_parity_with_transformers_beit(sizes, batch):
    reference, ours = hf_pair(**sizes)
    config = ours.config
    pixel_values, mask, generator = parity_batch(config, batch, masks)
    token_ids = torch.randint(0, config.vocab_size, (batch, config.num_patches), generator=generator)
    with torch.no_grad():
        # transformers scores every patch and takes the labels of the masked ones, (N_masked,)
        expected = reference(pixel_values=pixel_values, bool_masked_pos=mask, labels=token_ids[mask])
        got = ours(pixel_values=pixel_values, bool_masked_pos=mask, labels=token_ids)
    torch.testing.assert_close(got.logits, expected.logits[mask], rtol=0, atol=1e-4)
    torch.testing.assert_close(got.loss, expected.loss, rtol=0, atol=1e-5)


def test_conversion_back_to_transformers_layout_round_trips():
    reference, ours = hf_pair(**TINY)
    encoder = {k: v for k, v in ours.state_dict().items() if not k.startswith("tokenizer.")}
    only_ours = assert_round_trip_to_transformers(reference, encoder, HF_BEIT, "qv")
    assert only_ours and all(k.endswith("k_proj.bias") for k in only_ours)  # BEiT has no key bias: ours are zeros
    assert all(value.abs().sum() == 0 for value in only_ours.values())


def test_hf_beit_key_map_reads_the_layout_save_pretrained_writes(tmp_path):
    reference, ours = hf_pair(**TINY)
    assert_key_map_reads_saved_layout(reference, ours, HF_BEIT, "qv", tmp_path,
                                      "beit.encoder.relative_position_bias.relative_position_bias_table")


# ----------------------------------------------------------------------------------------------- positions


def test_relative_position_index_layout_for_14x14():
    index = relative_position_index(14, 14)
    assert index.shape == (197, 197) and index.max() == 731
    assert index[0, 0] == 731  # cls <-> cls: the corner, written last
    assert (index[0, 1:] == 729).all() and (index[1:, 0] == 730).all()  # cls row first, then the cls column
    assert index[1, 1] == 13 * 27 + 13  # a patch to itself
    # patch (r=0, c=0) to patch (r=1, c=2): offsets (-1, -2) -> (12 * 27) + 11
    assert index[1, 1 + 14 + 2] == 12 * 27 + 11


def test_relative_position_index_survives_from_pretrained(tmp_path):
    """The index is a non-persistent buffer; from_pretrained builds on the meta device and must rebuild it."""
    config = MimBeitConfig(**TINY)
    MimBeitForPreTraining(config).save_pretrained(tmp_path)
    loaded = MimBeitForPreTraining.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.vit.rel_pos_bias.relative_position_index, relative_position_index(8, 8),
                               rtol=0, atol=0)
    per_layer = MimBeitForImageClassification.from_pretrained(tmp_path, relative_position_bias="per_layer")
    for block in per_layer.vit.blocks:
        assert torch.equal(block.attn.relative_position_index, relative_position_index(8, 8))


def pretrained_folder(tmp_path, seed=0):
    torch.manual_seed(seed)
    model = save_with_random_shared_table(MimBeitForPreTraining(MimBeitConfig(**TINY)), tmp_path)
    return model.vit.rel_pos_bias.relative_position_bias_table.detach().clone()


@pytest.mark.parametrize("route", ["kwarg", "finetune_overrides_config"])
def test_finetuning_copies_the_shared_table_into_every_block(tmp_path, route):
    shared = pretrained_folder(tmp_path)
    model = per_layer_classifier(tmp_path, MimBeitForImageClassification, route)
    assert type(model) is MimBeitForImageClassification
    assert_tables_copied_then_kept(model, shared, tmp_path / "finetuned")


def test_finetune_overrides_are_beits_recipe():
    assert MimBeitConfig.finetune_overrides == {"relative_position_bias": "per_layer", "drop_path_rate": 0.1,
                                                "pooling": "mean"}


# ----------------------------------------------------------------------------------------------- head and targets


def test_token_head_runs_only_at_masked_positions_with_per_image_counts():
    config = MimBeitConfig(**TINY)
    torch.manual_seed(0)
    model = MimBeitForPreTraining(config).eval()
    pixel_values = torch.randn(2, 3, 32, 32)
    mask = torch.zeros(2, 64, dtype=torch.bool)
    mask[0, [1, 5, 9]] = True
    mask[1, 10:17] = True
    labels = torch.randint(0, 64, (2, 64))
    out = model(pixel_values=pixel_values, bool_masked_pos=mask, labels=labels)
    assert out.logits.shape == (10, 64)
    hidden, _ = model.vit(pixel_values, bool_masked_pos=mask)
    torch.testing.assert_close(out.logits, model.lm_head(hidden[:, 1:][mask]))
    torch.testing.assert_close(out.labels, torch.cat([labels[0, [1, 5, 9]], labels[1, 10:17]]), rtol=0, atol=0)
    expected = torch.nn.functional.cross_entropy(out.logits, out.labels)
    torch.testing.assert_close(out.loss, expected)
    accuracy = (out.logits.argmax(-1) == out.labels).float().mean()
    torch.testing.assert_close(out.accuracy, accuracy)


def test_labels_from_codebook_pixels_are_the_tokenizers_argmax_at_masked_positions():
    config = MimBeitConfig(**TINY)
    torch.manual_seed(0)
    dvae = MimDvaeModel(MimDvaeConfig(**TINY_TOKENIZER, image_size=64)).eval()
    model = MimBeitForPreTraining(config).eval()
    model.load_tokenizer(dvae)
    for mine, theirs in zip(model.tokenizer.state_dict().values(), dvae.encoder.state_dict().values()):
        assert torch.equal(mine, theirs)
    inputs = TestBeitModels().pretraining_inputs(config, batch_size=2, seed=4)
    out = model(**inputs)
    ids = dvae.get_codebook_indices(inputs["codebook_pixel_values"]).flatten(1)
    mask = inputs["bool_masked_pos"]
    torch.testing.assert_close(out.labels, ids[mask], rtol=0, atol=0)
    same = model(pixel_values=inputs["pixel_values"], bool_masked_pos=mask, labels=ids)
    torch.testing.assert_close(out.loss, same.loss, rtol=0, atol=0)


def test_missing_targets_and_mask_are_clear_errors():
    config = MimBeitConfig(**TINY)
    model = MimBeitForPreTraining(config)
    inputs = TestBeitModels().pretraining_inputs(config)
    with pytest.raises(ValueError, match="codebook_pixel_values"):
        model(pixel_values=inputs["pixel_values"], bool_masked_pos=inputs["bool_masked_pos"])
    with pytest.raises(ValueError, match="bool_masked_pos"):
        model(pixel_values=inputs["pixel_values"], codebook_pixel_values=inputs["codebook_pixel_values"])
    with pytest.raises(ValueError, match="whole grid"):
        model(pixel_values=inputs["pixel_values"], bool_masked_pos=inputs["bool_masked_pos"],
              labels=torch.zeros(int(inputs["bool_masked_pos"].sum()), dtype=torch.long))
    with pytest.raises(ValueError, match="never the ImageNet-normalised"):
        model(pixel_values=inputs["pixel_values"], bool_masked_pos=inputs["bool_masked_pos"],
              codebook_pixel_values=inputs["codebook_pixel_values"] - 0.5)
    with pytest.raises(ValueError, match="one token per patch"):
        model(pixel_values=inputs["pixel_values"], bool_masked_pos=inputs["bool_masked_pos"],
              codebook_pixel_values=inputs["codebook_pixel_values"][..., :32, :32])


def test_a_tokenizer_of_another_vocabulary_is_refused():
    model = MimBeitForPreTraining(MimBeitConfig(**TINY))
    dvae = MimDvaeModel(MimDvaeConfig(**{**TINY_TOKENIZER, "vocab_size": 32}))
    with pytest.raises(ValueError, match="vocab_size=32"):
        model.load_tokenizer(dvae)


def test_a_tokenizer_of_another_size_replaces_the_module_and_the_config(tmp_path):
    model = MimBeitForPreTraining(MimBeitConfig(**TINY))
    dvae = MimDvaeModel(MimDvaeConfig(**{**TINY_TOKENIZER, "hidden_size": 12, "num_blocks_per_group": 2}))
    model.load_tokenizer(dvae)
    assert model.config.tokenizer_config["hidden_size"] == 12
    assert not any(p.requires_grad for p in model.tokenizer.parameters())
    model.save_pretrained(tmp_path)
    loaded = MimBeitForPreTraining.from_pretrained(tmp_path)
    for key, value in dvae.encoder.state_dict().items():
        assert torch.equal(loaded.tokenizer.state_dict()[key], value), key


def test_nothing_masked_gives_a_zero_loss_that_still_backpropagates():
    config = MimBeitConfig(**TINY)
    model = MimBeitForPreTraining(config).train()
    out = model(pixel_values=torch.randn(2, 3, 32, 32), bool_masked_pos=torch.zeros(2, 64, dtype=torch.bool),
                labels=torch.zeros(2, 64, dtype=torch.long))
    assert out.loss.item() == 0 and out.logits.shape == (0, 64)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------------------------- frozen tokenizer


def test_tokenizer_is_frozen_in_eval_mode_and_outside_the_optimizer(tmp_path):
    config = MimBeitConfig(**TINY)
    model = MimBeitForPreTraining(config)
    model.save_pretrained(tmp_path)
    for candidate in (model, MimBeitForPreTraining.from_pretrained(tmp_path)):
        candidate.train()
        assert candidate.vit.training and not candidate.tokenizer.training
        assert not any(p.requires_grad for p in candidate.tokenizer.parameters())
        grouped = {name for group in parameter_groups(candidate, 0.05) for name in group["names"]}
        assert grouped and not any(name.startswith("tokenizer.") for name in grouped)
    model(**TestBeitModels().pretraining_inputs(config)).loss.backward()
    assert all(p.grad is None for p in model.tokenizer.parameters())


# ----------------------------------------------------------------------------------------------- init


def test_beit_init_truncates_at_one_std_and_rescales_by_depth():
    config = MimBeitConfig(**{**TINY, "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 3})
    torch.manual_seed(0)
    model = MimBeitForPreTraining(config)
    for block in model.vit.blocks:
        bound = 0.02 / math.sqrt(2 * (block.layer_id + 1))
        for weight in (block.attn.proj.weight, block.mlp.fc2.weight):
            assert weight.abs().max() <= bound + 1e-9 and weight.abs().max() > 0.95 * bound
        fc1 = block.mlp.fc1.weight  # not rescaled
        assert 0.95 * 0.02 < fc1.abs().max() <= 0.02 + 1e-9
        assert torch.equal(block.gamma_1, torch.full_like(block.gamma_1, 0.1))
        assert block.attn.q_bias.abs().sum() == 0 and block.attn.v_bias.abs().sum() == 0
    # +-1 std truncation leaves a std of 0.02 * 0.5396
    assert abs(model.lm_head.weight.std().item() / 0.02 - 0.5396) < 0.02
    assert model.vit.mask_token.abs().max() <= 0.02 and model.vit.cls_token.abs().max() <= 0.02
    assert model.vit.rel_pos_bias.relative_position_bias_table.abs().sum() == 0


def test_depth_rescale_is_not_applied_again_when_loading(tmp_path):
    config = MimBeitConfig(**TINY)
    model = MimBeitForPreTraining(config)
    model.save_pretrained(tmp_path)
    for cls in (MimBeitForPreTraining, MimBeitModel, MimBeitForImageClassification):
        loaded = cls.from_pretrained(tmp_path)
        for mine, theirs in zip(model.vit.blocks, loaded.vit.blocks):
            assert torch.equal(mine.attn.proj.weight, theirs.attn.proj.weight)
            assert torch.equal(mine.mlp.fc2.weight, theirs.mlp.fc2.weight)


def test_classifier_head_starts_near_zero_and_has_no_mask_token():
    config = MimBeitConfig(**TINY, num_labels=10)
    model = MimBeitForImageClassification(config).train()
    assert model.head.weight.abs().max() < 1e-4 and model.head.bias.abs().sum() == 0
    assert 1e-5 < model.head.weight.std().item() < 3e-5
    assert "vit.mask_token" not in model.state_dict() and model.fc_norm is not None
    model(pixel_values=torch.randn(2, 3, 32, 32), labels=torch.tensor([1, 2])).loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)  # nothing idle under DDP


# ----------------------------------------------------------------------------------------------- config


def test_default_config_is_the_canonical_beit_b_16():
    config = MimBeitConfig()
    assert_beit_style_vit_b(config)
    assert config.vocab_size == 8192 and config.codebook_image_size == 112
    mask = (config.num_masking_patches, config.min_num_patches, config.max_num_patches, config.min_aspect)
    assert mask == (75, 16, None, 0.3)
    tokenizer = config.tokenizer_config_object()  # DALL-E's encoder
    assert (tokenizer.vocab_size, tokenizer.hidden_size, tokenizer.num_groups, tokenizer.num_blocks_per_group) == (
        8192, 256, 4, 2)


def test_vocab_and_image_size_overrides_revalidate_like_the_scripts_do():
    config = MimBeitConfig()
    config.update_from_string("vocab_size=1024")
    config = MimBeitConfig(**config.to_dict())
    assert config.tokenizer_config_object().vocab_size == 1024
    config.update_from_string("image_size=256")  # the derived tokenizer view follows: 16 x 8
    assert (config.codebook_image_size, MimBeitConfig(**config.to_dict()).grid_size) == (128, 16)
    with pytest.raises(ValueError, match="codebook_image_size=112 must be .* = 128"):
        config.update_from_string("codebook_image_size=112")
    assert config.codebook_image_size == 128  # a failed override changes nothing


@pytest.mark.parametrize("overrides,needle", [
    ({"num_masking_patches": 64}, "num_masking_patches"),
    ({"codebook_image_size": 32}, "codebook_image_size"),
    ({"tokenizer_config": {**TINY_TOKENIZER, "vocab_size": 32}}, "vocab_size"),
    ({"tokenizer_config": {**TINY_TOKENIZER, "n_hid": 8}}, "n_hid"),
    ({"position_embedding_type": "sincos_mae"}, "position_embedding_type"),
])
def test_impossible_configs_fail_naming_the_field(overrides, needle):
    assert_refused(MimBeitConfig, {**TINY, **overrides}, needle)


# ----------------------------------------------------------------------------------------------- processor


def tiny_processor():
    return MimBeitImageProcessor.for_model_config(MimBeitConfig(**TINY))


def test_processor_takes_its_sizes_from_the_config(tmp_path):
    processor = tiny_processor()
    assert (processor.patch_size, processor.codebook_image_size, processor.num_masking_patches,
            processor.min_num_patches) == (4, 64, 26, 4)
    assert processor.pretraining_kwargs() == {"return_bool_masked_pos": True, "return_codebook_pixels": True}
    processor.save_pretrained(tmp_path)
    loaded = MimBeitImageProcessor.from_pretrained(tmp_path)
    assert (loaded.codebook_image_size, loaded.num_masking_patches, loaded.size["height"]) == (64, 26, 32)


def test_processor_views_come_from_one_image():
    processor = tiny_processor()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 40, 3), dtype=np.uint8))
    plain = processor(image, return_tensors="np")
    assert set(plain) == {"pixel_values"}  # pipelines see only what the base processor gives
    base = MimImageProcessor(size={"height": 32, "width": 32})(image, return_tensors="np")
    np.testing.assert_array_equal(plain["pixel_values"], base["pixel_values"])
    out = processor([image, image], return_tensors="np", mask_seed=3, **processor.pretraining_kwargs())
    np.testing.assert_array_equal(out["pixel_values"][0], plain["pixel_values"][0])
    view = out["codebook_pixel_values"]
    assert view.shape == (2, 3, 64, 64) and view.dtype == np.float32
    expected = np.asarray(image.resize((64, 64), Image.Resampling.LANCZOS), dtype=np.float32).transpose(2, 0, 1) / 255
    np.testing.assert_allclose(view[0], 0.8 * expected + 0.1, rtol=0, atol=1e-6)
    assert view.min() >= 0.1 - 1e-6 and view.max() <= 0.9 + 1e-6
    assert out["bool_masked_pos"].shape == (2, 64) and out["bool_masked_pos"].dtype == bool
    np.testing.assert_allclose(map_pixels_np(np.linspace(0, 1, 5)), map_pixels(torch.linspace(0, 1, 5)).numpy(),
                               rtol=0, atol=1e-7)


def test_processor_masks_are_seeded_block_masks():
    processor = tiny_processor()
    image = Image.new("RGB", (32, 32))
    first = processor([image] * 4, mask_seed=7, return_bool_masked_pos=True)["bool_masked_pos"]
    again = processor([image] * 4, mask_seed=7, return_bool_masked_pos=True)["bool_masked_pos"]
    other = processor([image] * 4, mask_seed=8, return_bool_masked_pos=True)["bool_masked_pos"]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    rng = random.Random(7)
    expected = np.stack([block_mask(8, 8, 26, 4, rng=rng).reshape(-1) for _ in range(4)])
    np.testing.assert_array_equal(first, expected)
    assert (0 < first.sum(1)).all() and (first.sum(1) <= 26).all()


def test_processor_output_trains_the_model():
    config = MimBeitConfig(**TINY)
    processor = MimBeitImageProcessor.for_model_config(config)
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 48, 3), dtype=np.uint8)) for i in range(2)]
    batch = processor(images, return_tensors="pt", mask_seed=0, **processor.pretraining_kwargs())
    out = MimBeitForPreTraining(config)(**batch)
    assert torch.isfinite(out.loss) and out.logits.shape[0] == int(batch["bool_masked_pos"].sum())
