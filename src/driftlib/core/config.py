"""The workflow configuration: schema validation with readable messages, and checks a schema cannot make.

The Snakefile calls :func:`load_and_check` on the loaded config; ``driftlib check-config FILE``
does the same from the command line. Errors are :class:`~driftlib.core.errors.ConfigError` whose
message starts with the dotted key that is wrong.
"""

from __future__ import annotations

import copy
import json
import math
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


# --------------------------------------------------------------------------------------------
# reading a config file: UTF-8, YAML without duplicate keys


class UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping (plain YAML keeps the last).

    The error (:class:`DuplicateKeyError`) names the dotted key and the lines of both entries.
    Merge keys (``<<: *anchor``) may be overridden, as YAML intends.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.key_paths: dict[int, str] = {}

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            self._index(node, "", set())
        return node

    def _index(self, node: Any, path: str, seen: set[int]) -> None:
        """Remember the dotted path of every mapping node (for the error message)."""
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            self.key_paths[id(node)] = path
            for key_node, value_node in node.value:
                name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                self._index(value_node, f"{path}.{name}" if path else str(name), seen)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._index(item, f"{path}[{i}]", seen)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            lines: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = lines.get(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                line = key_node.start_mark.line + 1
                if first is not None:
                    parent = self.key_paths.get(id(node), "")
                    raise DuplicateKeyError(f"{parent}.{key}" if parent else str(key), first, line)
                lines[key] = line
        return super().construct_mapping(node, deep=deep)


class DuplicateKeyError(yaml.YAMLError):
    """A mapping key given twice: ``key`` (dotted), ``first`` and ``second`` (1-based lines)."""

    def __init__(self, key: str, first: int, second: int) -> None:
        super().__init__(f"duplicate key {key} at line {first} and line {second}")
        self.key, self.first, self.second = key, first, second


def read_config_file(path: str | Path) -> dict:
    """Read a config file as YAML (JSON is YAML too), refusing what plain YAML would take silently.

    Raises:
        ConfigError: starting with the file name: not found, not UTF-8 (line and byte named), a key
            given twice in one mapping (the dotted key and both lines: plain YAML would keep the
            last one and drop the first without a word), not valid YAML, or not a mapping.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the config file ({exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(f"{p}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at line {line}, column {column}); "
                          "re-encode the file as UTF-8") from None
    text = text.removeprefix("\ufeff")
    try:
        config = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except DuplicateKeyError as exc:
        raise ConfigError(
            f"{p}: duplicate key {exc.key} at line {exc.first} and line {exc.second}; YAML would keep only the "
            "second and silently drop the first: remove or rename one of them"
        ) from None
    except yaml.YAMLError as exc:
        config = _json_without_duplicates(text, p, exc)
    if not isinstance(config, dict):
        raise ConfigError(f"{p}: the config must be a mapping of keys to values")
    return config


def _json_without_duplicates(text: str, p: Path, yaml_error: yaml.YAMLError) -> Any:
    """A JSON file that is not YAML (tabs, for example), still without duplicate keys."""

    def pairs(items: list[tuple[str, Any]]) -> dict:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise ConfigError(f"{p}: duplicate key {key!r}; JSON readers keep only the last one: remove or "
                                  "rename one of them")
            out[key] = value
        return out

    try:
        return json.loads(text, object_pairs_hook=pairs)
    except ValueError:
        raise ConfigError(f"{p}: not valid YAML ({yaml_error})") from None


# --------------------------------------------------------------------------------------------
# schema


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


def _check_finite(value: Any, path: list[Any]) -> None:
    """Every number in the config is finite: YAML's ``.nan``/``.inf`` are floats, which the schema's
    type checks accept (and NaN passes every bound, since comparisons with it are false)."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, [*path, key])
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_finite(item, [*path, i])
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{_key_path(path)}: {value!r} is not a finite number; give a finite value")


LAYER_KEYS = ("aqi.layers", "steering.layers", "steering.measure_layers")


def _check_layer_values(config: dict) -> None:
    """A float layer is a relative depth in (0, 1]; the schema reads ``0.0`` or ``2.0`` as integers."""
    found = [(f"{name}[{i}]", value) for name in LAYER_KEYS
             for i, value in enumerate(config[name.partition(".")[0]][name.partition(".")[2]])]
    condition = config["steering"].get("condition") or {}
    if condition.get("layer") is not None:
        found.append(("steering.condition.layer", condition["layer"]))
    for key, value in found:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: {value!r} is not a layer (an int or a float in (0, 1])")
        if isinstance(value, float) and not 0.0 < value <= 1.0:
            raise ConfigError(
                f"{key}: {value!r} is a float, so it is read as a relative depth, which must lie in (0, 1]; "
                "write block indices as integers (0 for the first block, -1 for the last)"
            )


def check_semantics(config: dict) -> None:
    """Checks the schema cannot express. Raises ConfigError naming the key."""
    from driftlib.model.families import TINY_ARCHS
    from driftlib.model.real import REAL_MODELS, real_member

    _check_finite(config, [])
    _check_layer_values(config)

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
    from driftlib.core.agents import parse_agent

    collab = config["collaboration"]
    models = list(config["models"])
    for i, pairing in enumerate(collab["pairings"]):
        try:  # KEY, KEY@dealigned or KEY@dealigned<N> (driftlib.core.agents)
            refs = [parse_agent(m, config["dealign"]["steps"]) for m in pairing]
        except ConfigError as exc:
            raise ConfigError(f"collaboration.pairings[{i}]: {exc}") from None
        unknown = [r.name for r in refs if r.key not in models]
        if unknown:
            raise ConfigError(f"collaboration.pairings[{i}]: {unknown} are not model keys (models: {models})")
        undealigned = [r.name for r in refs if r.dealigned and r.key not in (config["dealign"]["models"] or models)]
        if undealigned:
            raise ConfigError(f"collaboration.pairings[{i}]: {undealigned} need phase 4.5 to dealign their model; "
                              f"add it to dealign.models")
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


_SCALAR_TYPES = {"integer", "number", "boolean", "null"}


def _schema_types(schema: dict, root: dict) -> set[str]:
    """The JSON types a (sub)schema admits, following ``$ref`` and ``oneOf``/``anyOf`` branches."""
    schema = _resolve_ref(schema, root)
    found = schema.get("type", [])
    types = {found} if isinstance(found, str) else set(found)
    for branch in (*schema.get("oneOf", ()), *schema.get("anyOf", ())):
        types |= _schema_types(branch, root)
    return types


def _resolve_ref(schema: dict, root: dict) -> dict:
    ref = schema.get("$ref", "")
    if ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        return target
    return schema


def _admits(value: Any, types: set[str]) -> bool:
    if value is None:
        return "null" in types
    if isinstance(value, bool):
        return "boolean" in types
    if isinstance(value, int):
        return bool(types & {"integer", "number"})
    return isinstance(value, float) and "number" in types


def coerce_strings(value: Any, schema: dict, root: dict | None = None) -> Any:
    """Read string values as YAML would read them unquoted, where the schema wants no string.

    ``snakemake --config "aqi={'bootstrap': 500}"`` hands the nested values over as strings
    (Snakemake parses them with YAML's BaseLoader); this turns ``'500'`` into ``500``, ``'0.5'``
    into ``0.5``, ``'true'`` into ``True`` and ``'null'`` into ``None`` wherever the schema asks for
    an integer, a number, a boolean or null and not for a string. Dicts and lists are changed in
    place; returns ``value`` (or its replacement).
    """
    root = schema if root is None else root
    schema = _resolve_ref(schema, root)
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key in list(value):
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                value[key] = coerce_strings(value[key], sub, root)
        return value
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                value[i] = coerce_strings(item, items, root)
        return value
    if isinstance(value, str):
        types = _schema_types(schema, root)
        if not types or "string" in types or not types & _SCALAR_TYPES:
            return value
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        return parsed if _admits(parsed, types) else value
    return value


def load_and_check(config: dict, schema_path: Path = SCHEMA_PATH) -> dict:
    """Read strings as numbers where the schema wants numbers (:func:`coerce_strings`), validate,
    fill defaults and run the semantic checks; returns the (same) config."""
    schema = yaml.safe_load(Path(schema_path).read_text(encoding="utf-8"))
    coerce_strings(config, schema)
    validate_schema(config, schema_path)
    check_semantics(config)
    return config


def load_config(path: str | Path) -> dict:
    """Read a YAML config file (:func:`read_config_file`) and check it (:func:`load_and_check`)."""
    return load_and_check(copy.deepcopy(read_config_file(path)))


def describe_file(path: str | Path) -> str:
    """Check a config file (:func:`load_config`) and say what it holds, in one line."""
    config = load_config(path)
    variants = list(iter_model_variants(config))
    return f"{path}: valid ({len(config['models'])} models, {len(variants)} variants)"
