"""scripts/noise_switch.py: the memory it measures is the recurrence's own, and switches are found where they are."""

from __future__ import annotations

import json
import random

import numpy as np
import torch

from conftest import load_script, make_tiny_rmt


def test_first_switch_is_the_first_segment_below_the_threshold_after_the_reference():
    ns = load_script("noise_switch")
    cosines = np.array([[0.1, 0.2], [1.0, 1.0], [0.9, 0.4], [0.3, 0.9], [0.2, 0.1]])  # (N=5, B=2)
    # reference 2: segment 2's memory; segment 1's low cosine comes before it and does not count
    assert ns.first_switch(cosines, 2, 0.5) == [4, 3]
    assert ns.first_switch(cosines, 2, 0.05) == [None, None]
    assert ns.log_points(10) == [1, 2, 4, 8, 10]


def test_memory_in_noise_reads_the_recurrences_memory(tokenizer, tmp_path, capsys):
    from rmt_core import recurrence
    from rmt_core.checkpoint import save_checkpoint
    from rmt_core.inputs import SegmentBatch
    from rmt_core.noise import NoiseSource, NoiseStream

    ns = load_script("noise_switch")
    model = make_tiny_rmt(tokenizer, segment_size=16, num_mem_tokens=3, hidden=16, layers=1, heads=2, seed=3).eval()
    row = ns.memory_in_noise(model, "builtin", segments=12, samples=3, reference=2, threshold=0.5, seed=1)
    source = NoiseSource.load("builtin", tokenizer)
    ids = np.array([NoiseStream(source, random.Random(100_003 + b)).take_ids(12 * 16) for b in range(3)],
                   dtype=np.int32)
    with torch.no_grad():
        cache = recurrence.run_with_cache(model, SegmentBatch.from_ids(ids, 16), names=["seg.*.mem_out"]).cache
    flat = {t: cache[f"seg.{t}.mem_out"].flatten(1) for t in range(12)}
    for t in (2, 4, 8, 12):  # 1-based segments
        expected = torch.nn.functional.cosine_similarity(flat[t - 1], flat[1], dim=-1).median().item()
        assert abs(row["cosine_median"][t] - expected) < 1e-5
        assert abs(row["norm_median"][t] - flat[t - 1].norm(dim=-1).median().item()) < 1e-4
    assert row["cosine_median"][2] > 0.9999 and len(row["switches"]) == 3

    folder = save_checkpoint(model, tmp_path / "tiny", tokenizer=tokenizer)
    out = tmp_path / "switch.json"
    assert ns.main(["--checkpoint", str(folder), "--segments", "12", "--samples", "2", "--reference", "2",
                    "--noise", "a=builtin", "--noise", "b=builtin:vocab", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| a | " in printed and "| b | " in printed
    assert set(json.loads(out.read_text())["rows"]) == {"a", "b"}
    assert not json.loads(out.read_text())["checkpoint"].startswith("/")
    assert ns.main(["--checkpoint", str(folder), "--noise", "nonsense"]) == 1
    assert "NAME=SOURCE" in capsys.readouterr().err
    assert ns.main(["--checkpoint", str(tmp_path / "missing")]) == 1
    assert capsys.readouterr().err.startswith("noise_switch: error:")


def test_switch_triggers_finds_the_segment_that_moved_memory_most(tokenizer, tmp_path, capsys):
    from rmt_core.checkpoint import save_checkpoint

    st = load_script("switch_triggers")
    assert st.kinds("Why did he go into the kitchen?") == {"room": True, "move": True, "room and move": True,
                                                           "neither": False}
    assert st.kinds("What is ironic about the story?")["neither"]
    assert st.kinds("Adrian's offices were narrow.")["room"] and not st.kinds("An officer spoke.")["room"]
    model = make_tiny_rmt(tokenizer, segment_size=16, num_mem_tokens=3, hidden=16, layers=1, heads=2, seed=3).eval()
    # a threshold of 1 counts every segment after the reference as a switch: each sample's trigger is then the
    # largest change among the reference's next segment and the LOOKBACK before it
    result = st.triggers(model, "builtin", segments=12, samples=3, reference=4, threshold=1.0001, seed=1)
    assert result["switched"] == 3 and result["base_segments"] == 0
    for found in result["triggers"]:
        assert found["switch"] == 5 and 2 <= found["trigger"] <= 5 and found["change"] >= 0
    never = st.triggers(model, "builtin", segments=12, samples=3, reference=4, threshold=-1.0, seed=1)
    assert never["switched"] == 0 and never["base_segments"] == 3 * 8
    assert abs(sum(never["base_share"][k] for k in ("room", "neither")) - 1.0
               + never["base_share"]["move"] - never["base_share"]["room and move"]) < 1e-9
    folder = save_checkpoint(model, tmp_path / "tiny", tokenizer=tokenizer)
    out = tmp_path / "t.json"
    assert st.main(["--checkpoint", str(folder), "--segments", "12", "--samples", "2", "--reference", "2",
                    "--noise", "builtin", "--threshold", "1", "--json", str(out), "--figure",
                    str(tmp_path / "t.html")]) == 0
    assert "| room and move |" in capsys.readouterr().out
    written = json.loads(out.read_text())
    assert written["switched"] == 2 and not written["checkpoint"].startswith("/")  # no machine's absolute path
    assert "sample 0: trigger at" in (tmp_path / "t.html").read_text()
    assert st.main(["--checkpoint", str(folder), "--threshold", "2"]) == 1
    assert "not a cosine" in capsys.readouterr().err


def test_fact_writes_measures_the_facts_segment_and_the_models_answer(tokenizer, tmp_path, capsys):
    """scripts/fact_writes.py: the fact's move is the recurrence's memory change at the fact's segment, right is the
    model's own answer on rmt eval's sample, and a switch before the fact is found only before it."""
    from rmt_core import recurrence
    from rmt_core.checkpoint import save_checkpoint
    from rmt_core.evaluate import eval_sample_seed
    from rmt_core.inputs import SegmentBatch
    from rmt_core.model import memory_change
    from rmt_core.tasks import TaskBuilder

    fw = load_script("fact_writes")

    def recorded_moves(model, sample, segment_size):
        """Every segment's memory change, as the recurrence itself reports it, and the run's output."""
        moves = {}
        with torch.no_grad():
            out = recurrence.run(model, SegmentBatch.from_ids(np.array([sample.input_ids], dtype=np.int32),
                                                              segment_size),
                                 on_segment=lambda r: moves.__setitem__(r.t, memory_change(r.memory_in, r.memory_out)))
        return moves, out

    cosine = np.array([1.0, 1.0, 0.9, 0.3, 0.8, 0.2])
    assert fw.switched_before(cosine, 1, 4, 0.5) and not fw.switched_before(cosine, 1, 3, 0.5)
    assert not fw.switched_before(cosine, 1, 2, 0.5)  # no segment between the reference and the fact

    model = make_tiny_rmt(tokenizer, segment_size=16, num_mem_tokens=3, hidden=16, layers=1, heads=2, seed=3,
                          task="detect").eval()
    builder = TaskBuilder("detect", tokenizer, 16, split="test")
    rows = fw.fact_writes(model, builder, segments=10, samples=5, reference=2, threshold=0.5, batch_size=2)
    assert len(rows) == 5
    for index, row in enumerate(rows):
        sample = builder.sample(10, eval_sample_seed(0, 10, index))
        assert row["seed"] == sample.seed and row["fact_segment"] == max(f.segment for f in sample.facts)
        moves, out = recorded_moves(model, sample, 16)
        assert abs(row["fact_move"] - moves[row["fact_segment"]].item()) < 1e-5
        assert row["first_fact_segment"] == row["fact_segment"]  # detect: one fact
        assert row["right"] == (out.logits.argmax(-1).item() == sample.answer)
    table = fw.summary(rows, reference=2)
    assert sum(r["samples"] for r in table) == sum(r["fact_segment"] > 3 for r in rows)

    # reason: two facts, the earlier one's segment and move beside the later one's
    reasoner = make_tiny_rmt(tokenizer, segment_size=32, num_mem_tokens=3, hidden=16, layers=1, heads=2, seed=3,
                             task="reason").eval()
    builder = TaskBuilder("reason", tokenizer, 32, split="test")
    rows = fw.fact_writes(reasoner, builder, segments=12, samples=8, reference=2, threshold=0.5, batch_size=4)
    for index, row in enumerate(rows):
        sample = builder.sample(12, eval_sample_seed(0, 12, index))
        assert (row["first_fact_segment"], row["fact_segment"]) == (min(f.segment for f in sample.facts),
                                                                   max(f.segment for f in sample.facts))
        moves, _ = recorded_moves(reasoner, sample, 32)
        assert abs(row["first_fact_move"] - moves[row["first_fact_segment"]].item()) < 1e-5
    apart = [r for r in rows if r["first_fact_segment"] != r["fact_segment"]]
    assert apart and all(r["first_fact_move"] != r["fact_move"] for r in apart)
    assert all(r["first_fact_move"] == r["fact_move"] for r in rows if r not in apart)
    distances = fw.by_distance(rows, 12)
    for name in fw.DISTANCES:  # every sample counted once per distance, in the range its distance falls in
        of_name = [d for d in distances if d["distance"] == name]
        assert sum(d["samples"] for d in of_name) == len(rows)
        assert sum(d["right"] for d in of_name) == sum(r["right"] for r in rows)
    same = [d["samples"] for d in distances if d["distance"] == "the first fact from the last" and d["range"] == (0, 0)]
    assert sum(same) == len(rows) - len(apart)

    folder = save_checkpoint(model, tmp_path / "tiny")
    assert fw.main(["--checkpoint", str(folder), "--segments", "12", "--samples", "3", "--json",
                    str(tmp_path / "fw.json")]) == 0
    assert "| memory switched before the (last) fact |" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "fw.json").read_text())["rows"]) == 3
