# Phase 6: which alignment postures are stable when agents choose them? Each agent of a pairing
# picks a lambda from game.lambdas; payoffs come from the phase-5 runs of every profile of that
# grid (the rules of collab.smk run whichever profiles phase 5 did not), combined as game.weights
# says (driftlib/phases/game/solve.py documents the formula).


rule solve_game:
    input:
        drift=lambda wildcards: drift_files([(wildcards.pairing, p) for p in game_profiles(wildcards.pairing)]),
        code=code("solve-game"),
    output:
        payoffs=f"{RESULTS}/game/{{pairing}}/payoffs.csv",
        sensitivity=f"{RESULTS}/game/{{pairing}}/sensitivity.csv",
        equilibria=f"{RESULTS}/game/{{pairing}}/equilibria.json",
        matrix=report(
            f"{RESULTS}/game/{{pairing}}/payoff_matrix.png",
            caption="../report/game_payoffs.rst",
            category="Phase 6: equilibria",
            subcategory="{pairing}",
        ),
        plot=report(
            f"{RESULTS}/game/{{pairing}}/equilibrium_sensitivity.png",
            caption="../report/game_sensitivity.rst",
            category="Phase 6: equilibria",
            subcategory="{pairing}",
        ),
    params:
        lambdas=layer_args(GAME["lambdas"]),
        weights=(f"--w-outcome {GAME['weights']['outcome']} --w-alignment {GAME['weights']['alignment']} "
                 f"--w-cost {GAME['weights']['cost']}"),
        sensitivity=layer_args(GAME["sensitivity"]),
        seed=config["seed"],
        out_dir=lambda wildcards, output: Path(output.equilibria).parent,
    log:
        f"{RESULTS}/logs/solve_game/{{pairing}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/solve_game/{{pairing}}.tsv"
    conda:
        ENV
    shell:
        "driftlib solve-game --drift {input.drift} --pairing {wildcards.pairing} --lambdas {params.lambdas} "
        "{params.weights} --sensitivity {params.sensitivity} --seed {params.seed} --out-dir {params.out_dir} "
        "> {log} 2>&1"


rule game_summary:
    input:
        games=[f"{RESULTS}/game/{n}/equilibria.json" for n in PAIRINGS],
        code=code("summarize-games"),
    output:
        report(
            f"{RESULTS}/game/equilibria_summary.csv",
            caption="../report/game_summary.rst",
            category="Phase 6: equilibria",
        ),
    log:
        f"{RESULTS}/logs/game_summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/game_summary.tsv"
    localrule: True
    conda:
        ENV
    shell:
        "driftlib summarize-games --games {input.games} --out {output} > {log} 2>&1"
