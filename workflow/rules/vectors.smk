# Phase 2: what direction did alignment training move each model? Last-real-token states of the
# preference pairs at every block, and per-layer steering vectors with their stability.


rule extract_pairs:
    input:
        pairs=f"{RESULTS}/data/pairs.parquet",
        model=model_inputs,
        code=code("extract"),
    output:
        f"{RESULTS}/activations/{{model}}/{{variant}}/pairs.safetensors",
    params:
        model=model_options,
        batching=batch_args(),
        max_length=config["extraction"]["max_length"],
    log:
        f"{RESULTS}/logs/extract_pairs/{{model}}-{{variant}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/extract_pairs/{{model}}-{{variant}}.tsv"
    threads: MODEL_THREADS
    resources:
        gpu=1,
        mem_mb=model_mem_mb(BY_MODEL),
        runtime=model_runtime(BY_MODEL),
    conda:
        ENV
    shell:
        "driftlib extract {params.model} --name {wildcards.model} --variant {wildcards.variant} "
        "--texts {input.pairs} --text-column chosen rejected --all-layers --pooling last "
        "{params.batching} --max-length {params.max_length} --out {output} > {log} 2>&1"


rule compute_vectors:
    input:
        unpack(pair_states),
        code=code("vectors"),
    output:
        vectors=f"{RESULTS}/vectors/{{model}}.safetensors",
        stats=f"{RESULTS}/vectors/{{model}}_layers.parquet",
    params:
        base=base_pair_args,
        method=config["vectors"]["method"],
        texts=config["vectors"]["texts"],
        splits=config["vectors"]["stability_splits"],
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/compute_vectors/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/compute_vectors/{{model}}.tsv"
    conda:
        ENV
    shell:
        "driftlib vectors --aligned {input.aligned} "
        "{params.base} --name {wildcards.model} --method {params.method} --texts {params.texts} "
        "--splits {params.splits} --seed {params.seed} --out {output.vectors} --stats {output.stats} > {log} 2>&1"


rule vectors_summary:
    input:
        tables=[f"{RESULTS}/vectors/{m}_layers.parquet" for m in MODEL_KEYS],
        code=code("summarize-vectors"),
    output:
        table=f"{RESULTS}/vectors/vector_stats.parquet",
        csv=report(
            f"{RESULTS}/vectors/vector_stats.csv",
            caption="../report/vector_stats.rst",
            category="Phase 2: vectors",
        ),
        plot=report(
            f"{RESULTS}/vectors/vector_layers.png",
            caption="../report/vector_layers.rst",
            category="Phase 2: vectors",
        ),
    params:
        out_dir=lambda wildcards, output: Path(output.table).parent,
    log:
        f"{RESULTS}/logs/vectors_summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/vectors_summary.tsv"
    localrule: True
    conda:
        ENV
    shell:
        "driftlib summarize-vectors --tables {input.tables} --out-dir {params.out_dir} > {log} 2>&1"
