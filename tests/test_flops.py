"""FLOPs counting: a hand calculation, RMT's linear growth, the paper's ratios, the table, figure and command."""

import json

import pytest

from rmt_core import flops, paper
from rmt_core.flops import Counting, ModelShape, forward_flops, full_flops, rmt_flops

TINY = ModelShape("tiny", layers=2, d_model=8, heads=2, ffn=32, vocab=10)


def test_forward_flops_match_a_hand_calculation():
    # s=4, d=8, h=2, k=4, f=32, V=10, L=2, every Chinchilla term written out by hand.
    parts = forward_flops(TINY, 4)
    assert parts["embeddings"] == 2 * 4 * 10 * 8 == 640
    assert parts["kqv"] == 2 * 3 * 4 * 8 * 8 == 1536
    assert parts["attention_logits"] == 2 * 4 * 4 * 8 == 256
    assert parts["softmax"] == 3 * 2 * 4 * 4 == 96
    assert parts["reduction"] == 256
    assert parts["projection"] == 2 * 4 * 8 * 8 == 512
    assert parts["attention"] == 2656
    assert parts["dense"] == 2 * 4 * (8 * 32 + 32 * 8) == 4096
    assert parts["logits"] == 640
    assert parts["total"] == 640 + 2 * (2656 + 4096) + 640 == 14784
    no_vocab = forward_flops(TINY, 4, embeddings=False, logits=False, softmax=False)
    assert no_vocab["total"] == 2 * (2656 - 96 + 4096)


def test_rmt_flops_hand_calculation_for_each_memory_layout():
    # 10 tokens in segments of 4 -> 3 steps; memory 1: 4, 5 or 6 positions a step.
    full_counting = Counting(embeddings=True, logits=True, softmax=True, memory="read")
    per_step = {4: 14784, 5: 800 + 2 * (1920 + 400 + 150 + 400 + 640 + 5120) + 800}
    assert rmt_flops(TINY, 10, segment=4, mem=1, counting=full_counting) == 3 * per_step[5] == 56580
    assert rmt_flops(TINY, 10, segment=4, mem=1, counting=full_counting, memory="inside") == 3 * per_step[4]
    assert rmt_flops(TINY, 10, segment=4, mem=1, counting=full_counting, memory="read_write") == 3 * forward_flops(
        TINY, 6)["total"]
    assert full_flops(TINY, 4, full_counting) == 14784
    assert full_flops(TINY, 4, full_counting, special=1) == forward_flops(TINY, 5)["total"]


def test_rmt_grows_linearly_full_attention_quadratically():
    rmt = [rmt_flops("OPT-1.3B", 512 * n) for n in (1, 2, 4, 8)]
    assert [r // rmt[0] for r in rmt] == [1, 2, 4, 8]
    full = [full_flops("OPT-1.3B", 512 * n) for n in (1, 1024, 2048)]
    assert full[2] / full[1] > 3.8  # quadratic dominates at long inputs
    assert full_flops("OPT-1.3B", 512) == rmt[0]  # paper counting: one segment costs one 512-token pass


def test_paper_counting_reproduces_the_papers_ratios():
    ratio_175b = full_flops("OPT-175B", 2_048_000) / rmt_flops("OPT-175B", 2_048_000)
    assert abs(ratio_175b / paper.FLOPS_RATIOS["OPT-175B"] - 1) < 0.05
    # x295 is the OPT-125M ratio at 4096 segments x 512 = 2,097,152 tokens ("2048K") with the same counting.
    ratio_125m = full_flops("OPT-125M", 4096 * 512) / rmt_flops("OPT-125M", 4096 * 512)
    assert round(ratio_125m) == paper.FLOPS_RATIOS["OPT-125M"]
    chinchilla = full_flops("175b", 2_048_000, "chinchilla") / rmt_flops("175b", 2_048_000, counting="chinchilla")
    assert abs(chinchilla / 29 - 1) < 0.05


def test_opt_configs_have_about_their_named_size():
    for name, billions in (("OPT-125M", 0.125), ("OPT-1.3B", 1.3), ("OPT-13B", 13), ("OPT-175B", 175)):
        shape = flops.OPT_CONFIGS[name]
        params = shape.layers * (4 * shape.d_model ** 2 + 2 * shape.d_model * shape.ffn) + shape.vocab * shape.d_model
        assert abs(params / (billions * 1e9) - 1) < 0.1, name


def test_bad_names_raise():
    with pytest.raises(ValueError, match="unknown model"):
        flops.shape_of("OPT-7B")
    with pytest.raises(ValueError, match="memory layout"):
        rmt_flops("OPT-125M", 1024, memory="both")


def test_table_and_figure():
    rows = flops.flops_table(["OPT-125M", "OPT-175B"], tokens=(512, 2_048_000))
    assert len(rows) == 4 and set(rows[0]) >= {"model", "tokens", "full_flops", "rmt_flops", "ratio"}
    by = {(r["model"], r["tokens"]): r for r in rows}
    assert by[("OPT-125M", 512)]["ratio"] == pytest.approx(1.0)
    assert by[("OPT-125M", 2_048_000)]["ratio"] > 5 * by[("OPT-175B", 2_048_000)]["ratio"]
    figure = flops.flops_figure(rows)
    assert len(figure.data) == 2 * 3
    assert figure.layout.xaxis.type == "log" and figure.layout.yaxis.type == "log"


def test_flops_command_writes_json(tmp_path, capsys):
    from rmt_cli.main import main

    out = tmp_path / "flops.json"
    assert main(["flops", "--models", "125M,175B", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "OPT-175B" in printed and "2,048,000" in printed
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert {r["model"] for r in rows} == {"OPT-125M", "OPT-175B"}
    row = next(r for r in rows if r["model"] == "OPT-175B" and r["tokens"] == 2_048_000)
    assert row["ratio"] == pytest.approx(row["full_flops"] / row["rmt_flops"])
    assert data["counting"]["memory"] == "inside"
    assert main(["flops", "--json", "--models", "125M", "--tokens", "512,1024"]) == 0
    assert len(json.loads(capsys.readouterr().out)["rows"]) == 2
    assert main(["flops", "--models", "7B"]) == 1
