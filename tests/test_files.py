"""Atomic writes: whole files or none, with the permissions a plain open() gives."""

from __future__ import annotations

import os
import stat

import pytest

from rmt_core.files import write_atomic, write_json_atomic


def test_an_atomic_write_has_plain_permissions_and_leaves_no_temporary(tmp_path):
    old = os.umask(0o027)
    try:
        path = write_atomic(tmp_path / "a" / "figure.svg", "<svg/>")
    finally:
        os.umask(old)
    assert path.read_text() == "<svg/>"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # 0666 less the umask, not the temporary's private 0600
    assert [p.name for p in path.parent.iterdir()] == ["figure.svg"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = write_json_atomic(tmp_path / "eval.json", {"ok": 1})
    with pytest.raises(ValueError):
        write_json_atomic(path, {"bad": float("nan")})
    assert path.read_text() == '{\n "ok": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]


def test_a_saved_checkpoint_has_plain_permissions(tmp_path, tokenizer):
    """A checkpoint folder is built under a private temporary name and safetensors writes 0600 files; the saved
    folder and every file in it get what mkdir() and open() would give, so a lab can share it."""
    from conftest import make_tiny_rmt

    from rmt_core.checkpoint import save_checkpoint

    old = os.umask(0o027)
    try:
        folder = save_checkpoint(make_tiny_rmt(tokenizer), tmp_path / "ckpt")
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert "model.safetensors" in modes and set(modes.values()) == {0o640}
