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


def model_inputs(wildcards):
    """The tiny-family folder a variant needs built first (none for hub ids and local folders)."""
    member = tiny_member(config["models"][wildcards.model][wildcards.variant])
    return [f"{RESULTS}/models/tiny/{member}"] if member else []


def model_options(wildcards):
    """Command-line options that load a model variant as the config says."""
    entry = config["models"][wildcards.model]
    opts = ["--model", model_path(wildcards.model, wildcards.variant)]
    opts += ["--dtype", entry.get("dtype") or config["dtype"], "--device", config["device"]]
    if entry.get("revision"):
        opts += ["--revision", entry["revision"]]
    if entry.get("trust_remote_code"):
        opts.append("--trust-remote-code")
    return " ".join(shlex.quote(str(o)) for o in opts)


def local_file(path):
    """A data source given as a local file is an input (editing it re-runs what reads it)."""
    return [path] if Path(path).is_file() else []


def layer_args(layers):
    return " ".join(str(x) for x in layers)
