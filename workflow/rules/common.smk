# Shared helpers: config validation at load, model paths, and the common rule settings.

import json
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # driftlib from this checkout

import driftlib
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
    steps=r"\d+",
    source="|".join(map(lambda k: k.replace(".", r"\."), MODEL_KEYS)),
    target="|".join(map(lambda k: k.replace(".", r"\."), MODEL_KEYS)),


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


# Snakemake does not see edits to an imported library. Each rule therefore lists the driftlib
# modules whose code it runs as inputs (with the driftlib modules they import at module level), so
# editing one re-runs the rules that use it. Not listed: cli.py (argument parsing only),
# errors.py (messages) and __init__.py (the version); after editing those, use --forcerun.
DRIFTLIB_DIR = Path(driftlib.__file__).resolve().parent
_NOT_CODE_INPUTS = {"cli", "errors", "__init__"}


def _module_imports(name):
    """The driftlib modules that module `name` imports at module level."""
    import ast

    tree = ast.parse((DRIFTLIB_DIR / f"{name}.py").read_text(encoding="utf-8"))
    found = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "driftlib":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("driftlib."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("driftlib."))
    return {m for m in found if (DRIFTLIB_DIR / f"{m}.py").is_file()}


def code(*modules):
    """Source files of `modules` and of what they import, for a rule's `input` (see above)."""
    todo, seen = list(modules), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if not (DRIFTLIB_DIR / f"{name}.py").is_file():
            raise WorkflowError(f"code(): driftlib has no module {name!r}")
        seen.add(name)
        todo.extend(_module_imports(name) - seen)
    base = Path(workflow.basedir).resolve()
    paths = []
    for name in sorted(seen - _NOT_CODE_INPUTS):
        path = DRIFTLIB_DIR / f"{name}.py"
        paths.append(str(path.relative_to(base)) if path.is_relative_to(base) else str(path))
    return paths


# Host memory and time limit of a job that runs a model, scaled from the model's size in billions of
# parameters (`params_b` in the config; models without it are treated as small), and doubled on a
# retry (`attempt` 2, see profiles/slurm). Loading a model in bfloat16 takes 2 GB of host memory
# per billion parameters on the way to the GPU; extraction time grows with the size too.
MEM_MB_BASE, MEM_MB_PER_B = 4000, 2500
RUNTIME_MIN_BASE, RUNTIME_MIN_PER_B = 30, 15


def _params_b(key):
    return config["models"][key].get("params_b") or 0


def model_mem_mb(key_of):
    """A `mem_mb` resource for the model named by `key_of(wildcards)`."""
    return lambda wildcards, attempt: int((MEM_MB_BASE + MEM_MB_PER_B * _params_b(key_of(wildcards))) * attempt)


def model_runtime(key_of):
    """A `runtime` resource (minutes) for the model named by `key_of(wildcards)`."""
    return lambda wildcards, attempt: int((RUNTIME_MIN_BASE + RUNTIME_MIN_PER_B * _params_b(key_of(wildcards))) * attempt)


def BY_MODEL(wildcards):
    return wildcards.model


def BY_TARGET(wildcards):
    return wildcards.target


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


def aqi_options():
    """The config's AQI settings as `driftlib` options (one param, so a change re-runs the rule)."""
    a = config["aqi"]
    return (f"--method {a['method']} --pca-components {a['pca_components']} --bootstrap {a['bootstrap']} "
            f"--permutations {a['permutations']} --confidence {a['confidence']} --seed {config['seed']}")


# --- phase 4 ---------------------------------------------------------------------------

CROSS = config["cross_arch"]
#: (source, target): every model's vector mapped into every other model that has a base to steer
PAIRS = [(s, t) for s in MODEL_KEYS for t in STEERED if s != t]


def space_variant(key):
    """The variant whose hidden states a model's maps are fitted on: the base model it is steered
    in where it has one, else the aligned model its contrastive vector comes from."""
    return "base" if config["models"][key].get("base") else "aligned"


def anchor_states(key):
    return f"{RESULTS}/activations/{key}/{space_variant(key)}/anchors.safetensors"


def target_model_options(wildcards):
    return load_options(wildcards.target, "base")


def target_model_inputs(wildcards):
    return tiny_inputs(wildcards.target, "base")


# --- phase 4.5 -------------------------------------------------------------------------

DEALIGN = config["dealign"]
STRENGTHS = sorted(DEALIGN["steps"])


def aligned_model_options(wildcards):
    return load_options(wildcards.model, "aligned")


def aligned_model_inputs(wildcards):
    return tiny_inputs(wildcards.model, "aligned")


def pairs_into(name):
    """An input function: phase 4's `name` files of every pair into the model (the recovery sweep
    picks the phase-1 baseline's, by its best map)."""
    return lambda wildcards: [f"{RESULTS}/transfer/{s}/{t}/{name}" for s, t in PAIRS if t == wildcards.model]


AQI_TABLES = [f"{RESULTS}/aqi/{m}/{v}.parquet" for m, v in VARIANTS_OF]
