"""Shared fixtures: tiny random RMT models built in memory, the offline MiniLM tokenizer, shared data paths;
`serve_app`, a dashboard server for the tests that talk to one."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import torch

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


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from rmt_core.model import minilm_dir

    return AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)


def make_tiny_rmt(tokenizer, segment_size=16, num_mem_tokens=4, hidden=32, layers=2, heads=2, seed=0, **rmt):
    """A small random RMT (eval mode, float32, CPU) for fast tests."""
    from rmt_core.model import RMTConfig, from_backbone, small_bert_config

    torch.manual_seed(seed)
    backbone = small_bert_config(len(tokenizer), hidden_size=hidden, num_layers=layers, num_heads=heads, max_positions=128)
    config = RMTConfig(num_mem_tokens=num_mem_tokens, segment_size=segment_size, **rmt)
    return from_backbone(backbone, tokenizer, config).eval()


@pytest.fixture
def tiny_rmt(tokenizer):
    return make_tiny_rmt(tokenizer)


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set RMT_SHARED_DATA)")
    return SHARED_DATA


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_app(command: list[str], log: Path, env: dict[str, str], cwd: Path | None = None, wait_s: float = 90):
    """Run `command` (an `rmt app` launch) with `--port P` on a free port, in its own process group, its output
    in `log`; yield the URL once /_stcore/health answers ok (fail with the log's tail if it never does), and
    stop the whole group on leaving."""
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen([*command, "--port", str(port)], cwd=cwd, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                    if reply.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"rmt app did not serve {url}: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


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
