"""Every recipe of configs/ loads into a valid training and model config, and each says what it claims."""

import dataclasses

import pytest

from model.star import ModelConfig
from pipeline.core.errors import StarError
from pipeline.training.config import CONFIGS, TrainConfig, parse_settings, recipe_names, resolve_config


def test_the_shipped_recipes_are_there():
    assert {"paper", "small", "literal", "penn-skeleton"} <= set(recipe_names())


@pytest.mark.parametrize("name", recipe_names())
def test_each_recipe_builds_a_valid_config_by_name_and_by_path(name):
    by_name = resolve_config(overrides={}, config_file=name)
    by_path = resolve_config(overrides={}, config_file=CONFIGS / f"{name}.toml")
    assert by_name == by_path
    ModelConfig(num_classes=10, **by_name.model)  # the [model] table is valid ModelConfig options


def test_paper_is_the_defaults_written_out():
    assert resolve_config(overrides={}, config_file="paper") == TrainConfig()


def test_literal_reverts_the_five_learning_choices():
    model = ModelConfig(num_classes=10, **resolve_config(overrides={}, config_file="literal").model)
    default = ModelConfig(num_classes=10)
    changed = {f.name for f in dataclasses.fields(ModelConfig) if getattr(model, f.name) != getattr(default, f.name)}
    assert changed == {"norm", "init", "token_norm", "joint_position", "temporal_embedding"}
    assert (model.norm, model.init, model.joint_position) == ("post", "vit", "linear")


def test_options_and_settings_override_a_recipe():
    settings = parse_settings(["weight_decay=0.01", "dropout=0", "model.frames=8", "streams=['joint', 'bone']"])
    assert settings == {"weight_decay": 0.01, "streams": ["joint", "bone"], "model": {"dropout": 0, "frames": 8}}
    cfg = resolve_config(overrides={**settings, "epochs": 3}, config_file="small")
    assert (cfg.optimizer, cfg.weight_decay, cfg.epochs, cfg.streams) == ("adamw", 0.01, 3, ("joint", "bone"))
    assert cfg.model["dropout"] == 0 and cfg.model["frames"] == 8


def test_a_setting_without_a_value_is_a_clear_error():
    with pytest.raises(StarError, match="write KEY=VALUE"):
        parse_settings(["weight_decay"])
