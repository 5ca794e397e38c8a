"""Stand-ins for the SLURM commands that snakemake-executor-plugin-slurm calls, for tests only.

Called as ``python fake_slurm.py COMMAND ARGS...`` (tests/test_slurm.py puts small wrappers named
sbatch, sacct, squeue, scancel, sinfo, scontrol, sacctmgr and srun on PATH). Every call appends
``{"cmd": COMMAND, "args": [...]}`` as one JSON line to ``$FAKE_SLURM_DIR/calls.jsonl``.

- ``sbatch --parsable ... --wrap=CMD`` runs CMD with ``sh -c`` in a background process (in the
  caller's process group, so killing the test's group kills the jobs too), in the ``-D`` folder,
  with stdout and stderr in the ``--output`` file (``%j`` replaced), and prints the job id, as
  ``sbatch --parsable`` does.
- ``sacct ... --format=JobIdRaw,State --name RUN`` and ``squeue --format=%i|%T --name RUN`` print
  ``ID|STATE`` for the jobs submitted under that job name: RUNNING while the process runs, then
  COMPLETED (exit status 0) or FAILED. ``$FAKE_SLURM_OOM_ONCE=rule`` makes the first job of that
  rule end at once as OUT_OF_MEMORY without running, to exercise the retry.
- ``scancel ID...`` kills those jobs' processes and marks them CANCELLED.
- ``srun OPTIONS CMD...`` (the plugin's job step inside a job) runs CMD.
- ``sacctmgr`` lists the accounts in ``$FAKE_SLURM_ACCOUNTS`` (comma-separated); ``sinfo`` and
  ``scontrol show config`` print plausible values.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

STATE = Path(os.environ.get("FAKE_SLURM_DIR", "/tmp/fake-slurm"))
JOBS = STATE / "jobs"


def record(cmd: str, args: list[str]) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / "calls.jsonl", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps({"cmd": cmd, "args": args, "pid": os.getpid()}) + "\n")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


def next_job_id() -> int:
    JOBS.mkdir(parents=True, exist_ok=True)
    with open(STATE / "counter", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        last = int(f.read().strip() or 1000)
        f.seek(0)
        f.truncate()
        f.write(str(last + 1))
        return last + 1


def option(args: list[str], *names: str) -> str | None:
    """The value of an option given as ``--name value``, ``--name=value`` or ``-x value``."""
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if name.startswith("--") and arg.startswith(name + "="):
                return arg[len(name) + 1 :]
    return None


def sbatch(args: list[str]) -> int:
    wrap = option(args, "--wrap")
    if wrap is None:
        print("sbatch (fake): only --wrap submissions are supported", file=sys.stderr)
        return 1
    job_id = next_job_id()
    comment = option(args, "--comment") or ""
    job = {"id": job_id, "name": option(args, "--job-name", "-J"), "comment": comment, "args": args,
           "wrap": wrap, "workdir": option(args, "-D", "--chdir") or os.getcwd()}
    write_atomic(JOBS / f"{job_id}.json", json.dumps(job))
    output = (option(args, "--output", "-o") or "slurm-%j.out").replace("%j", str(job_id))
    oom_rule = os.environ.get("FAKE_SLURM_OOM_ONCE")
    if oom_rule and comment.startswith(f"rule_{oom_rule}"):
        marker = STATE / f"oom-done-{oom_rule}"
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass
        else:
            os.close(fd)
            Path(output).parent.mkdir(parents=True, exist_ok=True)
            Path(output).write_text("slurmstepd: error: Detected 1 oom_kill event (fake)\n")
            write_atomic(JOBS / f"{job_id}.state", "OUT_OF_MEMORY")
            print(job_id)
            return 0
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    with open(output, "ab") as log:
        # not waited for: the job runs on after sbatch returns, as on a cluster
        subprocess.Popen([sys.executable, os.path.abspath(__file__), "_run", str(job_id)],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                         cwd=job["workdir"], close_fds=True)
    print(job_id)
    return 0


def run_job(job_id: str) -> int:
    job = json.loads((JOBS / f"{job_id}.json").read_text())
    env = dict(os.environ, SLURM_JOB_ID=job_id, SLURM_JOBID=job_id, SLURM_JOB_NAME=job["name"] or "")
    gpus = option(job["args"], "--gpus", "-G")
    if gpus:
        env["SLURM_GPUS"] = gpus
    proc = subprocess.Popen(["/bin/sh", "-c", job["wrap"]], env=env, stdin=subprocess.DEVNULL)
    write_atomic(JOBS / f"{job_id}.pid", f"{os.getpid()} {proc.pid}")
    write_atomic(JOBS / f"{job_id}.state", "RUNNING")
    rc = proc.wait()
    state = JOBS / f"{job_id}.state"
    if state.read_text() != "CANCELLED":
        write_atomic(state, "COMPLETED" if rc == 0 else "FAILED")
    return rc


def job_states(name: str | None) -> list[tuple[str, str]]:
    rows = []
    for path in sorted(JOBS.glob("*.json")) if JOBS.is_dir() else []:
        job = json.loads(path.read_text())
        if name is not None and job["name"] != name:
            continue
        state_file = JOBS / f"{job['id']}.state"
        rows.append((str(job["id"]), state_file.read_text() if state_file.exists() else "PENDING"))
    return rows


def sacct(args: list[str]) -> int:
    fmt = option(args, "--format", "-o") or ""
    if "State" not in fmt:
        return 0  # Reason, NodeList, Account queries: nothing to say
    for job_id, state in job_states(option(args, "--name")):
        print(f"{job_id}|{state}")
    return 0


def squeue(args: list[str]) -> int:
    for job_id, state in job_states(option(args, "--name")):
        print(f"{job_id}|{state}")
    return 0


def scancel(args: list[str]) -> int:
    for job_id in (a for a in args if a.isdigit()):
        pid_file = JOBS / f"{job_id}.pid"
        if (JOBS / f"{job_id}.state").exists() and pid_file.exists():
            write_atomic(JOBS / f"{job_id}.state", "CANCELLED")
            for pid in pid_file.read_text().split()[::-1]:
                try:
                    os.kill(int(pid), signal.SIGTERM)
                except ProcessLookupError:
                    pass
    return 0


def srun(args: list[str]) -> int:
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 1
    if i == len(args):
        print("srun (fake): no command", file=sys.stderr)
        return 1
    os.execvp(args[i], args[i:])
    return 1  # not reached


def main() -> int:
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "_run":
        return run_job(args[0])
    record(cmd, args)
    if cmd == "sbatch":
        return sbatch(args)
    if cmd == "sacct":
        return sacct(args)
    if cmd == "squeue":
        return squeue(args)
    if cmd == "scancel":
        return scancel(args)
    if cmd == "srun":
        return srun(args)
    if cmd == "sacctmgr":
        print("\n".join(a for a in os.environ.get("FAKE_SLURM_ACCOUNTS", "").split(",") if a))
        return 0
    if cmd == "sinfo":
        print("PARTITION\n" + "\n".join(os.environ.get("FAKE_SLURM_PARTITIONS", "cpu*,gpu").split(",")))
        return 0
    if cmd == "scontrol":
        print("MaxArraySize            = 1001\nMinJobAge               = 300 sec")
        return 0
    print(f"{cmd} (fake): unsupported", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
