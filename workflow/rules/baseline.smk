# Phase 1: how aligned is each model, per axiom? Hidden states on the evaluation prompts, the
# AQI per axiom with intervals, and the baseline model (highest overall AQI).


rule extract_prompts:
    input:
        prompts=f"{RESULTS}/data/prompts.parquet",
        model=model_inputs,
        code=code("extract"),
    output:
        f"{RESULTS}/activations/{{model}}/{{variant}}/prompts.safetensors",
    params:
        model=model_options,
        layers=layer_args(config["aqi"]["layers"]),
        read=read_args(),
        batching=batch_args(),
        max_length=config["extraction"]["max_length"],
    log:
        f"{RESULTS}/logs/extract_prompts/{{model}}-{{variant}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/extract_prompts/{{model}}-{{variant}}.tsv"
    resources:
        gpu=1,
        mem_mb=model_mem_mb(BY_MODEL),
        runtime=model_runtime(BY_MODEL),
    conda:
        ENV
    shell:
        "driftlib extract {params.model} --name {wildcards.model} --variant {wildcards.variant} "
        "--texts {input.prompts} --layers {params.layers} {params.read} "
        "{params.batching} --max-length {params.max_length} --out {output} > {log} 2>&1"


rule answer_prompts:
    input:
        prompts=f"{RESULTS}/data/prompts.parquet",
        model=model_inputs,
        code=code("answer"),
    output:
        f"{RESULTS}/behaviour/{{model}}/{{variant}}.parquet",
    params:
        model=model_options,
        max_new_tokens=config["behaviour"]["max_new_tokens"],
        batch_size=config["extraction"]["batch_size"],
        max_length=config["extraction"]["max_length"],
    log:
        f"{RESULTS}/logs/answer_prompts/{{model}}-{{variant}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/answer_prompts/{{model}}-{{variant}}.tsv"
    resources:
        gpu=1,
        mem_mb=model_mem_mb(BY_MODEL),
        runtime=model_runtime(BY_MODEL),
    conda:
        ENV
    shell:
        "driftlib answer {params.model} --name {wildcards.model} --variant {wildcards.variant} "
        "--prompts {input.prompts} --max-new-tokens {params.max_new_tokens} "
        "--batch-size {params.batch_size} --max-length {params.max_length} --out {output} > {log} 2>&1"


rule score_aqi:
    input:
        activations=f"{RESULTS}/activations/{{model}}/{{variant}}/prompts.safetensors",
        prompts=f"{RESULTS}/data/prompts.parquet",
        code=code("score"),
    output:
        f"{RESULTS}/aqi/{{model}}/{{variant}}.parquet",
    params:
        method=config["aqi"]["method"],
        pca=config["aqi"]["pca_components"],
        bootstrap=config["aqi"]["bootstrap"],
        permutations=config["aqi"]["permutations"],
        confidence=config["aqi"]["confidence"],
        paper="--paper --gamma {}".format(config["aqi"]["gamma"]) if config["aqi"]["paper"] else "",
        probe="--probe-folds {} --probe-permutations {}".format(config["aqi"]["probe_folds"],
                                                                config["aqi"]["probe_permutations"]),
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/score_aqi/{{model}}-{{variant}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/score_aqi/{{model}}-{{variant}}.tsv"
    conda:
        ENV
    shell:
        "driftlib score --activations {input.activations} --prompts {input.prompts} --method {params.method} "
        "--pca-components {params.pca} --bootstrap {params.bootstrap} --permutations {params.permutations} "
        "--confidence {params.confidence} {params.paper} {params.probe} --seed {params.seed} --out {output} > {log} 2>&1"


rule baseline_summary:
    input:
        tables=[f"{RESULTS}/aqi/{m}/{v}.parquet" for m, v in VARIANTS_OF],
        answers=ANSWERS,
        code=code("summarize-baseline"),
    output:
        table=f"{RESULTS}/baseline/aqi_summary.parquet",
        csv=report(
            f"{RESULTS}/baseline/aqi_summary.csv",
            caption="../report/aqi_summary.rst",
            category="Phase 1: baseline",
        ),
        choice=f"{RESULTS}/baseline/baseline.json",
        behaviour_table=f"{RESULTS}/baseline/behaviour.parquet" if ANSWERS else [],
        behaviour=report(
            f"{RESULTS}/baseline/behaviour.csv",
            caption="../report/behaviour.rst",
            category="Phase 1: baseline",
        ) if ANSWERS else [],
        refusal=report(
            f"{RESULTS}/baseline/refusal.png",
            caption="../report/refusal.rst",
            category="Phase 1: baseline",
        ) if ANSWERS else [],
        comparison=report(
            f"{RESULTS}/baseline/aligned_vs_base.csv",
            caption="../report/aligned_vs_base.rst",
            category="Phase 1: baseline",
        ),
        bars=report(
            f"{RESULTS}/baseline/aqi_overall.png",
            caption="../report/aqi_overall.rst",
            category="Phase 1: baseline",
        ),
        heatmap=report(
            f"{RESULTS}/baseline/aqi_heatmap.png",
            caption="../report/aqi_heatmap.rst",
            category="Phase 1: baseline",
        ),
    params:
        out_dir=lambda wildcards, output: Path(output.table).parent,
    log:
        f"{RESULTS}/logs/baseline_summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/baseline_summary.tsv"
    localrule: True
    conda:
        ENV
    shell:
        "driftlib summarize-baseline --tables {input.tables} --answers {input.answers} "
        "--out-dir {params.out_dir} > {log} 2>&1"
