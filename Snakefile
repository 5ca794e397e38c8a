# alignment-drift: measure and correct alignment drift across LLM architectures.
# The rules live in workflow/rules/ (one file per phase); each runs one `driftlib` command.
# Run: snakemake --cores all   (profiles/default is picked up automatically)

from snakemake.utils import min_version

min_version("9.0")


# A config given with --configfile replaces the embedded default instead of being merged into it
# (a merge would add the default's tiny models to every study). Change single settings with
# --config key=value.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/tiny.smk"
include: "workflow/rules/baseline.smk"
include: "workflow/rules/vectors.smk"
include: "workflow/rules/steering.smk"
include: "workflow/rules/transfer.smk"
include: "workflow/rules/dealign.smk"
include: "workflow/rules/collab.smk"
include: "workflow/rules/game.smk"


rule all:
    default_target: True
    input:
        rules.baseline_summary.output,
        rules.vectors_summary.output,
        rules.steering_summary.output,
        rules.transfer_summary.output if PAIRS else [],
        rules.recovery_summary.output,
        rules.collab_summary.output if PAIRINGS else [],
        rules.game_summary.output if PAIRINGS else [],


onsuccess:
    print(
        "\nalignment-drift finished. Summaries: results/baseline/ (phase 1), results/vectors/ (phase 2),"
        " results/steering/ (phase 3), results/transfer/ (phase 4),"
        " results/dealign/ (phase 4.5), results/collab/ (phase 5),"
        " results/game/ (phase 6)"
        "\nBuild the HTML report with: snakemake --report results/report.html"
    )


onerror:
    print(
        "\nalignment-drift stopped with an error (see the log named above)."
        "\nIf Snakemake was killed and now reports a locked directory: snakemake --unlock,"
        "\nthen re-run with --rerun-incomplete."
    )
