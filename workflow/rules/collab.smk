# Phase 5: agents of different models take turns on shared tasks. Does collaborating lower an
# agent's alignment (type 2 drift), beyond what a context of the same length does, and does
# pre-steering the agents prevent it? One run per (pairing, profile): a profile gives each agent's
# lambda on its own vector (profiles.py); phase 6 asks for further profiles of the same rules.
# Each agent's solo control runs once per lambda and serves every pairing and profile.
# An agent is a model key (its aligned model) or KEY@dealigned[<N>]: that aligned model with phase
# 4.5's dealignment adapter merged in (agent_ref / agent_adapter in common.smk), steered on KEY's vector.
# With behaviour.enabled and behaviour.collaboration, collab_states also writes each agent's greedy answers in every condition.
# With collaboration.compare_operators, the pre-steered run also runs under each operator of steering.compare
# (profile <lambdas>@<operator>, solo controls lam<lambda>@<operator>); under the conditional one each steered
# agent is gated by a condition fitted on its own model (fit_agent_condition).

import re

#: every agent of a pairing (a rule-level constraint: the global `agent` one knows only model keys)
AGENT_NAMES = sorted({a for agents in PAIRINGS.values() for a in agents})
AGENT_RE = "|".join(re.escape(a) for a in AGENT_NAMES) or "(?!)"


rule prepare_tasks:
    input:
        source=local_file(COLLAB["tasks"]),
        code=code("prepare-tasks"),
    output:
        f"{RESULTS}/collab/tasks.parquet",
    params:
        source=source_param("source", COLLAB["tasks"]),
        n=COLLAB["n_tasks"] or "none",
        share=f"--loaded-share {COLLAB['loaded_share']}" if COLLAB["loaded_share"] is not None else "",
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/prepare_tasks.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_tasks.tsv"
    localrule: True
    conda:
        ENV
    shell:
        "driftlib prepare-tasks --source {params.source:q} --n {params.n} {params.share} --seed {params.seed} "
        "--out {output} > {log} 2>&1"


rule fit_agent_condition:
    input:
        calibration=f"{RESULTS}/data/calibration.parquet",
        prompts=f"{RESULTS}/data/prompts.parquet",
        model=lambda wildcards: agent_inputs(wildcards.agent),
        code=code("fit-condition"),
    output:
        f"{RESULTS}/collab/conditions/{{agent}}.safetensors",
    wildcard_constraints:
        agent=AGENT_RE,
    params:
        steering=steering_args(),
        model=agent_load_options,
        layer=condition_layer_args(),
        batch_size=config["extraction"]["batch_size"],
        max_length=config["extraction"]["max_length"],
        confidence=config["aqi"]["confidence"],
        render=config["extraction"]["render"],
    log:
        f"{RESULTS}/logs/fit_agent_condition/{{agent}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/fit_agent_condition/{{agent}}.tsv"
    threads: min(2, MODEL_THREADS)
    resources:
        gpu=1,
        mem_mb=model_mem_mb(AGENT_KEY),
        runtime=model_runtime(AGENT_KEY),
    conda:
        ENV
    shell:
        "driftlib fit-condition {params.model} --name {wildcards.agent} {params.steering} {params.layer} "
        "--calibration {input.calibration} --prompts {input.prompts} --batch-size {params.batch_size} "
        "--max-length {params.max_length} --confidence {params.confidence} --render {params.render} "
        "--out {output} > {log} 2>&1"


rule collaborate:
    input:
        unpack(run_conditions),
        tasks=f"{RESULTS}/collab/tasks.parquet",
        vectors=pairing_inputs(lambda name: [agent_vectors(name)]),
        models=pairing_inputs(agent_inputs),
        code=code("collaborate"),
    output:
        f"{RESULTS}/collab/{{pairing}}/{{profile}}/transcripts.parquet",
    params:
        steering=run_steering_args,
        agents=agents_json,
        rounds=COLLAB["rounds"],
        seeds=layer_args(COLLAB["seeds"]),
        order=COLLAB["order"],
        max_new_tokens=COLLAB["max_new_tokens"],
        temperature=COLLAB["temperature"],
        top_p=COLLAB["top_p"],
        context_tokens=COLLAB["context_tokens"],
        batch_size=COLLAB["batch_size"],
        device=config["device"],
    log:
        f"{RESULTS}/logs/collaborate/{{pairing}}/{{profile}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/collaborate/{{pairing}}/{{profile}}.tsv"
    threads: MODEL_THREADS
    resources:
        gpu=1,
        mem_mb=pairing_mem_mb,
        runtime=pairing_runtime,
    conda:
        ENV
    shell:
        "driftlib collaborate --agents {params.agents:q} --tasks {input.tasks} {params.steering} "
        "--rounds {params.rounds} --seeds {params.seeds} --order {params.order} "
        "--max-new-tokens {params.max_new_tokens} --temperature {params.temperature} --top-p {params.top_p} "
        "--context-tokens {params.context_tokens} --batch-size {params.batch_size} --device {params.device} "
        "--out {output} > {log} 2>&1"


rule solo_run:
    input:
        unpack(run_conditions),
        tasks=f"{RESULTS}/collab/tasks.parquet",
        vectors=lambda wildcards: agent_vectors(wildcards.agent),
        model=lambda wildcards: agent_inputs(wildcards.agent),
        code=code("solo"),
    output:
        f"{RESULTS}/collab/solo/{{agent}}/lam{{lam}}/transcripts.parquet",
    wildcard_constraints:
        agent=AGENT_RE,
    params:
        steering=run_steering_args,
        model=agent_load_options,
        lam=solo_lambda,
        turns=lambda wildcards: solo_turns(wildcards.agent),
        seeds=layer_args(COLLAB["seeds"]),
        max_new_tokens=COLLAB["max_new_tokens"],
        temperature=COLLAB["temperature"],
        top_p=COLLAB["top_p"],
        context_tokens=COLLAB["context_tokens"],
        batch_size=COLLAB["batch_size"],
    log:
        f"{RESULTS}/logs/solo_run/{{agent}}/lam{{lam}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/solo_run/{{agent}}/lam{{lam}}.tsv"
    threads: MODEL_THREADS
    resources:
        gpu=1,
        mem_mb=model_mem_mb(AGENT_KEY),
        runtime=model_runtime(AGENT_KEY),
    conda:
        ENV
    shell:
        "driftlib solo {params.model} --name {wildcards.agent} --vectors {input.vectors} --lam {params.lam} "
        "--turns {params.turns} --tasks {input.tasks} {params.steering} --seeds {params.seeds} "
        "--max-new-tokens {params.max_new_tokens} --temperature {params.temperature} --top-p {params.top_p} "
        "--context-tokens {params.context_tokens} --batch-size {params.batch_size} --out {output} > {log} 2>&1"


rule collab_states:
    input:
        unpack(run_conditions),
        tasks=f"{RESULTS}/collab/tasks.parquet",
        prompts=f"{RESULTS}/data/prompts.parquet",
        transcripts=f"{RESULTS}/collab/{{pairing}}/{{profile}}/transcripts.parquet",
        solo=solo_transcripts,
        vectors=lambda wildcards: agent_vectors(wildcards.agent),
        neutral=local_file(STEER["cost"]["neutral"]),
        model=lambda wildcards: agent_inputs(wildcards.agent),
        code=code("collab-states"),
    output:
        states=f"{RESULTS}/collab/{{pairing}}/{{profile}}/{{agent}}.states.safetensors",
        answers=f"{RESULTS}/collab/{{pairing}}/{{profile}}/{{agent}}.answers.parquet" if COLLAB_BEHAVIOUR else [],
    wildcard_constraints:
        agent=AGENT_RE,
    params:
        steering=run_steering_args,
        model=agent_load_options,
        answers=lambda wildcards, output: (
            f"--answers-out {output.answers} --answer-tokens {config['behaviour']['max_new_tokens']}" if COLLAB_BEHAVIOUR else ""
        ),
        lam=agent_lambda,
        team=lambda wildcards: " ".join(PAIRINGS[wildcards.pairing]),
        measure=layer_args(STEER["measure_layers"]),
        pooling=config["extraction"]["pooling"],
        context_tokens=COLLAB["context_tokens"],
        batch_size=COLLAB["measure_batch_size"],
        neutral=source_param("neutral", STEER["cost"]["neutral"]),
        n_texts=STEER["cost"]["n_texts"],
    log:
        f"{RESULTS}/logs/collab_states/{{pairing}}/{{profile}}/{{agent}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/collab_states/{{pairing}}/{{profile}}/{{agent}}.tsv"
    threads: MODEL_THREADS
    resources:
        gpu=1,
        mem_mb=model_mem_mb(AGENT_KEY),
        runtime=model_runtime(AGENT_KEY),
    conda:
        ENV
    shell:
        "driftlib collab-states {params.model} --name {wildcards.agent} --vectors {input.vectors} --lam {params.lam} "
        "--team {params.team} {params.steering} --measure {params.measure} --pooling {params.pooling} "
        "--tasks {input.tasks} --transcripts {input.transcripts} --solo {input.solo} --prompts {input.prompts} "
        "--context-tokens {params.context_tokens} --batch-size {params.batch_size} --neutral {params.neutral:q} "
        "--n-texts {params.n_texts} {params.answers} --out {output.states} > {log} 2>&1"


rule score_collab:
    input:
        unpack(run_conditions),
        states=f"{RESULTS}/collab/{{pairing}}/{{profile}}/{{agent}}.states.safetensors",
        answers=f"{RESULTS}/collab/{{pairing}}/{{profile}}/{{agent}}.answers.parquet" if COLLAB_BEHAVIOUR else [],
        prompts=f"{RESULTS}/data/prompts.parquet",
        vectors=lambda wildcards: agent_vectors(wildcards.agent),
        transcripts=f"{RESULTS}/collab/{{pairing}}/{{profile}}/transcripts.parquet",
        tasks=f"{RESULTS}/collab/tasks.parquet",
        code=code("score-collab"),
    output:
        f"{RESULTS}/collab/{{pairing}}/{{profile}}/{{agent}}.drift.json",
    wildcard_constraints:
        agent=AGENT_RE,
    params:
        aqi=aqi_options(),
        permutations=COLLAB["permutations"],
        probe=f"--probe-permutations {config['aqi']['probe_permutations']}" if config["aqi"]["probe_folds"] else "",
        answers=lambda wildcards, input: f"--answers {input.answers}" if COLLAB_BEHAVIOUR else "",
        condition=lambda wildcards, input: f"--condition {input.condition}" if "condition" in input.keys() else "",
        model_key=AGENT_KEY,
    log:
        f"{RESULTS}/logs/score_collab/{{pairing}}/{{profile}}/{{agent}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/score_collab/{{pairing}}/{{profile}}/{{agent}}.tsv"
    conda:
        ENV
    shell:
        "driftlib score-collab --states {input.states} --prompts {input.prompts} --vectors {input.vectors} "
        "--transcripts {input.transcripts} --tasks {input.tasks} --pairing {wildcards.pairing} "
        "--profile {wildcards.profile} --model-key {params.model_key} {params.aqi} {params.answers} {params.condition} "
        "--drift-permutations {params.permutations} {params.probe} --out {output} > {log} 2>&1"


rule collab_summary:
    input:
        drift=drift_files(COLLAB_RUNS),
        transcripts=[f"{run_dir(n, p)}/transcripts.parquet" for n, p in COLLAB_RUNS],
        tasks=f"{RESULTS}/collab/tasks.parquet",
        code=code("summarize-collab"),
    output:
        table=f"{RESULTS}/collab/drift.parquet",
        csv=report(
            f"{RESULTS}/collab/drift.csv",
            caption="../report/collab_drift_table.rst",
            category="Phase 5: collaboration drift",
        ),
        summary=f"{RESULTS}/collab/collab_summary.json",
        drift=report(
            f"{RESULTS}/collab/drift.png",
            caption="../report/collab_drift.rst",
            category="Phase 5: collaboration drift",
        ),
        behaviour=report(
            f"{RESULTS}/collab/behaviour.png",
            caption="../report/collab_behaviour.rst",
            category="Phase 5: collaboration drift",
        ),
        behaviour_axioms=f"{RESULTS}/collab/behaviour_axioms.parquet" if COLLAB_BEHAVIOUR else [],
        behaviour_axioms_csv=report(
            f"{RESULTS}/collab/behaviour_axioms.csv",
            caption="../report/collab_behaviour_axioms.rst",
            category="Phase 5: collaboration drift",
        ) if COLLAB_BEHAVIOUR else [],
        trajectories=report(
            f"{RESULTS}/collab/trajectories.png",
            caption="../report/collab_trajectories.rst",
            category="Phase 5: collaboration drift",
        ),
        samples=report(
            [f"{RESULTS}/collab/samples/{n}__{p}.md" for n, p in COLLAB_RUNS],
            caption="../report/collab_samples.rst",
            category="Phase 5: collaboration drift",
        ),
    params:
        out_dir=lambda wildcards, output: Path(output.table).parent,
        plain=COLLAB["lambda"],
        prevention=COLLAB["prevention_lambda"] if COLLAB["prevention_lambda"] is not None else "none",
        operator=STEER["operator"],
        stability_floor=config["vectors"]["stability_floor"],
    log:
        f"{RESULTS}/logs/collab_summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/collab_summary.tsv"
    localrule: True
    conda:
        ENV
    shell:
        "driftlib summarize-collab --drift {input.drift} --transcripts {input.transcripts} --tasks {input.tasks} "
        "--plain {params.plain} --prevention {params.prevention} --operator {params.operator} "
        "--stability-floor {params.stability_floor} "
        "--out-dir {params.out_dir} > {log} 2>&1"
