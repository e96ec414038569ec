import dataclasses

import pytest

from proselab.config import (
    SECTIONS,
    Config,
    ConfigError,
    apply_dict,
    config_from_dict,
    list_presets,
    load_config,
)


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
    ("generation.temperature=-1", "generation.temperature"),
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


@pytest.mark.parametrize("key, value", [("model.n_layer", "[1"), ("generation.stop", "[a"), ("data.dataset", "[a, b"),
                                        ("generation.eos_token_id", "[1,"), ("train.lr", "{")])
def test_override_that_is_not_yaml_is_a_config_error(key, value):
    """A bracket left open on the command line is a one-line ConfigError, not a yaml traceback."""
    with pytest.raises(ConfigError, match=rf"^{key}: '.*' is not valid YAML \(.*\); quote it"):
        load_config(overrides=[f"{key}={value}"])


def test_override_without_equals():
    with pytest.raises(ConfigError, match="section.field=value"):
        load_config(overrides=["train.lr"])


# How each kind of field coerces a value: strings as they come from the command line
# (--section.field=TEXT), other values as they come from a YAML file or a run's config.json.
ACCEPTED = [
    # int
    ("model.n_layer", "2", 2), ("model.n_layer", 2, 2), ("model.n_layer", 2.0, 2), ("model.n_layer", "2.0", 2),
    ("model.n_layer", " 3 ", 3), ("model.n_layer", "-1", -1), ("model.n_layer", "0x10", 16),
    # float
    ("train.lr", "3e-4", 3e-4), ("train.lr", "0.5", 0.5), ("train.lr", 1, 1.0), ("train.lr", "2", 2.0),
    ("train.lr", "inf", float("inf")),
    # bool
    ("model.bias", True, True), ("model.bias", False, False), ("model.bias", "true", True),
    ("model.bias", "False", False), ("model.bias", "yes", True), ("model.bias", "no", False),
    ("model.bias", "on", True), ("model.bias", "off", False), ("model.bias", "1", True), ("model.bias", "0", False),
    ("model.bias", "YeS", True), ("model.bias", "oFF", False), ("model.bias", 1, True), ("model.bias", 0, False),
    # str: never YAML-parsed, scalars become their text
    ("train.device", "cpu", "cpu"), ("train.device", "true", "true"), ("train.device", "[a, b]", "[a, b]"),
    ("train.device", "none", "none"), ("train.device", "", ""), ("train.device", 3, "3"),
    ("train.device", None, "None"), ("train.device", True, "True"),
    # str | list[str]
    ("data.dataset", "a.txt", "a.txt"), ("data.dataset", "[a.txt, b dir/c.txt]", ["a.txt", "b dir/c.txt"]),
    ("data.dataset", " [a]", ["a"]), ("data.dataset", ["a", 1], ["a", "1"]), ("data.dataset", ("a",), ["a"]),
    ("data.dataset", [], []), ("data.dataset", "none", "none"), ("data.dataset", 3, "3"),
    ("data.dataset", None, "None"), ("data.dataset", {"a": 1}, "{'a': 1}"),
    # list[str]: one string is a list of one
    ("generation.stop", "###", ["###"]), ("generation.stop", "\n\n", ["\n\n"]), ("generation.stop", "", [""]),
    ("generation.stop", "none", ["none"]), ("generation.stop", "[a, b]", ["a", "b"]), ("generation.stop", "[]", []),
    ("generation.stop", ["a"], ["a"]), ("generation.stop", ("a", "b"), ["a", "b"]),
    # int | list[int] | None
    ("generation.eos_token_id", "50256", 50256), ("generation.eos_token_id", 7, 7),
    ("generation.eos_token_id", "[1, 2]", [1, 2]), ("generation.eos_token_id", [1, 2], [1, 2]),
    ("generation.eos_token_id", [], []), ("generation.eos_token_id", None, None),
    ("generation.eos_token_id", "null", None), ("generation.eos_token_id", "~", None),
    ("generation.eos_token_id", "", None), ("generation.eos_token_id", "  ", None),
    # list[int]: one id is a list of one
    ("generation.suppress_tokens", "[1, 2]", [1, 2]), ("generation.suppress_tokens", "7", [7]),
    ("generation.suppress_tokens", 7, [7]), ("generation.suppress_tokens", (1, 2), [1, 2]),
    ("generation.suppress_tokens", "", []), ("generation.suppress_tokens", "[]", []),
    # list[float]: longrope's factors
    ("model.rope_short_factor", "[1, 1.5]", [1.0, 1.5]), ("model.rope_short_factor", (2, 3.5), [2.0, 3.5]),
    ("model.rope_short_factor", "", []), ("model.rope_short_factor", [], []),
    # bool | str: a bool, or "never"
    ("generation.early_stopping", "never", "never"), ("generation.early_stopping", True, True),
    ("generation.early_stopping", "true", True), ("generation.early_stopping", "false", False),
    ("generation.early_stopping", "1", True), ("generation.early_stopping", 0, False),
    # int | None
    ("generation.seed", "5", 5), ("generation.seed", 5, 5), ("generation.seed", 5.0, 5),
    ("generation.seed", None, None), ("generation.seed", "none", None), ("generation.seed", "None", None),
    ("generation.seed", "null", None), ("generation.seed", "NULL", None), ("generation.seed", "~", None),
    # dict[int, float]: YAML, JSON (text keys, as config.json saves them), ID=BIAS from the command line
    ("generation.logit_bias", {5: -100}, {5: -100.0}), ("generation.logit_bias", {"5": 1.5}, {5: 1.5}),
    ("generation.logit_bias", "{50256: -100, 1: 2}", {50256: -100.0, 1: 2.0}),
    ("generation.logit_bias", "5=1,7=-2.5", {5: 1.0, 7: -2.5}), ("generation.logit_bias", ["5=1"], {5: 1.0}),
    ("generation.logit_bias", {}, {}), ("generation.logit_bias", "", {}),
]

STRINGS = "must be a string or a list of strings"
TOKEN_IDS = "must be a token id, a list of token ids or null"
BIAS = "must map token ids to numbers"
REJECTED = [
    # int: bools are not ints, "1.5" is not an int; the message shows the value as YAML read it
    ("model.n_layer", "two", "must be int, got 'two'"), ("model.n_layer", "1.5", "must be int, got 1.5"),
    ("model.n_layer", 1.5, "must be int, got 1.5"), ("model.n_layer", True, "must be int, got True"),
    ("model.n_layer", "true", "must be int, got True"), ("model.n_layer", "1e3", "must be int, got '1e3'"),
    ("model.n_layer", "", "must be int, got ''"), ("model.n_layer", None, "must be int, got None"),
    ("model.n_layer", "none", "must be int, got 'none'"), ("model.n_layer", [1], "must be int, got [1]"),
    # float
    ("train.lr", "abc", "must be float, got 'abc'"), ("train.lr", True, "must be float, got True"),
    ("train.lr", "yes", "must be float, got True"), ("train.lr", "", "must be float, got ''"),
    ("train.lr", None, "must be float, got None"), ("train.lr", [1.0], "must be float, got [1.0]"),
    # bool
    ("model.bias", 2, "must be bool, got 2"), ("model.bias", "2", "must be bool, got 2"),
    ("model.bias", 1.0, "must be bool, got 1.0"), ("model.bias", "maybe", "must be bool, got 'maybe'"),
    ("model.bias", "", "must be bool, got ''"), ("model.bias", None, "must be bool, got None"),
    ("model.bias", "none", "must be bool, got 'none'"), ("model.bias", "never", "must be bool, got 'never'"),
    # str: a mapping or a list is not a str
    ("train.device", {"a": 1}, "must be str, got {'a': 1}"), ("train.device", ["cpu"], "must be str, got ['cpu']"),
    # list[str]
    ("generation.stop", None, f"{STRINGS}, got None"), ("generation.stop", 3, f"{STRINGS}, got 3"),
    ("generation.stop", "[1, 2]", f"{STRINGS}, got [1, 2]"), ("generation.stop", ["a", 1], f"{STRINGS}, got ['a', 1]"),
    ("generation.stop", {"a": "b"}, f"{STRINGS}, got {{'a': 'b'}}"),
    # list[int]
    ("generation.suppress_tokens", "abc", "must be a list of token ids, got 'abc'"),
    ("model.rope_short_factor", "1.5", "must be a list of numbers, got 1.5"),
    ("model.rope_short_factor", [1.0, "x"], "must be a list of numbers, got [1.0, 'x']"),
    ("model.rope_short_factor", [True], "must be a list of numbers, got [True]"),
    ("generation.suppress_tokens", None, "must be a list of token ids, got None"),
    ("generation.suppress_tokens", ["a"], "must be a list of token ids, got ['a']"),
    ("generation.suppress_tokens", True, "must be a list of token ids, got True"),
    # int | list[int] | None: "none" is not null here
    ("generation.eos_token_id", "none", f"{TOKEN_IDS}, got 'none'"),
    ("generation.eos_token_id", "abc", f"{TOKEN_IDS}, got 'abc'"),
    ("generation.eos_token_id", True, f"{TOKEN_IDS}, got True"),
    ("generation.eos_token_id", "true", f"{TOKEN_IDS}, got True"),
    ("generation.eos_token_id", 1.0, f"{TOKEN_IDS}, got 1.0"),
    ("generation.eos_token_id", [1, True], f"{TOKEN_IDS}, got [1, True]"),
    ("generation.eos_token_id", (1, 2), f"{TOKEN_IDS}, got (1, 2)"),
    ("generation.eos_token_id", "[1, x]", f"{TOKEN_IDS}, got [1, 'x']"),
    # bool | str: the wording is the bool's
    ("generation.early_stopping", "Never", "must be bool, got 'Never'"),
    ("generation.early_stopping", "always", "must be bool, got 'always'"),
    ("generation.early_stopping", 2, "must be bool, got 2"),
    ("generation.early_stopping", None, "must be bool, got None"),
    ("generation.early_stopping", "", "must be bool, got ''"),
    # int | None
    ("generation.seed", "abc", "must be int or none, got 'abc'"),
    ("generation.seed", "", "must be int or none, got ''"),
    ("generation.seed", "NONE", "must be int or none, got 'NONE'"),
    ("generation.seed", True, "must be int or none, got True"),
    ("generation.seed", "1.5", "must be int or none, got 1.5"),
    # dict[int, float]
    ("generation.logit_bias", "abc", f"{BIAS} ({{50256: -100}}, or ID=BIAS), got 'abc'"),
    ("generation.logit_bias", [5], f"{BIAS} ({{50256: -100}}, or ID=BIAS), got [5]"),
    ("generation.logit_bias", None, f"{BIAS} ({{50256: -100}}, or ID=BIAS), got None"),
    ("generation.logit_bias", {"x": 1}, f"{BIAS}, got 'x': 1"),
    ("generation.logit_bias", {1.5: 1}, f"{BIAS}, got 1.5: 1"),
    ("generation.logit_bias", {1: "high"}, f"{BIAS}, got 1: 'high'"),
    ("generation.logit_bias", {True: 1}, f"{BIAS}, got True: 1"),
]


def _apply(key: str, value):
    section, name = key.split(".")
    return getattr(getattr(apply_dict(Config(), {section: {name: value}}), section), name)


@pytest.mark.parametrize("key, value, expected", ACCEPTED)
def test_values_coerce_to_the_field_type(key, value, expected):
    got = _apply(key, value)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("key, value, message", REJECTED)
def test_wrong_values_name_the_field_and_its_type(key, value, message):
    with pytest.raises(ConfigError) as e:
        _apply(key, value)
    assert str(e.value) == f"{key} {message}"


def test_every_kind_of_field_is_pinned():
    annotation = {f"{s}.{f.name}": str(f.type) for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    pinned = {annotation[key] for key, _, _ in ACCEPTED + REJECTED}
    assert pinned == set(annotation.values())  # a new kind of field needs its rows above
