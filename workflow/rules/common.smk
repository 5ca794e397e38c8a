# Shared helpers: config validation at load, model paths, and the common rule settings.

import json
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # driftlib from this checkout

import driftlib
from driftlib.core.config import iter_model_variants, load_and_check, tiny_member
from driftlib.model.real import REAL_MODELS, real_member
from driftlib.core.errors import ConfigError

from driftlib.core.config import read_config_file

try:
    # every config file Snakemake read (the default, or those of --configfile), read again as driftlib
    # does: a key given twice is refused (Snakemake keeps the last one without a word)
    for _file in workflow.configfiles:
        read_config_file(_file)
    # nested --config values arrive as strings; load_and_check reads them as the schema's numbers
    load_and_check(config)
except ConfigError as _exc:
    raise WorkflowError(f"config: {_exc}") from None

RESULTS = "results"
# The synthetic world (config `world`, docs/synthetic_world.md): when enabled, every data source left at its
# default reads the world's file under WORLD_DIR, which rule prepare_world writes (data.smk).
from driftlib.datasets.synthetic import WORLD_FILES, point_at_world

WORLD = config["world"]
WORLD_DIR = f"{RESULTS}/data/world"
WORLD_PATHS = {key: f"{WORLD_DIR}/{name}" for key, name in WORLD_FILES.items()}
WORLD_SOURCES = point_at_world(config, WORLD_DIR)
MODEL_KEYS = list(config["models"])
VARIANTS_OF = [(m, v) for m, v, _ in iter_model_variants(config)]
ENV = "../envs/driftlib.yaml"


def model_threads():
    """Threads of a job that runs a model: 4, or 1 where Snakemake has at most 2 cores.

    Snakemake caps a job's threads at its cores and sets OMP_NUM_THREADS to them, which torch
    follows. On 2 cores a 4-thread job takes both, so model jobs ran one at a time; on the tiny
    family a second thread buys little (a recovery sweep: 15.9 s on 2 threads, 17.6 s on 1) and two
    1-thread jobs side by side took 17.7 s together, 1.8 times the throughput, with bit-identical
    outputs (the workflow's torch is deterministic). Under a cluster executor the submitting
    machine's cores (profiles/default's `cores: all`) decide it too, as they already capped it.
    """
    try:
        cores = workflow.cores
    except WorkflowError:  # no core count given (a cluster executor): the rules' own figure
        return 4
    return 1 if cores <= 2 else 4


MODEL_THREADS = model_threads()


def start_job_server():
    """Start the job server for a local run (config `job_server`; driftlib.cli.jobserver).

    Every rule's `driftlib` command then runs in a fork of one process that imported torch,
    transformers and driftlib once, instead of importing them itself (seconds per model job); the
    outputs are the same bytes. Linux only; not under a cluster executor (the jobs run elsewhere), and
    not where the `driftlib` on this machine's PATH has no `driftlib-jobserver` beside it. The server
    ends with this Snakemake process (atexit, and it watches its parent); its log is
    results/logs/job_server.log.
    """
    import atexit
    import os
    import shutil
    import subprocess
    import tempfile

    from driftlib.cli.jobserver import SERVER_ENV

    driftlib = shutil.which("driftlib")  # what the rules run: the server must be the same install
    exe = Path(driftlib).with_name("driftlib-jobserver") if driftlib else None
    if (not config["job_server"] or not workflow.local_exec or not sys.platform.startswith("linux")
            or os.environ.get(SERVER_ENV) or exe is None or not exe.is_file()):
        return
    folder = tempfile.mkdtemp(prefix="driftlib-")  # a short path: a socket's is limited to ~100 bytes
    os.environ[SERVER_ENV] = str(Path(folder) / "jobs.sock")
    Path(f"{RESULTS}/logs").mkdir(parents=True, exist_ok=True)
    with open(f"{RESULTS}/logs/job_server.log", "w") as log:
        server = subprocess.Popen([str(exe), "--socket", os.environ[SERVER_ENV]], stdin=subprocess.DEVNULL,
                                  stdout=log, stderr=subprocess.STDOUT)

    def stop():
        os.environ.pop(SERVER_ENV, None)
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(folder, ignore_errors=True)

    atexit.register(stop)


wildcard_constraints:
    model="|".join(map(lambda k: k.replace(".", r"\."), MODEL_KEYS)),
    variant="base|aligned",
    steps=r"\d+",
    source="|".join(map(lambda k: k.replace(".", r"\."), MODEL_KEYS)),
    target="|".join(map(lambda k: k.replace(".", r"\."), MODEL_KEYS)),
    agent="|".join(map(lambda k: k.replace(".", r"\."), MODEL_KEYS)),
    pairing=r"[^/+]+(\+[^/+]+)+",
    profile=r"[0-9.e+-]+(x[0-9.e+-]+)+(@[a-z_]+)?",
    lam=r"[0-9.e+-]+(@[a-z_]+)?",
    name="|".join(REAL_MODELS),
    operator="add|ablate|ablate_add|conditional",


def tiny_data_args(*keys):
    return " ".join(f"--{key} {shlex.quote(TINY_DATA[key])}" for key in keys if key in TINY_DATA)


def judgement_args():
    """The tiny bases' judgement stage (tiny.smk's JUDGE, JUDGEMENT_DEPTH), as `tiny-model base` options."""
    if not JUDGE:
        return ""
    return (f"{tiny_data_args('judgements')} --judgement-steps {TINY['judgement_steps']} "
            f"--answer-steps {TINY['answer_steps']} --judgement-depth {layer_args(JUDGEMENT_DEPTH)} "
            f"--judgement-lr {TINY['judgement_lr']} "
            f"--judgement-margin {TINY['judgement_margin']}")


def model_path(key, variant):
    """Where a model variant's weights are: a tiny-family folder, a materialised real model, a local
    folder or a hub id."""
    path = config["models"][key][variant]
    member, real = tiny_member(path), real_member(path)
    return f"{RESULTS}/models/tiny/{member}" if member else f"{RESULTS}/models/real/{real}" if real else path


def built_inputs(key, variant):
    """The folder a variant needs the workflow to build first: a tiny-family model or a real model
    materialised from its package (none for hub ids and local folders)."""
    path = config["models"][key][variant]
    return [model_path(key, variant)] if tiny_member(path) or real_member(path) else []


def load_options(key, variant):
    """Command-line options that load a model variant as the config says."""
    entry = config["models"][key]
    opts = ["--model", model_path(key, variant)]
    opts += ["--dtype", entry.get("dtype") or config["dtype"], "--device", config["device"]]
    if entry.get("revision"):
        opts += ["--revision", entry["revision"]]
    if entry.get("trust_remote_code"):
        opts.append("--trust-remote-code")
    if variant == "base":  # base and aligned read prompts through the aligned variant's chat template
        opts += ["--template", model_path(key, "aligned")]
    return " ".join(shlex.quote(str(o)) for o in opts)


def loading_inputs(key, variant):
    """What `load_options(key, variant)` needs built first (a base variant: the aligned one too, for
    its chat template)."""
    extra = built_inputs(key, "aligned") if variant == "base" else []
    return built_inputs(key, variant) + extra


def model_inputs(wildcards):
    return loading_inputs(wildcards.model, wildcards.variant)


def batch_args():
    """How extraction batches texts (config `extraction`): rows, or a token budget, and packing."""
    ex = config["extraction"]
    out = f"--batch-size {ex['batch_size']}"
    if ex.get("tokens_per_batch"):
        out += f" --tokens-per-batch {ex['tokens_per_batch']}"
    return out + (" --packing" if ex.get("packing") else "") + (" --compile" if ex.get("compile") else "")


def read_args():
    """How prompts are read (config `extraction`): rendering, pooling, the first token in a mean."""
    ex = config["extraction"]
    return f"--render {ex['render']} --pooling {ex['pooling']}" + ("" if ex["skip_first"] else " --no-skip-first")


def model_options(wildcards):
    return load_options(wildcards.model, wildcards.variant)


# Snakemake does not see edits to an imported library. Each rule therefore lists, as inputs, the
# driftlib source files that its command can run: code("sweep") follows the import graph from the
# phase function that `driftlib sweep` calls, lazy imports included (driftlib.cli.codegraph says
# how, and what is left out: the CLI's argument parsing, error messages, __init__ files).
from driftlib.cli.codegraph import command_sources


def code(command):
    """Source files of what `driftlib <command>` runs, for a rule's `input`."""
    base = Path(workflow.basedir).resolve()
    try:
        files = command_sources(command)
    except ConfigError as exc:
        raise WorkflowError(str(exc)) from None
    return [str(f.relative_to(base)) if f.is_relative_to(base) else str(f) for f in files]


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
    """A data source given as a local file is an input (editing it re-runs what reads it); a world file is
    one even before rule prepare_world has written it."""
    return [path] if path is not None and (Path(path).is_file() or path in WORLD_PATHS.values()) else []


def source_param(name, value):
    """A data source's command-line value: the rule's input `name` (local_file) when the source is a local
    file, so an executor without a shared filesystem passes the staged path; else `value` itself (a Hub
    dataset, a bundled name, "none")."""
    return lambda wildcards, input: input[name] if input.get(name) else value


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

STEER = config["steering"]
#: the operators phases 3-5 run beside `steering.operator` (steering.compare)
COMPARED = [op for op in STEER["compare"] if op != STEER["operator"]]


def steering_args():
    """The steering specification's options (config `steering`) as the CLI takes them: one param
    shared by every rule that steers, so a change re-runs all of them."""
    args = f"--inject {layer_args(STEER['layers'])} --operator {STEER['operator']}"
    return args + (" --preserve-norm" if STEER["preserve_norm"] else "")


def space_variant(key):
    """The variant a model is steered in (and its maps are fitted on): its base model where it has
    one, else the aligned model its contrastive vector comes from."""
    return "base" if config["models"][key].get("base") else "aligned"


def steered_model_options(wildcards):
    return load_options(wildcards.model, space_variant(wildcards.model))


def steered_model_inputs(wildcards):
    return loading_inputs(wildcards.model, space_variant(wildcards.model))


def aqi_options():
    """The config's AQI settings as `driftlib` options (one param, so a change re-runs the rule)."""
    a = config["aqi"]
    return (f"--method {a['method']} --pca-components {a['pca_components']} --bootstrap {a['bootstrap']} "
            f"--permutations {a['permutations']} --confidence {a['confidence']} --seed {config['seed']} "
            f"--probe-folds {a['probe_folds']}")


def sweep_probe_options():
    """The probe's null and per-axiom rows in the sweeps of phases 3 and 4.5, for the model's own
    vector (`own`, `same_arch`, under every operator); the controls keep the overall probe. Phase 4's
    transfer sweeps, hundreds of blocks, leave both out (docs/aqi.md)."""
    a = config["aqi"]
    return (f"--probe-permutations {a['probe_permutations']} --probe-axioms --probe-vectors own same_arch"
            if a["probe_folds"] else "")


# --- phase 4 ---------------------------------------------------------------------------

CROSS = config["cross_arch"]
#: (source, target): every model's vector mapped into every other model (steered in its space_variant)
PAIRS = [(s, t) for s in MODEL_KEYS for t in MODEL_KEYS if s != t]


def anchor_states(key):
    return f"{RESULTS}/activations/{key}/{space_variant(key)}/anchors.safetensors"


def target_model_options(wildcards):
    return load_options(wildcards.target, space_variant(wildcards.target))


def target_model_inputs(wildcards):
    return loading_inputs(wildcards.target, space_variant(wildcards.target))


def pairs_into(name, wildcard="model"):
    """An input function: phase 4's per-pair `name` files of every source into the model that the
    `wildcard` names (the target's transfer sweep steers with all of them; the recovery sweep picks
    the phase-1 baseline's, by its best map)."""
    return lambda wildcards: [f"{RESULTS}/transfer/{s}/{t}/{name}" for s, t in PAIRS if t == getattr(wildcards, wildcard)]


# --- phase 4.5 -------------------------------------------------------------------------

DEALIGN = config["dealign"]
STRENGTHS = sorted(DEALIGN["steps"])
#: the models phase 4.5 dealigns (their aligned variants)
DEALIGNED = DEALIGN["models"] or MODEL_KEYS


def aligned_model_options(wildcards):
    return load_options(wildcards.model, "aligned")


def aligned_model_inputs(wildcards):
    return built_inputs(wildcards.model, "aligned")


AQI_TABLES = [f"{RESULTS}/aqi/{m}/{v}.parquet" for m, v in VARIANTS_OF]
#: phase 1's behaviour: each variant's answers to the prompts (none when behaviour.enabled is off)
BEHAVIOUR = config["behaviour"]["enabled"]
#: phase 5's answers (each agent in each condition, after long contexts)
COLLAB_BEHAVIOUR = BEHAVIOUR and config["behaviour"]["collaboration"]
#: phase 4's answers (each target unsteered and under each source's mapped vector at its best lambda)
TRANSFER_BEHAVIOUR = BEHAVIOUR and config["behaviour"]["transfer"]
ANSWERS = [f"{RESULTS}/behaviour/{m}/{v}.parquet" for m, v in VARIANTS_OF] if BEHAVIOUR else []


def recovery_answers_args(wildcards, output):
    """The recovery sweep's `--answers-out` (behaviour.enabled). Its answer length is
    `--answer-tokens`: the sweep also measures the cost, whose generations take `--max-new-tokens`."""
    if not BEHAVIOUR:
        return ""
    return f"--answers-out {output.answers} --answer-tokens {config['behaviour']['max_new_tokens']}"


def answers_args(wildcards, output):
    """A sweep's `--answers-out`: its rule also writes the greedy answers under steering (behaviour.enabled)."""
    if not BEHAVIOUR:
        return ""
    return f"--answers-out {output.answers} --max-new-tokens {config['behaviour']['max_new_tokens']}"


# --- phases 5 and 6 --------------------------------------------------------------------

from itertools import product

from driftlib.core.agents import parse_agent
from driftlib.core.profiles import pairing_name, parse_profile, profile_name, profile_operator

COLLAB = config["collaboration"]
GAME = config["game"]
#: pairing name -> its agents in turn order: model keys (their aligned models collaborate) or
#: KEY@dealigned[<N>] (that aligned model with phase 4.5's adapter; driftlib.core.agents)
PAIRINGS = {pairing_name(p): list(p) for p in COLLAB["pairings"]}


def agent_ref(name):
    """The agent `name` of a pairing: its model key and dealignment strength (None: aligned)."""
    return parse_agent(name, STRENGTHS)


def agent_adapter(name):
    """The dealignment adapter a dealigned agent loads (phase 4.5's train_dealign), or None."""
    ref = agent_ref(name)
    return f"{RESULTS}/dealign/{ref.key}/adapters/steps{ref.dealign_steps}" if ref.dealigned else None


def plain_profile(name):
    return profile_name([COLLAB["lambda"]] * len(PAIRINGS[name]))


def prevention_profile(name):
    lam = COLLAB["prevention_lambda"]
    return None if lam is None else profile_name([lam] * len(PAIRINGS[name]))


def game_profiles(name):
    """Every profile of phase 6's posture grid for a pairing (each agent one of game.lambdas)."""
    return [profile_name(c) for c in product(GAME["lambdas"], repeat=len(PAIRINGS[name]))]


def compared_prevention_profiles(name):
    """The pre-steered run under each compared operator (collaboration.compare_operators), e.g. 1x1@ablate."""
    lam = COLLAB["prevention_lambda"]
    if lam is None or not COLLAB["compare_operators"]:
        return []
    return [profile_name([lam] * len(PAIRINGS[name]), op) for op in COMPARED]


def phase5_profiles(name):
    return [p for p in (plain_profile(name), prevention_profile(name)) if p is not None] + compared_prevention_profiles(name)


def run_operator(wildcards):
    """The steering operator of a phase-5 run (its profile's, or a solo run's lam wildcard's, compared
    operator; the main operator otherwise)."""
    name = wildcards.profile if "profile" in wildcards.keys() else wildcards.lam
    return profile_operator(name) or STEER["operator"]


def agent_condition_file(name):
    """The condition a phase-5 agent is gated by under the conditional operator: fitted on the agent's own
    model (its key's aligned model, with the dealignment adapter for a dealigned agent)."""
    return f"{RESULTS}/collab/conditions/{name}.safetensors"


def gated_run(wildcards):
    return run_operator(wildcards) == "conditional"


def run_conditions(wildcards):
    """The input function of a phase-5 run: the conditions of its steered agents under the conditional operator."""
    if not gated_run(wildcards):
        return {}
    if "agent" in wildcards.keys():  # one agent: its solo run or its states
        lam = agent_lambda(wildcards) if "profile" in wildcards.keys() else parse_profile(wildcards.lam)[0]
        return {"condition": agent_condition_file(wildcards.agent)} if lam != 0 else {}
    agents = PAIRINGS[wildcards.pairing]
    steered = [a for a, lam in zip(agents, parse_profile(wildcards.profile, len(agents))) if lam != 0]
    return {"conditions": [agent_condition_file(a) for a in steered]}


def run_steering_args(wildcards, input):
    """steering_args() under the run's operator, with the agent's condition for a gated one-agent job."""
    args = f"--inject {layer_args(STEER['layers'])} --operator {run_operator(wildcards)}"
    args += " --preserve-norm" if STEER["preserve_norm"] else ""
    return args + (f" --condition {input.condition}" if "condition" in input.keys() else "")


#: every (pairing, profile) run: phase 5's plain and pre-steered runs, and phase 6's grid
COLLAB_RUNS = sorted({(n, p) for n in PAIRINGS for p in phase5_profiles(n) + game_profiles(n)})


def run_dir(pairing, profile):
    return f"{RESULTS}/collab/{pairing}/{profile}"


def drift_files(runs):
    return [f"{run_dir(n, p)}/{a}.drift.json" for n, p in runs for a in PAIRINGS[n]]


def agent_lambda(wildcards):
    agents = PAIRINGS[wildcards.pairing]
    return parse_profile(wildcards.profile, len(agents))[agents.index(wildcards.agent)]


def agents_json(wildcards):
    """The `--agents` list of a run: each agent's aligned model (and dealignment adapter), own vectors and lambda."""
    agents = PAIRINGS[wildcards.pairing]
    specs = []
    for name, lam in zip(agents, parse_profile(wildcards.profile, len(agents))):
        key = agent_ref(name).key
        entry = config["models"][key]
        spec = {"name": name, "model": model_path(key, "aligned"), "vectors": f"{RESULTS}/vectors/{key}.safetensors",
                "lam": lam, "dtype": entry.get("dtype") or config["dtype"]}
        if lam != 0 and gated_run(wildcards):
            spec["condition"] = agent_condition_file(name)
        if agent_adapter(name):
            spec["adapter"] = agent_adapter(name)
        if entry.get("revision"):
            spec["revision"] = entry["revision"]
        if entry.get("trust_remote_code"):
            spec["trust_remote_code"] = True
        specs.append(spec)
    return json.dumps(specs, separators=(",", ":"))


def pairing_inputs(what):
    """An input function: `what(key)` (a list of paths) for every agent of the run's pairing."""
    return lambda wildcards: [p for key in PAIRINGS[wildcards.pairing] for p in what(key)]


def pairing_mem_mb(wildcards, attempt):
    size = sum(_params_b(agent_ref(a).key) for a in PAIRINGS[wildcards.pairing])
    return int((MEM_MB_BASE + MEM_MB_PER_B * size) * attempt)


def pairing_runtime(wildcards, attempt):
    size = sum(_params_b(agent_ref(a).key) for a in PAIRINGS[wildcards.pairing])
    return int((RUNTIME_MIN_BASE + RUNTIME_MIN_PER_B * size) * attempt)


def solo_turns(key):
    """Turns of an agent's solo run: enough for the largest pairing it is in."""
    return COLLAB["rounds"] * max(len(agents) for agents in PAIRINGS.values() if key in agents)


def solo_lambda(wildcards):
    """A solo run's lambda (its `lam` wildcard without the @operator)."""
    return parse_profile(wildcards.lam)[0]


def solo_transcripts(wildcards):
    lam = profile_name([agent_lambda(wildcards)], profile_operator(wildcards.profile))
    return f"{RESULTS}/collab/solo/{wildcards.agent}/lam{lam}/transcripts.parquet"


def BY_AGENT(wildcards):
    return wildcards.agent


def AGENT_KEY(wildcards):
    return agent_ref(wildcards.agent).key


def agent_inputs(name):
    """What loading agent `name` needs built: its key's aligned model, and the adapters if dealigned."""
    ref = agent_ref(name)
    return built_inputs(ref.key, "aligned") + ([f"{RESULTS}/dealign/{ref.key}/adapters"] if ref.dealigned else [])


def agent_vectors(name):
    return f"{RESULTS}/vectors/{agent_ref(name).key}.safetensors"


def agent_load_options(wildcards):
    """`--model ...` of the agent's key's aligned model, and `--adapter` for a dealigned agent."""
    adapter = agent_adapter(wildcards.agent)
    return load_options(AGENT_KEY(wildcards), "aligned") + (f" --adapter {adapter}" if adapter else "")


# --- phase 3: steering operators side by side ------------------------------------------------



def operator_dir(model, operator):
    """Where phase 3 keeps one model's files for one operator (the main operator: the phase's own)."""
    base = f"{RESULTS}/steering/{model}"
    return base if operator == STEER["operator"] else f"{base}/operators/{operator}"


def condition_file(key):
    return f"{RESULTS}/steering/{key}/condition.safetensors"


def operator_inputs(wildcards):
    """The condition a gated operator needs (none for the others)."""
    return {"condition": condition_file(wildcards.model)} if wildcards.operator == "conditional" else {}


def operator_steering_args(wildcards, input):
    """steering_args() with the compared operator, and its condition where it has one."""
    args = f"--inject {layer_args(STEER['layers'])} --operator {wildcards.operator}"
    args += " --preserve-norm" if STEER["preserve_norm"] else ""
    return args + (f" --condition {input.condition}" if "condition" in input.keys() else "")


def condition_layer_args():
    layer = STEER["condition"]["layer"]
    return "" if layer is None else f"--condition-layer {layer}"


def compared_condition(wildcard):
    """The input function of a sweep over the compared operators: the phase-3 condition of the model key in
    `wildcard` when the conditional operator is compared (none otherwise)."""
    return lambda wildcards: {"condition": condition_file(wildcards[wildcard])} if "conditional" in COMPARED else {}


def compared_steering_args(wildcards, input):
    """steering_args() plus the compared operators and, for the conditional one, the model's condition."""
    args = steering_args() + (" --compare " + " ".join(COMPARED) if COMPARED else "")
    return args + (f" --condition {input.condition}" if "condition" in input.keys() else "")


def transfer_condition(wildcards):
    """The input function of phase 4's steered runs (a target's sweep and answers): the target's own
    phase-3 condition, or with cross_arch.condition mapped each source's condition mapped into the
    target, when the conditional operator is compared (none otherwise)."""
    if "conditional" not in COMPARED:
        return {}
    if CROSS["condition"] == "mapped":
        return {"mapped_conditions": pairs_into("mapped_condition.safetensors", "target")(wildcards)}
    return {"condition": condition_file(wildcards.target)}


def transfer_steering_args(wildcards, input):
    """compared_steering_args() with phase 4's conditions (transfer_condition)."""
    args = steering_args() + (" --compare " + " ".join(COMPARED) if COMPARED else "")
    if "mapped_conditions" in input.keys():
        return f"{args} --mapped-conditions {' '.join(input.mapped_conditions)}"
    return args + (f" --condition {input.condition}" if "condition" in input.keys() else "")


def own_files(name):
    """The target's phase-3 `name` file under the main operator and under each compared one."""
    return lambda wildcards: [f"{operator_dir(wildcards.target, op)}/{name}" for op in [STEER["operator"], *COMPARED]]
