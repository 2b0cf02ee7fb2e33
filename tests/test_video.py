"""MaskFeat on video: config checks, shapes, per-frame HOG targets, cube masks, save/load, remote code, video data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from scipy import ndimage

from hf_mim.data import collate
from hf_mim.modeling.configuration_maskfeat_video import MimMaskFeatVideoConfig
from hf_mim.modeling.cube_masking import CubeMaskGenerator, cube_mask
from hf_mim.modeling.hog import HOGTarget
from hf_mim.modeling.modeling_maskfeat_video import (
    MimMaskFeatVideoForPreTraining,
    MimMaskFeatVideoForVideoClassification,
    MimMaskFeatVideoModel,
)
from hf_mim.modeling.video_processing_maskfeat import MimMaskFeatVideoProcessor, sample_frame_indices

TINY = dict(image_size=32, patch_size=8, hog_cell_size=4, num_frames=4, tubelet_size=2, hidden_size=32,
            num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, min_num_patches=2)


def tiny_config(**overrides) -> MimMaskFeatVideoConfig:
    return MimMaskFeatVideoConfig(**{**TINY, **overrides})


def clip_batch(batch=2, seed=0) -> torch.Tensor:
    return torch.randn(batch, 4, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def masks(config, batch=2, seed=0) -> torch.Tensor:
    generator = CubeMaskGenerator.from_config(config, seed=seed)
    return torch.from_numpy(np.stack([generator().reshape(-1) for _ in range(batch)]))


def build(cls, config):
    torch.manual_seed(0)
    return cls(config).eval()


# ----------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize("overrides, message", [
    ({"num_frames": 5}, "num_frames=5 must be a positive multiple of tubelet_size=2"),
    ({"image_size": 30}, "image_size=30 must be a positive multiple of patch_size=8"),
    ({"hog_cell_size": 3}, "patch_size=8 must be a positive multiple of hog_cell_size=3"),
    ({"position_embedding_type": "sincos_mae"}, "position_embedding_type='sincos_mae' is not supported"),
    ({"relative_position_bias": "shared"}, "relative_position_bias='shared' is not supported"),
    ({"mask_ratio": 1.0}, r"mask_ratio must be a number in \(0, 1\)"),
    ({"max_cube_frames": 3}, r"max_cube_frames \(3\) <= temporal_size \(2"),
    ({"min_num_patches": 17}, r"min_num_patches must be an integer in \[1, 16\]"),
    ({"use_mask_token": False}, "use_mask_token must be True"),
])
def test_config_names_the_bad_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_config_sizes():
    config = tiny_config()
    assert (config.temporal_size, config.num_patches, config.num_masking_patches) == (2, 32, 13)
    assert (config.frame_target_dim, config.target_dim) == (3 * 9 * 4, 2 * 3 * 9 * 4)
    default = MimMaskFeatVideoConfig()
    assert (default.num_patches, default.num_masking_patches, default.target_dim) == (1568, 627, 216)


# ----------------------------------------------------------------------------------------------- models


def test_shapes_of_the_three_models():
    config = tiny_config(num_labels=3)
    pixel_values, mask = clip_batch(), masks(config)
    features = build(MimMaskFeatVideoModel, config)(pixel_values)
    assert features.last_hidden_state.shape == (2, 33, 32) and features.pooler_output.shape == (2, 32)
    out = build(MimMaskFeatVideoForPreTraining, config)(pixel_values, bool_masked_pos=mask)
    assert out.logits.shape == out.hog_targets.shape == (2, 32, 216)
    assert out.bool_masked_pos.dtype == torch.bool and out.bool_masked_pos.sum().item() == 26
    expected = ((out.logits - out.hog_targets) ** 2).mean(-1)[mask].mean()
    torch.testing.assert_close(out.loss, expected)
    classifier = build(MimMaskFeatVideoForVideoClassification, config)
    assert classifier(pixel_values, labels=torch.tensor([0, 2])).logits.shape == (2, 3)
    assert classifier.vit.mask_token is None and classifier.vit.norm is None


def test_encoder_surface_names_the_position_tables_for_decay_and_layer_ids():
    from hf_mim.modeling.mim_base import MimPreTrainedModel
    from hf_mim.training import parameter_groups

    model = build(MimMaskFeatVideoForVideoClassification, tiny_config(num_labels=3))
    assert isinstance(model, MimPreTrainedModel) and model.input_modalities == ("video",)
    encoder = model.encoder
    tables = [encoder.pos_embed_spatial, encoder.pos_embed_temporal, encoder.pos_embed_class, encoder.cls_token]
    assert [id(p) for p in model.no_weight_decay_parameters()] == [id(p) for p in tables]
    ids = model.layer_ids()
    assert {ids[id(p)] for p in tables} | {ids[id(encoder.patch_embed.proj.weight)]} == {0}
    assert ids[id(encoder.blocks[0].attn.qkv.weight)] == 1 and ids[id(model.head.weight)] == 2
    groups = parameter_groups(model, weight_decay=0.05, layer_decay=0.5)
    no_decay = {name for group in groups if group["weight_decay"] == 0.0 for name in group["names"]}
    assert {"vit.pos_embed_spatial", "vit.pos_embed_temporal", "vit.cls_token"} <= no_decay
    assert "vit.patch_embed.proj.weight" not in no_decay
    features = build(MimMaskFeatVideoModel, tiny_config())
    assert features.encoder_tokens(clip_batch()).shape == (2, 33, 32)


def test_inputs_of_the_wrong_layout_fail_with_the_fix():
    model = build(MimMaskFeatVideoModel, tiny_config())
    with pytest.raises(ValueError, match=r"pixel_values must be \(batch, frames, 3, height, width\)"):
        model(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="doesn't match the model"):
        model(torch.randn(1, 8, 3, 32, 32))
    assert model(torch.randn(1, 8, 3, 32, 32), interpolate_pos_encoding=True).last_hidden_state.shape == (1, 65, 32)
    pretraining = build(MimMaskFeatVideoForPreTraining, tiny_config())
    with pytest.raises(ValueError, match="return_bool_masked_pos=True"):
        pretraining(clip_batch())


def test_video_target_is_the_image_hog_frame_by_frame():
    config = tiny_config(num_frames=6)
    model = build(MimMaskFeatVideoForPreTraining, config)
    pixel_values = torch.randn(2, 6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    targets = model(pixel_values, bool_masked_pos=masks(config)).hog_targets
    image_hog = HOGTarget(nbins=9, cell_size=4, patch_size=8)
    per_patch = config.grid_size**2
    for frame in range(6):
        expected = image_hog(pixel_values[:, frame])  # (B, 16, 108)
        tubelet, offset = divmod(frame, config.tubelet_size)
        got = targets[:, tubelet * per_patch:(tubelet + 1) * per_patch, offset * 108:(offset + 1) * 108]
        assert torch.equal(got, expected), frame


def test_gradients_reach_encoder_and_head_not_the_hog():
    config = tiny_config()
    model = build(MimMaskFeatVideoForPreTraining, config).train()
    model(clip_batch(), bool_masked_pos=masks(config)).loss.backward()
    assert model.vit.patch_embed.proj.weight.grad.abs().sum() > 0 and model.pred_head.weight.grad.abs().sum() > 0
    assert model.vit.pos_embed_temporal.grad.abs().sum() > 0 and model.vit.mask_token.grad.abs().sum() > 0
    assert not any(key.startswith("hog.") for key in model.state_dict())


def test_picture_view_shows_the_first_frame_of_each_tubelet():
    config = tiny_config()
    model = build(MimMaskFeatVideoForPreTraining, config)
    pixel_values, mask = clip_batch(), masks(config)
    out = model(pixel_values, bool_masked_pos=mask)
    view = model.picture_view({"pixel_values": pixel_values}, out)
    assert view.kind == "hog"
    assert view.predicted.shape == view.target.shape == (4, 16, 108) and view.bool_masked_pos.shape == (4, 16)
    torch.testing.assert_close(view.target[1], HOGTarget(cell_size=4, patch_size=8)(pixel_values[0, 2:3])[0])
    assert torch.equal(view.bool_masked_pos[1], mask[0, 16:]) and torch.equal(view.frames[1], pixel_values[0, 2])
    assert model.cell_histograms(view.target, (32, 32)).shape == (4, 3, 9, 8, 8)
    assert model.after_optimizer_step() is None


def test_save_load_and_weights_move_between_classes(tmp_path):
    config = tiny_config(num_labels=3)
    model = build(MimMaskFeatVideoForPreTraining, config)
    pixel_values, mask = clip_batch(), masks(config)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    reloaded = MimMaskFeatVideoForPreTraining.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(reloaded(pixel_values, bool_masked_pos=mask).loss,
                               model(pixel_values, bool_masked_pos=mask).loss, rtol=0, atol=0)
    features = MimMaskFeatVideoModel.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(features(pixel_values, bool_masked_pos=mask).last_hidden_state,
                               model.vit(pixel_values, bool_masked_pos=mask)[0], rtol=0, atol=0)
    classifier, info = MimMaskFeatVideoForVideoClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert torch.equal(classifier.vit.pos_embed_spatial, model.vit.pos_embed_spatial)


def test_remote_code_and_pipeline_load_without_hf_mim(tmp_path):
    av = pytest.importorskip("av")  # noqa: F841
    from hf_mim.video_data import encode_video

    labels = ["coat", "bag", "shoe"]
    config = tiny_config(num_labels=3, id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    model = build(MimMaskFeatVideoForVideoClassification, config)
    model.save_pretrained(tmp_path)
    MimMaskFeatVideoProcessor.for_model_config(config, sample_rate=1).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    entries = {"AutoConfig", "AutoModel", "AutoModelForVideoClassification", "AutoImageProcessor"}
    assert entries <= set(saved["auto_map"])
    pixel_values = clip_batch()
    torch.save(pixel_values, tmp_path / "inputs.pt")
    expected = model(pixel_values=pixel_values).logits
    frames = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    encode_video(tmp_path / "clip.mp4", frames)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["hf_mim"] = None  # make `import hf_mim` fail in this process
        import torch
        from transformers import AutoImageProcessor, AutoModel, AutoModelForVideoClassification, pipeline
        folder = {str(tmp_path)!r}
        model = AutoModelForVideoClassification.from_pretrained(folder, trust_remote_code=True).eval()
        features = AutoModel.from_pretrained(folder, trust_remote_code=True)
        processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
        assert not type(model).__module__.startswith("hf_mim"), type(model).__module__
        torch.save(model(pixel_values=torch.load(folder + "/inputs.pt")).logits, folder + "/remote_logits.pt")
        hidden = features(pixel_values=torch.zeros(1, 4, 3, 32, 32)).last_hidden_state
        classify = pipeline("video-classification", model=folder, trust_remote_code=True)
        result = classify(folder + "/clip.mp4", top_k=3)
        print(type(model).__name__, type(features).__name__, type(processor).__name__, tuple(hidden.shape))
        print(sorted(r["label"] for r in result))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0] == ("MimMaskFeatVideoForVideoClassification MimMaskFeatVideoModel MimMaskFeatVideoProcessor "
                        "(1, 33, 32)")
    assert lines[1] == "['bag', 'coat', 'shoe']"
    torch.testing.assert_close(torch.load(tmp_path / "remote_logits.pt"), expected, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------- cube masks


def test_cube_masks_hit_the_count_exactly_and_are_seedable():
    config = MimMaskFeatVideoConfig()  # 8 x 14 x 14 tokens, 40%
    generator = CubeMaskGenerator.from_config(config, seed=3)
    drawn = [generator() for _ in range(20)]
    assert all(mask.shape == (8, 14, 14) and mask.sum() == 627 for mask in drawn)
    again = CubeMaskGenerator.from_config(config, seed=3)
    assert all(np.array_equal(mask, again()) for mask in drawn)
    assert not np.array_equal(drawn[0], drawn[1])


def test_cube_masks_are_contiguous_in_space_and_time():
    """Cubes give few connected pieces and masked tokens whose temporal neighbour is masked too; a uniform random
    mask of the same count (the contrast) gives many pieces and ~40% temporal neighbours."""
    rng = np.random.default_rng(0)
    cube_pieces, cube_time, random_pieces, random_time = [], [], [], []
    for _ in range(20):
        cube = cube_mask(8, 14, 14, 627, min_num_patches=9, rng=rng)
        uniform = np.zeros(8 * 14 * 14, dtype=bool)
        uniform[rng.permutation(uniform.size)[:627]] = True
        uniform = uniform.reshape(8, 14, 14)
        for mask, pieces, time in ((cube, cube_pieces, cube_time), (uniform, random_pieces, random_time)):
            pieces.append(ndimage.label(mask)[1])
            time.append((mask[1:] & mask[:-1]).sum() / mask[1:].sum())
    assert np.mean(cube_pieces) < 10 < np.mean(random_pieces)
    assert np.mean(cube_time) > 0.8 and abs(np.mean(random_time) - 0.4) < 0.05


def test_cube_mask_fills_the_last_tokens_next_to_the_mask():
    # min 4 x 4 faces on a 4 x 4 grid: cubes only cover whole frames, so 20 = 16 + 4 needs the fill
    mask = cube_mask(3, 4, 4, 20, min_num_patches=16, rng=np.random.default_rng(0))
    assert mask.sum() == 20 and ndimage.label(mask)[1] == 1


def test_cube_mask_rejects_impossible_counts():
    with pytest.raises(ValueError, match=r"num_masking_patches must be in \[1, 31\]"):
        cube_mask(2, 4, 4, 32)
    with pytest.raises(ValueError, match="max_cube_frames"):
        CubeMaskGenerator(2, 4, 4, 10, max_cube_frames=3)


# ----------------------------------------------------------------------------------------------- processor


def test_frame_indices_centre_loop_and_keep_sampled_clips():
    assert sample_frame_indices(40, 4, 4).tolist() == [12, 16, 20, 24]
    assert sample_frame_indices(10, 4, 4).tolist() == [0, 4, 8, 2]  # short: wraps around to the start
    assert sample_frame_indices(1, 3, 2).tolist() == [0, 0, 0]
    assert sample_frame_indices(4, 4, 4).tolist() == [0, 1, 2, 3]  # already sampled
    assert sample_frame_indices(40, 4, 4, start=30).tolist() == [30, 34, 38, 2]
    with pytest.raises(ValueError, match="no frames"):
        sample_frame_indices(0, 4, 1)


def test_processor_samples_frames_and_makes_cube_masks():
    config = tiny_config()
    processor = MimMaskFeatVideoProcessor.for_model_config(config, sample_rate=2, image_mean=[0.0] * 3,
                                                           image_std=[1.0] * 3)
    clip = np.stack([np.full((40, 48, 3), 10 * i, dtype=np.uint8) for i in range(3)])  # 3 frames: looped
    out = processor(clip, return_tensors="pt", return_bool_masked_pos=True, mask_seed=5)
    assert out["pixel_values"].shape == (1, 4, 3, 32, 32) and out["bool_masked_pos"].shape == (1, 32)
    levels = (out["pixel_values"][0, :, 0, 0, 0] * 255).round().tolist()
    assert levels == [0.0, 20.0, 10.0, 0.0]  # frames 0, 2, 4 % 3, 6 % 3
    assert out["bool_masked_pos"].sum().item() == 13
    again = processor(clip, return_tensors="pt", return_bool_masked_pos=True, mask_seed=5)
    assert torch.equal(out["bool_masked_pos"], again["bool_masked_pos"])
    batch = processor([list(clip), list(clip[:1])], return_tensors="pt")
    assert batch["pixel_values"].shape == (2, 4, 3, 32, 32) and "bool_masked_pos" not in batch
    assert processor.pretraining_kwargs() == {"return_bool_masked_pos": True}


def test_processor_round_trips(tmp_path):
    processor = MimMaskFeatVideoProcessor.for_model_config(tiny_config(), sample_rate=3)
    processor.save_pretrained(tmp_path)
    loaded = MimMaskFeatVideoProcessor.from_pretrained(tmp_path)
    assert (loaded.num_frames, loaded.sample_rate, loaded.tubelet_size, loaded.crop_size["height"]) == (4, 3, 2, 32)


# ----------------------------------------------------------------------------------------------- data


def write_clip_folder(root):
    from PIL import Image

    from hf_mim.video_data import encode_video

    rng = np.random.default_rng(0)
    for name in ("bag", "coat"):
        (root / name).mkdir(parents=True)
        for i in range(2):
            encode_video(root / name / f"clip{i}.mp4", rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8))
    (root / "bag" / "garbage.mp4").write_bytes(b"not a video" * 20)
    good = (root / "bag" / "clip0.mp4").read_bytes()
    (root / "coat" / "truncated.mp4").write_bytes(good[: len(good) // 4])
    frames = root / "coat" / "frames"
    frames.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(frames / f"{i:03d}.png")
    broken = root / "bag" / "broken_frames"
    broken.mkdir()
    (broken / "000.png").write_bytes(b"not a png")


def test_unreadable_clips_are_skipped_and_counted(tmp_path):
    pytest.importorskip("av")
    from hf_mim.video_data import SeededVideoDataset, load_video_folder

    write_clip_folder(tmp_path)
    clips = load_video_folder(tmp_path)
    assert clips.label_names == ["bag", "coat"] and len(clips.dataset) == 8
    processor = MimMaskFeatVideoProcessor.for_model_config(tiny_config(), sample_rate=2)
    dataset = SeededVideoDataset(clips, processor, seed=1, processor_kwargs=processor.pretraining_kwargs(),
                                 with_labels=True)
    batch = collate([dataset[i] for i in range(len(dataset))])
    assert batch["num_skipped"] == 3  # garbage.mp4, truncated.mp4, broken_frames/
    assert batch["pixel_values"].shape == (5, 4, 3, 32, 32) and batch["bool_masked_pos"].shape == (5, 32)
    assert batch["labels"].tolist() == [0, 0, 1, 1, 1]
    readable = [row["video"] for row in clips.dataset].index(str(tmp_path / "bag" / "clip0.mp4"))
    first = dataset[readable]
    assert all(torch.equal(first[key], dataset[readable][key]) for key in first)  # seeded by (seed, epoch, index)
    dataset.set_epoch(1)
    assert not torch.equal(first["bool_masked_pos"], dataset[readable]["bool_masked_pos"])


def test_embedded_video_sample():
    pytest.importorskip("av")
    from hf_mim.video_data import decode_clip, load_video_sample

    train, test = load_video_sample("train"), load_video_sample("test")
    assert (len(train.dataset), len(test.dataset)) == (200, 50)
    assert np.bincount([row["label"] for row in train.dataset]).tolist() == [20] * 10
    assert train.label_names[0] == "T-shirt/top"
    frames = decode_clip(train.dataset[0]["video"])
    assert len(frames) == 16 and frames[0].size == (32, 32)
    with pytest.raises(ValueError, match="splits 'train' and 'test'"):
        load_video_sample("validation")


def test_missing_pyav_says_how_to_install(monkeypatch):
    from hf_mim import video_data

    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[video\]"'):
        video_data.decode_video("clip.mp4")


def test_sample_script_writes_labelled_clips_with_every_flag(tmp_path):
    pytest.importorskip("av")
    from helpers import load_script

    script = load_script("make_video_sample")
    script.main(["--output_dir", str(tmp_path), "--train_per_class", "1", "--test_per_class", "1",
                 "--num_frames", "4", "--size", "16", "--seed", "3"])
    clips = sorted(tmp_path.glob("*/*.mp4"))
    assert len(clips) == 20  # 10 classes x (1 train + 1 test)
    assert (tmp_path / "metadata.csv").read_text().count("\n") >= 20
