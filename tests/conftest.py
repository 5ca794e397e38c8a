"""Test-wide settings: no hub access, caches in a temporary folder, a headless plot backend."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_CACHE = Path(tempfile.mkdtemp(prefix="driftlib-test-cache-"))
for _var, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HOME": str(_CACHE / "hf"),
    "TORCH_HOME": str(_CACHE / "torch"),
    "MPLCONFIGDIR": str(_CACHE / "mpl"),
    "MPLBACKEND": "Agg",
    "XDG_CACHE_HOME": str(_CACHE / "xdg"),
    "TOKENIZERS_PARALLELISM": "false",
    "MKL_CBWR": "AUTO,STRICT",  # as driftlib's CLI sets it (driftlib.cli.REPRODUCIBLE_BLAS)
}.items():
    os.environ[_var] = _value

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: the real hh-rlhf harmless-base test split that lives beside the checkout (never copied in)
HH_RLHF = REPO.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def hh_rlhf_path() -> Path:
    if not HH_RLHF.is_file():
        pytest.skip(f"real hh-rlhf data not found at {HH_RLHF}")
    return HH_RLHF


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tests use tiny models, which gain nothing from intra-op threads; on a loaded 2-core machine a
    parallel region waits for a descheduled thread on every small matmul (seen: 18 ms per 32x64
    linear, test files 20x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny family's tokenizer, trained once per session."""
    from driftlib.model import tiny

    return tiny.train_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer")


@pytest.fixture(scope="session")
def tok(tok_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tok_dir))


@pytest.fixture(scope="module")
def one_blas_thread():
    """Small numerical problems on a shared, loaded CPU: threaded BLAS and OpenMP only spin (seen:
    an SVD of 700 x 600 took 6 s with 2 threads under load, 0.17 s with 1). Modules that want it say
    ``pytestmark = pytest.mark.usefixtures("one_blas_thread")``; restored after the module."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


#: the test files that run Snakemake or train models in their fixtures, longest first: with
#: ``make test``'s workers (pytest-xdist, one file per worker) they start first, so the short files
#: fill the other worker around them instead of queueing behind them
SLOW_FIRST = ("test_workflow.py", "test_interruption.py", "test_slurm.py", "test_world_family.py",
              "test_real_models.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable: file order kept otherwise
