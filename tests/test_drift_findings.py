"""scripts/drift_findings.py: its measures against the project's own collection and replay, on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import load_script, make_tiny_rmt


@pytest.fixture(scope="module")
def drift():
    return load_script("drift_findings")


@pytest.fixture(scope="module")
def model(tokenizer):
    return make_tiny_rmt(tokenizer, segment_size=16, num_mem_tokens=3, hidden=16, layers=1, heads=2, seed=3)


@pytest.fixture(scope="module")
def samples(drift, model):
    from rmt_core.tasks import TaskBuilder

    builder = TaskBuilder("detect", model.tokenizer, 16)
    return drift.pick_samples(builder, "detect", 2 + 4 + 2, 6, max_fact_segment=2)  # facts in 0..2, D = 4


def test_distances(drift):
    assert drift.log_distances(512) == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    assert drift.log_distances(6) == [0, 1, 2, 4, 6]
    grid = drift.grid_distances(1000)
    assert grid[0] == 0 and grid[-1] == 1000 and {256, 512} <= set(grid) and grid == sorted(set(grid))


def test_samples_keep_their_facts_early(samples):
    facts = [max(f.segment for f in s.facts) for s in samples]
    assert max(facts) <= 2 and len(set(facts)) > 1  # early, but not all in one segment
    assert all(s.n_segments == 8 for s in samples)


def test_drift_pass_matches_collected_states(drift, model, samples):
    """Every measure at distance d is the memory written by segment fact + d of the project's own collection."""
    from probes.states import collect

    distances = [0, 1, 2, 4]
    measured = drift.drift_pass(model, samples, distances, batch_size=4, progress=False)  # two batches
    collected = collect(model, [s for s in samples])
    states = collected.states  # (K, N+1, m, d)
    for k, sample in enumerate(samples):
        f = max(fact.segment for fact in sample.facts)
        assert measured["fact"][k] == f
        reference = states[k, f + 1]
        for d in range(5):
            state = states[k, f + 1 + d]
            assert measured["l2"][k, d] == pytest.approx(np.linalg.norm(state - reference), abs=1e-4)
            cos = (state * reference).sum() / np.linalg.norm(state) / np.linalg.norm(reference)
            assert measured["cos"][k, d] == pytest.approx(cos, abs=1e-5)
            assert measured["change"][k, d] == pytest.approx(np.linalg.norm(state - states[k, f + d]), abs=1e-4)
            np.testing.assert_allclose(measured["slot_norm"][k, d], np.linalg.norm(state, axis=1), rtol=1e-5)
        for j, d in enumerate(distances):
            np.testing.assert_allclose(measured["kept"][k, j], states[k, f + 1 + d], atol=1e-6)
    # The question segment read from the memory before it gives the model's own final answer.
    questions = np.array([s.input_ids[7 * 16:] for s in samples])
    np.testing.assert_allclose(drift.question_logits(model, states[:, 7], questions, batch_size=4),
                               collected.logits, atol=1e-4)


def test_probe_finds_a_planted_answer_only_where_it_is(drift, model):
    """An answer planted in the memory at d = 0 and absent after: the probe and the d=0 probe see it at 0 only."""
    from rmt_core.tasks import TaskBuilder

    builder = TaskBuilder("memorize", model.tokenizer, 16)
    samples = [builder.sample(2, seed) for seed in range(60)]
    answers = np.array([s.answer for s in samples])
    rng = np.random.default_rng(0)
    kept = rng.normal(size=(60, 3, 2, 8)).astype(np.float32)
    kept[np.arange(60), 0, 0, answers] += 6.0  # distance 0: the answer as a bump in slot 0
    result = drift.probe_distances(kept, samples, [0, 1, 2])
    at = {r["distance"]: r for r in result["all"]}
    assert at[0]["accuracy"] > 0.9 and at[0]["total"] == 60
    assert at[1]["accuracy"] < 0.6 and at[2]["accuracy"] < 0.6
    assert at[0]["ci_low"] < at[0]["accuracy"] < at[0]["ci_high"] or at[0]["accuracy"] == 1.0
    assert result["fixed"][0]["accuracy"] > 0.9 and result["fixed"][2]["accuracy"] < 0.6
    slot = result["slots"][0]
    assert slot[0]["accuracy"] > slot[1]["accuracy"]  # slot 0 holds it, slot 1 does not
    assert drift.first_distance(result["all"], lambda r: r["accuracy"] < 0.5) == 1


def test_end_to_end_with_a_trace(drift, model, tmp_path, capsys):
    """The script on a tiny checkpoint: records a trace, reads it back (the last question reproduces the trace's
    final logits), writes drift.json atomically and prints the markdown from it; a rerun reuses the results."""
    from rmt_core.checkpoint import save_checkpoint

    folder = save_checkpoint(model, tmp_path / "tiny", tokenizer=model.tokenizer)
    out = tmp_path / "out"
    argv = ["--checkpoint", f"tiny={folder}", "--samples", "8", "--max-distance", "3", "--trace-segments", "12",
            "--traces-dir", str(tmp_path / "traces"), "--figures", "none", "--out", str(out), "--quiet"]
    assert drift.main(argv) == 0
    results = json.loads((out / "drift.json").read_text())
    found = results["checkpoints"]["tiny"]
    trace = found["trace"]
    assert trace["final_logits_reproduced"] is True
    assert trace["max_distance"] == 12 - 1 - 1  # memorize: fact in segment 0, memory after it is state 1
    assert trace["grid"][0]["cos"] == pytest.approx(1.0) and trace["grid"][0]["l2"] == pytest.approx(0.0)
    assert trace["lost"]["right_at_end"] == (trace["answer"] == trace["final_prediction"])
    assert [r["distance"] for r in found["samples"]["probe"]] == [0, 1, 2, 3]
    assert all(r["total"] == 8 for r in found["samples"]["question"])
    switch = found["samples"]["switch"]
    assert switch["by_distance"][0]["switched"] == 0  # the memory right after the fact is the reference itself
    assert all(r["switched"] + r["held"] == 8 and r["held_right"] <= r["held"] for r in switch["by_distance"])
    assert sum(w["count"] for w in switch["first_switch"]["windows"]) + switch["first_switch"]["never"] == 8
    printed = capsys.readouterr().out
    assert "### tiny: memory after the fact" in printed and "| 3 |" in printed
    # the heading names the folder measured and its weights, not a checkpoints/NAME it never read
    assert f"(`{found['checkpoint']['path']}`, sha256 `{found['checkpoint']['sha256'][:16]}`" in printed
    assert "checkpoints/tiny" not in printed
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    key = found["key"]
    assert drift.main(argv) == 0  # reuses the finished checkpoint
    assert json.loads((out / "drift.json").read_text())["checkpoints"]["tiny"]["key"] == key
    assert drift.main(["--checkpoint", "tiny=" + str(tmp_path / "nowhere"), "--out", str(out)]) == 1
    assert "not a checkpoint folder" in capsys.readouterr().err


def test_before_after_figure_draws_the_checkpoints_found_in_both(drift, tmp_path, capsys):
    """--report --before draws, per checkpoint name in both drift.json files, the cosine band and the model's
    answer before and after; an earlier run folder without drift.json is a one-line error."""
    docs = Path(__file__).resolve().parents[1] / "docs" / "figures"
    before = json.loads((docs / "drift" / "drift.json").read_text())
    after = json.loads((docs / "drift_long" / "drift.json").read_text())
    figures = drift.before_after_figures(before, after)
    assert set(figures) == {f"{n}_before_after" for n in after["checkpoints"] if n in before["checkpoints"]}
    fig = figures["memorize_before_after"]
    medians = [t for t in fig.data if t.name and t.name.startswith(("before", "after"))]
    assert [t.name.split(":")[0] for t in medians] == ["before", "after"]
    assert list(medians[1].y) == after["checkpoints"]["memorize"]["samples"]["by_distance"]["cos"]["median"]
    assert "before and after further training" in fig.layout.title.text
    averaged = drift.before_after_figures(before, after, "averaging weights")["memorize_before_after"]
    assert averaged.layout.title.text.endswith("before and after averaging weights")
    assert drift.before_after_figures(before, {"checkpoints": {}}) == {}
    assert drift.main(["--report", "--out", str(docs / "drift_long"), "--before", str(tmp_path)]) == 1
    assert "give --before the --out folder of an earlier run" in capsys.readouterr().err
