"""Config validation: the shipped configs are valid, and bad values are rejected naming the key."""

from __future__ import annotations

import copy

import pytest
import yaml

from driftlib.core.config import load_and_check, load_config
from driftlib.core.errors import ConfigError


@pytest.fixture(scope="module")
def default(repo_root):
    return yaml.safe_load((repo_root / "config/config.yaml").read_text())


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml", "real-small.yaml"])
def test_shipped_configs_are_valid(repo_root, name):
    config = load_config(repo_root / "config" / name)
    assert config["aqi"]["bootstrap"] >= 100
    assert all(m["aligned"] for m in config["models"].values())


def test_paper_config_has_the_study_models(repo_root):
    models = load_config(repo_root / "config/paper.yaml")["models"]
    aligned = {m["aligned"] for m in models.values()}
    assert {"meta-llama/Llama-3.1-8B-Instruct", "mistralai/Mistral-7B-Instruct-v0.3",
            "Qwen/Qwen2-7B-Instruct", "google/gemma-2-9b-it"} <= aligned
    phi3 = next(m for m in models.values() if "Phi-3" in m["aligned"])
    assert phi3["base"] is None


def test_defaults_are_filled(default):
    config = copy.deepcopy(default)
    del config["extraction"]
    load_and_check(config)
    assert config["extraction"] == {"batch_size": 16, "tokens_per_batch": None, "packing": False, "compile": False,
                                    "max_length": 256,
                                    "render": "raw", "pooling": "mean", "skip_first": True}


@pytest.mark.parametrize("change, pattern", [
    (lambda c: c.update(bogus=1), r"unknown key bogus"),
    (lambda c: c["aqi"].update(bootstrap=10), r"aqi\.bootstrap: 10 is less than the minimum"),
    (lambda c: c["aqi"].update(method="tsne"), r"aqi\.method: .*one of 'standardize', 'none'"),
    (lambda c: c["aqi"].update(layers=[0.5, 0.5]), r"aqi\.layers: .*non-unique"),
    (lambda c: c["aqi"].update(layers=[1.5]), r"aqi\.layers\[0\]: 1\.5 .*relative depth in \(0, 1\]"),
    (lambda c: c["models"].update({"/abs": {"aligned": "x"}}), r"model key '/abs' is not allowed"),
    (lambda c: c["models"].update({"a..b": {"aligned": "x"}}), r"model key 'a\.\.b' is not allowed"),
    (lambda c: c["models"]["llama"].pop("aligned"), r"models\.llama: 'aligned' is a required property"),
    (lambda c: c["models"]["llama"].update(base="tiny:falcon-base"), r"models\.llama\.base: .*not a tiny-family member"),
    (lambda c: c["aqi"].update(layers=[-9]), r"aqi\.layers\[0\]: block -9 does not exist"),
    (lambda c: c.update(device="gpu"), r"device: 'gpu' does not match"),
    (lambda c: c["models"]["llama"].update(aligned="real:llama-7b"), r"models\.llama\.aligned: 'real:llama-7b' is not a known real model"),
    (lambda c: c["dealign"].update(models=["falcon"]), r"dealign\.models: \['falcon'\] are not model keys"),
    (lambda c: c["collaboration"].update(pairings=[["llama", "falcon"]]), r"collaboration\.pairings\[0\]: \['falcon'\]"),
    (lambda c: c["collaboration"].update(context_tokens=32, max_new_tokens=40), r"context_tokens \(32\) must exceed"),
    (lambda c: c["collaboration"].update(prevention_lambda=0), r"prevention_lambda equals collaboration\.lambda"),
    (lambda c: c["game"].update(lambdas=[1, 2]), r"game\.lambdas: \[1, 2\] has no 0"),
])
def test_bad_values_are_rejected_naming_the_key(default, change, pattern):
    config = copy.deepcopy(default)
    change(config)
    with pytest.raises(ConfigError, match=pattern):
        load_and_check(config)


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("models: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_lambda_grid_needs_zero(default):
    config = copy.deepcopy(default)
    config["steering"] = {"lambdas": [0.5, 1.0]}
    with pytest.raises(ConfigError, match=r"steering\.lambdas: .*has no 0"):
        load_and_check(config)


def test_real_small_config_runs_two_real_models_without_a_base(repo_root):
    config = load_config(repo_root / "config/real-small.yaml")
    assert {m["aligned"] for m in config["models"].values()} == {"real:smollm2-135m-instruct", "real:gemma3-270m"}
    assert all(m["base"] is None for m in config["models"].values())
    assert config["dealign"]["models"] == ["smollm2"] and config["collaboration"]["pairings"] == [["smollm2", "gemma3"]]


# ---------------------------------------------------------------- checked at load, not in the job that uses it


@pytest.mark.parametrize("old, new, pattern", [
    ("lambdas: [0, 0.5, 1]", "lambdas: [0, .nan, 1]", r"steering\.lambdas\[1\]: nan is not a finite number"),
    ("lambdas: [0, 0.5, 1]", "lambdas: [0, 0.5, .inf]", r"steering\.lambdas\[2\]: inf is not a finite"),
    ("  lambda: 0 ", "  lambda: -.inf ", r"collaboration\.lambda: -inf is not a finite number"),
    ("layers: [1.0, 0.5]", "layers: [0.0, 0.5]", r"aqi\.layers\[0\]: 0\.0 is a float, so it is read as a relative depth"),
    ("layers: [1.0, 0.5]", "layers: [.nan, 0.5]", r"aqi\.layers\[0\]: nan is not a finite number"),
    ("layers: [0.5]  ", "layers: [2.0]  ", r"steering\.layers\[0\]: 2\.0 is a float"),
])
def test_non_finite_numbers_and_float_layers_are_refused_at_load(repo_root, tmp_path, old, new, pattern):
    text = (repo_root / "config/config.yaml").read_text()
    assert old in text
    path = tmp_path / "c.yaml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError, match=pattern):
        load_config(path)


def test_nan_game_weight_is_refused(default):
    config = copy.deepcopy(default)
    config["game"]["weights"]["alignment"] = float("nan")
    with pytest.raises(ConfigError, match=r"game\.weights\.alignment: nan is not a finite number"):
        load_and_check(config)


def test_duplicate_keys_are_refused_with_both_lines(repo_root, tmp_path):
    text = (repo_root / "config/config.yaml").read_text()
    lines = text.splitlines()
    # a second `seed:` at the top level (YAML would keep the second one)
    seed = next(i for i, line in enumerate(lines) if line.startswith("seed:"))
    path = tmp_path / "seed.yaml"
    path.write_text(text + "\nseed: 7\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    last = len((text + "\nseed: 7\n").splitlines())
    assert str(info.value) == (f"{path}: duplicate key seed at line {seed + 1} and line {last}; YAML would keep "
                               "only the second and silently drop the first: remove or rename one of them")
    # a second `llama:` model entry (YAML would replace the first model)
    llama = next(i for i, line in enumerate(lines) if line == "  llama:")
    extra = text.replace("  mistral:\n", "  llama:\n    aligned: tiny:qwen2-aligned\n  mistral:\n", 1)
    path.write_text(extra)
    second = next(i for i, line in enumerate(extra.splitlines()) if line == "  llama:" and i > llama)
    with pytest.raises(ConfigError, match=rf"duplicate key models\.llama at line {llama + 1} and line {second + 1}"):
        load_config(path)
    # a merge key may be overridden, as YAML intends
    from driftlib.core.config import read_config_file

    path.write_text("x: &b {a: 1, b: 2}\ny:\n  <<: *b\n  a: 3\n")
    assert read_config_file(path) == {"x": {"a": 1, "b": 2}, "y": {"a": 3, "b": 2}}


def test_config_that_is_not_utf8_is_one_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("seed: 0\n# caf\u00e9\nmodels: {}\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not valid UTF-8 \(byte 0xe9 at line 2, column 6\)"):
        load_config(path)


def test_strings_are_read_as_numbers_where_the_schema_wants_numbers(default):
    """What `snakemake --config "aqi={'bootstrap': 500}"` hands over: nested values as strings."""
    config = copy.deepcopy(default)
    config["aqi"] = {"bootstrap": "500", "layers": ["0.5", "1.0"], "confidence": "0.9", "paper": "true",
                     "pca_components": "null", "method": "none"}
    config["data"]["prompts"]["per_group"] = "7"
    load_and_check(config)
    assert config["aqi"]["bootstrap"] == 500 and isinstance(config["aqi"]["bootstrap"], int)
    assert config["aqi"]["layers"] == [0.5, 1.0] and config["aqi"]["confidence"] == 0.9
    assert config["aqi"]["paper"] is True and config["aqi"]["pca_components"] is None
    assert config["aqi"]["method"] == "none" and config["data"]["prompts"]["per_group"] == 7
    # a string the schema wants stays a string, and a word that is no number is still refused
    config = copy.deepcopy(default)
    config["data"]["prompts"]["source"] = "123"
    config["aqi"]["bootstrap"] = "many"
    with pytest.raises(ConfigError, match=r"aqi\.bootstrap: 'many' is not of type 'integer'"):
        load_and_check(config)
    assert config["data"]["prompts"]["source"] == "123"
