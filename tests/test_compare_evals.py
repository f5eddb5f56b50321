"""scripts/compare_evals.py: answers fixed and broken between two results files on the same samples."""

from __future__ import annotations

import json

from conftest import load_script

script = load_script("compare_evals")


def results(path, rows, seed=0):
    """A results file as rmt eval --json writes one: (segments, samples, wrong indexes) per row."""
    path.write_text(json.dumps({"task": "detect", "seed": seed, "eval_seed_offset": 10, "sources": {"noise": "x"},
                                "results": [{"segments": n, "samples": s, "correct": s - len(w),
                                             "wrong_indexes": sorted(w)} for n, s, w in rows]}))
    return str(path)


def test_counts_fixed_and_broken_per_length_and_pooled_over_pairs(tmp_path, capsys):
    a = results(tmp_path / "a.json", [(4, 10, {1, 2, 3}), (8, 10, {0, 5})])
    b = results(tmp_path / "b.json", [(4, 10, {3, 7}), (8, 10, {0, 5}), (16, 10, set())])
    c = results(tmp_path / "c.json", [(4, 20, {9})], seed=1)
    d = results(tmp_path / "d.json", [(4, 20, set())], seed=1)
    assert script.main([a, b, c, d]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2:] == ["| 4 | 10 | 3 | 2 | 2 | 1 | 1 |", "| 8 | 10 | 2 | 2 | 0 | 0 | 1 |",
                         "| 4 | 20 | 1 | 0 | 1 | 0 | 1 |", "| all | 40 | 6 | 4 | 3 | 1 | 0.62 |"]
    assert script.mcnemar_p(13, 0) == 2 / 2 ** 13
    assert script.mcnemar_p(0, 0) == 1.0


def test_pieces_of_first_sample_are_compared_on_the_samples_both_hold(tmp_path, capsys):
    def piece(name, first, samples, wrong):
        path = tmp_path / name
        results(path, [(64, samples, wrong)])
        data = json.loads(path.read_text())
        data["results"][0]["first_sample"] = first
        path.write_text(json.dumps(data))
        return str(path)

    a = piece("a.json", 1000, 10, {1001, 1004, 1009})
    b = piece("b.json", 1000, 10, {1004})
    whole = results(tmp_path / "whole.json", [(64, 2000, {3, 1001, 1002, 1004})])
    assert script.main([a, b, whole, a]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2:4] == ["| 64 | 10 | 3 | 1 | 2 | 0 | 0.5 |", "| 64 | 10 | 3 | 3 | 1 | 1 | 1 |"]


def test_refuses_files_that_drew_other_samples_or_list_part_of_their_errors(tmp_path, capsys):
    a = results(tmp_path / "a.json", [(4, 10, {1})])
    other_seed = results(tmp_path / "b.json", [(4, 10, {1})], seed=3)
    assert script.main([a, other_seed]) == 1
    assert "drew different samples (seed: 0 against 3)" in capsys.readouterr().err
    partial = tmp_path / "p.json"
    data = json.loads((tmp_path / "a.json").read_text())
    data["results"][0]["correct"] = 5
    partial.write_text(json.dumps(data))
    assert script.main([a, str(partial)]) == 1
    assert "lists 1 of its 5 wrong answers" in capsys.readouterr().err
    piece = tmp_path / "piece.json"
    data = json.loads((tmp_path / "a.json").read_text())
    data["results"][0]["first_sample"] = 10  # rmt eval --first-sample: indexes 10 to 19, not the first 10
    piece.write_text(json.dumps(data))
    assert script.main([a, str(piece)]) == 1
    err = capsys.readouterr().err
    assert "holds samples 0-9 and" in err and "piece.json 10-19, none in both" in err
    assert script.main([a]) == 1
    assert "give them in pairs" in capsys.readouterr().err
    assert script.main([a, a, "--segments", "4,x"]) == 1
    assert "give whole numbers" in capsys.readouterr().err
