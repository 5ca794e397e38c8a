"""The ``driftlib`` command line: one subcommand per workflow step.

Every Snakemake rule runs exactly one of these commands, so any step can be re-run by hand with
the same result the workflow gets (``snakemake -p`` prints the command lines). Each command maps
its arguments to one phase function and calls it; the commands of a phase live in that phase's
module here. Errors that a user can fix are printed as one line (``driftlib: error: ...``) with
exit status 2, not a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from driftlib import __version__
from driftlib.cli import (
    baseline,
    collaboration,
    cross_arch,
    data,
    game,
    jobserver,
    models,
    recovery,
    same_arch,
    vectors,
)
from driftlib.cli.common import COMMANDS
from driftlib.core.errors import DriftlibError

#: the command modules, in the order ``driftlib --help`` lists their commands
MODULES = (data, models, baseline, vectors, same_arch, cross_arch, recovery, collaboration, game)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="driftlib", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"driftlib {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in MODULES:
        module.register(sub)
    return parser


def commands() -> dict[str, Callable[[argparse.Namespace], None]]:
    """Every command name and the function that runs it (``workflow/rules/common.smk`` reads this)."""
    build_parser()
    return dict(COMMANDS)


#: Intel MKL (torch's CPU BLAS) in strict conditional-numerical-reproducibility mode, which Intel
#: documents as giving the same bits whatever the threading and memory alignment. Seen once without
#: it: a phase-3 sweep run on a CPU-starved machine differed from reruns in the last float32 bit for
#: the prompts of one batch (not reproduced in 20 reruns, loaded or not). The strict mode gives the
#: same bits as the default on this machine (the tables do not change). Set before torch loads
#: (commands import it lazily); a user's own MKL_CBWR wins.
REPRODUCIBLE_BLAS = {"MKL_CBWR": "AUTO,STRICT"}


def main(argv: Sequence[str] | None = None) -> int:
    for name, value in REPRODUCIBLE_BLAS.items():
        os.environ.setdefault(name, value)
    if os.environ.get(jobserver.SERVER_ENV):  # a local workflow run: the job server's fork runs it
        status = jobserver.run_remote(sys.argv[1:] if argv is None else list(argv))
        if status is not None:
            return status
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=sys.stderr)
    try:
        args.func(args)
    except DriftlibError as exc:
        print(f"driftlib: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("driftlib: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
