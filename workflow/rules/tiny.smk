# The tiny model family of the embedded default: a tokenizer trained on bundled text, and for
# each architecture a base model (short LM training) and its aligned counterpart (a fine-tune
# toward the chosen responses of the bundled preference pairs).


rule tiny_tokenizer:
    output:
        directory(f"{RESULTS}/models/tiny/tokenizer"),
    params:
        vocab_size=config["tiny"]["vocab_size"],
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/tiny_tokenizer.log",
    conda:
        ENV
    shell:
        "driftlib tiny-tokenizer --vocab-size {params.vocab_size} --seed {params.seed} --out {output} > {log} 2>&1"


rule tiny_base:
    input:
        f"{RESULTS}/models/tiny/tokenizer",
    output:
        directory(f"{RESULTS}/models/tiny/{{arch}}-base"),
    params:
        steps=config["tiny"]["base_steps"],
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/tiny_base/{{arch}}.log",
    wildcard_constraints:
        arch="[a-z0-9]+",
    conda:
        ENV
    shell:
        "driftlib tiny-model base --arch {wildcards.arch} --tokenizer {input} --steps {params.steps} "
        "--seed {params.seed} --out {output} > {log} 2>&1"


rule tiny_aligned:
    input:
        f"{RESULTS}/models/tiny/{{arch}}-base",
    output:
        directory(f"{RESULTS}/models/tiny/{{arch}}-aligned"),
    params:
        steps=config["tiny"]["aligned_steps"],
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/tiny_aligned/{{arch}}.log",
    wildcard_constraints:
        arch="[a-z0-9]+",
    conda:
        ENV
    shell:
        "driftlib tiny-model aligned --base {input} --steps {params.steps} --seed {params.seed} "
        "--out {output} > {log} 2>&1"
