# Phase 4: does a model's vector, mapped into another architecture, steer that model too? Anchor
# texts read by every model, layer matching and maps per (source, target) pair, each target's base
# model steered once with the mapped vectors of every source and their controls, under the main
# operator and each compared one (steering.compare; its sweep, scores and cost under
# transfer/into/{target}/, vectors named {source}/{method}/{kind}[/{operator}]), the efficiency per
# pair and operator against the target's own vector under the same operator (phase 3's files), with
# behaviour.transfer each target's answers unsteered and under each source's mapped vector at its best
# lambda, and the source x target matrix. The conditional operator's condition in a target is the
# target's own (phase 3) or, with cross_arch.condition mapped, each source's mapped in (map_condition).

PAIR_DIR = f"{RESULTS}/transfer/{{source}}/{{target}}"
#: every model some other model's vector is mapped into
TRANSFER_TARGETS = sorted({t for _, t in PAIRS})
TARGET_DIR = f"{RESULTS}/transfer/into/{{target}}"


# Anchors are checked against every row of the prompt source, not against the sample, so a new
# sample size does not re-extract them.
rule prepare_anchors:
    input:
        source=local_file(CROSS["anchors"]["source"]),
        prompts=local_file(config["data"]["prompts"]["source"]),
        code=code("prepare-anchors"),
    output:
        f"{RESULTS}/data/anchors.parquet",
    params:
        source=source_param("source", CROSS["anchors"]["source"]),
        prompts=source_param("prompts", config["data"]["prompts"]["source"]),
        split=config["data"]["prompts"]["split"],
        n=CROSS["anchors"]["n"],
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/prepare_anchors.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_anchors.tsv"
    localrule: True
    conda:
        ENV
    shell:
        "driftlib prepare-anchors --source {params.source:q} --prompts {params.prompts:q} --split {params.split:q} --n {params.n} "
        "--seed {params.seed} --out {output} > {log} 2>&1"


rule extract_anchors:
    input:
        anchors=f"{RESULTS}/data/anchors.parquet",
        model=model_inputs,
        code=code("extract"),
    output:
        f"{RESULTS}/activations/{{model}}/{{variant}}/anchors.safetensors",
    params:
        model=model_options,
        read=read_args(),
        batch_size=config["extraction"]["batch_size"],
        max_length=config["extraction"]["max_length"],
    log:
        f"{RESULTS}/logs/extract_anchors/{{model}}-{{variant}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/extract_anchors/{{model}}-{{variant}}.tsv"
    threads: MODEL_THREADS
    resources:
        gpu=1,
        mem_mb=model_mem_mb(BY_MODEL),
        runtime=model_runtime(BY_MODEL),
    conda:
        ENV
    shell:
        "driftlib extract {params.model} --name {wildcards.model} --variant {wildcards.variant} "
        "--texts {input.anchors} --all-layers {params.read} "
        "--batch-size {params.batch_size} --max-length {params.max_length} --out {output} > {log} 2>&1"


rule fit_maps:
    input:
        source_anchors=lambda w: anchor_states(w.source),
        target_anchors=lambda w: anchor_states(w.target),
        source_vectors=f"{RESULTS}/vectors/{{source}}.safetensors",
        target_vectors=f"{RESULTS}/vectors/{{target}}.safetensors",
        code=code("fit-maps"),
    output:
        maps=f"{PAIR_DIR}/maps.safetensors",
        vectors=f"{PAIR_DIR}/mapped_vectors.safetensors",
        fit=f"{PAIR_DIR}/fit.parquet",
        matching=f"{PAIR_DIR}/matching.json",
    params:
        inject=layer_args(STEER["layers"]),
        matching=CROSS["layer_matching"],
        methods=" ".join(CROSS["methods"]),
        components=CROSS["procrustes_components"],
        relative=CROSS["relative_anchors"],
        folds=CROSS["folds"],
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/fit_maps/{{source}}-{{target}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/fit_maps/{{source}}-{{target}}.tsv"
    conda:
        ENV
    shell:
        "driftlib fit-maps --source {wildcards.source} --target {wildcards.target} "
        "--source-anchors {input.source_anchors} --target-anchors {input.target_anchors} "
        "--source-vectors {input.source_vectors} --target-vectors {input.target_vectors} --inject {params.inject} "
        "--matching {params.matching} --methods {params.methods} --procrustes-components {params.components} "
        "--relative-anchors {params.relative} --folds {params.folds} --seed {params.seed} "
        "--out-maps {output.maps} --out-vectors {output.vectors} --out-fit {output.fit} "
        "--out-matching {output.matching} > {log} 2>&1"


rule map_condition:
    input:
        source_condition=lambda wildcards: condition_file(wildcards.source),
        target_condition=lambda wildcards: condition_file(wildcards.target),
        maps=f"{PAIR_DIR}/maps.safetensors",
        prompts=f"{RESULTS}/data/prompts.parquet",
        code=code("map-condition"),
    output:
        f"{PAIR_DIR}/mapped_condition.safetensors",
    params:
        confidence=config["aqi"]["confidence"],
    log:
        f"{RESULTS}/logs/map_condition/{{source}}-{{target}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/map_condition/{{source}}-{{target}}.tsv"
    conda:
        ENV
    shell:
        "driftlib map-condition --source-condition {input.source_condition} --target-condition {input.target_condition} "
        "--maps {input.maps} --prompts {input.prompts} --confidence {params.confidence} --out {output} > {log} 2>&1"


rule transfer_sweep:
    input:
        unpack(transfer_condition),
        prompts=f"{RESULTS}/data/prompts.parquet",
        mapped=pairs_into("mapped_vectors.safetensors", "target"),
        neutral=local_file(STEER["cost"]["neutral"]),
        model=target_model_inputs,
        code=code("transfer-sweep"),
    output:
        sweep=f"{TARGET_DIR}/sweep.safetensors",
        cost=f"{TARGET_DIR}/cost.parquet",
    params:
        steering=transfer_steering_args,
        model=target_model_options,
        methods=" ".join(CROSS["methods"]),
        measure=layer_args(STEER["measure_layers"]),
        lambdas=layer_args(STEER["lambdas"]),
        read=read_args(),
        batch_size=config["extraction"]["batch_size"],
        max_length=config["extraction"]["max_length"],
        neutral=source_param("neutral", STEER["cost"]["neutral"]),
        n_texts=STEER["cost"]["n_texts"],
        n_prompts=STEER["cost"]["n_prompts"],
        max_new_tokens=STEER["cost"]["max_new_tokens"],
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/transfer_sweep/{{target}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/transfer_sweep/{{target}}.tsv"
    threads: MODEL_THREADS
    resources:
        gpu=1,
        mem_mb=model_mem_mb(BY_TARGET),
        runtime=model_runtime(BY_TARGET),
    conda:
        ENV
    shell:
        "driftlib transfer-sweep {params.model} --name {wildcards.target} --mapped {input.mapped} "
        "--methods {params.methods} --measure {params.measure} --lambdas {params.lambdas} {params.steering} "
        "--texts {input.prompts} {params.read} --batch-size {params.batch_size} "
        "--max-length {params.max_length} --neutral {params.neutral:q} --n-texts {params.n_texts} "
        "--n-prompts {params.n_prompts} --max-new-tokens {params.max_new_tokens} --seed {params.seed} "
        "--out {output.sweep} --cost-out {output.cost} > {log} 2>&1"


rule score_transfer:
    input:
        sweep=f"{TARGET_DIR}/sweep.safetensors",
        prompts=f"{RESULTS}/data/prompts.parquet",
        code=code("score-sweep"),
    output:
        f"{TARGET_DIR}/sweep_aqi.parquet",
    params:
        aqi=aqi_options(),
    log:
        f"{RESULTS}/logs/score_transfer/{{target}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/score_transfer/{{target}}.tsv"
    conda:
        ENV
    shell:
        "driftlib score-sweep --sweep {input.sweep} --prompts {input.prompts} --producer transfer_sweep "
        "{params.aqi} --out {output} > {log} 2>&1"


rule transfer_efficiency:
    input:
        transfer_sweep=f"{TARGET_DIR}/sweep.safetensors",
        transfer_aqi=f"{TARGET_DIR}/sweep_aqi.parquet",
        transfer_cost=f"{TARGET_DIR}/cost.parquet",
        own_sweep=own_files("sweep.safetensors"),
        own_aqi=own_files("sweep_aqi.parquet"),
        own_cost=own_files("cost.parquet"),
        prompts=f"{RESULTS}/data/prompts.parquet",
        code=code("transfer-efficiency"),
    output:
        f"{PAIR_DIR}/efficiency.parquet",
    params:
        aqi=aqi_options(),
        max_kl=STEER["cost"]["max_kl"],
        max_repetition_increase=STEER["cost"]["max_repetition_increase"],
    log:
        f"{RESULTS}/logs/transfer_efficiency/{{source}}-{{target}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/transfer_efficiency/{{source}}-{{target}}.tsv"
    conda:
        ENV
    shell:
        "driftlib transfer-efficiency --transfer-sweep {input.transfer_sweep} --transfer-aqi {input.transfer_aqi} "
        "--transfer-cost {input.transfer_cost} --source {wildcards.source} --own-sweep {input.own_sweep} --own-aqi {input.own_aqi} "
        "--own-cost {input.own_cost} --prompts {input.prompts} --max-kl {params.max_kl} "
        "--max-repetition-increase {params.max_repetition_increase} {params.aqi} --out {output} > {log} 2>&1"


rule transfer_answers:
    input:
        unpack(transfer_condition),
        prompts=f"{RESULTS}/data/prompts.parquet",
        mapped=pairs_into("mapped_vectors.safetensors", "target"),
        fits=pairs_into("fit.parquet", "target"),
        efficiencies=pairs_into("efficiency.parquet", "target"),
        model=target_model_inputs,
        code=code("transfer-answers"),
    output:
        f"{TARGET_DIR}/answers.parquet",
    params:
        steering=transfer_steering_args,
        model=target_model_options,
        matrix_method=CROSS["matrix_method"],
        max_new_tokens=config["behaviour"]["max_new_tokens"],
        batch_size=config["extraction"]["batch_size"],
        max_length=config["extraction"]["max_length"],
    log:
        f"{RESULTS}/logs/transfer_answers/{{target}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/transfer_answers/{{target}}.tsv"
    threads: MODEL_THREADS
    resources:
        gpu=1,
        mem_mb=model_mem_mb(BY_TARGET),
        runtime=model_runtime(BY_TARGET),
    conda:
        ENV
    shell:
        "driftlib transfer-answers {params.model} --name {wildcards.target} --mapped {input.mapped} "
        "--fits {input.fits} --efficiencies {input.efficiencies} --prompts {input.prompts} "
        "--matrix-method {params.matrix_method} {params.steering} --max-new-tokens {params.max_new_tokens} "
        "--batch-size {params.batch_size} --max-length {params.max_length} --out {output} > {log} 2>&1"


rule transfer_summary:
    input:
        fits=[f"{RESULTS}/transfer/{s}/{t}/fit.parquet" for s, t in PAIRS],
        efficiencies=[f"{RESULTS}/transfer/{s}/{t}/efficiency.parquet" for s, t in PAIRS],
        matchings=[f"{RESULTS}/transfer/{s}/{t}/matching.json" for s, t in PAIRS],
        baseline=f"{RESULTS}/baseline/baseline.json",
        answers=[f"{RESULTS}/transfer/into/{t}/answers.parquet" for t in TRANSFER_TARGETS] if TRANSFER_BEHAVIOUR else [],
        code=code("summarize-transfer"),
    output:
        table=f"{RESULTS}/transfer/transfer_matrix.parquet",
        csv=report(
            f"{RESULTS}/transfer/transfer_matrix.csv",
            caption="../report/transfer_matrix_table.rst",
            category="Phase 4: cross-architecture transfer",
        ),
        summary=f"{RESULTS}/transfer/transfer_summary.json",
        heatmap=report(
            f"{RESULTS}/transfer/transfer_matrix.png",
            caption="../report/transfer_matrix.rst",
            category="Phase 4: cross-architecture transfer",
        ),
        fit=report(
            f"{RESULTS}/transfer/transfer_fit.png",
            caption="../report/transfer_fit.rst",
            category="Phase 4: cross-architecture transfer",
        ),
        matching=report(
            f"{RESULTS}/transfer/layer_matching.png",
            caption="../report/layer_matching.rst",
            category="Phase 4: cross-architecture transfer",
        ),
        behaviour=[
            f"{RESULTS}/transfer/transfer_behaviour.parquet",
            report(
                f"{RESULTS}/transfer/transfer_behaviour.csv",
                caption="../report/transfer_behaviour_table.rst",
                category="Phase 4: cross-architecture transfer",
            ),
            report(
                f"{RESULTS}/transfer/transfer_behaviour.png",
                caption="../report/transfer_behaviour.rst",
                category="Phase 4: cross-architecture transfer",
            ),
        ]
        if TRANSFER_BEHAVIOUR
        else [],
    params:
        out_dir=lambda wildcards, output: Path(output.table).parent,
        matrix_method=CROSS["matrix_method"],
        stability_floor=config["vectors"]["stability_floor"],
        answers=lambda wildcards, input: f"--answers {' '.join(input.answers)} " if input.answers else "",
        confidence=config["aqi"]["confidence"],
    log:
        f"{RESULTS}/logs/transfer_summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/transfer_summary.tsv"
    localrule: True
    conda:
        ENV
    shell:
        "driftlib summarize-transfer --fits {input.fits} --efficiencies {input.efficiencies} "
        "--matchings {input.matchings} --baseline {input.baseline} --matrix-method {params.matrix_method} "
        "--stability-floor {params.stability_floor} {params.answers}--confidence {params.confidence} "
        "--out-dir {params.out_dir} > {log} 2>&1"
