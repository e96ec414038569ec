import pytest

from proselab.config import ConfigError, config_from_dict, list_presets, load_config


def test_defaults_validate_and_round_trip():
    cfg = load_config()
    assert config_from_dict(cfg.to_dict()) == cfg


def test_dotted_overrides_are_typed():
    cfg = load_config(overrides=["train.lr=3e-4", "--model.n_layer=2", "model.bias=false", "data.dataset=a.txt"])
    assert cfg.train.lr == 3e-4 and isinstance(cfg.train.lr, float)
    assert cfg.model.n_layer == 2 and cfg.model.bias is False
    assert cfg.data.dataset == "a.txt"


def test_list_values_from_the_command_line():
    cfg = load_config(overrides=["data.dataset=[a.txt, b dir/c.txt]"])
    assert cfg.data.dataset == ["a.txt", "b dir/c.txt"]


def test_every_preset_loads():
    assert {"demo", "shakespeare-char-gpt", "shakespeare-char-lstm", "nanogpt-cpu"} <= set(list_presets())
    for name in list_presets():
        load_config(name)


@pytest.mark.parametrize("key, hint", [("train.lrr", "train.lr"), ("model.nlayer", "model.n_layer"),
                                       ("trian.lr", "train.lr"), ("train.n_layer", "model.n_layer")])
def test_unknown_key_names_closest(key, hint):
    with pytest.raises(ConfigError, match=f"did you mean '{hint}'"):
        load_config(overrides=[f"{key}=1"])


@pytest.mark.parametrize("override, field", [
    ("train.lr=-1", "train.lr"),
    ("model.n_embd=100", "n_head"),
    ("train.batch_size=0", "train.batch_size"),
    ("model.family=lstm", "model.family"),
    ("model.n_layer=two", "model.n_layer"),
    ("model.n_layer=1.5", "model.n_layer"),
    ("model.dropout=1.0", "model.dropout"),
    ("data.val_fraction=0", "data.val_fraction"),
    ("generation.temperature=0", "generation.temperature"),
])
def test_impossible_values_are_named(override, field):
    with pytest.raises(ConfigError, match=field):
        load_config(overrides=[override])


def test_yaml_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    unknown = tmp_path / "u.yaml"
    unknown.write_text("modle:\n  n_layer: 2\n")
    with pytest.raises(ConfigError, match="did you mean 'model'"):
        load_config(unknown)
    with pytest.raises(ConfigError, match="neither a file nor a preset"):
        load_config("no-such-preset")


def test_override_without_equals():
    with pytest.raises(ConfigError, match="section.field=value"):
        load_config(overrides=["train.lr"])
