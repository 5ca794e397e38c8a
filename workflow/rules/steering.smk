# Phase 3: does h + lambda * v move each base model toward its aligned model? A lambda sweep with
# the model's own vector and a random control, the AQI along it, and what steering costs. A model
# without a base variant is steered itself (its aligned model, with its contrastive vector).

rule sweep_same_arch:
    input:
        prompts=f"{RESULTS}/data/prompts.parquet",
        vectors=f"{RESULTS}/vectors/{{model}}.safetensors",
        model=steered_model_inputs,
        code=code("sweep"),
    output:
        sweep=f"{RESULTS}/steering/{{model}}/sweep.safetensors",
        answers=f"{RESULTS}/steering/{{model}}/answers.parquet" if BEHAVIOUR else [],
    params:
        steering=steering_args(),
        model=steered_model_options,
        measure=layer_args(STEER["measure_layers"]),
        lambdas=layer_args(STEER["lambdas"]),
        read=read_args(),
        answers=answers_args,
        batch_size=config["extraction"]["batch_size"],
        max_length=config["extraction"]["max_length"],
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/sweep_same_arch/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/sweep_same_arch/{{model}}.tsv"
    threads: MODEL_THREADS
    resources:
        gpu=1,
        mem_mb=model_mem_mb(BY_MODEL),
        runtime=model_runtime(BY_MODEL),
    conda:
        ENV
    shell:
        "driftlib sweep {params.model} --name {wildcards.model} --vectors {input.vectors} "
        "{params.steering} --measure {params.measure} --lambdas {params.lambdas} "
        "--texts {input.prompts} {params.read} --batch-size {params.batch_size} "
        "--max-length {params.max_length} --seed {params.seed} --out {output.sweep} {params.answers} > {log} 2>&1"


rule score_sweep:
    input:
        sweep=f"{RESULTS}/steering/{{model}}/sweep.safetensors",
        prompts=f"{RESULTS}/data/prompts.parquet",
        code=code("score-sweep"),
    output:
        f"{RESULTS}/steering/{{model}}/sweep_aqi.parquet",
    params:
        aqi=aqi_options(),
        probe=sweep_probe_options(),
    log:
        f"{RESULTS}/logs/score_sweep/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/score_sweep/{{model}}.tsv"
    conda:
        ENV
    shell:
        "driftlib score-sweep --sweep {input.sweep} --prompts {input.prompts} {params.aqi} {params.probe} "
        "--out {output} > {log} 2>&1"


rule capability_cost:
    input:
        vectors=f"{RESULTS}/vectors/{{model}}.safetensors",
        neutral=local_file(STEER["cost"]["neutral"]),
        model=steered_model_inputs,
        code=code("cost"),
    output:
        f"{RESULTS}/steering/{{model}}/cost.parquet",
    params:
        steering=steering_args(),
        model=steered_model_options,
        lambdas=layer_args(STEER["lambdas"]),
        neutral=source_param("neutral", STEER["cost"]["neutral"]),
        n_texts=STEER["cost"]["n_texts"],
        n_prompts=STEER["cost"]["n_prompts"],
        max_new_tokens=STEER["cost"]["max_new_tokens"],
        batch_size=config["extraction"]["batch_size"],
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/capability_cost/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/capability_cost/{{model}}.tsv"
    threads: MODEL_THREADS
    resources:
        gpu=1,
        mem_mb=model_mem_mb(BY_MODEL),
        runtime=model_runtime(BY_MODEL),
    conda:
        ENV
    shell:
        "driftlib cost {params.model} --name {wildcards.model} --vectors {input.vectors} {params.steering} "
        "--lambdas {params.lambdas} --neutral {params.neutral:q} --n-texts {params.n_texts} "
        "--n-prompts {params.n_prompts} --max-new-tokens {params.max_new_tokens} --batch-size {params.batch_size} "
        "--seed {params.seed} --out {output} > {log} 2>&1"


rule steering_summary:
    input:
        sweeps=[f"{RESULTS}/steering/{m}/sweep_aqi.parquet" for m in MODEL_KEYS],
        costs=[f"{RESULTS}/steering/{m}/cost.parquet" for m in MODEL_KEYS],
        baseline=f"{RESULTS}/baseline/aqi_summary.parquet",
        answers=[f"{RESULTS}/steering/{m}/answers.parquet" for m in MODEL_KEYS] if BEHAVIOUR else [],
        behaviour=f"{RESULTS}/baseline/behaviour.parquet" if BEHAVIOUR else [],
        code=code("summarize-steering"),
    output:
        table=f"{RESULTS}/steering/steering_summary.parquet",
        csv=report(
            f"{RESULTS}/steering/steering_summary.csv",
            caption="../report/steering_summary.rst",
            category="Phase 3: same-architecture steering",
        ),
        best=f"{RESULTS}/steering/best_lambda.json",
        gaps=f"{RESULTS}/steering/gap_closed.parquet",
        gaps_csv=report(
            f"{RESULTS}/steering/gap_closed.csv",
            caption="../report/gap_closed.rst",
            category="Phase 3: same-architecture steering",
        ),
        behaviour_table=f"{RESULTS}/steering/behaviour_along_lambda.parquet" if BEHAVIOUR else [],
        behaviour_csv=report(
            f"{RESULTS}/steering/behaviour_along_lambda.csv",
            caption="../report/behaviour_along_lambda.rst",
            category="Phase 3: same-architecture steering",
        ) if BEHAVIOUR else [],
        behaviour_plot=report(
            f"{RESULTS}/steering/behaviour.png",
            caption="../report/steering_behaviour.rst",
            category="Phase 3: same-architecture steering",
        ) if BEHAVIOUR else [],
        curves=report(
            expand(f"{RESULTS}/steering/{{model}}_curve.png", model=MODEL_KEYS),
            caption="../report/steering_curve.rst",
            category="Phase 3: same-architecture steering",
        ),
        axioms=report(
            expand(f"{RESULTS}/steering/{{model}}_axioms.png", model=MODEL_KEYS),
            caption="../report/steering_axioms.rst",
            category="Phase 3: same-architecture steering",
        ),
    params:
        out_dir=lambda wildcards, output: Path(output.table).parent,
        max_kl=STEER["cost"]["max_kl"],
        max_repetition_increase=STEER["cost"]["max_repetition_increase"],
        confidence=config["aqi"]["confidence"],
        seed=config["seed"],
        behaviour=lambda wildcards, input: f"--behaviour {input.behaviour}" if BEHAVIOUR else "",
        stability_floor=config["vectors"]["stability_floor"],
    log:
        f"{RESULTS}/logs/steering_summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/steering_summary.tsv"
    localrule: True
    conda:
        ENV
    shell:
        "driftlib summarize-steering --sweeps {input.sweeps} --costs {input.costs} --baseline-summary {input.baseline} "
        "--answers {input.answers} {params.behaviour} --stability-floor {params.stability_floor} "
        "--max-kl {params.max_kl} --max-repetition-increase {params.max_repetition_increase} --confidence {params.confidence} "
        "--seed {params.seed} --out-dir {params.out_dir} > {log} 2>&1"


# --- the steering operators side by side (steering.compare) ----------------------------------
# Each compared operator gets the phase's sweep, cost and scores under
# results/steering/{model}/operators/{operator}/; the main operator's are the files above. The
# conditional operator steers only the prompts its condition selects: a direction and threshold
# fitted per model on calibration prompts that are not evaluation prompts.


rule fit_condition:
    input:
        calibration=f"{RESULTS}/data/calibration.parquet",
        prompts=f"{RESULTS}/data/prompts.parquet",
        model=steered_model_inputs,
        code=code("fit-condition"),
    output:
        f"{RESULTS}/steering/{{model}}/condition.safetensors",
    params:
        steering=steering_args(),
        model=steered_model_options,
        layer=condition_layer_args(),
        batch_size=config["extraction"]["batch_size"],
        max_length=config["extraction"]["max_length"],
        confidence=config["aqi"]["confidence"],
        render=config["extraction"]["render"],
        class_means="--class-means" if CROSS["condition"] == "mapped" else "",
    log:
        f"{RESULTS}/logs/fit_condition/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/fit_condition/{{model}}.tsv"
    threads: min(2, MODEL_THREADS)
    resources:
        gpu=1,
        mem_mb=model_mem_mb(BY_MODEL),
        runtime=model_runtime(BY_MODEL),
    conda:
        ENV
    shell:
        "driftlib fit-condition {params.model} --name {wildcards.model} {params.steering} {params.layer} "
        "--calibration {input.calibration} --prompts {input.prompts} --batch-size {params.batch_size} "
        "--max-length {params.max_length} --confidence {params.confidence} --render {params.render} {params.class_means} "
        "--out {output} > {log} 2>&1"


rule sweep_operator:
    input:
        unpack(operator_inputs),
        prompts=f"{RESULTS}/data/prompts.parquet",
        vectors=f"{RESULTS}/vectors/{{model}}.safetensors",
        model=steered_model_inputs,
        code=code("sweep"),
    output:
        sweep=f"{RESULTS}/steering/{{model}}/operators/{{operator}}/sweep.safetensors",
        answers=f"{RESULTS}/steering/{{model}}/operators/{{operator}}/answers.parquet" if BEHAVIOUR else [],
    params:
        steering=operator_steering_args,
        model=steered_model_options,
        measure=layer_args(STEER["measure_layers"]),
        lambdas=layer_args(STEER["lambdas"]),
        read=read_args(),
        answers=answers_args,
        batch_size=config["extraction"]["batch_size"],
        max_length=config["extraction"]["max_length"],
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/sweep_operator/{{model}}-{{operator}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/sweep_operator/{{model}}-{{operator}}.tsv"
    threads: MODEL_THREADS
    resources:
        gpu=1,
        mem_mb=model_mem_mb(BY_MODEL),
        runtime=model_runtime(BY_MODEL),
    conda:
        ENV
    shell:
        "driftlib sweep {params.model} --name {wildcards.model} --vectors {input.vectors} "
        "{params.steering} --measure {params.measure} --lambdas {params.lambdas} "
        "--texts {input.prompts} {params.read} --batch-size {params.batch_size} "
        "--max-length {params.max_length} --seed {params.seed} --out {output.sweep} {params.answers} > {log} 2>&1"


rule cost_operator:
    input:
        unpack(operator_inputs),
        vectors=f"{RESULTS}/vectors/{{model}}.safetensors",
        neutral=local_file(STEER["cost"]["neutral"]),
        model=steered_model_inputs,
        code=code("cost"),
    output:
        f"{RESULTS}/steering/{{model}}/operators/{{operator}}/cost.parquet",
    params:
        steering=operator_steering_args,
        model=steered_model_options,
        lambdas=layer_args(STEER["lambdas"]),
        neutral=source_param("neutral", STEER["cost"]["neutral"]),
        n_texts=STEER["cost"]["n_texts"],
        n_prompts=STEER["cost"]["n_prompts"],
        max_new_tokens=STEER["cost"]["max_new_tokens"],
        batch_size=config["extraction"]["batch_size"],
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/cost_operator/{{model}}-{{operator}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/cost_operator/{{model}}-{{operator}}.tsv"
    threads: MODEL_THREADS
    resources:
        gpu=1,
        mem_mb=model_mem_mb(BY_MODEL),
        runtime=model_runtime(BY_MODEL),
    conda:
        ENV
    shell:
        "driftlib cost {params.model} --name {wildcards.model} --vectors {input.vectors} {params.steering} "
        "--lambdas {params.lambdas} --neutral {params.neutral:q} --n-texts {params.n_texts} "
        "--n-prompts {params.n_prompts} --max-new-tokens {params.max_new_tokens} --batch-size {params.batch_size} "
        "--seed {params.seed} --out {output} > {log} 2>&1"


rule score_operator:
    input:
        sweep=f"{RESULTS}/steering/{{model}}/operators/{{operator}}/sweep.safetensors",
        prompts=f"{RESULTS}/data/prompts.parquet",
        code=code("score-sweep"),
    output:
        f"{RESULTS}/steering/{{model}}/operators/{{operator}}/sweep_aqi.parquet",
    params:
        aqi=aqi_options(),
        probe=sweep_probe_options(),
    log:
        f"{RESULTS}/logs/score_operator/{{model}}-{{operator}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/score_operator/{{model}}-{{operator}}.tsv"
    conda:
        ENV
    shell:
        "driftlib score-sweep --sweep {input.sweep} --prompts {input.prompts} {params.aqi} {params.probe} "
        "--producer sweep_operator --out {output} > {log} 2>&1"


rule operator_summary:
    input:
        aqis=[f"{operator_dir(m, op)}/sweep_aqi.parquet" for m in MODEL_KEYS for op in [STEER["operator"], *COMPARED]],
        costs=[f"{operator_dir(m, op)}/cost.parquet" for m in MODEL_KEYS for op in [STEER["operator"], *COMPARED]],
        conditions=[condition_file(m) for m in MODEL_KEYS] if "conditional" in COMPARED else [],
        aqi_summary=f"{RESULTS}/baseline/aqi_summary.parquet",
        code=code("summarize-operators"),
    output:
        table=f"{RESULTS}/steering/operators/operator_comparison.parquet",
        csv=report(
            f"{RESULTS}/steering/operators/operator_comparison.csv",
            caption="../report/operator_comparison.rst",
            category="Phase 3: same-architecture steering",
        ),
        curves=f"{RESULTS}/steering/operators/operator_curves.parquet",
        plot=report(
            f"{RESULTS}/steering/operators/operators.png",
            caption="../report/operators.rst",
            category="Phase 3: same-architecture steering",
        ),
    params:
        out_dir=lambda wildcards, output: Path(output.table).parent,
        max_kl=STEER["cost"]["max_kl"],
        max_repetition_increase=STEER["cost"]["max_repetition_increase"],
        confidence=config["aqi"]["confidence"],
    log:
        f"{RESULTS}/logs/operator_summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/operator_summary.tsv"
    localrule: True
    conda:
        ENV
    shell:
        "driftlib summarize-operators --sweep-aqis {input.aqis} --costs {input.costs} "
        "--conditions {input.conditions} --aqi-summary {input.aqi_summary} --confidence {params.confidence} "
        "--max-kl {params.max_kl} --max-repetition-increase {params.max_repetition_increase} "
        "--out-dir {params.out_dir} > {log} 2>&1"
