"""A fork server for ``driftlib`` commands: one process imports torch, transformers and driftlib once,
and each command that Snakemake starts runs in a fork of it instead of a fresh interpreter.

A model job of the tiny family spends several seconds importing (torch, transformers and its model
modules, scipy, pandas) before any work, and the embedded default runs hundreds of such jobs. The
workflow's ``onstart`` hook starts :func:`serve` for a local run and names its socket in
``DRIFTLIB_SERVER``; the ``driftlib`` command then hands its arguments, working directory,
environment and standard streams to the server (:func:`run_remote`) and returns the forked child's
exit status. The child runs exactly the command line it was given, so every rule stays one
``driftlib`` command that can be re-run by hand with the same result.

Where the server is not there (a cluster node, a test, a server still importing, or one whose
environment differs from the job's in a variable that modules read when they are imported), the
command runs in its own process as before. Only the variables in :data:`PER_JOB` may differ: the
thread counts and temporary directories Snakemake sets per job, which the child applies itself.

Why hand-written: Python's ``multiprocessing.forkserver`` starts ``Process`` objects of one program,
not command lines with their own streams, directory and environment; no maintained library does that.

The server forks only while it is single-threaded and before torch has run an operation (importing
torch starts no threads) or touched CUDA, so each child sizes its thread pools and initialises CUDA
itself, as a fresh process would. Linux only (the Snakefile starts it nowhere else): on macOS a
fork after some system libraries load is not safe.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["PER_JOB", "SERVER_ENV", "main", "preload", "run_remote", "serve"]

log = logging.getLogger(__name__)

#: the environment variable that names a running server's socket
SERVER_ENV = "DRIFTLIB_SERVER"

#: variables that may differ between the server and a job: Snakemake sets the thread counts and the
#: temporary directory per job, and the job's shell sets its own bookkeeping
PER_JOB = frozenset({
    "OMP_NUM_THREADS", "GOTO_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "TMPDIR", "TMP", "TEMP", "TEMPDIR",
    "PWD", "OLDPWD", "SHLVL", "_",
})

#: the pid the server sends for a request it refuses (the command then runs in its own process)
REFUSED = -1

_HEADER = struct.Struct("!Q")  # length of the request's JSON
_PID = struct.Struct("!q")
_STATUS = struct.Struct("!i")

#: set in the server and its children: a command they run is never handed on again
_serving = False


def preload() -> list[str]:
    """Import what the commands import: torch, transformers with the tiny family's model modules,
    and every driftlib module. Runs no torch operation (a fork after one could inherit a used thread
    pool). Returns the names of the modules that could not be imported (an optional extra missing)."""
    import importlib
    import pkgutil

    import driftlib
    from driftlib.model.families import TINY_ARCHS

    failed = []
    names = ["torch", "transformers", "safetensors.torch", "scipy.stats", "pandas", "pyarrow.parquet", "sklearn",
             "threadpoolctl"]
    names += [info.name for info in pkgutil.walk_packages(driftlib.__path__, "driftlib.")]
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - an optional dependency; the command that needs it will say so
            failed.append(name)
    try:
        import transformers

        for arch in TINY_ARCHS.values():  # the lazy model modules from_pretrained would import
            getattr(transformers, arch["config_class"].replace("Config", "ForCausalLM"))
        from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401
    except Exception:  # noqa: BLE001
        failed.append("transformers models")
    return failed


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the peer closed the connection")
        data += chunk
    return data


def _differing(env: dict[str, str], own: dict[str, str]) -> list[str]:
    """Names of the variables (outside :data:`PER_JOB`) in which a job's ``env`` differs from the
    server's environment: ``own`` as it started, or as its imports left it (torch sets some of its own,
    which a job started from a process that imported torch has too)."""
    keys = (set(env) | set(own) | set(os.environ)) - PER_JOB - {SERVER_ENV}
    return sorted(k for k in keys if env.get(k) not in (own.get(k), os.environ.get(k)))


def _name(argv: Sequence[str]) -> str:
    """The command's name in ``argv`` (its first word that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), " ".join(argv))


def _exit_status(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _become(fds: list[int], request: dict) -> None:
    """In the forked child: take the job's streams, directory, environment and thread count."""
    import tempfile

    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a fresh interpreter
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    added = {k: v for k, v in os.environ.items() if k not in request["own"]}  # set by the imports
    os.environ.clear()
    os.environ.update(request["env"])
    for key, value in added.items():
        os.environ.setdefault(key, value)
    tempfile.tempdir = None  # found again from the job's TMPDIR
    for handler in list(logging.root.handlers):  # the command configures its own (-q)
        logging.root.removeHandler(handler)
    sys.argv = ["driftlib", *request["argv"]]
    # the thread pools were sized when the server imported them, from its own environment: size them
    # as the job's variables would have in a fresh process (Snakemake sets them all to the job's threads)
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=int(threads))  # numpy's and scipy's BLAS, OpenMP
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(int(threads))


def _child(conn: socket.socket, fds: list[int], request: dict, main: Callable[[Sequence[str]], int]) -> None:
    """In the forked child: become the job, run the command, send its exit status. Never returns."""
    import threading
    import traceback

    def watch() -> None:  # the client gone (killed with its job): end the command too
        try:
            conn.recv(1)
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    status = 1
    try:
        conn.sendall(_PID.pack(os.getpid()))  # the client forwards Snakemake's signals to it
        _become(fds, request)
        threading.Thread(target=watch, daemon=True).start()
        status = main(request["argv"])
    except SystemExit as exc:
        status = _exit_status(exc)
    except BaseException:  # noqa: BLE001 - what a fresh interpreter would print
        traceback.print_exc()
        status = 1
    finally:
        try:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            status = status if isinstance(status, int) else 1
            conn.sendall(_STATUS.pack(status))
        finally:
            os._exit(status)


def _take(listener: socket.socket, own: dict[str, str], main: Callable[[Sequence[str]], int]) -> bool:
    """Accept one request: fork a child that runs it (True), or refuse it (False)."""
    conn, _ = listener.accept()
    fds: list[int] = []
    try:
        msg, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
        if len(msg) != _HEADER.size or len(fds) != 3:
            raise ConnectionError("a request without its header and three streams")
        request = json.loads(_recv_exact(conn, _HEADER.unpack(msg)[0]))
        differing = _differing(request["env"], own)
        if differing:
            log.info("job server: refused %s (environment differs in %s)", _name(request["argv"]),
                     ", ".join(differing))
            conn.sendall(_PID.pack(REFUSED))
            return False
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            listener.close()
            _child(conn, fds, {**request, "own": own}, main)
        log.info("job server: %s in pid %d", _name(request["argv"]), pid)
        return True
    finally:
        for fd in fds:
            os.close(fd)
        conn.close()


def _prepare() -> bool:
    """Preload (:func:`preload`); False where an import initialised CUDA, which forks cannot use."""
    # torch's availability checks ask NVML, so that they initialise no CUDA driver here
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    failed = preload()
    if failed:
        log.info("job server: not preloaded (imported by the command that needs them): %s", ", ".join(failed))
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        log.warning("job server: an import initialised CUDA, which forks cannot use; not serving "
                    "(every command runs in its own process)")
        return False
    return True


def serve(socket_path: str | Path, *, main: Callable[[Sequence[str]], int], idle_check_s: float = 0.5) -> int:
    """Run the fork server on ``socket_path`` until SIGTERM or until the process that started it ends.

    Args:
        socket_path: the Unix socket to listen on (created here, removed on exit).
        main: the command line's entry point, ``main(argv) -> exit status``, run in each child.
        idle_check_s: how often the server checks that it was stopped or that its parent is gone.

    Returns:
        0, or 1 where it cannot serve (an import initialised CUDA): then it never listens.
    """
    global _serving
    _serving = True
    parent, own, started = os.getppid(), dict(os.environ), time.perf_counter()  # own: before the imports
    if not _prepare():
        return 1
    path = Path(socket_path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(64)
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    log.info("job server: listening on %s (preloaded in %.1f s)", path, time.perf_counter() - started)
    counts = {True: 0, False: 0}
    try:
        while not stopping and os.getppid() == parent:
            if select.select([listener], [], [], idle_check_s)[0]:
                try:
                    counts[_take(listener, own, main)] += 1
                except (OSError, ValueError, KeyError, ConnectionError) as exc:
                    log.warning("job server: a request failed: %s", exc)
    finally:
        listener.close()
        path.unlink(missing_ok=True)
        log.info("job server: stopped after %d commands (%d refused)", counts[True], counts[False])
    return 0


def _wait(conn: socket.socket, pid: int) -> int:
    """The exit status the forked ``pid`` sends on ``conn``, forwarding this process's SIGTERM, SIGINT
    and SIGHUP to it meanwhile (Snakemake stops a job by signalling it)."""
    forwarded: list[int] = []

    def forward(signum, frame) -> None:  # noqa: ARG001
        forwarded.append(signum)
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        return _STATUS.unpack(_recv_exact(conn, _STATUS.size))[0]
    except (OSError, ConnectionError):
        if forwarded:
            return 128 + forwarded[-1]
        print(f"driftlib: the job server's process {pid} ended without an exit status", file=sys.stderr)
        return 1


def run_remote(argv: Sequence[str], socket_path: str | None = None) -> int | None:
    """Run the command ``argv`` in a fork of the server named by ``DRIFTLIB_SERVER``.

    Args:
        argv: the command line's arguments, without the program name.
        socket_path: the server's socket (default: ``$DRIFTLIB_SERVER``).

    Returns:
        The command's exit status, or None where no server took it (none named, none listening, this
        is the server or its child, or it refused): then run the command here.
    """
    socket_path = socket_path or os.environ.get(SERVER_ENV)
    if _serving or not socket_path:
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        try:
            conn.connect(socket_path)
            payload = json.dumps({"argv": list(argv), "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
            socket.send_fds(conn, [_HEADER.pack(len(payload))], [0, 1, 2])
            conn.sendall(payload)
            pid = _PID.unpack(_recv_exact(conn, _PID.size))[0]
        except (OSError, ConnectionError):
            return None
        return None if pid == REFUSED else _wait(conn, pid)


def main(argv: Sequence[str] | None = None) -> int:
    """``driftlib-jobserver --socket PATH``: the job server (the Snakefile's ``onstart`` starts it)."""
    import argparse

    from driftlib import cli

    parser = argparse.ArgumentParser(prog="driftlib-jobserver", description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="the Unix socket to listen on")
    args = parser.parse_args(argv)
    for name, value in cli.REPRODUCIBLE_BLAS.items():  # as driftlib's main sets them, before torch loads
        os.environ.setdefault(name, value)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s",
                        stream=sys.stderr)
    return serve(args.socket, main=cli.main)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
