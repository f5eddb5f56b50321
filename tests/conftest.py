"""Shared fixtures: tiny random RMT models built in memory, the offline MiniLM tokenizer, shared data paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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
