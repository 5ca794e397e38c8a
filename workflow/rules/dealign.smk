# Phase 4.5: can steering recover alignment that was deliberately broken? Each aligned model gets
# LoRA adapters trained on the rejected responses (one run, an adapter per strength); each
# dealigned model is steered with its own vector, the baseline's mapped vector and a random one,
# under the main operator and each compared one (steering.compare; the conditional one gated by the
# model key's phase-3 condition), and answers the prompts under its own vector along lambda.

DEALIGN_DIR = f"{RESULTS}/dealign/{{model}}"


rule train_dealign:
    input:
        pairs=DEALIGN_PAIRS,
        model=aligned_model_inputs,
        code=code("train-dealign"),
    output:
        directory(f"{DEALIGN_DIR}/adapters"),
    params:
        model=aligned_model_options,
        steps=" ".join(map(str, STRENGTHS)),
        rank=DEALIGN["rank"],
        alpha=DEALIGN["alpha"],
        lr=DEALIGN["lr"],
        batch_size=DEALIGN["batch_size"],
        max_length=DEALIGN["max_length"],
        target_modules=(
            "--target-modules " + " ".join(DEALIGN["target_modules"]) if DEALIGN["target_modules"] else ""
        ),
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/train_dealign/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_dealign/{{model}}.tsv"
    threads: MODEL_THREADS
    priority: 1  # phase 4.5 and phase 5's dealigned partners wait on it: start it first
    resources:
        gpu=1,
        mem_mb=model_mem_mb(BY_MODEL),
        runtime=model_runtime(BY_MODEL),
    conda:
        ENV
    shell:
        "driftlib -q train-dealign {params.model} --pairs {input.pairs} --steps {params.steps} --rank {params.rank} "
        "--alpha {params.alpha} --lr {params.lr} --batch-size {params.batch_size} --max-length {params.max_length} "
        "{params.target_modules} --seed {params.seed} --out {output} > {log} 2>&1"


rule recovery_sweep:
    input:
        unpack(compared_condition("model")),
        adapters=f"{DEALIGN_DIR}/adapters",
        prompts=f"{RESULTS}/data/prompts.parquet",
        vectors=f"{RESULTS}/vectors/{{model}}.safetensors",
        mapped=pairs_into("mapped_vectors.safetensors"),
        fits=pairs_into("fit.parquet"),
        efficiencies=pairs_into("efficiency.parquet"),
        aqi=AQI_TABLES,
        neutral=local_file(STEER["cost"]["neutral"]),
        model=aligned_model_inputs,
        code=code("recovery-sweep"),
    output:
        sweep=f"{DEALIGN_DIR}/steps{{steps}}/sweep.safetensors",
        cost=f"{DEALIGN_DIR}/steps{{steps}}/cost.parquet",
        answers=f"{DEALIGN_DIR}/steps{{steps}}/answers.parquet" if BEHAVIOUR else [],
    params:
        steering=compared_steering_args,
        answers=recovery_answers_args,
        model=aligned_model_options,
        adapter=lambda wildcards, input: f"{input.adapters}/steps{wildcards.steps}",
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
        f"{RESULTS}/logs/recovery_sweep/{{model}}-{{steps}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/recovery_sweep/{{model}}-{{steps}}.tsv"
    threads: MODEL_THREADS
    resources:
        gpu=1,
        mem_mb=model_mem_mb(BY_MODEL),
        runtime=model_runtime(BY_MODEL),
    conda:
        ENV
    shell:
        "driftlib recovery-sweep {params.model} --name {wildcards.model} --adapter {params.adapter} "
        "--steps {wildcards.steps} --vectors {input.vectors} {params.steering} --aqi-tables {input.aqi} "
        "--fits {input.fits} --efficiencies {input.efficiencies} --mapped {input.mapped} --measure {params.measure} "
        "--lambdas {params.lambdas} --texts {input.prompts} {params.read} "
        "--batch-size {params.batch_size} --max-length {params.max_length} "
        "--neutral {params.neutral:q} --n-texts {params.n_texts} --n-prompts {params.n_prompts} "
        "--max-new-tokens {params.max_new_tokens} --seed {params.seed} --out {output.sweep} "
        "--cost-out {output.cost} {params.answers} > {log} 2>&1"


rule score_recovery:
    input:
        sweep=f"{DEALIGN_DIR}/steps{{steps}}/sweep.safetensors",
        prompts=f"{RESULTS}/data/prompts.parquet",
        code=code("score-sweep"),
    output:
        f"{DEALIGN_DIR}/steps{{steps}}/sweep_aqi.parquet",
    params:
        aqi=aqi_options(),
        probe=sweep_probe_options(),
    log:
        f"{RESULTS}/logs/score_recovery/{{model}}-{{steps}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/score_recovery/{{model}}-{{steps}}.tsv"
    conda:
        ENV
    shell:
        "driftlib score-sweep --sweep {input.sweep} --prompts {input.prompts} --producer recovery_sweep "
        "{params.aqi} {params.probe} --out {output} > {log} 2>&1"


rule evaluate_recovery:
    input:
        sweep=f"{DEALIGN_DIR}/steps{{steps}}/sweep.safetensors",
        sweep_aqi=f"{DEALIGN_DIR}/steps{{steps}}/sweep_aqi.parquet",
        cost=f"{DEALIGN_DIR}/steps{{steps}}/cost.parquet",
        aligned=f"{RESULTS}/activations/{{model}}/aligned/prompts.safetensors",
        prompts=f"{RESULTS}/data/prompts.parquet",
        code=code("evaluate-recovery"),
    output:
        f"{DEALIGN_DIR}/steps{{steps}}/recovery.parquet",
    params:
        aqi=aqi_options(),
        max_kl=STEER["cost"]["max_kl"],
        max_repetition_increase=STEER["cost"]["max_repetition_increase"],
    log:
        f"{RESULTS}/logs/evaluate_recovery/{{model}}-{{steps}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_recovery/{{model}}-{{steps}}.tsv"
    conda:
        ENV
    shell:
        "driftlib evaluate-recovery --sweep {input.sweep} --sweep-aqi {input.sweep_aqi} --cost {input.cost} "
        "--aligned {input.aligned} --prompts {input.prompts} --steps {wildcards.steps} --max-kl {params.max_kl} "
        "--max-repetition-increase {params.max_repetition_increase} {params.aqi} --out {output} > {log} 2>&1"


rule recovery_summary:
    input:
        tables=[f"{RESULTS}/dealign/{m}/steps{s}/recovery.parquet" for m in DEALIGNED for s in STRENGTHS],
        sweeps=[f"{RESULTS}/dealign/{m}/steps{s}/sweep_aqi.parquet" for m in DEALIGNED for s in STRENGTHS],
        adapters=[f"{RESULTS}/dealign/{m}/adapters" for m in DEALIGNED],
        baseline=f"{RESULTS}/baseline/aqi_summary.parquet",
        answers=[f"{RESULTS}/dealign/{m}/steps{s}/answers.parquet" for m in DEALIGNED for s in STRENGTHS] if BEHAVIOUR else [],
        behaviour=f"{RESULTS}/baseline/behaviour.parquet" if BEHAVIOUR else [],
        code=code("summarize-recovery"),
    output:
        table=f"{RESULTS}/dealign/recovery_summary.parquet",
        csv=report(
            f"{RESULTS}/dealign/recovery_summary.csv",
            caption="../report/recovery_summary.rst",
            category="Phase 4.5: dealignment and recovery",
        ),
        limits=f"{RESULTS}/dealign/recovery_limits.json",
        axioms=report(
            f"{RESULTS}/dealign/dealign_axioms.csv",
            caption="../report/dealign_axioms.rst",
            category="Phase 4.5: dealignment and recovery",
        ),
        drop=report(
            f"{RESULTS}/dealign/dealign_drop.png",
            caption="../report/dealign_drop.rst",
            category="Phase 4.5: dealignment and recovery",
        ),
        curves=report(
            f"{RESULTS}/dealign/recovery_curves.png",
            caption="../report/recovery_curves.rst",
            category="Phase 4.5: dealignment and recovery",
        ),
        versus=report(
            f"{RESULTS}/dealign/recovery_vs_drop.png",
            caption="../report/recovery_vs_drop.rst",
            category="Phase 4.5: dealignment and recovery",
        ),
        loss=report(
            f"{RESULTS}/dealign/dealign_loss.png",
            caption="../report/dealign_loss.rst",
            category="Phase 4.5: dealignment and recovery",
        ),
        behaviour_table=f"{RESULTS}/dealign/recovery_behaviour.parquet" if BEHAVIOUR else [],
        behaviour_axioms=f"{RESULTS}/dealign/recovery_behaviour_axioms.parquet" if BEHAVIOUR else [],
        behaviour_axioms_csv=report(
            f"{RESULTS}/dealign/recovery_behaviour_axioms.csv",
            caption="../report/recovery_behaviour_axioms.rst",
            category="Phase 4.5: dealignment and recovery",
        ) if BEHAVIOUR else [],
        behaviour_csv=report(
            f"{RESULTS}/dealign/recovery_behaviour.csv",
            caption="../report/recovery_behaviour_table.rst",
            category="Phase 4.5: dealignment and recovery",
        ) if BEHAVIOUR else [],
        behaviour_plot=report(
            f"{RESULTS}/dealign/recovery_behaviour.png",
            caption="../report/recovery_behaviour.rst",
            category="Phase 4.5: dealignment and recovery",
        ) if BEHAVIOUR else [],
    params:
        out_dir=lambda wildcards, output: Path(output.table).parent,
        fraction=DEALIGN["recovery_fraction"],
        behaviour=lambda wildcards, input: f"--behaviour {input.behaviour}" if BEHAVIOUR else "",
        stability_floor=config["vectors"]["stability_floor"],
        confidence=config["aqi"]["confidence"],
    log:
        f"{RESULTS}/logs/recovery_summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/recovery_summary.tsv"
    localrule: True
    conda:
        ENV
    shell:
        "driftlib summarize-recovery --tables {input.tables} --sweep-aqis {input.sweeps} --adapters {input.adapters} "
        "--baseline-summary {input.baseline} --answers {input.answers} {params.behaviour} "
        "--stability-floor {params.stability_floor} --confidence {params.confidence} "
        "--fraction {params.fraction} --out-dir {params.out_dir} > {log} 2>&1"
