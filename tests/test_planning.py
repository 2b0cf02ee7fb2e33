"""The one place recipes meet flags (with_overrides, check_values), the schedule planner and the card's command."""

import argparse

import pytest

import hf_mim
from hf_mim.planning import command_line, plan_schedule, with_overrides
from hf_mim_cli.recipes import FinetuneRecipe, check_values


def test_flags_given_replace_recipe_fields_and_absent_ones_keep_them():
    recipe = FinetuneRecipe(1e-3, 256, warmup_epochs=20)
    args = argparse.Namespace(weight_decay=0.3, warmup_epochs=None, crop_scale=[0.5, 1.0], unrelated=7)
    merged = with_overrides(recipe, args)
    assert merged.weight_decay == 0.3 and merged.warmup_epochs == 20 and merged.crop_scale == (0.5, 1.0)
    assert merged.base_learning_rate == 1e-3 and recipe.weight_decay == 0.05


def test_a_bad_value_is_refused_by_name_from_a_flag_or_a_recipe():
    with pytest.raises(ValueError, match=r"--random_erasing 1.5: need a probability in \[0, 1\]"):
        check_values({"random_erasing": 1.5})
    with pytest.raises(ValueError, match="--crop_scale 0.9 0.5: need 0 < MIN <= MAX <= 1"):
        FinetuneRecipe(1e-3, 256, crop_scale=(0.9, 0.5))
    check_values({"random_erasing": None, "crop_scale": None})  # not given


def test_schedule_counts_updates_batch_warmup_and_scaled_lr():
    plan = plan_schedule(batches_per_epoch=25, per_device_batch_size=8, num_processes=2, gradient_accumulation_steps=3,
                         num_epochs=4, warmup_epochs=1.5, base_learning_rate=1.5e-4, lr_batch_divisor=256)
    assert plan.updates_per_epoch == 5  # ceil(25 / 2 / 3)
    assert (plan.max_steps, plan.epochs, plan.effective_batch, plan.warmup_steps) == (20, 4, 48, 7)
    assert plan.learning_rate == pytest.approx(1.5e-4 * 48 / 256)


def test_schedule_max_steps_absolute_lr_and_warmup_cap():
    plan = plan_schedule(batches_per_epoch=10, per_device_batch_size=4, num_processes=1, gradient_accumulation_steps=1,
                         num_epochs=100, max_steps=15, warmup_epochs=20, base_learning_rate=4e-3, lr_batch_divisor=None,
                         max_warmup_share=0.5)
    assert (plan.max_steps, plan.epochs, plan.warmup_steps, plan.learning_rate) == (15, 2, 7, 4e-3)
    given = plan_schedule(batches_per_epoch=10, per_device_batch_size=4, num_processes=1, gradient_accumulation_steps=1,
                          num_epochs=1, warmup_steps=3, learning_rate=0.1, base_learning_rate=1.0, lr_batch_divisor=256)
    assert (given.warmup_steps, given.learning_rate) == (3, 0.1)
    share = plan_schedule(batches_per_epoch=10, per_device_batch_size=4, num_processes=1, gradient_accumulation_steps=1,
                          num_epochs=3, warmup_steps=lambda total: min(200, total // 10), learning_rate=1e-3)
    assert (share.max_steps, share.warmup_steps) == (30, 3)


def test_demo_recipe_scales_only_batch_scaled_learning_rates():
    mae, beit = hf_mim.get_method("mae"), hf_mim.get_method("beit")
    assert mae.pretraining_recipe("demo").base_learning_rate == pytest.approx(10 * mae.pretrain_recipe.base_learning_rate)
    assert beit.pretraining_recipe("demo").base_learning_rate == beit.pretrain_recipe.base_learning_rate
    assert mae.pretraining_recipe("demo").num_train_epochs == 60 and mae.pretraining_recipe("base").num_train_epochs == 800


def test_command_names_the_launcher_actually_used(monkeypatch):
    for name in ("ACCELERATE_DYNAMO_BACKEND", "ACCELERATE_MIXED_PRECISION"):
        monkeypatch.delenv(name, raising=False)
    assert command_line("scripts/pretrain.py", ["--method", "mae", "--output_dir", "a b"]) == \
        "python scripts/pretrain.py --method mae --output_dir 'a b'"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert command_line("scripts/finetune.py", []) == "accelerate launch scripts/finetune.py"
