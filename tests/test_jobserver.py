"""The job server (driftlib.cli.jobserver): a command run in a fork of it behaves as the same command
run in its own process (the same output bytes, streams and exit status); it refuses a job whose
environment differs; a killed client ends its command; the server ends with its parent."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

DRIFTLIB = str(Path(sys.executable).parent / "driftlib")
JOBSERVER = str(Path(sys.executable).parent / "driftlib-jobserver")
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DRIFTLIB_SERVER", "PYTEST_CURRENT_TEST")}
    return {**env, **OFFLINE, **extra}


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the server exited with {proc.returncode}"
        assert time.monotonic() < deadline, "the server did not listen in time"
        time.sleep(0.1)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server in its own process group, with its socket and log."""
    folder = tmp_path_factory.mktemp("srv")
    sock, log = folder / "s.sock", folder / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([JOBSERVER, "--socket", str(sock)], env=_env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for(sock, proc)
        yield sock, log
    finally:
        _kill(proc)


def _run(argv: list[str], served: Path | None, cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    env = _env(**extra, **({"DRIFTLIB_SERVER": str(served)} if served else {}))
    return subprocess.run([DRIFTLIB, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _served(log: Path, command: str) -> list[int]:
    """The pids the server forked for ``command`` so far."""
    return [int(p) for p in re.findall(rf"job server: {re.escape(command)} in pid (\d+)", log.read_text())]


def test_a_model_command_served_writes_the_same_bytes_as_in_its_own_process(server, tok_dir, tmp_path):
    import torch

    from driftlib.model import tiny
    from transformers import AutoTokenizer

    sock, log = server
    torch.manual_seed(0)
    model = tiny.new_model("llama", AutoTokenizer.from_pretrained(str(tok_dir))).eval()
    model.save_pretrained(tmp_path / "m")
    AutoTokenizer.from_pretrained(str(tok_dir)).save_pretrained(tmp_path / "m")
    assert _run(["-q", "prepare-prompts", "--per-group", "2", "--out", "p.parquet"], None, tmp_path).returncode == 0
    outputs = {}
    for name, via in (("own", None), ("served", sock)):
        before = len(_served(log, "extract"))
        result = _run(["extract", "--model", "m", "--dtype", "float32", "--device", "cpu", "--name", "llama",
                       "--variant", "base", "--texts", "p.parquet", "--layers", "1", "-1", "--render", "chat",
                       "--pooling", "last", "--out", f"{name}.safetensors"], via, tmp_path, OMP_NUM_THREADS="2")
        assert result.returncode == 0, result.stderr[-3000:]
        assert "extracting last-pooled block outputs" in result.stderr  # the command's own logging, at INFO
        assert len(_served(log, "extract")) == before + (via is not None)
        outputs[name] = (tmp_path / f"{name}.safetensors").read_bytes()
    assert outputs["own"] == outputs["served"]


@pytest.mark.parametrize("argv", [
    ["--version"], ["solve-game"],
    ["-q", "score", "--activations", "missing.st", "--prompts", "p.parquet", "--out", "x.parquet"],
])
def test_streams_and_exit_status_are_those_of_the_command(server, tmp_path, argv):
    sock, log = server
    name = next(a for a in argv if a != "-q")
    before = len(_served(log, name))
    own, served = _run(argv, None, tmp_path), _run(argv, sock, tmp_path)
    assert len(_served(log, name)) == before + 1  # the second ran in a fork
    assert (served.returncode, served.stdout, served.stderr) == (own.returncode, own.stdout, own.stderr)
    assert own.returncode == (0 if argv == ["--version"] else 2)
    assert "Traceback" not in own.stderr


def test_a_job_whose_environment_differs_runs_in_its_own_process(server, tmp_path):
    sock, log = server
    result = _run(["--version"], sock, tmp_path, HF_HOME=str(tmp_path / "hf"))
    assert result.returncode == 0 and result.stdout.startswith("driftlib ")
    assert "refused --version (environment differs in HF_HOME)" in log.read_text()
    # the per-job variables Snakemake sets do not count
    before = len(_served(log, "--version"))
    assert _run(["--version"], sock, tmp_path, OMP_NUM_THREADS="1", TMPDIR=str(tmp_path)).returncode == 0
    assert len(_served(log, "--version")) == before + 1


def test_a_killed_client_ends_its_command(server, tok_dir, tmp_path):
    """Snakemake stops a job by signalling its process: the client forwards SIGTERM to the fork."""
    sock, log = server
    env = _env(DRIFTLIB_SERVER=str(sock))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a small corpus of words for a long training run\n" * 50)
    client = subprocess.Popen([DRIFTLIB, "-q", "tiny-model", "base", "--arch", "llama", "--tokenizer", str(tok_dir),
                               "--corpus", str(corpus), "--steps", "100000", "--out", str(tmp_path / "b")],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not _served(log, "tiny-model"):
        assert client.poll() is None, client.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    child = _served(log, "tiny-model")[-1]
    time.sleep(1)
    client.send_signal(signal.SIGTERM)
    assert client.wait(timeout=30) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 30
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{child}").exists(), "the forked command outlived its client"


def test_the_server_ends_with_the_process_that_started_it(tmp_path):
    sock = tmp_path / "s.sock"
    starter = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time\n"
         f"subprocess.Popen([{JOBSERVER!r}, '--socket', {str(sock)!r}])\ntime.sleep(600)"],
        env=_env(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(sock, starter)
        starter.kill()
        starter.wait(timeout=30)
        deadline = time.monotonic() + 30
        while sock.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not sock.exists(), "the server outlived the process that started it"
    finally:
        _kill(starter)


#: a server whose command prints the sizes of its thread pools (BLAS, OpenMP, torch's), as JSON
THREADS_SERVER = """
import json, sys
from driftlib.cli import jobserver

def report(argv):
    import numpy, torch  # the server imported them already (its preload), a fresh process here
    from threadpoolctl import threadpool_info

    pools = sorted((p["user_api"], p["internal_api"], p["num_threads"]) for p in threadpool_info())
    print(json.dumps({"pools": pools, "torch": torch.get_num_threads()}))
    return 0

if __name__ == "__main__":
    if sys.argv[1] == "serve":
        jobserver.serve(sys.argv[2], main=report)
    else:
        sys.exit(report(sys.argv[1:]))
"""
CLIENT = "import sys\nfrom driftlib.cli import jobserver\nsys.exit(jobserver.run_remote(['x']) or 0)\n"


@pytest.mark.parametrize("threads", ["1", "2"])
def test_the_thread_pools_are_sized_as_in_a_fresh_process(tmp_path, threads):
    """Snakemake gives a job its threads through OMP_NUM_THREADS and the BLAS variables, which a
    fresh process reads when numpy and torch load; a fork sizes the pools it inherited instead."""
    script, sock = tmp_path / "threads_server.py", tmp_path / "s.sock"
    script.write_text(THREADS_SERVER)
    job = {name: threads for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    server = subprocess.Popen([sys.executable, str(script), "serve", str(sock)], env=_env(), start_new_session=True)
    try:
        _wait_for(sock, server)
        fresh = subprocess.run([sys.executable, str(script), "fresh"], env=_env(**job), capture_output=True,
                               text=True, timeout=120, check=True)
        forked = subprocess.run([sys.executable, "-c", CLIENT], env=_env(**job, DRIFTLIB_SERVER=str(sock)),
                                capture_output=True, text=True, timeout=120, check=True)
    finally:
        _kill(server)
    fresh, forked = json.loads(fresh.stdout), json.loads(forked.stdout)
    # the fork has more pools (the server preloaded scipy's and scikit-learn's): each the fresh size
    sizes = {(api, n) for api, _, n in fresh["pools"]}
    assert {(api, n) for api, _, n in forked["pools"]} == sizes == {("blas", int(threads)), ("openmp", int(threads))}
    assert forked["torch"] == fresh["torch"] == int(threads)


def test_a_server_whose_imports_initialised_cuda_does_not_serve(tmp_path):
    """Forks cannot use a CUDA driver their parent initialised: such a server never listens, so every
    command runs in its own process (simulated: torch.cuda.is_initialized reports True)."""
    sock = tmp_path / "s.sock"
    code = ("import sys, torch\ntorch.cuda.is_initialized = lambda: True\nfrom driftlib.cli import jobserver\n"
            f"sys.exit(jobserver.main(['--socket', {str(sock)!r}]))\n")
    result = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and not sock.exists()
    assert "initialised CUDA" in result.stderr
    served = _run(["--version"], sock, tmp_path)
    assert served.returncode == 0 and served.stdout.startswith("driftlib ")
