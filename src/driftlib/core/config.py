"""The workflow configuration: schema validation with readable messages, and checks a schema cannot make.

The Snakefile calls :func:`load_and_check` on the loaded config; ``driftlib check-config FILE``
does the same from the command line. Errors are :class:`~driftlib.core.errors.ConfigError` whose
message starts with the dotted key that is wrong.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from driftlib.core.errors import ConfigError

#: the schema file: package data beside this module (``workflow/schemas/config.schema.yaml`` links to it),
#: so ``driftlib check-config`` works from an installed wheel
SCHEMA_PATH = Path(__file__).resolve().parent / "config.schema.yaml"
#: model paths with this prefix name a member of the tiny family that the workflow builds
TINY_PREFIX = "tiny:"
VARIANTS = ("base", "aligned")


def _key_path(parts: Any) -> str:
    """``aqi.layers[0]``: dotted keys, list positions in brackets (as the semantic checks write them)."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<top level>"


def _format_error(error: Any) -> str:
    """One line naming the key and what was expected, from a jsonschema ValidationError."""
    key = _key_path(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted((error.schema.get("properties") or {}).keys())
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        where = key if error.absolute_path else "top level"
        names = ", ".join(f"{where}.{e}" if error.absolute_path else e for e in extra)
        return f"unknown key {names} (allowed here: {', '.join(allowed)})"
    if "propertyNames" in error.absolute_schema_path:
        return (f"{key}: model key {error.instance!r} is not allowed: keys name folders under "
                "results/, so use letters, digits, '_', '-', '.' (no '/', no '..')")
    if error.validator == "required":
        return f"{key}: {error.message}"
    return f"{key}: {error.message} (expected: {_expected(error.schema)})"


def _expected(schema: dict) -> str:
    if "enum" in schema:
        return "one of " + ", ".join(map(repr, schema["enum"]))
    parts = []
    if "type" in schema:
        parts.append(f"type {schema['type']}")
    for bound in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems",
                  "minProperties", "pattern"):
        if bound in schema:
            parts.append(f"{bound} {schema[bound]}")
    if "description" in schema:
        parts.append(schema["description"])
    return "; ".join(parts) or "see workflow/schemas/config.schema.yaml"


def validate_schema(config: dict, schema_path: Path = SCHEMA_PATH) -> dict:
    """Validate ``config`` against the schema (through Snakemake's ``validate``) and fill defaults.

    Returns the config with defaults filled in place. Raises ConfigError naming the first bad key.
    """
    import jsonschema
    from snakemake.utils import validate

    try:
        validate(config, str(schema_path), set_default=True)
    except Exception as exc:  # snakemake wraps jsonschema's error in a WorkflowError
        schema = yaml.safe_load(Path(schema_path).read_text())
        validator = jsonschema.Draft202012Validator(schema)
        errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
        if not errors:
            raise ConfigError(f"config does not validate: {exc}") from None
        lines = list(dict.fromkeys(_format_error(e) for e in errors))[:5]
        raise ConfigError("invalid config: " + "; ".join(lines)) from None
    return config


def iter_model_variants(config: dict) -> Iterator[tuple[str, str, str]]:
    """Yield ``(model_key, variant, path)`` for every configured model variant."""
    for key, entry in config["models"].items():
        for variant in VARIANTS:
            path = entry.get(variant)
            if path:
                yield key, variant, path


def tiny_member(path: str) -> str | None:
    """The tiny-family member a path names (``tiny:llama-base`` -> ``llama-base``), else None."""
    return path[len(TINY_PREFIX):] if path.startswith(TINY_PREFIX) else None


def check_semantics(config: dict) -> None:
    """Checks the schema cannot express. Raises ConfigError naming the key."""
    from driftlib.model.families import TINY_ARCHS
    from driftlib.model.real import REAL_MODELS, real_member

    for key, variant, path in iter_model_variants(config):
        real = real_member(path)
        if real is not None and real not in REAL_MODELS:
            raise ConfigError(f"models.{key}.{variant}: {path!r} is not a known real model; use real:<name> with "
                              f"name one of {sorted(REAL_MODELS)}")
        member = tiny_member(path)
        if member is None:
            continue
        arch, _, kind = member.rpartition("-")
        if arch not in TINY_ARCHS or kind not in VARIANTS:
            raise ConfigError(
                f"models.{key}.{variant}: {path!r} is not a tiny-family member; use "
                f"tiny:<arch>-base or tiny:<arch>-aligned with arch one of {sorted(TINY_ARCHS)}"
            )
        if kind != variant:
            raise ConfigError(f"models.{key}.{variant}: {path!r} is the {kind} model, not the {variant} one")
    layers = config["aqi"]["layers"]
    for i, value in enumerate(layers):
        if isinstance(value, bool):
            raise ConfigError(f"aqi.layers[{i}]: {value!r} is not a layer (an int or a float in (0, 1])")
    # layers beyond a model's depth are checked where the depth is known: for tiny members here,
    # for every model at extraction time (driftlib.core.layerspec.resolve_layers)
    for key, variant, path in iter_model_variants(config):
        member = tiny_member(path)
        if member is None:
            continue
        depth = TINY_ARCHS[member.rpartition("-")[0]]["num_hidden_layers"]
        for name in ("aqi.layers", "steering.layers", "steering.measure_layers"):
            section, _, field = name.partition(".")
            for i, value in enumerate(config[section][field]):
                if isinstance(value, int) and not -depth <= value < depth:
                    raise ConfigError(
                        f"{name}[{i}]: block {value} does not exist in models.{key}.{variant} "
                        f"({path}, {depth} blocks: use 0..{depth - 1}, a negative index, or a relative depth)"
                    )
        _check_injection_before_measurement(config, depth, f"models.{key}.{variant} ({path})")
    steering = config["steering"]
    if 0 not in steering["lambdas"]:
        raise ConfigError(
            f"steering.lambdas: {steering['lambdas']} has no 0; lambda 0 (the unsteered model) is the "
            "control every sweep needs, and the reference of the repetition cost"
        )
    for i, value in enumerate(steering["measure_layers"]):
        if value not in layers:
            raise ConfigError(
                f"steering.measure_layers[{i}]: {value!r} is not in aqi.layers {layers}; phase 3 compares "
                "the steered base model with the aligned model's phase-1 AQI at the same layer"
            )
    floats = [v for v in steering["layers"] if isinstance(v, float)]
    for i, value in enumerate(steering["measure_layers"]):
        if isinstance(value, float) and floats and value <= max(floats):
            raise ConfigError(
                f"steering.measure_layers[{i}]: depth {value} is not after the injection depth "
                f"{max(floats)} (steering.layers); the AQI is shift-invariant, so steering is invisible "
                "at or before the layer where the vector is added"
            )
    _check_dealign(config)
    _check_collaboration(config)


def _check_dealign(config: dict) -> None:
    unknown = [m for m in config["dealign"]["models"] or [] if m not in config["models"]]
    if unknown:
        raise ConfigError(f"dealign.models: {unknown} are not model keys (models: {list(config['models'])})")


def _check_collaboration(config: dict) -> None:
    """Phase 5/6: pairings name configured models; the postures include "no steering"."""
    collab = config["collaboration"]
    models = list(config["models"])
    for i, pairing in enumerate(collab["pairings"]):
        unknown = [m for m in pairing if m not in models]
        if unknown:
            raise ConfigError(f"collaboration.pairings[{i}]: {unknown} are not model keys (models: {models})")
        bad = [m for m in pairing if "+" in m or "/" in m]
        if bad:
            raise ConfigError(f"collaboration.pairings[{i}]: model keys {bad} hold '+' or '/', which pairing names use")
    if collab["context_tokens"] <= collab["max_new_tokens"]:
        raise ConfigError(f"collaboration.context_tokens ({collab['context_tokens']}) must exceed "
                          f"collaboration.max_new_tokens ({collab['max_new_tokens']})")
    if collab["prevention_lambda"] is not None and collab["prevention_lambda"] == collab["lambda"]:
        raise ConfigError(f"collaboration.prevention_lambda equals collaboration.lambda ({collab['lambda']}): "
                          "the pre-steered runs would be the plain runs; use another value or null")
    if 0 not in config["game"]["lambdas"]:
        raise ConfigError(f"game.lambdas: {config['game']['lambdas']} has no 0; 'no steering' is the posture "
                          "every other one is compared with")


def _check_injection_before_measurement(config: dict, depth: int, where: str) -> None:
    """Every measurement block must come after every injection block, for a model of ``depth`` blocks."""
    from driftlib.core.layerspec import resolve_layers

    inject = resolve_layers(config["steering"]["layers"], depth, key="steering.layers")
    measure = resolve_layers(config["steering"]["measure_layers"], depth, key="steering.measure_layers")
    if min(measure) <= max(inject):
        raise ConfigError(
            f"steering.measure_layers: block {min(measure)} is not after injection block {max(inject)} in "
            f"{where}; the AQI is shift-invariant, so steering is invisible at or before the layer where "
            "the vector is added"
        )


def load_and_check(config: dict, schema_path: Path = SCHEMA_PATH) -> dict:
    """Validate, fill defaults and run the semantic checks; returns the (same) config."""
    validate_schema(config, schema_path)
    check_semantics(config)
    return config


def load_config(path: str | Path) -> dict:
    """Read a YAML config file and check it (see :func:`load_and_check`)."""
    p = Path(path)
    try:
        config = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({exc})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{p}: the config must be a mapping of keys to values")
    return load_and_check(copy.deepcopy(config))


def describe_file(path: str | Path) -> str:
    """Check a config file (:func:`load_config`) and say what it holds, in one line."""
    config = load_config(path)
    variants = list(iter_model_variants(config))
    return f"{path}: valid ({len(config['models'])} models, {len(variants)} variants)"
