"""Shared fixtures: tiny random RMT models built in memory, the offline MiniLM tokenizer, shared data paths;
`serve_app`, a dashboard server for the tests that talk to one."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import torch

from rmt_cli.commands.app import free_port  # noqa: F401  (tests import it from here)

# Nothing in the tests reaches the network: a Hub id resolves from the Hugging Face cache alone (rmt_core.hub).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED_DATA = Path(os.environ.get("RMT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session", autouse=True)
def cache_folder(tmp_path_factory):
    """RMT Lens's cache folder (replays and statistics the dashboard keeps) in a temp folder, not ~/.cache."""
    before = os.environ.get("RMT_CACHE_DIR")
    os.environ["RMT_CACHE_DIR"] = str(tmp_path_factory.mktemp("rmt-cache"))
    yield Path(os.environ["RMT_CACHE_DIR"])
    if before is None:
        os.environ.pop("RMT_CACHE_DIR", None)
    else:
        os.environ["RMT_CACHE_DIR"] = before


def load_script(name: str):
    """A script of scripts/ (scripts/NAME.py) imported as a module, for tests of its functions."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from rmt_core.model import minilm_dir

    return AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)


def save_tiny_decoder(tokenizer, folder: Path) -> Path:
    """A small random decoder RMT (GPT-2, 2 layers, 4 memory tokens, 40-token segments) saved as a checkpoint
    folder: what the dashboard tests open as a decoder checkpoint."""
    from rmt_core.checkpoint import save_checkpoint
    from rmt_core.decoder import DecoderConfig, decoder_from_backbone, small_gpt2_config

    torch.manual_seed(0)
    backbone = small_gpt2_config(len(tokenizer), hidden_size=32, num_layers=2, num_heads=2, max_positions=128)
    model = decoder_from_backbone(backbone, tokenizer, DecoderConfig(num_mem_tokens=4, segment_size=40,
                                                                     trained_segments=2, max_new_tokens=3))
    return save_checkpoint(model, folder, dtype="float32")


def make_tiny_rmt(tokenizer, segment_size=16, num_mem_tokens=4, hidden=32, layers=2, heads=2, seed=0, **rmt):
    """A small random RMT (eval mode, float32, CPU) for fast tests."""
    from rmt_core.model import RMTConfig, from_backbone, small_bert_config

    torch.manual_seed(seed)
    backbone = small_bert_config(len(tokenizer), hidden_size=hidden, num_layers=layers, num_heads=heads, max_positions=128)
    config = RMTConfig(num_mem_tokens=num_mem_tokens, segment_size=segment_size, **rmt)
    return from_backbone(backbone, tokenizer, config).eval()


def tiny_reason_config(out, **overrides):
    """A TrainConfig for a few CPU steps of a tiny reason RMT (tests of reason's training objectives)."""
    from rmt_core.train import Stage, TrainConfig

    values = dict(task="reason", out=str(out), stages=[Stage(3, 24)], hidden_size=16, num_layers=1, num_heads=2,
                  max_positions=64, num_mem_tokens=3, batch_size=8, lr=3e-3, warmup_steps=2, max_steps=8,
                  eval_every=4, val_samples=8, target_accuracy=1.01, plateau=100, log_every=2,
                  save_dtype="float32", threads=1, seed=3, keep="last")
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture
def tiny_rmt(tokenizer):
    return make_tiny_rmt(tokenizer)


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set RMT_SHARED_DATA)")
    return SHARED_DATA


@contextlib.contextmanager
def serve_app(command: list[str], log: Path, env: dict[str, str], cwd: Path | None = None, wait_s: float = 90):
    """Run `command` (an `rmt app` launch) on a free port with exactly `env`, its output in `log`; yield the URL
    once it serves (fail the test with the log's tail if it never does); stop it on leaving
    (`rmt_cli.commands.app.served`)."""
    from rmt_cli.commands.app import served
    from rmt_core.errors import RMTError

    try:
        with served(env=env, replace_env=True, log=log, seconds=wait_s, cwd=cwd, command=command) as (url, _):
            yield url
    except RMTError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    """A GPT-2-style byte-level BPE tokenizer (no pad, [CLS] or [SEP]; end-of-text only), trained in memory on
    bAbI-like sentences: what a decoder checkpoint built on GPT-2 brings, without the network."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    from rmt_core import babi

    texts = [f"{p} {v} to the {x}. Where is {p}? {x}" for p in babi.PEOPLE for v in babi.MOVE_VERBS
             for x in babi.PLACES]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts * 4, vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False)
    end = "<|endoftext|>"
    return GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, eos_token=end, bos_token=end, unk_token=end)
