# Shared helpers: config validation at load, model paths, and the common rule settings.

import json
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # driftlib from this checkout

from driftlib.config import iter_model_variants, load_and_check, tiny_member
from driftlib.errors import ConfigError

try:
    load_and_check(config)
except ConfigError as _exc:
    raise WorkflowError(f"config: {_exc}") from None

RESULTS = "results"
MODEL_KEYS = list(config["models"])
VARIANTS_OF = [(m, v) for m, v, _ in iter_model_variants(config)]
ENV = "../envs/driftlib.yaml"


wildcard_constraints:
    model="|".join(map(lambda k: k.replace(".", r"\."), MODEL_KEYS)),
    variant="base|aligned",


def model_path(key, variant):
    """Where a model variant's weights are: a tiny-family folder, a local folder or a hub id."""
    path = config["models"][key][variant]
    member = tiny_member(path)
    return f"{RESULTS}/models/tiny/{member}" if member else path


def tiny_inputs(key, variant):
    """The tiny-family folder a variant needs built first (none for hub ids and local folders)."""
    member = tiny_member(config["models"][key][variant])
    return [f"{RESULTS}/models/tiny/{member}"] if member else []


def load_options(key, variant):
    """Command-line options that load a model variant as the config says."""
    entry = config["models"][key]
    opts = ["--model", model_path(key, variant)]
    opts += ["--dtype", entry.get("dtype") or config["dtype"], "--device", config["device"]]
    if entry.get("revision"):
        opts += ["--revision", entry["revision"]]
    if entry.get("trust_remote_code"):
        opts.append("--trust-remote-code")
    return " ".join(shlex.quote(str(o)) for o in opts)


def model_inputs(wildcards):
    return tiny_inputs(wildcards.model, wildcards.variant)


def model_options(wildcards):
    return load_options(wildcards.model, wildcards.variant)


def local_file(path):
    """A data source given as a local file is an input (editing it re-runs what reads it)."""
    return [path] if Path(path).is_file() else []


def layer_args(layers):
    return " ".join(str(x) for x in layers)


# --- phase 2 ---------------------------------------------------------------------------


def pair_states(wildcards):
    """The pair states a model's vectors need: aligned always, base where the model has one."""
    variants = ["aligned"] + (["base"] if config["models"][wildcards.model].get("base") else [])
    return {v: f"{RESULTS}/activations/{wildcards.model}/{v}/pairs.safetensors" for v in variants}


def base_pair_args(wildcards, input):
    return f"--base {input.base}" if "base" in input.keys() else ""


# --- phase 3 ---------------------------------------------------------------------------

#: models with a base variant: phase 3 steers their base model with their own vector
STEERED = [m for m in MODEL_KEYS if config["models"][m].get("base")]
STEER = config["steering"]


def base_model_options(wildcards):
    return load_options(wildcards.model, "base")


def base_model_inputs(wildcards):
    return tiny_inputs(wildcards.model, "base")
