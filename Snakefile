# alignment-drift: measure and correct alignment drift across LLM architectures.
# The rules live in workflow/rules/ (one file per phase); each runs one `driftlib` command.
# Run: snakemake --cores all   (profiles/default is picked up automatically)

import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # driftlib from this checkout

from driftlib.core.config import read_config_file
from driftlib.core.errors import ConfigError


# A config given with --configfile replaces the embedded default instead of being merged into it
# (a merge would add the default's tiny models to every study). Change single settings with
# --config key=value, nested ones too: --config "aqi={'bootstrap': 500}".
if not workflow.overwrite_configfiles:
    # read it first as driftlib does: Snakemake's reader keeps the last of two equal keys without a
    # word and fails on bytes that are not UTF-8 with a traceback (common.smk re-reads every config file)
    try:
        read_config_file("config/config.yaml")
    except ConfigError as _exc:
        raise WorkflowError(f"config: {_exc}") from None

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
        rules.operator_summary.output if COMPARED else [],
        rules.transfer_summary.output if PAIRS else [],
        rules.recovery_summary.output,
        rules.collab_summary.output if PAIRINGS else [],
        rules.game_summary.output if PAIRINGS else [],


onstart:
    start_job_server()


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
        "\nIf a later run reports a locked directory, first make sure that no other Snakemake uses this"
        "\ndirectory: `pgrep -af snakemake` lists the running ones (the lock files are in .snakemake/locks/)."
        "\nUnlocking under a running Snakemake lets two runs write the same files. Only when none is"
        "\nrunning (it was killed, or the machine went down): snakemake --unlock, then run again (the"
        "\nprofiles set --rerun-incomplete, so the jobs that were cut off run again)."
    )
