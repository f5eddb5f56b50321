"""scripts/merge_eval.py: parts of one checkpoint's evaluation merged into one eval.json, pieces pooled."""

from __future__ import annotations

import json

import pytest
from conftest import load_script

from rmt_core.errors import RMTError
from rmt_core.stats import wilson_interval

script = load_script("merge_eval")


def part(rows, seed=0, sha="abc"):
    """An rmt eval --json result: rows of (segments, first sample, samples, wrong indexes)."""
    return {"task": "reason", "seed": seed, "eval_seed_offset": 10, "segment_size": 64, "sources": {"noise": "x"},
            "checkpoint": {"sha256": sha}, "seconds": 1.0,
            "results": [{"segments": n, "tokens": 64 * n, "samples": s, "correct": s - len(w),
                         "accuracy": 1 - len(w) / s, "seconds": 2.0, "wrong_seeds": [1000 + i for i in sorted(w)][:20],
                         "wrong_indexes": sorted(w), "peak_memory_bytes": None,
                         **({"first_sample": first} if first else {})} for n, first, s, w in rows]}


def test_pieces_that_follow_one_another_pool_into_one_row():
    merged = script.merge([part([(4, 0, 10, {1}), (4096, 0, 4, {0, 3})]),
                           part([(4096, 4, 6, {4, 9})]), part([(4096, 10, 2, set())])])
    short, long = merged["results"]
    assert short["samples"] == 10 and "pieces" not in short
    assert (long["samples"], long["correct"], long["wrong_indexes"]) == (12, 8, [0, 3, 4, 9])
    assert (long["ci_low"], long["ci_high"]) == wilson_interval(8, 12)
    assert long["accuracy"] == 8 / 12 and long["seconds"] == 6.0 and "first_sample" not in long
    assert long["wrong_seeds"] == [1000, 1003, 1004, 1009]
    assert [p.get("first_sample", 0) for p in merged["parts"]] == [0, 4, 10]


def test_the_same_samples_again_replace_the_earlier_row():
    merged = script.merge([part([(64, 0, 10, {1, 2})]), part([(64, 0, 10, {5})])])
    assert merged["results"][0]["wrong_indexes"] == [5]


def test_a_row_inside_a_pooled_row_is_left_out_and_the_pooled_row_pools_on():
    pooled = script.merge([part([(1024, 0, 4, {0})]), part([(1024, 4, 6, {7})])])
    merged = script.merge([part([(1024, 0, 4, {0}), (64, 0, 10, set())]), pooled, part([(1024, 10, 5, {12})])])
    row = merged["results"][1]
    assert (row["samples"], row["correct"], row["wrong_indexes"]) == (15, 12, [0, 7, 12])
    assert [(p["first_sample"], p["samples"]) for p in row["pieces"]] == [(0, 4), (4, 6), (10, 5)]


@pytest.mark.parametrize("pieces, message", [
    ([(64, 0, 10, set())], None),
    ([(64, 0, 10, set()), (64, 5, 10, set())], "overlap: one starts at sample 5, where the ones before end at 10"),
    ([(64, 0, 10, set()), (64, 12, 10, set())], "leave a gap"),
    ([(64, 3, 10, set())], "leave a gap"),
])
def test_pieces_that_overlap_or_leave_a_gap_are_refused(pieces, message):
    parts = [part([p]) for p in pieces]
    if message is None:
        assert script.merge(parts)["results"][0]["samples"] == 10
    else:
        with pytest.raises(RMTError, match=message):
            script.merge(parts)


def test_parts_that_drew_samples_differently_are_refused(tmp_path, capsys):
    with pytest.raises(RMTError, match="seed: 0 against 1"):
        script.merge([part([(4, 0, 10, set())]), part([(8, 0, 10, set())], seed=1)])
    with pytest.raises(RMTError, match="different checkpoints"):
        script.merge([part([(4, 0, 10, set())]), part([(8, 0, 10, set())], sha="def")])
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    (tmp_path / "empty.json").write_text("{}")
    assert script.main([str(tmp_path / "ckpt"), str(tmp_path / "empty.json")]) == 1
    assert "holds no results of rmt eval" in capsys.readouterr().err
    assert script.main([str(tmp_path), str(tmp_path / "empty.json")]) == 1
    assert "not a checkpoint folder" in capsys.readouterr().err
    assert not (tmp_path / "ckpt" / "eval.json").exists()
