"""RMT checkpoints trained elsewhere (the authors' code, on GPUs), converted into RMT Lens checkpoint folders.

    import_checkpoint(source, backbone, segment_size, out, format=None, labels=None)   # `rmt import`

source: a weights file, a folder holding one (or shards), or a Hub id (through the Hugging Face cache,
rmt_core.hub); backbone: the wrapped model's config and tokenizer, a folder or a Hub id (`gpt2`). The formats:

    encoder   the paper's RMTEncoderForSequenceClassification: a torch file holding {"model_state_dict": ...}
              (model_best.pth). The backbone sits under `model.<base>.` (model.bert.), the classification head
              under `model.classifier.`; the initial memory is the extra rows of the resized word embeddings
              (ids V .. V+m-1, buffer `mem_token_ids`), an alias of the embedding matrix and buffers of the
              special token ids are saved too. Converted: backbone.* (vocabulary back to V), memory (the m
              rows), classifier.*; the pooler -> dropout -> linear head on [CLS] is BERT's own, so it maps key
              for key. The checkpoint records segmenting "right", the authors' cut (rmt_core.segmenting).
    decoder   RecurrentWrapper(MemoryCell(LM)): `memory_cell.memory` (m, d) and `memory_cell.model.<LM keys>`,
              as pytorch_model.bin, model.safetensors or shards, bf16 or fp32; LoRA adapters inside are
              merged with peft. Converted: memory, backbone.<LM keys> (rmt_core.decoder).

The format is detected from the keys (`format=` overrides) and the number of memory tokens read from the
weights. Reading is safetensors, or torch's weights-only loader (tensors and plain containers, never code): a
file that needs more is refused. Missing, unexpected or misshapen keys are named in a one-line error. The
folder is written atomically and never over an existing path; its README.md names the source, the sha256 of
every file read and each step of the conversion.
"""

from __future__ import annotations

import json
import pickle
import re
import shlex
import sys
import warnings
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from rmt_core.errors import CheckpointError
from rmt_core.files import file_sha256
from rmt_core.hub import local_path

FORMATS = ("encoder", "decoder")
# What a backbone's Hub repository gives: its config and tokenizer, never its weights.
BACKBONE_FILES = ["*.json", "*.txt", "*.model", "*.tiktoken", "tokenizer*", "vocab*", "merges*"]
TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# Buffers of the authors' encoder wrapper: the memory token ids and the special token ids.
_ENCODER_BUFFERS = ("mem_token_ids", "cls_token", "sep_token", "eos_token", "bos_token", "pad_token")
# Buffers a Hugging Face backbone may have saved that RMT Lens rebuilds itself.
_BACKBONE_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")


class ImportCheckpointError(CheckpointError):
    """A checkpoint trained elsewhere cannot be converted (unreadable, unsafe, or not the expected layout)."""


@dataclass
class SourceWeights:
    """The tensors of a source checkpoint and the files they came from."""

    state: dict[str, torch.Tensor]
    files: list[Path]
    where: str  # how errors name the source
    extras: dict = field(default_factory=dict)  # other entries of a torch file (iteration, epoch, ...)


@dataclass
class Converted:
    """RMT Lens weights from a source: the state dict, the settings read from it and the steps taken."""

    state: dict[str, torch.Tensor]
    num_mem_tokens: int
    num_classes: int | None
    steps: list[str]


# ----- reading ---------------------------------------------------------------------------------------------
def _reason(error: BaseException, limit: int = 160) -> str:
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def torch_load_weights_only(file: Path):
    """The object in a torch file, read with torch's weights-only loader (tensors and plain containers only).

    A file whose unpickling needs anything else (a class, a function: code) is refused before any of it runs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(str(file), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(file))
    except pickle.UnpicklingError as error:
        text = " ".join(str(error).split())
        found = re.search(r"Unsupported (global: GLOBAL [\w.]+|operand \d+|class [\w.]+)", text)
        what = found.group(1) if found else "objects other than tensors and plain containers"
        raise ImportCheckpointError(
            f"{file} was refused: loading it needs more than tensors ({what}), and RMT Lens reads torch files only "
            "with torch's weights-only loader; re-save the weights alone (torch.save(model.state_dict()) or "
            "safetensors) from a trusted copy") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as error:
        raise ImportCheckpointError(f"{file} is not a readable torch file ({_reason(error)}); copy it again") from None


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise ImportCheckpointError(f"{file} is not a readable safetensors file ({_reason(error)}); copy it again") \
            from None


def _read_file(file: Path) -> tuple[dict, dict]:
    """(tensors, other entries) of one weights file."""
    if file.suffix == ".safetensors":
        return _read_safetensors(file), {}
    loaded = torch_load_weights_only(file)
    if not isinstance(loaded, dict):
        raise ImportCheckpointError(f"{file} holds a {type(loaded).__name__}, not a dict of tensors; "
                                    "pass a state dict or a trainer checkpoint with model_state_dict")
    if isinstance(loaded.get("model_state_dict"), dict):  # the authors' trainer: weights beside the optimizer
        extras = {k: v for k, v in loaded.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
        loaded = loaded["model_state_dict"]
    else:
        extras = {}
    tensors = {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    others = sorted(str(k) for k in loaded if k not in tensors)
    if others:
        raise ImportCheckpointError(f"{file} holds entries that are not tensors ({', '.join(others[:3])}); "
                                    "pass a state dict of tensors")
    return tensors, extras


def _shards(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise ImportCheckpointError(f"{index} is not a valid shard index ({_reason(error)}); copy it again") from None
    if any(not isinstance(n, str) or "/" in n or "\\" in n or n.startswith(".") for n in names):
        raise ImportCheckpointError(f"{index} names a shard outside its folder; copy the checkpoint again")
    files = [index.parent / n for n in names]
    for file in files:
        if not file.is_file():
            raise ImportCheckpointError(f"{file} is missing (listed in {index.name}); copy the whole folder")
    return files


def weight_files(path: Path) -> list[Path]:
    """The weight files of a source: the file itself, its shards, or the one weights file of a folder."""
    if path.is_file():
        return _shards(path) if path.name.endswith(".index.json") else [path]
    if not path.is_dir():
        raise ImportCheckpointError(f"{path} does not exist; pass a weights file, a folder or a Hub id")
    for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json", "model_best.pth"):
        if (path / name).is_file():
            return weight_files(path / name)
    found = sorted(p for p in path.iterdir() if p.is_file() and (p.suffix in TORCH_SUFFIXES or p.suffix == ".safetensors"))
    if len(found) == 1:
        return found
    if not found:
        raise ImportCheckpointError(f"{path} holds no weights file (model.safetensors, pytorch_model.bin, "
                                    "model_best.pth, ...); pass the file or the folder that holds it")
    raise ImportCheckpointError(f"{path} holds several weights files ({', '.join(p.name for p in found[:4])}); "
                                "pass the one to import")


def read_source(source: str | Path) -> SourceWeights:
    """Every tensor of a source (file, folder or Hub id), on CPU."""
    path = local_path(source, "source")
    files = weight_files(path)
    state, extras = {}, {}
    for file in files:
        tensors, more = _read_file(file)
        state.update(tensors)
        extras.update(more)
    if not state:
        raise ImportCheckpointError(f"{path} holds no tensors; pass the checkpoint's weights file")
    return SourceWeights(state, files, str(path), extras)


# ----- formats -----------------------------------------------------------------------------------------------
def detect_format(keys) -> str:
    """'encoder' or 'decoder' from the keys of a state dict."""
    keys = list(keys)
    if any(k.startswith("memory_cell.") for k in keys):
        return "decoder"
    if any(k.startswith("model.") and k.endswith("embeddings.word_embeddings.weight") for k in keys):
        return "encoder"
    sample = ", ".join(keys[:3])
    raise ImportCheckpointError(f"cannot tell the format from the keys ({sample}, ...): neither memory_cell.* (decoder) "
                                "nor model.<base>.embeddings.word_embeddings.weight (encoder); pass --format")


def _names(keys, limit: int = 3) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_keys(where: str, state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
               optional=()) -> None:
    """One-line ImportCheckpointError naming missing, unexpected or misshapen keys (converted names)."""
    missing = [k for k in expected if k not in state and not any(k.endswith(o) for o in optional)]
    if missing:
        raise ImportCheckpointError(f"{where} lacks {_names(missing)} for this backbone; pass the backbone it was "
                                    "trained from (--backbone)")
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise ImportCheckpointError(f"{where} holds unexpected {_names(unexpected)} (after conversion); pass the "
                                    "backbone it was trained from (--backbone) or the right --format")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ImportCheckpointError(f"{where} tensor {key} has shape {tuple(tensor.shape)}, the backbone implies "
                                        f"{tuple(expected[key].shape)}; pass the backbone it was trained from")


def convert_encoder(source: SourceWeights, vocab_size: int) -> Converted:
    """The authors' encoder state dict as RMT Lens's RMT weights (before the shape check against a model)."""
    state, where = source.state, source.where
    words = [k for k in state if k.startswith("model.") and k.endswith(".embeddings.word_embeddings.weight")]
    if len(words) != 1:
        raise ImportCheckpointError(f"{where} has {len(words)} word-embedding matrices under model.*; the encoder "
                                    "format has one (model.bert.embeddings.word_embeddings.weight)")
    word_key = words[0]
    base = word_key[: -len("embeddings.word_embeddings.weight")]  # model.bert.
    head = "model.classifier."
    if any(k.startswith(head) and k not in (head + "weight", head + "bias") for k in state):
        raise ImportCheckpointError(f"{where} has a classification head other than one linear layer "
                                    f"({_names(k for k in state if k.startswith(head))}); RMT Lens's encoder answers "
                                    "with BERT's pooler -> linear head")
    table = state[word_key]
    rows = table.shape[0]
    steps = []
    if "mem_token_ids" in state:
        ids = state["mem_token_ids"].reshape(-1).long()
        m = int(ids.numel())
        if m == 0 or not torch.equal(ids, torch.arange(int(ids[0]), int(ids[0]) + m)):
            raise ImportCheckpointError(f"{where} mem_token_ids are not consecutive ids; not the encoder format")
        if int(ids[0]) != vocab_size or rows != vocab_size + m:
            raise ImportCheckpointError(
                f"{where} keeps its {m} memory tokens at ids {int(ids[0])}..{int(ids[-1])} of {rows} embedding rows, "
                f"but the backbone's vocabulary has {vocab_size} tokens; pass the backbone it was trained from")
        steps.append(f"{m} memory tokens: buffer mem_token_ids = {vocab_size}..{vocab_size + m - 1}")
    else:
        m = rows - vocab_size
        if m < 1:
            raise ImportCheckpointError(
                f"{where} {word_key} has {rows} rows, no more than the backbone's vocabulary of {vocab_size}: no "
                "memory rows; pass the backbone it was trained from, or --format decoder")
        steps.append(f"{m} memory tokens: the word embeddings have {rows} rows, the backbone's vocabulary {vocab_size}")
    out = {"memory": table[vocab_size:].clone()}
    steps.append(f"memory = rows {vocab_size}..{rows - 1} of {word_key} (the initial memory of every input)")
    steps.append(f"{word_key} cut back to its first {vocab_size} rows")
    dropped = []
    for key, tensor in state.items():
        if key == word_key:
            out["backbone." + key[len(base):]] = table[:vocab_size].clone()
        elif key.startswith(base):
            rest = key[len(base):]
            if rest in _BACKBONE_BUFFERS:
                dropped.append(key)
                continue
            out["backbone." + rest] = tensor
        elif key.startswith(head):
            out["classifier." + key[len(head):]] = tensor
        elif key in _ENCODER_BUFFERS:
            dropped.append(key)
        elif tensor.shape == table.shape and torch.equal(tensor, table):
            dropped.append(key)
            steps.append(f"{key} dropped: the same matrix as {word_key} (an alias)")
        else:
            raise ImportCheckpointError(f"{where} holds unexpected {key}; not the encoder format of the paper's code "
                                        "(or pass --format decoder)")
    buffers = sorted(k for k in dropped if k in _ENCODER_BUFFERS or k.startswith(base))
    if buffers:
        steps.append(f"buffers dropped: {', '.join(buffers)}")
    steps.append(f"{base}* -> backbone.*, {head}* -> classifier.* (pooler -> dropout -> linear on [CLS])")
    classes = out["classifier.weight"].shape[0] if "classifier.weight" in out else None
    return Converted(out, m, classes, steps)


def convert_decoder(source: SourceWeights) -> Converted:
    """RecurrentWrapper(MemoryCell(LM)) weights as RMT Lens's decoder RMT weights: memory, backbone.<LM keys>.
    LoRA adapters stay unmerged here (`merge_lora` needs the backbone's config)."""
    state, where = source.state, source.where
    if "memory_cell.memory" not in state:
        raise ImportCheckpointError(f"{where} lacks memory_cell.memory; not the decoder format (RecurrentWrapper)")
    memory = state["memory_cell.memory"]
    if memory.dim() != 2:
        raise ImportCheckpointError(f"{where} memory_cell.memory has shape {tuple(memory.shape)}, expected (m, d)")
    prefix = "memory_cell.model."
    unexpected = [k for k in state if k != "memory_cell.memory" and not k.startswith(prefix)]
    if unexpected:
        raise ImportCheckpointError(f"{where} holds unexpected {_names(unexpected)}; the decoder format has only "
                                    "memory_cell.memory and memory_cell.model.*")
    out = {"memory": memory, **{"backbone." + k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}}
    steps = [f"{memory.shape[0]} memory tokens: memory_cell.memory {tuple(memory.shape)} -> memory",
             f"{prefix}* -> backbone.*"]
    return Converted(out, int(memory.shape[0]), None, steps)


def has_lora(state) -> bool:
    return any(".lora_A." in k or ".lora_B." in k for k in state)


def saved_lora_alpha(folder: Path) -> float | None:
    """lora_alpha as a source folder's adapter_config.json or config.json records it (top level or one object
    down), else None."""
    for name in ("adapter_config.json", "config.json"):
        try:
            values = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if not isinstance(values, dict):
            continue
        for place in [values, *(v for v in values.values() if isinstance(v, dict))]:
            alpha = place.get("lora_alpha")
            if isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and alpha > 0:
                return float(alpha)
    return None


_PEFT_PREFIX = "base_model.model."
_LORA_KEY = re.compile(r"^(.*)\.lora_([AB])\.([^.]+)\.weight$")


def merge_lora(lm: dict[str, torch.Tensor], config, lora_alpha: float | None, where: str) -> tuple[dict, str]:
    """The causal LM's weights with its LoRA adapters merged (W + alpha / r * B A), through peft.

    lm: a PEFT model's state dict: base_model.model.<LM keys>, each adapted linear layer as
    <layer>.base_layer.weight with <layer>.lora_A.<adapter>.weight and <layer>.lora_B.<adapter>.weight.
    config: the LM's transformers config. Returns the merged LM's state dict (its own keys) and a note."""
    if lora_alpha is None:
        raise ImportCheckpointError(f"{where} holds LoRA adapters, and their scale (lora_alpha) is neither in the weights "
                                    "nor in a config.json beside them; pass --lora-alpha (the run's LoraConfig value)")
    outside = [k for k in lm if not k.startswith(_PEFT_PREFIX)]
    if outside:
        raise ImportCheckpointError(f"{where} holds LoRA adapters, and {_names(outside)} outside "
                                    f"memory_cell.model.{_PEFT_PREFIX}*; not a PEFT model's state dict")
    layers, names, ranks = set(), set(), set()
    for key, tensor in lm.items():
        found = _LORA_KEY.match(key)
        if found:
            layers.add(found.group(1)[len(_PEFT_PREFIX):])
            names.add(found.group(3))
            if found.group(2) == "A":
                ranks.add(int(tensor.shape[0]))
        elif ".lora_" in key:
            raise ImportCheckpointError(f"{where} holds {key}, a LoRA tensor other than lora_A/lora_B weights; "
                                        "pass merged weights")
    if len(names) != 1 or len(ranks) != 1:
        raise ImportCheckpointError(f"{where} holds LoRA adapters {sorted(names)} of ranks {sorted(ranks)}; one "
                                    "adapter of one rank can be merged")
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ImportCheckpointError(f"{where} holds LoRA adapters, and merging them needs peft; pip install peft") \
            from None
    from transformers import AutoModelForCausalLM

    rank, adapter = ranks.pop(), names.pop()
    base = AutoModelForCausalLM.from_config(config)
    lora = LoraConfig(r=rank, lora_alpha=float(lora_alpha), target_modules=sorted(layers), lora_dropout=0.0,
                      bias="none")
    wrapped = get_peft_model(base, lora, adapter_name=adapter)
    expected = wrapped.state_dict()
    check_keys(where, lm, expected)
    wrapped.load_state_dict(lm, strict=True)
    merged = wrapped.merge_and_unload()
    note = (f"LoRA adapter '{adapter}' on {len(layers)} layers (rank {rank}, alpha {lora_alpha}) merged into the base "
            f"weights with peft; memory_cell.model.{_PEFT_PREFIX}* -> backbone.*")
    return {k: v.detach() for k, v in merged.state_dict().items()}, note


# ----- building and writing -----------------------------------------------------------------------------------
def _backbone(backbone) -> tuple[Path, object, object]:
    """(folder, transformers config, tokenizer) of a backbone folder or Hub id."""
    from transformers import AutoConfig, AutoTokenizer

    folder = local_path(backbone, "backbone", bare=True, allow_patterns=BACKBONE_FILES)
    if not folder.is_dir():
        raise ImportCheckpointError(f"backbone {backbone} is not a folder; pass the folder (or Hub id) with the "
                                    "wrapped model's config.json and tokenizer")
    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except Exception as error:  # transformers raises many types here
        raise ImportCheckpointError(f"backbone {folder} has no usable config.json ({_reason(error)}); pass the "
                                    "wrapped model's folder") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as error:
        raise ImportCheckpointError(f"backbone {folder} has no usable tokenizer ({type(error).__name__}); pass a "
                                    "folder with the wrapped model's tokenizer files") from None
    return folder, config, tokenizer


def _labels(labels, classes: int) -> tuple[list[str], str]:
    from rmt_core.model import PLACES

    if labels:
        labels = [str(l).strip() for l in labels]
        if len(labels) != classes or any(not l for l in labels):
            raise ImportCheckpointError(f"--labels names {len(labels)} classes, the checkpoint's head has {classes}; "
                                        f"give {classes} comma-separated names")
        return labels, "given with --labels"
    if classes == len(PLACES):
        return list(PLACES), "assumed: the tasks' six places in alphabetical order (pass --labels if not)"
    return [f"class_{i}" for i in range(classes)], "unnamed (pass --labels to name them)"


def _build_encoder(converted: Converted, config, tokenizer, segment_size: int, labels, task: str,
                   max_segments: int | None, where: str):
    from rmt_core.model import RMT, RMTConfig, special_ids
    from transformers import AutoModel

    if converted.num_classes is None:
        raise ImportCheckpointError(f"{where} lacks model.classifier.weight; the encoder format ends in a classifier")
    names, how = _labels(labels, converted.num_classes)
    rmt_config = RMTConfig(task=task, num_mem_tokens=converted.num_mem_tokens, segment_size=segment_size,
                           labels=names, trained_segments=max_segments or 0, segmenting="right",
                           max_segments=max_segments)
    try:
        backbone = AutoModel.from_config(config, add_pooling_layer=True, attn_implementation="sdpa")
        model = RMT(backbone, rmt_config, *special_ids(tokenizer))
    except (ValueError, TypeError) as error:
        raise ImportCheckpointError(f"cannot build an encoder RMT on this backbone ({_reason(error)})") from None
    expected = model.state_dict()
    check_keys(where, converted.state, expected, optional=_BACKBONE_BUFFERS)
    filled = {k: v for k, v in expected.items() if k not in converted.state}
    model.load_state_dict({**filled, **converted.state}, strict=True)
    model.tokenizer = tokenizer
    return model, [f"labels {how}: {', '.join(names)}"]


# Buffers older transformers saved in a causal LM's state dict, rebuilt by the model itself.
_LM_BUFFERS = (".attn.bias", ".attn.masked_bias", ".rotary_emb.inv_freq")


def _build_decoder(converted: Converted, config, tokenizer, segment_size: int, labels, task: str, where: str):
    try:
        from rmt_core.decoder import DecoderConfig, DecoderRMT, decoder_special_ids
    except ImportError:  # pragma: no cover - an RMT Lens without the decoder RMT
        raise ImportCheckpointError("decoder checkpoints are not supported yet: this RMT Lens has no decoder RMT "
                                    "(rmt_core.decoder); import encoder checkpoints, or update RMT Lens") from None
    from transformers import AutoModelForCausalLM

    settings = {"labels": list(labels)} if labels else {}
    rmt_config = DecoderConfig(task=task, num_mem_tokens=converted.num_mem_tokens, segment_size=segment_size,
                               segmenting="left", **settings)
    try:
        backbone = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
        model = DecoderRMT(backbone, rmt_config, *decoder_special_ids(tokenizer))
    except (ValueError, TypeError) as error:
        raise ImportCheckpointError(f"cannot build a decoder RMT on this backbone ({_reason(error)}); pass the "
                                    "causal language model it was trained from (--backbone)") from None
    expected = model.state_dict()
    state, steps = dict(converted.state), []
    stale = sorted(k for k in state if k not in expected and k.endswith(_LM_BUFFERS))
    for key in stale:
        del state[key]
    if stale:
        steps.append(f"buffers dropped: {_names(stale)}")
    shared = {}  # tied weights (GPT-2's embeddings and LM head): a file may hold one of the two
    for name, tensor in expected.items():
        shared.setdefault(tensor.data_ptr(), []).append(name)
    for names in shared.values():
        present = [n for n in names if n in state]
        for name in names:
            if name not in state and present:
                state[name] = state[present[0]]
                steps.append(f"{name} tied to {present[0]}")
    check_keys(where, state, expected)
    model.load_state_dict(state, strict=True)
    model.tokenizer = tokenizer
    return model, steps


def import_checkpoint(source, backbone, segment_size: int, out, format: str | None = None, labels=None,
                      task: str | None = None, max_segments: int | None = None, lora_alpha: float | None = None,
                      command: str | None = None):
    """Convert `source` into an RMT Lens checkpoint folder at `out` (which must not exist); returns its Path."""
    from rmt_core.checkpoint import save_checkpoint

    out = Path(out)
    if out.exists() or out.is_symlink():
        raise ImportCheckpointError(f"{out} already exists; rmt import writes a new folder only, pass another --out")
    if isinstance(segment_size, bool) or not isinstance(segment_size, int) or segment_size < 1:
        raise ImportCheckpointError(f"--segment-size must be a whole number >= 1, got {segment_size!r}")
    if max_segments is not None and (isinstance(max_segments, bool) or not isinstance(max_segments, int)
                                     or max_segments < 1):
        raise ImportCheckpointError(f"--max-segments must be a whole number >= 1, got {max_segments!r}")
    if format is not None and format not in FORMATS:
        raise ImportCheckpointError(f"unknown --format {format!r}; use encoder or decoder")
    backbone_dir, config, tokenizer = _backbone(backbone)
    weights = read_source(source)
    kind = format or detect_format(weights.state)
    if task is not None:
        from rmt_core.babilong import check_task

        check_task(task, kind)
    if kind == "encoder":
        if not hasattr(config, "vocab_size") or getattr(config, "is_decoder", False):
            raise ImportCheckpointError(f"backbone {backbone} is not an encoder; pass the BERT-style backbone")
        converted = convert_encoder(weights, int(config.vocab_size))
        model, more = _build_encoder(converted, config, tokenizer, segment_size, labels, task or "memorize",
                                     max_segments, weights.where)
    else:
        converted = convert_decoder(weights)
        if has_lora(converted.state):
            lm = {k[len("backbone."):]: v for k, v in converted.state.items() if k.startswith("backbone.")}
            alpha = lora_alpha if lora_alpha is not None else saved_lora_alpha(weights.files[0].parent)
            lm, note = merge_lora(lm, config, alpha, weights.where)
            converted.state = {"memory": converted.state["memory"], **{"backbone." + k: v for k, v in lm.items()}}
            converted.steps.append(note)
        if max_segments:
            raise ImportCheckpointError("--max-segments is for encoder checkpoints; the decoder's code keeps every "
                                        "segment")
        model, more = _build_decoder(converted, config, tokenizer, segment_size, labels, task or "qa1", weights.where)
    files = [{"file": str(f), "bytes": f.stat().st_size, "sha256": file_sha256(f)} for f in weights.files]
    dtypes = {str(t.dtype).removeprefix("torch.") for k, t in converted.state.items()
              if t.is_floating_point() and not k.endswith(_LM_BUFFERS)}
    stored = dtypes.pop() if len(dtypes) == 1 else "float32"
    record = {
        "format": kind,
        "source": str(source),
        "source_path": weights.where,
        "files": files,
        "trainer_entries": weights.extras,
        "backbone": str(backbone),
        "backbone_path": str(backbone_dir),
        "conversion": converted.steps + more,
        "segmenting": _segmenting_note(kind, max_segments),
    }
    provenance = {
        "command": command or "rmt_core.importers.import_checkpoint",
        "imported": record,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": "cpu",
    }
    card = import_card(out.name, record, model, provenance)
    save_checkpoint(model, out, tokenizer=tokenizer, provenance=provenance, dtype=stored,
                    extra_files={"README.md": card})
    return out


def _segmenting_note(kind: str, max_segments: int | None) -> str:
    if kind == "encoder":
        cut = f", keeping the first {max_segments} x segment_size tokens" if max_segments else ""
        return ("right: [PAD], [CLS], [SEP] removed from the flat input" + cut +
                ", split right-aligned (the first segment may be short), as the paper's code does")
    return ("left: the flat input `text question` tokenized as one string, nothing removed, split left-aligned "
            "(the last segment may be short), as the authors' code does")


def import_card(name: str, record: dict, model, provenance: dict) -> str:
    """README.md of an imported checkpoint: the source, its files' sha256, the conversion."""
    backbone = model.backbone.config
    rows = "\n".join(f"| `{Path(f['file']).name}` | {f['bytes']:,} | `{f['sha256']}` |" for f in record["files"])
    steps = "\n".join(f"- {step}" for step in record["conversion"])
    trainer = record.get("trainer_entries") or {}
    lines = [
        f"# RMT Lens checkpoint: {name} (imported)",
        "",
        f"Converted by `rmt import` from a {record['format']} RMT trained with the authors' code; RMT Lens did not "
        "train it. Accuracy numbers are not carried over: run `rmt eval` on this folder.",
        "",
        "## Source",
        f"- source: `{record['source']}` (read from `{record['source_path']}`)",
        f"- backbone: `{record['backbone']}` ({backbone.model_type}, {backbone.num_hidden_layers} layers, hidden "
        f"{backbone.hidden_size}, vocabulary {backbone.vocab_size})",
        f"- command: `{provenance['command']}`, {provenance['date']}",
        *([f"- the trainer's entries beside the weights: {json.dumps(trainer, sort_keys=True)}"] if trainer else []),
        "",
        "| file | bytes | sha256 |",
        "| --- | --- | --- |",
        rows,
        "",
        "## Conversion",
        steps,
        f"- {model.config.num_mem_tokens} memory tokens, segments of {model.config.segment_size} tokens",
        "",
        "## Segmenting",
        f"- {record['segmenting']}; replay, eval and probes cut inputs this way for this checkpoint",
        "",
    ]
    return "\n".join(lines)


def command_line() -> str:
    return "rmt " + " ".join(shlex.quote(a) for a in sys.argv[1:])
