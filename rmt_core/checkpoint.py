"""Checkpoint folders: config.json + model.safetensors (or shards) + tokenizer files, and nothing pickled.

A checkpoint a user can `ls`:

    config.json               format, format_version, backbone (the backbone's own config), rmt (RMTConfig, or
                              DecoderConfig; rmt.architecture "encoder" (the default) or "decoder"),
                              provenance (command, data, device, steps, date), dtype of the stored weights
    model.safetensors         every weight; or model-00001-of-0000K.safetensors + model.safetensors.index.json
    tokenizer.json, ...       the tokenizer's own files
    training_log.jsonl        written by `rmt train`
    eval.json                 written by `rmt eval`
    README.md                 the model card

Loading reads only JSON and safetensors. Every fault raises `CheckpointError` with a one-line message.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from rmt_core.errors import CheckpointError
from rmt_core.files import make_plain
from rmt_core.model import RMT, RMTConfig, special_ids

FORMAT = "rmt-lens-checkpoint"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
TOKENIZER_VOCABULARIES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "tokenizer.model",
                          "sentencepiece.bpe.model")
REQUIRED_RMT_KEYS = ("task", "num_mem_tokens", "segment_size", "trained_segments", "labels")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

REPO_ROOT = Path(__file__).resolve().parents[1]
# The shipped checkpoints: inside the package in an installed wheel (setup.py copies them there), else
# checkpoints/ beside the package (the source tree and an editable install).
_PACKAGED = Path(__file__).resolve().parent / "checkpoints"
CHECKPOINTS_DIR = _PACKAGED if _PACKAGED.is_dir() else REPO_ROOT / "checkpoints"
DEFAULT_CHECKPOINT_NAME = "memorize"


def _reason(error: BaseException, limit: int = 160) -> str:
    """The first line of an exception, clipped: library messages can run to thousands of characters."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def default_checkpoint() -> Path:
    """The shipped default checkpoint the app and the commands open (env RMT_CHECKPOINT overrides)."""
    return Path(os.environ.get("RMT_CHECKPOINT", CHECKPOINTS_DIR / DEFAULT_CHECKPOINT_NAME))


def shipped_checkpoints() -> dict[str, Path]:
    """Name -> folder of every checkpoint in `checkpoints/` (folders with a config.json)."""
    if not CHECKPOINTS_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(CHECKPOINTS_DIR.iterdir()) if (p / "config.json").is_file()}


# ----- saving ----------------------------------------------------------------------------------------------
def save_checkpoint(
    model: RMT,
    path: str | Path,
    tokenizer=None,
    provenance: dict | None = None,
    dtype: torch.dtype | str | None = None,
    max_shard_mib: float | None = None,
    extra_files: dict[str, str | bytes] | None = None,
) -> Path:
    """Write `model` as a checkpoint folder at `path`, atomically (a temp folder renamed into place).

    dtype: store weights in this dtype (e.g. torch.float16 to halve the size); default: as they are.
    max_shard_mib: split the weights into shards of at most this size (with an index file).
    extra_files: name -> content of further files (model card, logs) written into the folder.
    """
    from safetensors.torch import save_file

    path = Path(path)
    tokenizer = tokenizer if tokenizer is not None else model.tokenizer
    if tokenizer is None:
        raise CheckpointError(f"cannot save {path}: the model has no tokenizer; pass tokenizer=")
    state = plain_state(model, dtype)
    stored = {str(t.dtype).removeprefix("torch.") for t in state.values() if t.is_floating_point()}
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "backbone": _backbone_config(model.backbone.config),
        "rmt": {"architecture": "encoder", **model.config.to_dict()},
        "dtype": sorted(stored)[0] if len(stored) == 1 else sorted(stored),
        "provenance": provenance or {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        shards = _shard(state, max_shard_mib)
        if len(shards) == 1:
            save_file(shards[0], str(tmp / WEIGHTS), metadata={"format": "pt"})
        else:
            weight_map = {}
            for i, shard in enumerate(shards, start=1):
                name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, str(tmp / name), metadata={"format": "pt"})
                weight_map.update({key: name for key in shard})
            (tmp / WEIGHTS_INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
        (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str))
        tokenizer.save_pretrained(str(tmp))
        for name, content in (extra_files or {}).items():
            mode = "wb" if isinstance(content, bytes) else "w"
            with open(tmp / name, mode) as handle:
                handle.write(content)
        make_plain(tmp)  # mkdtemp made the folder private, and safetensors its files
        _replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def training_only_prefixes(model) -> tuple[str, ...]:
    """State-dict prefixes of the submodules marked `training_only` (heads that only an objective of `rmt train`
    reads, such as rmt_core.recall's): checkpoints leave them out."""
    return tuple(f"{name}." for name, module in model.named_modules()
                 if name and getattr(module, "training_only", False))


def plain_state(model, dtype: torch.dtype | str | None = None, training_heads: bool = False) -> dict[str, torch.Tensor]:
    """The model's state dict on CPU as safetensors stores it: contiguous, optionally cast to `dtype`, and each
    tied weight once (a decoder's LM head shares its embeddings: the file keeps the embeddings, and loading ties
    the head to them again, `fill_tied`). A submodule marked `training_only` (a head that only an objective of
    `rmt train` reads, such as rmt_core.recall's) is left out unless training_heads (resume states keep it)."""
    dtype = _DTYPES[dtype] if isinstance(dtype, str) else dtype
    tied = tied_names(model)
    heads = () if training_heads else training_only_prefixes(model)
    state = {}
    for name, tensor in model.state_dict().items():
        if name in tied or (heads and name.startswith(heads)):
            continue
        tensor = tensor.detach().to("cpu")
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        state[name] = tensor.contiguous()
    return state


def tied_names(model) -> dict[str, str]:
    """Each name of a weight that is the same parameter as an earlier one (a decoder's LM head and its input
    embeddings) -> that earlier name. Works on meta-device models too: ties are shared parameter objects."""
    first, tied = {}, {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first:
            tied[name] = first[id(param)]
        else:
            first[id(param)] = name
    return tied


def fill_tied(model, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with every tied weight the file leaves out taken from the weight it is tied to (files written
    before ties were stored once hold both, and keep them)."""
    for name, source in tied_names(model).items():
        if name not in state and source in state:
            state[name] = state[source]
    return state


def _shard(state: dict[str, torch.Tensor], max_shard_mib: float | None) -> list[dict[str, torch.Tensor]]:
    if not max_shard_mib:
        return [state]
    limit = int(max_shard_mib * 2**20)
    shards, current, size = [], {}, 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > limit:
            shards.append(current)
            current, size = {}, 0
        current[name] = tensor
        size += nbytes
    shards.append(current)
    return shards


def _replace(tmp: Path, path: Path) -> None:
    """Move the finished folder `tmp` to `path`; an existing `path` is replaced only after `tmp` is complete."""
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


# ----- loading ---------------------------------------------------------------------------------------------
def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder: `path` itself, or, for a Hub id (owner/name) that names no local path, the folder of
    that Hub repository in the Hugging Face cache (downloaded when online; the cache alone with HF_HUB_OFFLINE=1)."""
    from rmt_core.hub import HubError, local_path

    try:
        return local_path(path, "checkpoint")
    except HubError as error:
        raise CheckpointError(str(error)) from None


def read_config(path: str | Path) -> dict:
    """The parsed and checked config.json of a checkpoint folder (or of a Hub id: `resolve_checkpoint`)."""
    path = resolve_checkpoint(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint folder {path} does not exist; pass --checkpoint with a checkpoint folder")
    if not path.is_dir():
        raise CheckpointError(f"{path} is a file, not a checkpoint folder; pass the folder that holds config.json")
    file = path / "config.json"
    if not file.is_file():
        raise CheckpointError(f"{file} is missing; a checkpoint folder needs config.json (write one with rmt train)")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{file} is not valid JSON ({_reason(error)}); restore it from the original checkpoint")
    if not isinstance(config, dict):
        raise CheckpointError(f"{file} must hold a JSON object; restore it from the original checkpoint")
    if config.get("format") != FORMAT:
        raise CheckpointError(
            f"{file} is not an RMT Lens checkpoint (format {config.get('format')!r}, expected {FORMAT!r}); "
            "pass a folder written by rmt train or save_checkpoint"
        )
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{file} has format_version {config.get('format_version')!r}, this RMT Lens reads version {FORMAT_VERSION}; "
            "upgrade RMT Lens or re-save the checkpoint"
        )
    for key in ("backbone", "rmt"):
        if not isinstance(config.get(key), dict):
            raise CheckpointError(f"{file} has no '{key}' object; re-save the checkpoint with rmt train")
    missing = [k for k in REQUIRED_RMT_KEYS if k not in config["rmt"]]
    if missing:
        raise CheckpointError(f"{file} lacks rmt settings {', '.join(missing)}; re-save the checkpoint with rmt train")
    problem = _config_problem(config)
    if problem:
        raise CheckpointError(f"{file}: {problem}; restore it from the original checkpoint")
    return config


# Ranges of the numbers config.json may hold: generous for real models, and small enough that a model
# described by them is never allocated before its weights are checked against it.
RMT_LIMITS = {"num_mem_tokens": (1, 4096), "segment_size": (1, 2**20), "trained_segments": (0, 2**24)}
BACKBONE_LIMITS = {"vocab_size": (1, 2**21), "hidden_size": (1, 2**16), "num_hidden_layers": (1, 1024),
                   "num_attention_heads": (1, 1024), "max_position_embeddings": (1, 2**20),
                   "intermediate_size": (1, 2**18), "type_vocab_size": (1, 2**10)}
BACKBONE_ALIASES = {"hidden_size": "n_embd", "num_hidden_layers": "n_layer", "num_attention_heads": "n_head",
                    "max_position_embeddings": "n_positions"}
REQUIRED_BACKBONE_KEYS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                          "max_position_embeddings")


def _whole_in(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _config_problem(config: dict) -> str | None:
    """What is wrong with the settings of a parsed config.json (types and ranges), or None."""
    import math

    rmt, backbone = config["rmt"], dict(config["backbone"])
    for name, alias in BACKBONE_ALIASES.items():  # GPT-2 style names of the same numbers
        if name not in backbone and alias in backbone:
            backbone[name] = backbone[alias]
    decoder = rmt.get("architecture", "encoder") == "decoder"
    for key, (low, high) in RMT_LIMITS.items():
        if not _whole_in(rmt.get(key), low, high):
            return f"rmt.{key} is {rmt.get(key)!r}, expected a whole number from {low:,} to {high:,}"
    if not isinstance(rmt.get("task"), str) or not rmt["task"]:
        return f"rmt.task is {rmt.get('task')!r}, expected a task name such as memorize"
    labels = rmt.get("labels")
    if (not isinstance(labels, list) or not 2 <= len(labels) <= 4096 or not all(isinstance(x, str) and x for x in labels)
            or len(set(labels)) != len(labels)):
        return "rmt.labels must be a list of 2 to 4,096 different class names"
    depth = rmt.get("bptt_depth")
    if depth is not None and not _whole_in(depth, 1, 2**24):
        return f"rmt.bptt_depth is {depth!r}, expected null or a whole number of 1 or more"
    losses = ("answer", "all") if decoder else ("last", "all")
    if rmt.get("loss_on", losses[0]) not in losses:
        return f"rmt.loss_on is {rmt.get('loss_on')!r}, expected {losses[0]!r} or {losses[1]!r}"
    dropout = rmt.get("classifier_dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not (0 <= dropout < 1):
        return f"rmt.classifier_dropout is {dropout!r}, expected a number from 0 up to (not including) 1"
    for key in REQUIRED_BACKBONE_KEYS:
        if key not in backbone:
            return f"backbone.{key} is missing"
    if not isinstance(backbone["model_type"], str):
        return f"backbone.model_type is {backbone['model_type']!r}, expected a name such as bert"
    for key, (low, high) in BACKBONE_LIMITS.items():
        if key in backbone and not _whole_in(backbone[key], low, high):
            return f"backbone.{key} is {backbone[key]!r}, expected a whole number from {low:,} to {high:,}"
    if backbone["hidden_size"] % backbone["num_attention_heads"]:
        return (f"backbone.hidden_size {backbone['hidden_size']} is not a multiple of num_attention_heads "
                f"{backbone['num_attention_heads']}")
    for key in ("layer_norm_eps", "initializer_range", "hidden_dropout_prob", "attention_probs_dropout_prob"):
        value = backbone.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            return f"backbone.{key} is {value!r}, expected a finite number of 0 or more"
    dtypes = config.get("dtype", "float32")
    for dtype in dtypes if isinstance(dtypes, list) else [dtypes]:
        if not isinstance(dtype, str) or dtype not in _DTYPES:
            return f"dtype is {dtype!r}, expected one of {', '.join(_DTYPES)}"
    return None


def _weight_files(path: Path) -> list[Path]:
    index = path / WEIGHTS_INDEX
    if (path / WEIGHTS).is_file():
        return [path / WEIGHTS]
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(weight_map.values()))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
            raise CheckpointError(f"{index} is not a valid shard index ({_reason(error)}); restore it from the original checkpoint")
        if any(not isinstance(n, str) or "/" in n or "\\" in n or n.startswith(".") for n in names):
            raise CheckpointError(f"{index} names a shard outside the folder; restore it from the original checkpoint")
        files = [path / name for name in names]
        for file in files:
            if not file.is_file():
                raise CheckpointError(f"{file} is missing (listed in {index.name}); copy the whole checkpoint folder")
        return files
    pickles = [p.name for p in sorted(path.iterdir()) if p.suffix in PICKLE_SUFFIXES]
    if pickles:
        raise CheckpointError(
            f"{path / pickles[0]} holds pickled weights, which RMT Lens never loads (unsafe); "
            f"convert them to {WEIGHTS} with safetensors"
        )
    raise CheckpointError(f"{path / WEIGHTS} is missing; a checkpoint folder needs its weights in {WEIGHTS}")


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder, on CPU, read with safetensors only."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for file in _weight_files(path):
        try:
            with safe_open(str(file), framework="pt", device="cpu") as handle:
                for key in handle.keys():
                    tensors[key] = handle.get_tensor(key)
        except (SafetensorError, OSError, ValueError, RuntimeError) as error:
            raise CheckpointError(
                f"{file} is not a readable safetensors file ({_reason(error)}); it may be truncated, copy it again"
            )
    return tensors


def _check_layer_count(path: Path, config: dict, state: dict[str, torch.Tensor]) -> None:
    """The weights' numbered layers (`...layer.N.`) must be as many as config.json says: checked before even a
    shapes-only model of that many layers is built."""
    import re

    numbers = {int(found.group(1)) for key in state if (found := re.search(r"\.(?:layers?|h)\.(\d+)\.", key))}
    backbone = config["backbone"]
    layers = backbone.get("num_hidden_layers", backbone.get("n_layer"))
    if numbers and len(numbers) != layers:
        raise CheckpointError(f"{path / 'config.json'} says {layers} layers but the weights hold {len(numbers)}; "
                              "the weights do not belong to this config")


def _check_values(path: Path, config: dict, state: dict[str, torch.Tensor]) -> None:
    """Stored floating tensors must have the dtype config.json declares and hold only finite numbers."""
    declared = config.get("dtype", "float32")
    declared = set(declared) if isinstance(declared, list) else {declared}
    path = path / WEIGHTS if (path / WEIGHTS).is_file() else path / WEIGHTS_INDEX
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            continue
        dtype = str(tensor.dtype).removeprefix("torch.")
        if dtype not in declared:
            raise CheckpointError(f"{path} tensor {name} is {dtype} but config.json says dtype "
                                  f"{'/'.join(sorted(declared))}; the weights do not belong to this config")
        if not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path} tensor {name} holds NaN or infinite values; the weights are damaged "
                                  "(or training diverged), restore the checkpoint or train it again")


def _strict_config_errors() -> tuple[type[Exception], ...]:
    """What newer transformers raise for a config field of the wrong type (0 for a float): huggingface_hub's
    strict-dataclass errors, which are not ValueError or TypeError; none where huggingface_hub has no such class."""
    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:
        return ()
    return (StrictDataclassError,)


def load_checkpoint(path: str | Path | None = None, device: str | torch.device | None = None, dtype=torch.float32) -> RMT:
    """Load a checkpoint folder or a Hub id of one (default: the shipped default) in eval mode, its tokenizer
    attached: an `RMT`, or a `rmt_core.decoder.DecoderRMT` when config.json says `rmt.architecture` "decoder".

    device: None puts it on CUDA when present, else CPU. Weights stored in any floating dtype are cast to `dtype`.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = resolve_checkpoint(path) if path is not None else default_checkpoint()
    config = read_config(path)
    architecture = architecture_of(config, path)
    state = read_weights(path)
    try:
        backbone_config = AutoConfig.for_model(**config["backbone"])
        if architecture == "decoder":
            from rmt_core.decoder import DecoderConfig

            rmt_config = DecoderConfig.from_dict(config["rmt"])
        else:
            rmt_config = RMTConfig.from_dict(config["rmt"])
    except (ValueError, TypeError, KeyError, *_strict_config_errors()) as error:
        raise CheckpointError(f"{path / 'config.json'} has unusable settings ({_reason(error)}); re-save the checkpoint")
    if not any((path / name).is_file() for name in TOKENIZER_VOCABULARIES):
        raise CheckpointError(f"{path / 'tokenizer.json'} is missing; copy tokenizer.json and tokenizer_config.json "
                              "from the original checkpoint (or its backbone) into the folder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as error:  # transformers raises many types here
        raise CheckpointError(
            f"{path} has no usable tokenizer files ({type(error).__name__}); copy tokenizer.json and "
            "tokenizer_config.json from the backbone into the folder"
        )
    vocab = config["backbone"]["vocab_size"]
    if len(tokenizer) > vocab:
        raise CheckpointError(f"{path} has a tokenizer of {len(tokenizer):,} tokens but a model vocabulary of "
                              f"{vocab:,}; the tokenizer files do not belong to this checkpoint")

    def build():
        if architecture == "decoder":
            from transformers import AutoModelForCausalLM

            from rmt_core.decoder import DecoderRMT, decoder_special_ids

            backbone = AutoModelForCausalLM.from_config(backbone_config, attn_implementation="sdpa")
            return DecoderRMT(backbone, rmt_config, *decoder_special_ids(tokenizer))
        backbone = AutoModel.from_config(backbone_config, add_pooling_layer=True, attn_implementation="sdpa")
        return RMT(backbone, rmt_config, *special_ids(tokenizer))

    _check_layer_count(path, config, state)
    try:
        with torch.device("meta"):  # shapes first, allocating nothing: config.json may describe a huge model
            shapes = build()
            _check_state(path, shapes, fill_tied(shapes, dict(state)))
        model = build()
    except (ValueError, TypeError) as error:
        raise CheckpointError(
            f"{path / 'config.json'} describes a model that cannot be built ({_reason(error)}); "
            "restore it from the original checkpoint"
        )
    _check_values(path, config, state)
    _check_state(path, model, fill_tied(model, state))
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True)
    model.to(dtype)
    model.tokenizer = tokenizer
    model.checkpoint_dir = path
    model.checkpoint_config = config
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval()


ARCHITECTURES = ("encoder", "decoder")


def architecture_of(config: dict, path: str | Path = "the checkpoint") -> str:
    """`rmt.architecture` of a parsed config.json: "encoder" (the default, for folders written before the
    decoder existed) or "decoder"."""
    architecture = config.get("rmt", {}).get("architecture", "encoder")
    if architecture not in ARCHITECTURES:
        raise CheckpointError(f"{Path(path) / 'config.json'} names architecture {architecture!r}; this RMT Lens "
                              f"reads {' or '.join(ARCHITECTURES)}")
    return architecture


def _check_state(path: Path, model: RMT, state: dict[str, torch.Tensor]) -> None:
    where = path / WEIGHTS if (path / WEIGHTS).is_file() else path / WEIGHTS_INDEX
    expected = model.state_dict()
    for name, tensor in expected.items():
        if name not in state:
            # Some backbones keep non-persistent buffers (position ids) in their state dict.
            if name.endswith("position_ids") or name.endswith("token_type_ids"):
                state[name] = tensor
                continue
            raise CheckpointError(f"{where} lacks tensor {name}; the file is incomplete, copy the checkpoint again")
        got = state[name]
        if tuple(got.shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{where} tensor {name} has shape {tuple(got.shape)}, config.json implies {tuple(tensor.shape)}; "
                "the weights do not belong to this config"
            )
        if tensor.is_floating_point() != got.is_floating_point():
            raise CheckpointError(
                f"{where} tensor {name} has dtype {got.dtype}, expected a floating type; "
                "the weights do not belong to this config"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise CheckpointError(f"{where} holds unknown tensor {extra[0]}; the weights do not belong to this config")


def checkpoint_identity(path: str | Path) -> dict:
    """Name, folder (see `portable_path`) and sha256 of the weights of a checkpoint: what traces and results
    record as its identity."""
    path = Path(path)
    digest = hashlib.sha256()
    for file in _weight_files(path):
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return {"name": path.name, "path": portable_path(path), "sha256": digest.hexdigest()}


def _backbone_config(config) -> dict:
    """The backbone's config as config.json stores it: where a pretrained backbone was loaded from
    (`_name_or_path`) as `portable_path` records paths, not this machine's absolute path."""
    values = config.to_dict()
    if values.get("_name_or_path"):
        values["_name_or_path"] = portable_path(values["_name_or_path"])
    return values


def portable_path(path: str | Path | None) -> str | None:
    """A path as files that travel (eval.json, model cards, traces, results) record it: relative to the
    working folder or the repository when under either, else ".../" and its last two parts, never the
    absolute path of the machine that wrote it."""
    if path is None:
        return None
    path = Path(path)
    if not path.is_absolute():
        return str(path)
    resolved = path.resolve()
    for root in (Path.cwd().resolve(), REPO_ROOT):
        if resolved.is_relative_to(root):
            return str(resolved.relative_to(root)) or "."
    return str(Path("...", *resolved.parts[-2:]))


def portable_command(argv: list[str], program: str = "rmt") -> str:
    """`PROGRAM ARGS` as typed, with absolute paths (also after an `=`, as in `--out=/x` or `name=/x`) written
    by `portable_path`: what results and model cards record."""
    import shlex

    words = []
    for word in argv:
        head, equals, value = word.rpartition("=") if "=" in word else ("", "", word)
        if value.startswith("/"):
            value = portable_path(value)
        words.append(head + equals + value)
    return program + " " + " ".join(shlex.quote(w) for w in words)


_IDENTITY_CACHE: dict[tuple, dict] = {}


def model_identity(model, checkpoint_dir: str | Path | None = None) -> dict:
    """The one identity of a model that traces, evaluation and probe results record: {name, path, sha256}.

    A model loaded from (or given) a checkpoint folder is that checkpoint (`checkpoint_identity`, cached by its
    weight files' sizes and times); a model only in memory is the sha256 of its weights (names, dtypes and
    bytes, cached by the tensors' versions), with name and path None.
    """
    folder = checkpoint_dir if checkpoint_dir is not None else getattr(model, "checkpoint_dir", None)
    if folder is not None:
        folder = Path(folder)
        try:
            stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in _weight_files(folder))
        except (OSError, CheckpointError):
            stamp = None
        if stamp is not None:
            key = ("folder", str(folder.resolve()), stamp)
            if key not in _IDENTITY_CACHE:
                _IDENTITY_CACHE[key] = checkpoint_identity(folder)
            return dict(_IDENTITY_CACHE[key])
    state = sorted(model.state_dict().items()) if hasattr(model, "state_dict") else []
    key = ("memory", id(model), tuple((name, t.data_ptr(), t._version) for name, t in state))
    if key not in _IDENTITY_CACHE:
        if len(_IDENTITY_CACHE) > 64:
            _IDENTITY_CACHE.clear()
        digest = hashlib.sha256()
        for name, tensor in state:
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
        _IDENTITY_CACHE[key] = {"name": None, "path": None, "sha256": digest.hexdigest() if state else None}
    return dict(_IDENTITY_CACHE[key])
