# Evaluation prompts (LITMUS form) and preference pairs (hh-rlhf form), sampled once per run.


rule prepare_prompts:
    input:
        local_file(config["data"]["prompts"]["source"]),
        code=code("prepare-prompts"),
    output:
        prompts=f"{RESULTS}/data/prompts.parquet",
        calibration=f"{RESULTS}/data/calibration.parquet",
    params:
        calibration=config["steering"]["condition"]["calibration_per_group"],
        source=config["data"]["prompts"]["source"],
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
        "--calibration-out {output.calibration} --calibration-per-group {params.calibration} > {log} 2>&1"


rule prepare_pairs:
    input:
        local_file(config["data"]["pairs"]["source"]),
        code=code("prepare-pairs"),
    output:
        f"{RESULTS}/data/pairs.parquet",
    params:
        source=config["data"]["pairs"]["source"],
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
