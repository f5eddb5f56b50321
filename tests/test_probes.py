"""Probes and interventions: planted memory states, a hand-built linear model, tiny random RMTs."""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import make_tiny_rmt

from probes import figures, interventions, linear, targets
from probes.attention import ReadoutSum, role_masses
from probes.states import collect
from rmt_core.errors import ProbeError
from rmt_core.layout import EncoderLayout
from rmt_core.model import ROLE_FACT, ROLE_MEMORY, ROLE_NOISE, ROLE_QUESTION, ROLE_SPECIAL
from rmt_core.tasks import TaskBuilder

C = 6  # answer classes


# ----- planted memory states ---------------------------------------------------------------------------
def _planted(K=300, N=2, m=4, d=8, slot=2, strength=4.0, seed=0):
    """States where `slot` holds the answer as a one-hot direction plus noise, from segment 0 on; the rest is noise."""
    rng = np.random.default_rng(seed)
    answers = rng.integers(0, C, K)
    states = rng.standard_normal((K, N + 1, m, d)).astype(np.float32)
    states[:, 1:, slot, :C] += strength * np.eye(C, dtype=np.float32)[answers][:, None]
    return states, answers


def _answer_target(answers, N, control=None):
    labels = np.repeat(answers[:, None], N, axis=1)
    control = labels if control is None else np.repeat(control[:, None], N, axis=1)
    return targets.Target("answer", [str(i) for i in range(C)], labels, control)


def test_planted_slot_probe_near_one_others_near_chance():
    K, N, m = 300, 2, 4
    states, answers = _planted(K, N, m)
    types = np.random.default_rng(1).integers(0, 24, K)  # fact types: the control labels are random per type
    control = np.array([targets.control_label(0, "answer", str(t), C) for t in types])
    fit, test = linear.split_samples(K, 0.5, seed=0)
    rows = linear.probe_grid(states, {"answer": _answer_target(answers, N, control)}, fit, test)
    assert len(rows) == N * (m + 1)
    for row in rows:
        assert set(row) >= {"target", "segment", "slot", "accuracy", "ci_low", "ci_high", "majority",
                            "control_accuracy", "selectivity"}
        assert row["ci_low"] <= row["accuracy"] <= row["ci_high"]
        assert row["selectivity"] == pytest.approx(row["accuracy"] - row["control_accuracy"])
        if row["slot"] == 2:
            assert row["accuracy"] > 0.95
        elif row["slot"] == "all":
            assert row["accuracy"] > 0.8
        else:  # chance is 1/6; 150 held-out samples
            assert row["accuracy"] < 0.32
        assert row["majority"] < 0.3


def test_wilson_interval_and_split():
    low, high = linear.wilson_interval(50, 100)
    assert (round(low, 4), round(high, 4)) == (0.4038, 0.5962)
    assert linear.wilson_interval(0, 10)[0] == 0.0 and linear.wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert linear.wilson_interval(0, 0) == (0.0, 1.0)
    fit, test = linear.split_samples(10, 0.3, seed=3)
    assert len(test) == 3 and len(fit) == 7 and not set(fit) & set(test)
    assert np.array_equal(test, linear.split_samples(10, 0.3, seed=3)[1])
    with pytest.raises(ProbeError):
        linear.split_samples(1)


def test_single_class_probe_predicts_it_and_majority_is_from_fit_set():
    x = np.random.default_rng(0).standard_normal((20, 3))
    y = np.zeros(20, dtype=np.int64)
    row = linear.score_probe(x, y, y, np.arange(10), np.arange(10, 20))
    assert row["accuracy"] == 1.0 and row["majority"] == 1.0


def test_selectivity_low_when_memory_holds_fact_identity_high_when_only_the_property():
    """A slot that encodes which fact it saw solves the control task too; one encoding only the answer does not."""
    rng = np.random.default_rng(0)
    K, n_types = 480, 24
    types = rng.integers(0, n_types, K)
    answers = types % C  # the property is a function of the type, as the place is of (person, place)
    states = rng.standard_normal((K, 2, 2, n_types)).astype(np.float32) * 0.3
    states[:, 1, 0] += 3 * np.eye(n_types, dtype=np.float32)[types]  # slot 0: the fact's identity
    states[:, 1, 1, :C] += 3 * np.eye(C, dtype=np.float32)[answers]  # slot 1: only the answer
    control = np.array([targets.control_label(7, "answer", f"type{t}", C) for t in types])
    fit, test = linear.split_samples(K, 0.5, seed=0)
    rows = linear.probe_grid(states, {"answer": _answer_target(answers, 1, control)}, fit, test)
    identity, answer_only = (next(r for r in rows if r["slot"] == k) for k in (0, 1))
    assert identity["accuracy"] > 0.95 and answer_only["accuracy"] > 0.95
    assert identity["control_accuracy"] > 0.9  # control labels are a function of the type: learnable
    assert answer_only["control_accuracy"] < 0.6  # knowing the place alone leaves the type's label to chance
    assert answer_only["selectivity"] > identity["selectivity"] + 0.3


def test_aligned_probe_rises_where_the_fact_lands():
    rng = np.random.default_rng(0)
    K, N, m, d = 400, 4, 2, 8
    answers = rng.integers(0, C, K)
    fact_segments = rng.integers(0, N, K)
    states = rng.standard_normal((K, N + 1, m, d)).astype(np.float32)
    for t in range(N):
        seen = fact_segments <= t
        states[seen, t + 1, 0, :C] += 4 * np.eye(C, dtype=np.float32)[answers[seen]]
    fit, test = linear.split_samples(K, 0.5, seed=0)
    rows = linear.probe_aligned(states, {"answer": _answer_target(answers, N)}, fact_segments, fit, test)
    by_offset = {r["offset"]: r for r in rows}
    assert set(by_offset) == set(range(-(N - 1), N))  # before and after the fact
    for offset, row in by_offset.items():
        if offset >= 0:
            assert row["accuracy"] > 0.9
        elif row["n_test"] >= 30:
            assert row["accuracy"] < 0.4


# ----- targets and control tasks -----------------------------------------------------------------------
def test_control_task_is_a_fixed_random_label_of_the_fact_type(tokenizer):
    samples = TaskBuilder("detect", tokenizer, 24).samples(4, 120, seed=1)
    built = targets.build_targets(samples, seed=5)
    assert set(built) == {"answer", "person", "seen"}
    for name, target in built.items():
        assert target.labels.shape == target.control.shape == (120, 4)
        assert target.control.min() >= 0 and target.control.max() < target.cardinality
    assert built["answer"].cardinality == 6 and built["person"].cardinality == 4 and built["seen"].cardinality == 2
    types = [targets.fact_type(s) for s in samples]
    assert all("|" in t for t in types)
    for k, s in enumerate(samples):  # the hash the docstring promises
        digest = hashlib.sha256(f"5/answer/{types[k]}".encode()).digest()
        assert built["answer"].control[k, 0] == int.from_bytes(digest[:8], "big") % 6
        assert built["seen"].labels[k].tolist() == [int(s.facts[0].segment <= t) for t in range(4)]
    by_type: dict = {}
    for k, t in enumerate(types):  # one label per type, the same at every segment
        by_type.setdefault(t, set()).add(int(built["person"].control[k, 0]))
        assert len(set(built["person"].control[k])) == 1
    assert all(len(v) == 1 for v in by_type.values())
    seen_before = {int(built["seen"].control[k, t]) for k, s in enumerate(samples) for t in range(4)
                   if s.facts[0].segment > t}
    assert len(seen_before) == 1  # 'nothing seen yet' is one type
    shuffled = targets.build_targets(samples[::-1], seed=5)  # independent of sample order ...
    assert np.array_equal(shuffled["answer"].control[::-1], built["answer"].control)
    other = targets.build_targets(samples, seed=6)  # ... but not of the seed
    assert not np.array_equal(other["answer"].control, built["answer"].control)


def test_reason_targets_and_bad_requests(tokenizer):
    samples = TaskBuilder("reason", tokenizer, 24).samples(3, 20, seed=0)
    built = targets.build_targets(samples)
    assert set(built) == {"answer", "seen"} and built["seen"].cardinality == 3
    assert built["seen"].labels[:, -1].tolist() == [2] * 20
    with pytest.raises(ProbeError, match="person"):
        targets.build_targets(samples, names=("person",))
    with pytest.raises(ProbeError):
        targets.build_targets([])


# ----- a hand-built model: the answer is a linear read of memory ---------------------------------------
class LinearMemoryModel:
    """m = 2 slots of width 6. A fact (token 100 + place at position 0) overwrites slot 0 with one_hot(place);
    slot 1 keeps the initial bias 0.1 * e_5. Logits = slot 0 + slot 1 of the memory written."""

    def __init__(self, segment_size=4):
        self.num_mem_tokens = 2
        self.config = SimpleNamespace(segment_size=segment_size)
        self.memory = torch.zeros(2, C)
        self.memory[1, 5] = 0.1

    def initial_memory(self, batch_size):
        return self.memory.unsqueeze(0).expand(batch_size, -1, -1)

    def segment_step(self, memory, tokens, mask=None, output_attentions=False):
        fact = tokens[:, 0] >= 100
        written = torch.nn.functional.one_hot((tokens[:, 0] - 100).clamp(0, C - 1), C).float()
        slot0 = torch.where(fact[:, None], written, memory[:, 0])
        memory_out = torch.stack([slot0, memory[:, 1]], dim=1)
        return SimpleNamespace(memory_out=memory_out, logits=memory_out.sum(dim=1), hidden=None, attentions=None)


def _linear_inputs(answers, fact_segments, N=3, S=4):
    ids = torch.zeros(len(answers), N, S, dtype=torch.long)
    for k, (a, t) in enumerate(zip(answers, fact_segments)):
        ids[k, t, 0] = 100 + int(a)
    return ids


def test_ablation_matches_the_hand_calculation():
    model = LinearMemoryModel()
    answers = np.array([0, 1, 2, 3, 4, 5, 1, 1, 1, 2])
    ids = _linear_inputs(answers, [0] * 10)
    clean = interventions.ablate(model, ids, answers, 0, 1, "initial")  # slot 1 back to its initial value: no change
    assert clean["accuracy"] == clean["clean_accuracy"] == 1.0 and clean["logit_change"] == pytest.approx(0.0)

    zeros = interventions.ablate(model, ids, answers, 0, 0, "zeros")
    # logits become the bias 0.1 * e_5: the answer is 5, right only where it was 5; the right logit loses 1
    assert zeros["accuracy"] == pytest.approx(np.mean(answers == 5))
    assert zeros["accuracy_drop"] == pytest.approx(1 - np.mean(answers == 5))
    assert zeros["logit_change"] == pytest.approx(-1.0)
    assert interventions.ablate(model, ids, answers, 1, 0, "initial")["logit_change"] == pytest.approx(-1.0)

    mean = interventions.ablate(model, ids, answers, 1, 0, "mean")
    p = np.bincount(answers, minlength=C) / len(answers)  # slot 0's mean: the answer frequencies
    guess = np.argmax(p + 0.1 * np.eye(C)[5])  # 1 here, without a tie
    assert mean["accuracy"] == pytest.approx(np.mean(answers == guess))
    assert mean["logit_change"] == pytest.approx(np.mean(p[answers]) - 1.0, abs=1e-6)

    bias = interventions.ablate(model, ids, answers, 1, [1], "zeros")
    assert bias["accuracy"] == 1.0 and bias["logit_change"] == pytest.approx(-0.1 * np.mean(answers == 5), abs=1e-6)
    assert bias["slot"] == [1]
    with pytest.raises(ProbeError, match="segment"):
        interventions.ablate(model, ids, answers, 2, 0, "zeros")  # the last segment's memory is read by nothing
    with pytest.raises(ProbeError, match="slot"):
        interventions.ablate(model, ids, answers, 0, 2, "zeros")
    with pytest.raises(ProbeError, match="mode"):
        interventions.ablate(model, ids, answers, 0, 0, "noise")


def test_patching_matches_the_hand_calculation():
    model = LinearMemoryModel()
    a_answers = np.array([0, 1, 2, 3, 4, 5, 0, 2])
    b_answers = np.array([1, 2, 3, 4, 5, 0, 3, 5])
    a, b = _linear_inputs(a_answers, [0] * 8), _linear_inputs(b_answers, [0] * 8)
    full = interventions.patch(model, a, b, a_answers, b_answers, 0, "all")
    assert full["iia"] == 1.0 and full["logit_effect"] == pytest.approx(1.0) and full["b_prediction_rate"] == 1.0
    answer_slot = interventions.patch(model, a, b, a_answers, b_answers, 1, 0)
    assert answer_slot["iia"] == 1.0 and answer_slot["logit_effect"] == pytest.approx(1.0)
    bias_slot = interventions.patch(model, a, b, a_answers, b_answers, 0, 1)  # the same in every run
    assert bias_slot["iia"] == 0.0 and bias_slot["logit_effect"] == pytest.approx(0.0)
    # A's fact lands after the patched segment and overwrites slot 0: the patch is forgotten
    late = _linear_inputs(a_answers, [2] * 8)
    forgotten = interventions.patch(model, late, b, a_answers, b_answers, 0, "all")
    assert forgotten["iia"] == 0.0 and forgotten["logit_effect"] == pytest.approx(0.0)
    # half the pairs have their fact late: half the answers flip, half the logit effect
    mixed = _linear_inputs(a_answers, [0, 2] * 4)
    half = interventions.patch(model, mixed, b, a_answers, b_answers, 0, 0)
    assert half["iia"] == 0.5 and half["logit_effect"] == pytest.approx(0.5)


def test_pairs_have_different_answers():
    answers = np.array([0, 0, 1, 2, 2, 2])
    a, b = interventions.pair_samples(answers, seed=0)
    assert a.tolist() == list(range(6)) and np.all(answers[a] != answers[b])
    with pytest.raises(ProbeError):
        interventions.pair_samples(np.zeros(5, dtype=int))


# ----- tiny random RMTs --------------------------------------------------------------------------------
def test_collect_matches_forward_and_attention_masses(tokenizer):
    model = make_tiny_rmt(tokenizer, segment_size=24)
    samples = TaskBuilder("detect", tokenizer, 24).samples(3, 10, seed=2)
    ids = torch.tensor([s.input_ids for s in samples])
    roles = torch.tensor([s.roles for s in samples])
    out = collect(model, ids, roles, batch_size=4, attention_batch=3)
    assert out.states.shape == (10, 4, 4, 32) and out.logits.shape == (10, 6)
    with torch.no_grad():
        reference = model(ids)
    assert np.allclose(out.states[:, 0], model.memory.detach().numpy())
    assert np.allclose(out.states[:, -1], reference.memory_out.numpy(), atol=1e-5)
    assert np.allclose(out.logits, reference.logits.numpy(), atol=1e-5)
    assert out.write.events == 10 and out.read.events == 10  # one fact a sample; every sample's last segment
    for row in out.write.rows() + out.read.rows():
        total = sum(row[f"{name}_mass"] for name in ("noise", "fact", "question", "special", "memory"))
        assert total == pytest.approx(1.0, abs=1e-4)
    assert all(r["fact_mass"] > 0 for r in out.write.rows())
    same = collect(model, ids, None, batch_size=7)  # batching and attention leave the states unchanged
    assert np.allclose(same.states, out.states, atol=1e-5) and same.write.events == 0


def test_position_roles_and_role_masses():
    token_roles = torch.tensor([[ROLE_NOISE, ROLE_FACT, ROLE_QUESTION]])
    roles = EncoderLayout(num_mem_tokens=2, segment_size=3, cls_id=101, sep_id=102, pad_id=0).position_roles(token_roles)
    assert roles[0, :7].tolist() == [ROLE_SPECIAL, ROLE_MEMORY, ROLE_MEMORY, ROLE_SPECIAL, ROLE_NOISE, ROLE_FACT,
                                      ROLE_QUESTION]
    uniform = torch.full((1, 1, 2, 8), 1 / 8)
    masses = role_masses(uniform, roles)[0, 0]
    assert masses[ROLE_MEMORY] == pytest.approx(2 / 8) and masses[ROLE_SPECIAL] == pytest.approx(3 / 8)
    summary = ReadoutSum()
    summary.add(masses.numpy()[None, None, None], np.array([[1, 1, 1, 3, 2, 0]]))
    row = summary.rows()[0]
    assert row["enrichment"] == pytest.approx(1.0) and row["memory_per_token"] == pytest.approx(1 / 8)


def test_ablation_and_patching_on_a_tiny_rmt(tokenizer):
    model = make_tiny_rmt(tokenizer, segment_size=24)
    samples = TaskBuilder("memorize", tokenizer, 24).samples(3, 8, seed=0)
    ids = torch.tensor([s.input_ids for s in samples])
    answers = np.array([s.answer for s in samples])
    states = collect(model, ids).states
    given = interventions.ablate(model, ids, answers, 1, 2, "mean", states=states)
    rerun = interventions.ablate(model, ids, answers, 1, 2, "mean")  # re-runs segments 0..1 itself
    assert given["accuracy"] == rerun["accuracy"] and given["logit_change"] == pytest.approx(rerun["logit_change"], abs=1e-5)
    # B shares A's last segment: patching all memory before it makes the run on A a run on B
    b_ids = ids.clone().view(8, 3, 24)
    b_ids[:, :2] = b_ids[:, :2].roll(1, dims=0)
    b_answers = (answers + 1) % 6
    result = interventions.patch(model, ids, b_ids, answers, b_answers, 1, "all")
    assert result["b_prediction_rate"] == 1.0 and result["logit_effect"] == pytest.approx(1.0, abs=1e-3)
    none = interventions.patch(model, ids, ids, answers, b_answers, 1, "all")  # B = A: nothing changes
    assert none["b_prediction_rate"] == 1.0 and none["logit_effect"] is None  # 0 / 0: no effect to normalise by


@pytest.fixture
def tiny_checkpoint(tokenizer, tmp_path):
    from rmt_core.checkpoint import load_checkpoint, save_checkpoint

    model = make_tiny_rmt(tokenizer, segment_size=24, task="detect", trained_segments=3)
    folder = save_checkpoint(model, tmp_path / "tiny")
    return load_checkpoint(folder, device="cpu")


def test_run_probes_writes_results_and_reuses_finished_stages(tiny_checkpoint, tmp_path, monkeypatch):
    from probes import run as run_module

    out = tmp_path / "probe"
    seen = []
    results = run_module.run_probes(tiny_checkpoint, "detect", 3, 24, out=out, intervention_samples=8,
                                    progress=lambda stage, done, total: seen.append((stage, done, total)),
                                    figures="html")
    assert seen[-1][1] == seen[-1][2] and {s for s, _, _ in seen} == set(run_module.STAGES)
    assert results["checkpoint"]["name"] == "tiny" and len(results["checkpoint"]["sha256"]) == 64
    assert results["settings"]["task"] == "detect" and results["complete"]
    assert len(results["probes"]) == 3 * 3 * 5  # targets x segments x (all + 4 slots)
    assert len(results["ablation"]) == 2 * 5 * 3 and len(results["patching"]) == 2 * 5
    assert {r["slot"] for r in results["probes"]} == {"all", 0, 1, 2, 3}
    assert results["aligned"] and results["attention"]["write"] and results["attention"]["read"]
    assert {"segment", "slot", "mode", "accuracy", "accuracy_drop", "logit_change"} <= set(results["ablation"][0])
    assert {"segment", "slots", "iia", "logit_effect"} <= set(results["patching"][0])
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["probes"] == results["probes"]
    for name in ("probes.csv", "aligned.csv", "ablation.csv", "patching.csv", "attention_write.csv"):
        assert (out / name).read_text().count("\n") > 1
    assert (out / "figures" / "accuracy_by_segment.html").is_file() and (out / "figures" / "patching.html").is_file()

    # a rerun with the same settings only rewrites the files; other intervention settings redo only those stages
    def boom(*args, **kwargs):
        raise AssertionError("collected again")

    monkeypatch.setattr(run_module, "collect", boom)
    again = run_module.run_probes(tiny_checkpoint, "detect", 3, 24, out=out, intervention_samples=8,
                                  progress=False, figures=None)
    assert again["probes"] == results["probes"] and again["patching"] == results["patching"]
    fewer = run_module.run_probes(tiny_checkpoint, "detect", 3, 24, out=out, intervention_samples=6,
                                  progress=False, figures=None, modes=("zeros",))
    assert fewer["probes"] == results["probes"] and len(fewer["ablation"]) == 2 * 5
    assert fewer["ablation"][0]["samples"] == 6


def test_run_probes_rejects_bad_arguments(tiny_checkpoint):
    from probes.run import run_probes

    with pytest.raises(ProbeError, match="task"):
        run_probes(tiny_checkpoint, "count", 2, 10, progress=False)
    with pytest.raises(ProbeError, match="--samples"):
        run_probes(tiny_checkpoint, "detect", 2, 2, progress=False)
    with pytest.raises(ProbeError, match="--segments"):
        run_probes(tiny_checkpoint, "detect", 0, 10, progress=False)
    with pytest.raises(ProbeError, match="mode"):
        run_probes(tiny_checkpoint, "detect", 2, 10, progress=False, modes=("noise",))
    one = run_probes(tiny_checkpoint, "memorize", 1, 8, progress=False)  # one segment: probes, no interventions
    assert one["probes"] and not one["ablation"] and not one["aligned"] and len(one["notes"]) == 2


def test_rmt_probe_command(tiny_checkpoint, tmp_path, capsys):
    from rmt_cli.main import main

    out = tmp_path / "cli"
    code = main(["probe", "--checkpoint", str(tiny_checkpoint.checkpoint_dir), "--segments", "2", "--samples", "16",
                 "--intervention-samples", "6", "--out", str(out), "--figures", "none", "--no-progress", "--no-slots"])
    printed = capsys.readouterr().out
    assert code == 0 and "answer accuracy" in printed and "probe seen" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["task"] == "detect" and {r["slot"] for r in results["probes"]} == {"all"}
    assert main(["probe", "--checkpoint", str(tmp_path / "nowhere"), "--out", str(out)]) == 1
    assert main(["probe", "--checkpoint", str(tiny_checkpoint.checkpoint_dir), "--samples", "1",
                 "--out", str(out)]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("rmt probe: error:") for line in errors)


# ----- figures -----------------------------------------------------------------------------------------
def _results():
    probe = {"ci_low": 0.4, "ci_high": 0.7, "majority": 0.2, "control_accuracy": 0.3, "n_test": 50}
    return {
        "probes": [dict(probe, target=t, segment=s, slot=k, accuracy=0.5, selectivity=0.2)
                   for t in ("answer", "seen") for s in range(3) for k in ("all", 0, 1)],
        "aligned": [dict(probe, target="answer", offset=o, accuracy=0.5, selectivity=0.2) for o in (-1, 0, 1)],
        "ablation": [{"segment": s, "slot": k, "mode": mo, "accuracy": 0.5, "accuracy_drop": 0.1, "logit_change": -0.2}
                     for s in range(2) for k in ("all", 0, 1) for mo in ("mean", "zeros")],
        "patching": [{"segment": s, "slots": k, "iia": 0.3, "logit_effect": 0.4, "b_prediction_rate": 0.5}
                     for s in range(2) for k in ("all", 0, 1)],
        "attention": {"write": [{"layer": 0, "head": h, "enrichment": 1.5, "memory_mass": 0.1} for h in range(2)],
                      "read": [{"layer": 0, "head": h, "memory_mass": 0.2} for h in range(2)]},
    }


def test_figure_builders():
    results = _results()
    built = figures.all_figures(results)
    assert set(built) == {"accuracy_by_segment", "slot_heatmap_answer", "slot_heatmap_seen", "selectivity_heatmap_answer",
                          "selectivity_heatmap_seen", "aligned", "ablation", "patching", "attention"}
    by_segment = figures.accuracy_by_segment(results, "answer")
    assert [t.name for t in by_segment.data if t.name] == ["answer probe", "answer majority", "answer control task"]
    heat = figures.slot_heatmap(results, "answer")
    assert np.array(heat.data[0].z).shape == (3, 3) and heat.data[0].y[0] == "all slots"
    assert len(figures.ablation_bars(results, segment=1).data) == 2
    assert len(figures.patching_curve(results, "logit_effect").data) == 3
    with pytest.raises(ProbeError):
        figures.accuracy_by_segment(results, "person")
    with pytest.raises(ProbeError):
        figures.ablation_bars({"ablation": []})
    assert figures.all_figures({}) == {}


def test_markdown_summary_quotes_the_results():
    from probes.findings import markdown_summary

    results = _results()
    results.update(settings={"task": "detect", "segments": 3, "samples": 40, "seed": 0, "segment_size": 24,
                             "num_mem_tokens": 2, "test_fraction": 0.5},
                   checkpoint={"name": "tiny", "sha256": "ab" * 32},
                   clean={"accuracy": 0.75, "ci_low": 0.6, "ci_high": 0.86},
                   attention={"headline": {"write_fact_mass": 0.3, "write_noise_mass": 0.5, "write_enrichment": 2.0,
                                           "read_cls_memory_mass": 0.25}},
                   notes=["figures written as HTML"])
    text = markdown_summary(results)
    assert text.startswith("### tiny: detect, 3 segments")
    assert "| answer | 0 | 50.0 | 40.0-70.0 | 20.0 | 30.0 | +20.0 |" in text
    assert "75.0% (95% CI 60.0-86.0)" in text and "fact / noise = 2.00" in text
    assert "segment 1: IIA 30.0, logit effect 0.40" in text and "Note: figures written as HTML" in text
    assert "Facts: the built-in generator; noise: built-in sentences." in text
    results["settings"].update(babi_dir="/data/en-10k", split="test", noise_file="/data/questions.dev.txt")
    assert "Facts: /data/en-10k (test split); noise: /data/questions.dev.txt." in markdown_summary(results)


def test_a_probe_run_without_segments_takes_the_trained_length_up_to_64():
    """Interventions rerun every later segment for every earlier one: the shipped reason's trained length (1,024)
    would take days, so the default stops at 64; shorter checkpoints keep their own, and at least 2."""
    from probes.run import DEFAULT_MAX_SEGMENTS, default_segments

    assert [default_segments(t) for t in (None, 0, 1, 4, 64, 65, 1024)] == [2, 2, 2, 4, 64, 64, 64]
    assert DEFAULT_MAX_SEGMENTS == 64


def test_rmt_probe_says_when_it_caps_the_trained_length(tiny_checkpoint, tmp_path, capsys):
    from rmt_cli.main import main
    from rmt_core.checkpoint import save_checkpoint

    tiny_checkpoint.config.trained_segments = 1024
    folder = save_checkpoint(tiny_checkpoint, tmp_path / "long")
    out = tmp_path / "probe"
    assert main(["probe", "--checkpoint", str(folder), "--samples", "8", "--intervention-samples", "4", "--no-slots",
                 "--no-attention", "--no-ablation", "--no-patching", "--no-progress", "--figures", "none",
                 "--device", "cpu", "--out", str(out)]) == 0
    assert "probing at 64 segments (trained on up to 1,024" in capsys.readouterr().err
    assert json.loads((out / "results.json").read_text())["settings"]["segments"] == 64
