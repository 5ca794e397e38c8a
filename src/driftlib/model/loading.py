"""Loading causal LMs and their tokenizers, and resolving device and dtype settings.

:func:`load_model` accepts a local directory or a hub id. A hub id is looked up in the local Hugging
Face cache first; only when it is not there, and the environment allows hub access, is it
downloaded. It never deletes or rewrites the user's cache, and never asks a question on the
terminal (``trust_remote_code`` is always passed as an explicit bool).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from driftlib.core.errors import ConfigError, ModelError
from driftlib.model.families import LAYER_PATHS
from driftlib.model.layers import find_decoder_layers

logger = logging.getLogger(__name__)

#: attention implementation to use per ``config.model_type`` when the caller does not choose one.
#: Gemma-2 soft-caps its attention logits, which only the eager implementation does.
ATTN_IMPLEMENTATION: dict[str, str] = {
    "gemma2": "eager",
}

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}

_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
#: tensor names shown in a missing/unexpected-weights error before "…"
_SHOWN_KEYS = 6


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``"auto"`` (cuda if available, else cpu), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, or a device.

    Raises:
        ConfigError: an unknown device name, or a CUDA/MPS device that this machine does not have.
    """
    if isinstance(spec, torch.device):
        device = spec
    elif not isinstance(spec, str):
        raise ConfigError(f"device: {spec!r} is not a device; use auto, cpu, cuda, cuda:N or mps")
    elif spec.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(spec.strip().lower())
        except RuntimeError as exc:
            raise ConfigError(f"device: {spec!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {spec!r} asks for CUDA but torch sees no CUDA GPU here; use device: auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device: {spec!r} but only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"device: {spec!r} asks for Apple MPS, which is not available here; use device: auto or cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device: {spec!r} is not supported; use auto, cpu, cuda, cuda:N or mps")
    return device


def resolve_dtype(spec: str | torch.dtype = "auto", device: str | torch.device | None = None) -> torch.dtype:
    """``"auto"`` (bfloat16 on CUDA if the GPU supports it, float32 elsewhere), ``"float32"``,
    ``"bfloat16"`` or ``"float16"`` (also ``fp32``/``bf16``/``fp16``), or a floating torch dtype.

    Raises:
        ConfigError: any other value.
    """
    if isinstance(spec, torch.dtype):
        if not spec.is_floating_point:
            raise ConfigError(f"dtype: {spec} is not a floating-point dtype; use float32, bfloat16 or float16")
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"dtype: {spec!r}; use auto, float32, bfloat16 or float16")
    key = spec.strip().lower().removeprefix("torch.")
    if key == "auto":
        if device is None:
            dev = torch.device("cpu")
        elif isinstance(device, str) and device.strip().lower() == "auto":
            dev = resolve_device("auto")
        else:
            try:
                dev = torch.device(device)
            except (RuntimeError, TypeError) as exc:
                raise ConfigError(f"device: {device!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from exc
        if dev.type == "cuda":
            if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
                logger.warning("this GPU does not support bfloat16; dtype auto falls back to float32")
                return torch.float32
            return torch.bfloat16
        return torch.float32
    if key not in _DTYPES:
        raise ConfigError(f"dtype: {spec!r}; use auto, float32, bfloat16 or float16")
    return _DTYPES[key]


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~", ".\\")) or os.path.isabs(source) or source.count("/") > 1


def _offline() -> str | None:
    for var in _OFFLINE_VARS:
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return var
    return None


def _check_local_dir(path: Path, gguf_file: str | None) -> None:
    if gguf_file is not None:
        if not (path / gguf_file).is_file():
            raise ModelError(f"model directory {path} has no GGUF file {gguf_file!r} (gguf_file given); found {_listing(path)}")
        return  # a GGUF file carries its own config
    looked_for = "config.json and weights (*.safetensors or *.bin, or a gguf_file)"
    if not (path / "config.json").is_file():
        raise ModelError(f"model directory {path} has no config.json; looked for {looked_for}; found {_listing(path)}")
    if not any(any(path.glob(pattern)) for pattern in _WEIGHT_PATTERNS):
        raise ModelError(f"model directory {path} has no weights; looked for {looked_for}; found {_listing(path)}")
    _check_safetensors_files(path)


def _check_safetensors_files(path: Path) -> None:
    """Open the header of every ``*.safetensors`` file in ``path`` (cheap: nothing is read beyond it).

    Raises:
        ModelError: naming a file that is truncated or not safetensors at all.
    """
    from safetensors import safe_open

    for file in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as handle:
                handle.keys()
        except Exception as exc:  # SafetensorError, OSError, … for a damaged file
            raise ModelError(
                f"model directory {path}: {file.name} is not a readable safetensors file ({exc}); it is probably "
                "truncated (an interrupted download or copy): fetch or copy the model folder again"
            ) from exc


def _pickle_weights(path: Path) -> list[str]:
    """Names of the pickled weight files (``*.bin``) in a local model folder."""
    return sorted(p.name for p in path.glob("*.bin"))


def _is_unpickling_error(exc: BaseException) -> bool:
    """True for the error torch's weights-only loader raises on a pickle it refuses (matched by class
    name, so that this module need not import the pickle machinery)."""
    return any(cls.__name__ == "UnpicklingError" for cls in type(exc).__mro__)


def _pickle_error(where: str, files: list[str], exc: BaseException) -> ModelError:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = next((line for line in lines if "WeightsUnpickler error" in line), lines[0] if lines else "")
    reason = reason.split(". ")[0]  # the first sentence says what was refused
    return ModelError(
        f"{where} holds pickle weights ({', '.join(files)}) that torch's weights-only loader "
        f"refused ({type(exc).__name__}: {reason[:240]}); they were not loaded. Use a safetensors copy of the "
        "model (model.safetensors), or, only if you trust the file, convert it: load it with torch's "
        "load function and weights_only=False, save its tensors with safetensors.torch.save_file(..., "
        "'model.safetensors', metadata={'format': 'pt'}) in the same folder, and remove the .bin file"
    )


def _check_loading_info(info: dict[str, Any] | None, where: str) -> None:
    """Refuse weights that do not cover the model the config describes, or hold tensors it has no place for.

    transformers fills missing tensors with random values and drops unexpected ones, with only a
    log notice; either way the model is not the one the folder claims to hold.
    """
    if not info:
        return
    parts = []
    for key, what in (("missing_keys", "missing from the weights (would be random)"),
                      ("unexpected_keys", "in the weights but not in the model"),
                      ("mismatched_keys", "of another shape than the config says")):
        names = sorted(str(k if isinstance(k, str) else k[0]) for k in info.get(key) or ())
        if names:
            shown = ", ".join(names[:_SHOWN_KEYS]) + (f", … ({len(names)} in all)" if len(names) > _SHOWN_KEYS else "")
            parts.append(f"{len(names)} tensor(s) {what}: {shown}")
    if parts:
        raise ModelError(
            f"the weights of {where} do not match its config.json ({'; '.join(parts)}); nothing was loaded. Check "
            "that config.json belongs to these weights (e.g. num_hidden_layers) and that the weight files are complete"
        )


def _listing(path: Path, limit: int = 12) -> str:
    names = sorted(p.name for p in path.iterdir())
    if not names:
        return "an empty directory"
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names)} entries)" if len(names) > limit else "")


def _remote_code_error(source: str, exc: Exception) -> ModelError:
    return ModelError(
        f"{source} needs custom code from its repository (transformers refused: trust_remote_code is False). "
        f"If you trust that code, set `trust_remote_code: true` for this model in the config; otherwise use another model."
    )


def _needs_remote_code(exc: Exception) -> bool:
    return "trust_remote_code" in str(exc)


def load_model(
    source: str | os.PathLike[str],
    *,
    revision: str | None = None,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device = "auto",
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    gguf_file: str | None = None,
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer, in eval mode on ``device`` with ``dtype``.

    Args:
        source: a local model directory (``config.json`` plus ``*.safetensors``/``*.bin`` weights,
            or the ``gguf_file``) or a hub id such as ``HuggingFaceTB/SmolLM2-135M``.
        revision: hub revision (branch, tag or commit); ignored for local directories.
        dtype: see :func:`resolve_dtype`.
        device: see :func:`resolve_device`.
        trust_remote_code: passed to transformers exactly as given (never ``None``, so transformers
            never prompts on the terminal).
        attn_implementation: ``"eager"``, ``"sdpa"``, …; when ``None``, taken from
            :data:`ATTN_IMPLEMENTATION` by the config's ``model_type`` (else transformers' default).
        gguf_file: name of a GGUF file inside ``source`` to load instead of safetensors.

    Returns:
        ``(model, tokenizer)``; the tokenizer pads on the left and has a pad token (eos when it had none).

    Raises:
        ConfigError: a bad ``device`` or ``dtype``.
        ModelError: a local directory without config or weights, or with a truncated
            ``*.safetensors`` file; pickled ``*.bin`` weights that torch's weights-only loader refuses
            (where a folder has safetensors weights, those are used and a ``*.bin`` beside them never
            is); weights that do not match ``config.json`` (tensors missing, which transformers would
            leave random, or unexpected, which it would drop); a hub id not in the local cache while
            offline (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``); a model that needs remote code;
            any other failure to load, with what was tried.

    A ``config.json`` with an ``auto_map`` (custom code) whose ``model_type`` transformers knows is
    loaded with the built-in class when ``trust_remote_code`` is false, with a logged warning.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    trust = bool(trust_remote_code)
    source_str = os.fspath(source)
    path = Path(source_str).expanduser()

    common: dict[str, Any] = {"trust_remote_code": trust}
    if gguf_file is not None:
        common["gguf_file"] = gguf_file
    if path.is_dir():
        _check_local_dir(path, gguf_file)
        location = str(path)
        where = f"local directory {path}"
        common["local_files_only"] = True
    elif path.exists() or _looks_like_path(source_str):
        raise ModelError(f"model path {source_str} is not a directory; point the config at a model directory (config.json + weights) or a hub id")
    else:
        location = source_str
        where = f"hub id {source_str!r}" + (f" at revision {revision!r}" if revision else "")
        if revision is not None:
            common["revision"] = revision

    config = _load_config(AutoConfig, location, where, common, is_local=path.is_dir())
    model_type = getattr(config, "model_type", None)
    auto_map = getattr(config, "auto_map", None)
    if auto_map and not trust:
        logger.warning(
            "%s: config.json names custom code (auto_map: %s), but trust_remote_code is false, so transformers' "
            "built-in %r classes are used and the custom code is ignored; set trust_remote_code: true for this "
            "model if you trust that code and it matters", where, auto_map, model_type)
    attn = attn_implementation or ATTN_IMPLEMENTATION.get(str(model_type))
    model_kwargs: dict[str, Any] = dict(common, config=config)
    model_kwargs[_dtype_kwarg()] = torch_dtype
    if attn is not None:
        model_kwargs["attn_implementation"] = attn
    if torch_device.type != "cpu" and _accelerate_available():
        model_kwargs["device_map"] = {"": torch_device}  # load straight onto the device
    if path.is_dir() and gguf_file is None and any(path.glob("*.safetensors")):
        model_kwargs["use_safetensors"] = True  # never fall back to pickled *.bin beside them
    if gguf_file is None:
        model_kwargs["output_loading_info"] = True

    logger.info("loading %s (model_type %s, dtype %s, device %s, attention %s)", where, model_type, torch_dtype, torch_device, attn or "default")
    from safetensors import SafetensorError

    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(location, **common)
            loaded = AutoModelForCausalLM.from_pretrained(location, **model_kwargs)
        except OSError:
            # a hub id whose config is cached but whose weights or tokenizer files are not
            if path.is_dir() or _offline() or not common.get("local_files_only"):
                raise
            logger.info("%s is only partly in the local cache; fetching the rest from the hub", where)
            common["local_files_only"] = model_kwargs["local_files_only"] = False
            tokenizer = AutoTokenizer.from_pretrained(location, **common)
            loaded = AutoModelForCausalLM.from_pretrained(location, **model_kwargs)
    except SafetensorError as exc:
        raise ModelError(
            f"could not load the weights of {where}: a safetensors file is not readable ({exc}); it is probably "
            "truncated (an interrupted download or copy): fetch or copy the model again"
        ) from exc
    except (OSError, ValueError, KeyError, ImportError, RuntimeError) as exc:
        if _needs_remote_code(exc) and not trust:
            raise _remote_code_error(source_str, exc) from exc
        raise ModelError(f"could not load the model or tokenizer of {where} ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:
        if not _is_unpickling_error(exc):
            raise
        files = _pickle_weights(path) if path.is_dir() else []
        raise _pickle_error(where, files or ["*.bin"], exc) from exc
    if gguf_file is None:
        model, info = loaded
        _check_loading_info(info, where)
    else:
        model = loaded

    model.to(torch_device)
    model.eval()
    _prepare_tokenizer(tokenizer, where)
    return model, tokenizer


def _dtype_kwarg() -> str:
    """``from_pretrained``'s dtype argument: ``dtype`` since transformers 4.56, ``torch_dtype`` before."""
    import transformers

    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def _accelerate_available() -> bool:
    try:
        import accelerate  # noqa: F401
    except ImportError:
        return False
    return True


def _load_config(auto_config: Any, location: str, where: str, common: dict[str, Any], *, is_local: bool) -> Any:
    """Read the config: from the local directory, else the HF cache, else (when allowed) the hub.

    Sets ``common["local_files_only"]`` to what worked, so the model and tokenizer load the same way.
    """
    try:
        config = auto_config.from_pretrained(location, **dict(common, local_files_only=True))
        common["local_files_only"] = True
        return config
    except (OSError, ValueError, KeyError) as exc:
        if _needs_remote_code(exc) and not common["trust_remote_code"]:
            raise _remote_code_error(location, exc) from exc
        if is_local:
            raise ModelError(f"could not read the config of {where} ({type(exc).__name__}: {exc})") from exc
        if isinstance(exc, (ValueError, KeyError)) and "does not recognize this architecture" in str(exc):
            raise ModelError(f"transformers does not know the architecture of {where}: {exc} Upgrade transformers.") from exc
        cached_error = exc
    offline = _offline()
    if offline:
        raise ModelError(
            f"{where} is not in the local Hugging Face cache and {offline} is set, so it cannot be downloaded. "
            f"Point the config at a local copy (e.g. set `models.<key>.aligned: /path/to/downloaded/model`), "
            f"or run where the hub is reachable with {offline} unset."
        ) from cached_error
    logger.info("%s is not in the local cache; downloading it from the hub", where)
    try:
        config = auto_config.from_pretrained(location, **dict(common, local_files_only=False))
    except (OSError, ValueError, KeyError) as exc:
        if _needs_remote_code(exc) and not common["trust_remote_code"]:
            raise _remote_code_error(location, exc) from exc
        raise ModelError(
            f"could not load {where} from the local cache or the hub ({type(exc).__name__}: {exc}). "
            "Check the id and revision, your network and token, or point the config at a local copy."
        ) from exc
    common["local_files_only"] = False
    return config


def _prepare_tokenizer(tokenizer: Any, where: str) -> None:
    tokenizer.padding_side = "left"
    if getattr(tokenizer, "pad_token", None) is None:
        if getattr(tokenizer, "eos_token", None) is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            logger.warning("the tokenizer of %s has neither a pad nor an eos token; batches will pad with id 0", where)


def describe_model(model: torch.nn.Module) -> dict[str, Any]:
    """Facts about a loaded model, for logs and artifact metadata.

    Returns:
        ``{"model_type", "architecture", "n_layers", "hidden_size", "dtype", "device", "n_params"}``;
        ``dtype`` is a string such as ``"bfloat16"``, ``n_params`` counts every parameter.
    """
    config = getattr(model, "config", None)
    try:
        n_layers: int | None = len(find_decoder_layers(model))
    except ModelError:
        logger.warning("decoder blocks of %s not found at %s", type(model).__name__, LAYER_PATHS)
        n_layers = None
    first = next(model.parameters(), None)
    hidden = getattr(config, "hidden_size", None)
    if hidden is None and hasattr(model, "get_input_embeddings"):
        hidden = model.get_input_embeddings().embedding_dim
    return {
        "model_type": getattr(config, "model_type", None),
        "architecture": type(model).__name__,
        "n_layers": n_layers,
        "hidden_size": int(hidden) if hidden is not None else None,
        "dtype": str(first.dtype).removeprefix("torch.") if first is not None else None,
        "device": str(first.device) if first is not None else None,
        "n_params": int(sum(p.numel() for p in model.parameters())),
    }
