"""Checkpoint folders: exact round trips (plain, bfloat16, sharded), atomic saves, and every fault a
`CheckpointError` with a one-line message naming the file. Nothing in a checkpoint folder is ever unpickled."""

from __future__ import annotations

import json
import pickle
import random
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import make_tiny_rmt
from rmt_core.checkpoint import (
    REQUIRED_RMT_KEYS,
    WEIGHTS,
    WEIGHTS_INDEX,
    checkpoint_identity,
    default_checkpoint,
    load_checkpoint,
    read_config,
    read_weights,
    save_checkpoint,
)
from rmt_core.errors import CheckpointError, RMTError


def segments_input(model, batch=2, n_segments=3, seed=1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1000, 5000, (batch, n_segments * model.config.segment_size), generator=g)


def logits_of(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(ids.to(model.device)).logits.float().cpu()


@pytest.fixture(scope="module")
def module_tokenizer():
    from transformers import AutoTokenizer

    from rmt_core.model import minilm_dir

    return AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)


@pytest.fixture(scope="module")
def saved(module_tokenizer, tmp_path_factory):
    """(model, folder): a tiny random RMT and its checkpoint, written once for the corruption cases."""
    model = make_tiny_rmt(module_tokenizer, seed=3)
    folder = save_checkpoint(model, tmp_path_factory.mktemp("good") / "ckpt", provenance={"command": "test"})
    return model, folder


@pytest.fixture(scope="module")
def saved_sharded(saved, tmp_path_factory):
    model, _ = saved
    folder = save_checkpoint(model, tmp_path_factory.mktemp("good-sharded") / "ckpt", max_shard_mib=0.01)
    return model, folder


# ----- round trips -----------------------------------------------------------------------------------------
def test_save_then_load_gives_identical_logits_and_state(tiny_rmt, tmp_path):
    ids = segments_input(tiny_rmt)
    folder = save_checkpoint(tiny_rmt, tmp_path / "ckpt", provenance={"command": "rmt train", "steps": 7})
    loaded = load_checkpoint(folder, device="cpu")

    assert torch.equal(logits_of(loaded, ids), logits_of(tiny_rmt, ids))
    expected = tiny_rmt.state_dict()
    got = loaded.state_dict()
    assert set(got) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
    assert not loaded.training
    assert loaded.config == tiny_rmt.config
    assert loaded.checkpoint_dir == folder
    assert loaded.checkpoint_config["provenance"] == {"command": "rmt train", "steps": 7}
    assert loaded.checkpoint_config["dtype"] == "float32"
    assert loaded.tokenizer("Mary went to the office.")["input_ids"] == tiny_rmt.tokenizer("Mary went to the office.")["input_ids"]
    assert (loaded.cls_id, loaded.sep_id, loaded.pad_id) == (tiny_rmt.cls_id, tiny_rmt.sep_id, tiny_rmt.pad_id)


def test_folder_holds_only_json_safetensors_and_tokenizer(tiny_rmt, tmp_path):
    folder = save_checkpoint(tiny_rmt, tmp_path / "ckpt", extra_files={"README.md": "# card\n", "eval.json": "{}"})
    names = sorted(p.name for p in folder.iterdir())
    assert "config.json" in names and WEIGHTS in names and "tokenizer.json" in names
    assert (folder / "README.md").read_text() == "# card\n"
    assert all(p.suffix in (".json", ".safetensors", ".md", ".txt", ".jsonl") for p in folder.iterdir()), names
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "rmt-lens-checkpoint" and config["format_version"] == 1
    assert config["backbone"]["hidden_size"] == 32
    assert all(k in config["rmt"] for k in REQUIRED_RMT_KEYS)
    assert read_config(folder) == config
    # No leftovers of the atomic write beside the folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_bfloat16_checkpoint_loads_on_cpu_in_float32(tiny_rmt, tmp_path):
    ids = segments_input(tiny_rmt)
    folder = save_checkpoint(tiny_rmt, tmp_path / "bf16", dtype=torch.bfloat16)
    with safe_open(str(folder / WEIGHTS), framework="pt", device="cpu") as handle:
        assert {handle.get_slice(k).get_dtype() for k in handle.keys()} == {"BF16"}
    assert read_config(folder)["dtype"] == "bfloat16"

    loaded = load_checkpoint(folder, device="cpu")
    assert loaded.device.type == "cpu"
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}

    # The reference: the same model with every weight rounded to bfloat16 and back, computed in float32.
    rounded = make_tiny_rmt(tiny_rmt.tokenizer)
    rounded.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in tiny_rmt.state_dict().items()})
    torch.testing.assert_close(logits_of(loaded, ids), logits_of(rounded, ids), atol=1e-5, rtol=1e-5)
    # The rounding is real: bf16 weights are not the float32 ones.
    assert not torch.equal(loaded.memory.detach(), tiny_rmt.memory.detach())


def test_dtype_by_name_float16(tiny_rmt, tmp_path):
    folder = save_checkpoint(tiny_rmt, tmp_path / "fp16", dtype="float16")
    assert read_config(folder)["dtype"] == "float16"
    loaded = load_checkpoint(folder, device="cpu")
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}


def test_sharded_save_loads_back_identically(tiny_rmt, tmp_path):
    ids = segments_input(tiny_rmt)
    folder = save_checkpoint(tiny_rmt, tmp_path / "sharded", max_shard_mib=0.01)
    shards = sorted(folder.glob("model-*-of-*.safetensors"))
    assert len(shards) >= 3
    assert not (folder / WEIGHTS).exists()
    index = json.loads((folder / WEIGHTS_INDEX).read_text())
    assert set(index["weight_map"]) == set(tiny_rmt.state_dict())
    assert set(index["weight_map"].values()) == {s.name for s in shards}

    loaded = load_checkpoint(folder, device="cpu")
    assert torch.equal(logits_of(loaded, ids), logits_of(tiny_rmt, ids))
    for name, tensor in tiny_rmt.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_saving_over_a_checkpoint_replaces_it(tokenizer, tmp_path):
    first, second = make_tiny_rmt(tokenizer, seed=0), make_tiny_rmt(tokenizer, seed=1)
    ids = segments_input(first)
    save_checkpoint(first, tmp_path / "ckpt")
    save_checkpoint(second, tmp_path / "ckpt")
    assert torch.equal(logits_of(load_checkpoint(tmp_path / "ckpt", device="cpu"), ids), logits_of(second, ids))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_a_failed_save_leaves_the_old_checkpoint_and_no_temp_folder(tiny_rmt, tmp_path):
    save_checkpoint(tiny_rmt, tmp_path / "ckpt")
    before = checkpoint_identity(tmp_path / "ckpt")["sha256"]

    class BrokenTokenizer:
        def save_pretrained(self, path):
            raise OSError("disk full")

    other = make_tiny_rmt(tiny_rmt.tokenizer, seed=5)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(other, tmp_path / "ckpt", tokenizer=BrokenTokenizer())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert checkpoint_identity(tmp_path / "ckpt")["sha256"] == before
    load_checkpoint(tmp_path / "ckpt", device="cpu")


def test_saving_without_a_tokenizer_is_a_checkpoint_error(tiny_rmt, tmp_path):
    tiny_rmt.tokenizer = None
    with pytest.raises(CheckpointError, match="tokenizer"):
        save_checkpoint(tiny_rmt, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()


def test_checkpoint_identity_follows_the_weights(tokenizer, tmp_path):
    a = save_checkpoint(make_tiny_rmt(tokenizer, seed=0), tmp_path / "a")
    a_again = save_checkpoint(make_tiny_rmt(tokenizer, seed=0), tmp_path / "a_again")
    b = save_checkpoint(make_tiny_rmt(tokenizer, seed=1), tmp_path / "b")
    identity = checkpoint_identity(a)
    # Outside the working folder and the repository: no absolute path of this machine, only its last parts.
    assert identity["name"] == "a" and identity["path"] == f".../{tmp_path.name}/a"
    assert len(identity["sha256"]) == 64
    assert checkpoint_identity(a_again)["sha256"] == identity["sha256"]
    assert checkpoint_identity(b)["sha256"] != identity["sha256"]


def test_default_checkpoint_follows_the_environment(saved, monkeypatch, tmp_path):
    model, folder = saved
    monkeypatch.setenv("RMT_CHECKPOINT", str(folder))
    assert default_checkpoint() == folder
    ids = segments_input(model)
    assert torch.equal(logits_of(load_checkpoint(device="cpu"), ids), logits_of(model, ids))
    monkeypatch.setenv("RMT_CHECKPOINT", str(tmp_path / "not-there"))
    with pytest.raises(CheckpointError, match="not-there"):
        load_checkpoint()


def test_source_tree_finds_the_shipped_checkpoints_at_the_top_level(monkeypatch):
    """Here (source tree, editable install) the lookup finds checkpoints/ beside the package, with no copy in
    rmt_core/; an installed wheel holds them in rmt_core/checkpoints/ (tests/test_wheel.py)."""
    from rmt_core import checkpoint

    monkeypatch.delenv("RMT_CHECKPOINT", raising=False)
    repo = Path(checkpoint.__file__).resolve().parents[1]
    assert not (repo / "rmt_core" / "checkpoints").exists()  # a copy in git would be a second source of truth
    assert default_checkpoint() == repo / "checkpoints" / "memorize"
    assert (default_checkpoint() / "config.json").is_file()
    assert {"memorize", "detect", "reason"} <= set(checkpoint.shipped_checkpoints())


def test_default_device_is_cuda_when_present(saved):
    _, folder = saved
    loaded = load_checkpoint(folder)
    assert loaded.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_trained_bfloat16_checkpoint_runs_on_cpu(tokenizer, tmp_path):
    model = make_tiny_rmt(tokenizer).cuda().to(torch.bfloat16)
    folder = save_checkpoint(model, tmp_path / "gpu")
    loaded = load_checkpoint(folder, device="cpu")
    assert loaded.device.type == "cpu" and {p.dtype for p in loaded.parameters()} == {torch.float32}
    ids = segments_input(loaded)
    reference = make_tiny_rmt(tokenizer)
    reference.load_state_dict({k: v.float().cpu() for k, v in model.state_dict().items()})
    torch.testing.assert_close(logits_of(loaded, ids), logits_of(reference, ids), atol=1e-5, rtol=1e-5)
    on_gpu = load_checkpoint(folder)
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(logits_of(on_gpu, ids), logits_of(loaded, ids), atol=1e-3, rtol=1e-3)


# ----- faults ----------------------------------------------------------------------------------------------
def _edit_config(folder: Path, edit) -> None:
    file = folder / "config.json"
    config = json.loads(file.read_text())
    edit(config)
    file.write_text(json.dumps(config))


def _edit_weights(folder: Path, edit, file: str = WEIGHTS) -> None:
    state = load_file(str(folder / file))
    edit(state)
    save_file(state, str(folder / file))


def _cut(file: Path, keep) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: keep(len(data))])


def _first_shard(folder: Path) -> Path:
    return sorted(folder.glob("model-*-of-*.safetensors"))[0]


def _header_lies(folder: Path) -> None:
    # A safetensors header whose declared length runs past the end of the file.
    file = folder / WEIGHTS
    data = file.read_bytes()
    file.write_bytes(struct.pack("<Q", len(data) * 4) + data[8:])


def _header_offsets_lie(folder: Path) -> None:
    # A well-formed header whose tensor offsets point past the data.
    file = folder / WEIGHTS
    data = file.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    name = next(k for k in header if k != "__metadata__")
    begin, end = header[name]["data_offsets"]
    header[name]["data_offsets"] = [begin + 10**9, end + 10**9]
    blob = json.dumps(header).encode()
    file.write_bytes(struct.pack("<Q", len(blob)) + blob + data[8 + size :])


def _pickle_instead(name: str):
    def corrupt(folder: Path) -> None:
        state = load_file(str(folder / WEIGHTS))
        (folder / WEIGHTS).unlink()
        (folder / name).write_bytes(pickle.dumps(state))

    return corrupt


def _torch_save_instead(folder: Path) -> None:
    state = load_file(str(folder / WEIGHTS))
    (folder / WEIGHTS).unlink()
    torch.save(state, folder / "pytorch_model.bin")


def _replace_with_folder(folder: Path) -> None:
    (folder / WEIGHTS).unlink()
    (folder / WEIGHTS).mkdir()


def _drop_tokenizer(folder: Path) -> None:
    for file in folder.glob("tokenizer*"):
        file.unlink()
    for file in ("vocab.txt", "special_tokens_map.json"):
        (folder / file).unlink(missing_ok=True)


def _write(file: str, content: bytes):
    def corrupt(folder: Path) -> None:
        (folder / file).write_bytes(content)

    return corrupt


def _rmt_value(key: str, value):
    return lambda folder: _edit_config(folder, lambda c: c["rmt"].__setitem__(key, value))


def _drop_rmt_key(key: str):
    return lambda folder: _edit_config(folder, lambda c: c["rmt"].pop(key))


# (id, corrupt(folder) -> None, the file the message must name). Corrupting returns nothing: the loader is
# pointed at the folder, except for the two cases that replace the folder itself.
FAULTS = [
    ("missing-config", lambda f: (f / "config.json").unlink(), "config.json"),
    ("config-bad-json", _write("config.json", b'{"format": "rmt-lens-checkpoint",'), "config.json"),
    ("config-empty", _write("config.json", b""), "config.json"),
    ("config-not-utf8", _write("config.json", b"\xff\xfe\x00{}"), "config.json"),
    ("config-is-a-list", _write("config.json", b"[1, 2, 3]"), "config.json"),
    ("config-foreign-format", lambda f: _edit_config(f, lambda c: c.update(format="hf-bert")), "config.json"),
    ("config-no-format", lambda f: _edit_config(f, lambda c: c.pop("format")), "config.json"),
    ("config-unknown-version", lambda f: _edit_config(f, lambda c: c.update(format_version=99)), "config.json"),
    ("config-version-as-text", lambda f: _edit_config(f, lambda c: c.update(format_version="1")), "config.json"),
    ("config-no-backbone", lambda f: _edit_config(f, lambda c: c.pop("backbone")), "config.json"),
    ("config-no-rmt", lambda f: _edit_config(f, lambda c: c.pop("rmt")), "config.json"),
    ("config-rmt-is-a-list", lambda f: _edit_config(f, lambda c: c.update(rmt=[])), "config.json"),
    *[(f"config-no-rmt-{key}", _drop_rmt_key(key), "config.json") for key in REQUIRED_RMT_KEYS],
    ("config-unknown-backbone", lambda f: _edit_config(f, lambda c: c["backbone"].update(model_type="no-such")), "config.json"),
    ("config-unbuildable-backbone", lambda f: _edit_config(f, lambda c: c["backbone"].update(num_attention_heads=5)), "config.json"),
    ("config-memory-size-mismatch", _rmt_value("num_mem_tokens", 7), WEIGHTS),
    ("config-labels-mismatch", _rmt_value("labels", ["yes", "no"]), WEIGHTS),
    ("weights-missing", lambda f: (f / WEIGHTS).unlink(), WEIGHTS),
    ("weights-is-a-folder", _replace_with_folder, WEIGHTS),
    ("weights-empty", _write(WEIGHTS, b""), WEIGHTS),
    ("weights-garbage", _write(WEIGHTS, random.Random(0).randbytes(4096)), WEIGHTS),
    ("weights-json-not-safetensors", _write(WEIGHTS, b'{"memory": [1, 2, 3]}'), WEIGHTS),
    ("weights-truncated-half", lambda f: _cut(f / WEIGHTS, lambda n: n // 2), WEIGHTS),
    ("weights-truncated-last-byte", lambda f: _cut(f / WEIGHTS, lambda n: n - 1), WEIGHTS),
    ("weights-truncated-in-header", lambda f: _cut(f / WEIGHTS, lambda n: 20), WEIGHTS),
    ("weights-only-length-prefix", lambda f: _cut(f / WEIGHTS, lambda n: 8), WEIGHTS),
    ("weights-header-length-lies", _header_lies, WEIGHTS),
    ("weights-offsets-lie", _header_offsets_lie, WEIGHTS),
    ("weights-missing-tensor", lambda f: _edit_weights(f, lambda s: s.pop("classifier.weight")), WEIGHTS),
    ("weights-missing-memory", lambda f: _edit_weights(f, lambda s: s.pop("memory")), WEIGHTS),
    ("weights-no-tensors", lambda f: _edit_weights(f, lambda s: s.clear()), WEIGHTS),
    ("weights-wrong-shape", lambda f: _edit_weights(f, lambda s: s.update({"classifier.weight": torch.zeros(7, 32)})), WEIGHTS),
    ("weights-transposed", lambda f: _edit_weights(f, lambda s: s.update({"backbone.pooler.dense.weight": torch.zeros(32, 33)})), WEIGHTS),
    ("weights-integer-dtype", lambda f: _edit_weights(f, lambda s: s.update({"memory": torch.zeros(4, 32, dtype=torch.int64)})), WEIGHTS),
    ("weights-bool-dtype", lambda f: _edit_weights(f, lambda s: s.update({"classifier.bias": torch.zeros(6, dtype=torch.bool)})), WEIGHTS),
    ("weights-extra-tensor", lambda f: _edit_weights(f, lambda s: s.update({"backbone.adapter.weight": torch.zeros(3)})), WEIGHTS),
    ("weights-pickle-bin", _pickle_instead("pytorch_model.bin"), "pytorch_model.bin"),
    ("weights-pickle-pt", _pickle_instead("model.pt"), "model.pt"),
    ("weights-pickle-ckpt", _pickle_instead("model.ckpt"), "model.ckpt"),
    ("weights-torch-save-bin", _torch_save_instead, "pytorch_model.bin"),
    ("tokenizer-missing", _drop_tokenizer, "tokenizer.json"),
    ("tokenizer-garbage", lambda f: (_drop_tokenizer(f), _write("tokenizer.json", b"\x00garbage{")(f)), "tokenizer.json"),
]

SHARD_FAULTS = [
    ("index-bad-json", _write(WEIGHTS_INDEX, b'{"weight_map": {'), WEIGHTS_INDEX),
    ("index-empty", _write(WEIGHTS_INDEX, b""), WEIGHTS_INDEX),
    ("index-no-weight-map", _write(WEIGHTS_INDEX, b'{"metadata": {}}'), WEIGHTS_INDEX),
    ("index-weight-map-is-a-list", _write(WEIGHTS_INDEX, b'{"weight_map": ["a", "b"]}'), WEIGHTS_INDEX),
    ("index-shard-name-not-text", _write(WEIGHTS_INDEX, b'{"weight_map": {"memory": 3}}'), WEIGHTS_INDEX),
    ("index-shard-outside-folder", _write(WEIGHTS_INDEX, b'{"weight_map": {"memory": "../model.safetensors"}}'), WEIGHTS_INDEX),
    ("index-absolute-shard", _write(WEIGHTS_INDEX, b'{"weight_map": {"memory": "/etc/passwd"}}'), WEIGHTS_INDEX),
    ("index-misses-a-tensor", lambda f: _edit_index(f, lambda m: m.pop("memory")), WEIGHTS_INDEX),
    ("shard-missing", lambda f: _first_shard(f).unlink(), "model-00001-of-"),
    ("shard-truncated", lambda f: _cut(_first_shard(f), lambda n: n // 2), "model-00001-of-"),
    ("shard-garbage", lambda f: _first_shard(f).write_bytes(b"\x01" * 100), "model-00001-of-"),
    ("shard-unknown-tensor", lambda f: _edit_weights(f, lambda s: s.update(rogue=torch.zeros(2)), _first_shard(f).name), WEIGHTS_INDEX),
]


def _edit_index(folder: Path, edit) -> None:
    # Leave the shard files alone; only the index forgets a tensor (and so the shard holding it).
    file = folder / WEIGHTS_INDEX
    index = json.loads(file.read_text())
    shard = index["weight_map"]["memory"]
    edit(index["weight_map"])
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if v != shard}
    file.write_text(json.dumps(index))


def assert_one_line_naming(error: CheckpointError, name: str) -> None:
    message = str(error)
    assert isinstance(error, RMTError)
    assert "\n" not in message and "\r" not in message, message
    assert name in message, f"message does not name {name}: {message}"
    assert 20 < len(message) < 600, message
    assert "; " in message, f"message names no fix: {message}"  # problem; fix


@pytest.mark.parametrize("corrupt, name", [(c, n) for _, c, n in FAULTS], ids=[i for i, _, _ in FAULTS])
def test_each_fault_is_a_one_line_checkpoint_error(saved, tmp_path, corrupt, name):
    folder = shutil.copytree(saved[1], tmp_path / "ckpt")
    corrupt(folder)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(folder, device="cpu")
    assert_one_line_naming(caught.value, name)


@pytest.mark.parametrize("corrupt, name", [(c, n) for _, c, n in SHARD_FAULTS], ids=[i for i, _, _ in SHARD_FAULTS])
def test_each_shard_fault_is_a_one_line_checkpoint_error(saved_sharded, tmp_path, corrupt, name):
    folder = shutil.copytree(saved_sharded[1], tmp_path / "ckpt")
    corrupt(folder)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(folder, device="cpu")
    assert_one_line_naming(caught.value, name)


def test_fault_cases_are_many_and_distinct():
    ids = [i for i, _, _ in FAULTS + SHARD_FAULTS]
    assert len(ids) == len(set(ids)) >= 20


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(tmp_path / "no-such-checkpoint", device="cpu")
    assert_one_line_naming(caught.value, "no-such-checkpoint")


def test_file_instead_of_folder(saved, tmp_path):
    file = tmp_path / "model.safetensors"
    shutil.copy(saved[1] / WEIGHTS, file)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(file, device="cpu")
    assert_one_line_naming(caught.value, str(file))


def test_read_config_and_identity_raise_the_same_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_config(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=WEIGHTS):
        checkpoint_identity(tmp_path / "empty")
    with pytest.raises(CheckpointError, match=WEIGHTS):
        read_weights(tmp_path / "empty")


# ----- never unpickle --------------------------------------------------------------------------------------
class Planted:
    """Unpickling this object creates `marker`: proof that someone unpickled it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_the_planted_pickle_does_create_its_marker_when_unpickled(tmp_path):
    marker = tmp_path / "control-marker"
    pickle.loads(pickle.dumps({"weights": Planted(marker)}))
    assert marker.exists()


@pytest.mark.parametrize(
    "name, keep_weights, layout",
    [
        ("pytorch_model.bin", False, "single"),
        ("model.pt", False, "single"),
        ("pytorch_model.bin", True, "single"),
        ("model.pt", True, "single"),
        ("training_args.bin", True, "single"),
        ("pytorch_model.bin", True, "sharded"),
        ("model.pt", False, "sharded"),
    ],
)
def test_a_planted_pickle_is_never_unpickled(saved, saved_sharded, tmp_path, monkeypatch, name, keep_weights, layout):
    model, good = saved if layout == "single" else saved_sharded
    folder = shutil.copytree(good, tmp_path / "ckpt")
    marker = tmp_path / "UNPICKLED"
    (folder / name).write_bytes(pickle.dumps({"state_dict": Planted(marker)}))
    if not keep_weights:
        for file in list(folder.glob("model*.safetensors*")):
            file.unlink()

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load called on a checkpoint folder")

    monkeypatch.setattr(torch, "load", refuse)
    if keep_weights:
        ids = segments_input(model)
        assert torch.equal(logits_of(load_checkpoint(folder, device="cpu"), ids), logits_of(model, ids))
        checkpoint_identity(folder)
    else:
        with pytest.raises(CheckpointError) as caught:
            load_checkpoint(folder, device="cpu")
        assert_one_line_naming(caught.value, name)
        assert "pickle" in str(caught.value)
        with pytest.raises(CheckpointError):
            checkpoint_identity(folder)
    read_config(folder)
    assert not marker.exists()


def test_portable_command_rewrites_absolute_paths_also_after_an_equals_sign():
    from rmt_core.checkpoint import REPO_ROOT, portable_command

    command = portable_command(["eval", "--out=/elsewhere/x/y.json", "--trace", f"memorize={REPO_ROOT}/runs/t",
                                "--babi-dir", "rel/dir"], "python s.py")
    assert command == "python s.py eval --out=.../x/y.json --trace memorize=runs/t --babi-dir rel/dir"


def test_shipped_checkpoints_and_docs_record_no_absolute_paths():
    import re

    from rmt_core.checkpoint import REPO_ROOT

    absolute = re.compile(r"(?<![\w.])/(?:work|home|root|tmp|Users|mnt)/")
    files = [f for folder in ("checkpoints", "docs") for f in (REPO_ROOT / folder).rglob("*")
             if f.suffix in (".json", ".jsonl", ".md")]
    assert files
    found = [f"{f.relative_to(REPO_ROOT)}:{n}" for f in files
             for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1) if absolute.search(line)]
    assert not found, found[:5]


def test_a_pretrained_backbone_s_origin_is_saved_as_a_portable_path(tiny_rmt, tmp_path):
    from rmt_core.checkpoint import read_config

    tiny_rmt.backbone.config._name_or_path = str(tmp_path / "deep" / "pip" / "site-packages" / "minilm" / "model")
    folder = save_checkpoint(tiny_rmt, tmp_path / "ckpt")
    assert read_config(folder)["backbone"]["_name_or_path"] == ".../minilm/model"
    assert str(tmp_path) not in (folder / "config.json").read_text()
