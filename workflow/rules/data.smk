# The synthetic world (config `world`), evaluation and calibration prompts (LITMUS form), preference pairs
# and dealignment data (hh-rlhf form), sampled once per run.


# The world's files (docs/synthetic_world.md): with `world.enabled`, the data sources left at their defaults
# read them (common.smk), and the tiny family trains on its corpus and alignment chats (tiny.smk).
rule prepare_world:
    input:
        code=code("prepare-world"),
    output:
        [WORLD_PATHS[key] for key in WORLD_FILES],
    params:
        spec=json.dumps({k: v for k, v in sorted(WORLD.items()) if k != "enabled"}, separators=(",", ":")),
        seed=config["seed"],
        out=lambda wildcards, output: str(Path(output[0]).parent),
    log:
        f"{RESULTS}/logs/prepare_world.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_world.tsv"
    localrule: True
    conda:
        ENV
    shell:
        "driftlib prepare-world --spec {params.spec:q} --seed {params.seed} --out {params.out} > {log} 2>&1"



CALIBRATION_SOURCE = config["data"]["calibration"]["source"]


rule prepare_prompts:
    input:
        source=local_file(config["data"]["prompts"]["source"]),
        calibration_source=local_file(CALIBRATION_SOURCE),
        code=code("prepare-prompts"),
    output:
        prompts=f"{RESULTS}/data/prompts.parquet",
        calibration=f"{RESULTS}/data/calibration.parquet",
    params:
        calibration=config["steering"]["condition"]["calibration_per_group"],
        calibration_source=(
            f"--calibration-source {shlex.quote(CALIBRATION_SOURCE)}" if CALIBRATION_SOURCE else ""
        ),
        source=source_param("source", config["data"]["prompts"]["source"]),
        split=config["data"]["prompts"]["split"],
        per_group=config["data"]["prompts"]["per_group"],
        axioms=(
            "--axioms " + " ".join(shlex.quote(a) for a in config["data"]["prompts"]["axioms"])
            if config["data"]["prompts"]["axioms"]
            else ""
        ),
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/prepare_prompts.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_prompts.tsv"
    localrule: True
    conda:
        ENV
    shell:
        "driftlib prepare-prompts --source {params.source:q} --split {params.split:q} "
        "--per-group {params.per_group} {params.axioms} --seed {params.seed} --out {output.prompts} "
        "--calibration-out {output.calibration} --calibration-per-group {params.calibration} "
        "{params.calibration_source} > {log} 2>&1"


rule prepare_pairs:
    input:
        source=local_file(config["data"]["pairs"]["source"]),
        code=code("prepare-pairs"),
    output:
        f"{RESULTS}/data/pairs.parquet",
    params:
        source=source_param("source", config["data"]["pairs"]["source"]),
        data_dir=(
            f"--data-dir {shlex.quote(config['data']['pairs']['data_dir'])}"
            if config["data"]["pairs"]["data_dir"]
            else ""
        ),
        split=config["data"]["pairs"]["split"],
        n=config["data"]["pairs"]["n"],
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/prepare_pairs.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_pairs.tsv"
    localrule: True
    conda:
        ENV
    shell:
        "driftlib prepare-pairs --source {params.source:q} {params.data_dir} --split {params.split:q} "
        "--n {params.n} --seed {params.seed} --out {output} > {log} 2>&1"


# Phase 4.5's dealignment data: the LoRA trains on the `rejected` responses of data.dealign.source (every row;
# the world's harmful compliance when the world is on), else on those of the preference pairs.
DEALIGN_SOURCE = config["data"]["dealign"]["source"]
DEALIGN_PAIRS = f"{RESULTS}/data/dealign.parquet" if DEALIGN_SOURCE else f"{RESULTS}/data/pairs.parquet"


rule prepare_dealign:
    input:
        source=local_file(DEALIGN_SOURCE),
        code=code("prepare-pairs"),
    output:
        f"{RESULTS}/data/dealign.parquet",
    params:
        source=source_param("source", DEALIGN_SOURCE or "none"),
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/prepare_dealign.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_dealign.tsv"
    localrule: True
    conda:
        ENV
    shell:
        "driftlib prepare-pairs --source {params.source:q} --n none --seed {params.seed} --out {output} > {log} 2>&1"
