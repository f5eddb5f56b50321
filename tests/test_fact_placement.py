"""scripts/fact_placement.py: a held-out reason story put before or after long noise, on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import load_script, make_tiny_rmt

SIZE = 32


@pytest.fixture(scope="module")
def placement():
    return load_script("fact_placement")


@pytest.fixture(scope="module")
def model(tokenizer):
    return make_tiny_rmt(tokenizer, segment_size=SIZE, num_mem_tokens=3, hidden=16, layers=1, heads=2, seed=3,
                         task="reason")


@pytest.fixture(scope="module")
def builder(tokenizer):
    from rmt_core.tasks import TaskBuilder

    return TaskBuilder("reason", tokenizer, SIZE, facts_behind=1.0)


def test_the_story_sits_where_the_placement_says(placement, builder):
    from rmt_core.evaluate import eval_sample_seed
    from rmt_core.tasks import ROLE_NOISE

    story, noise = placement.story_and_noise(builder, 20, 5)
    assert story.n_segments == placement.STORY and len(noise) == 20 - placement.STORY
    assert all(f.segment < placement.STORY - 1 for f in story.facts)  # both facts behind the question's segment
    assert all(len(segment) == SIZE for segment in noise)
    segments = story.segments()
    early = placement.placed_ids(story, noise, "early")
    late = placement.placed_ids(story, noise, "late")
    assert len(early) == len(late) == 20 * SIZE
    cut = (placement.STORY - 1) * SIZE
    assert early[:cut] == story.input_ids[:cut] and early[-SIZE:] == segments[-1]  # facts first, question last
    assert late[-placement.STORY * SIZE:] == story.input_ids  # the whole story closes the input
    assert early[cut:-SIZE] == late[:-placement.STORY * SIZE] == [t for s in noise for t in s]
    # the noise: segments of another sample (seed + 1) that hold noise only, in its order
    donor = builder.sample(20 - placement.STORY + 3, eval_sample_seed(1, 20, 5))
    clean = [donor.input_ids[t * SIZE:(t + 1) * SIZE] for t in range(donor.n_segments - 1)
             if set(donor.roles[t * SIZE:(t + 1) * SIZE]) == {ROLE_NOISE}]
    assert noise == clean[:len(noise)] and len(clean) >= len(noise)
    # at the story's own length both placements are the story itself
    short, none = placement.story_and_noise(builder, placement.STORY, 5)
    assert none == [] and placement.placed_ids(short, none, "early") == placement.placed_ids(short, none, "late")


def test_measure_counts_the_model_s_own_answers(placement, builder, model):
    from rmt_core.evaluate import predict_batch

    result = placement.measure(model, builder, 12, 6, "early", batch_size=4, progress=False)
    built = [placement.story_and_noise(builder, 12, i) for i in range(6)]
    ids = np.array([placement.placed_ids(s, n, "early") for s, n in built])
    answers = predict_batch(model, ids, 12, SIZE).argmax(-1).numpy()
    right = int((answers == [s.answer for s, _ in built]).sum())
    assert result["correct"] == right and result["samples"] == 6 and result["segments"] == 12
    assert result["wrong_indexes"] == [i for i, (s, _) in enumerate(built) if answers[i] != s.answer]
    assert result["ci_low"] <= result["accuracy"] <= result["ci_high"]
    # by where the asked place sits: each story counted once, under its own kind, right as the model answered it
    from rmt_core import babi

    kinds = [babi.relation_kind([f.text for f in s.facts], s.question) or "other" for s, _ in built]
    assert result["by_kind"] == {kind: {"samples": kinds.count(kind),
                                        "correct": sum(k == kind and answers[i] == s.answer
                                                       for i, (k, (s, _)) in enumerate(zip(kinds, built)))}
                                 for kind in sorted(set(kinds))}
    table = placement.kind_table([result])
    assert table.splitlines()[0].count('"') == 2 * len(set(kinds)) and "| 12 | early |" in table


def test_end_to_end_writes_its_json_and_refuses_bad_input(placement, model, tmp_path, capsys, tokenizer):
    from rmt_core.checkpoint import save_checkpoint

    folder = save_checkpoint(model, tmp_path / "tiny", tokenizer=model.tokenizer)
    out = tmp_path / "out" / "placement.json"
    argv = ["--checkpoint", str(folder), "--segments", "8,10", "--samples", "3", "--no-progress", "--json", str(out)]
    assert placement.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["format"] == "rmt-lens-fact-placement"
    assert [(r["segments"], r["placement"]) for r in result["results"]] == [
        (8, "early"), (8, "late"), (10, "early"), (10, "late")]
    assert result["results"][0]["correct"] == result["results"][1]["correct"]  # one input at the story's length
    assert "| 10 | late | 3 |" in capsys.readouterr().out
    assert placement.main(argv) == 0  # its own file is replaced
    out.write_text("{}")
    assert placement.main(argv) == 1 and "was not written by this script" in capsys.readouterr().err
    assert out.read_text() == "{}"
    assert placement.main(argv[:-1] + [str(tmp_path)]) == 1 and "is a folder" in capsys.readouterr().err
    other = tmp_path / "o2.json"
    for bad in (["--segments", "4"], ["--segments", "8,x"], ["--samples", "0"]):
        assert placement.main(argv[:-2] + bad + ["--json", str(other)]) == 1
    detect = save_checkpoint(make_tiny_rmt(tokenizer, segment_size=SIZE, task="detect"), tmp_path / "detect",
                             tokenizer=tokenizer)
    assert placement.main(["--checkpoint", str(detect), "--json", str(other)]) == 1
    err = capsys.readouterr().err
    assert "not a reason encoder checkpoint" in err and err.count("fact_placement: error:") == 4
    assert not other.exists() and not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_compare_pairs_two_files_story_by_story(placement, capsys, tmp_path):
    def file(wrong_late, wrong_early=(), **extra):
        rows = [{"placement": "late", "segments": 64, "samples": 10, "correct": 10 - len(wrong_late),
                 "wrong_indexes": list(wrong_late)},
                {"placement": "early", "segments": 64, "samples": 10, "correct": 10 - len(wrong_early),
                 "wrong_indexes": list(wrong_early)}]
        return {"format": "rmt-lens-fact-placement", "sources": {"babi_dir": None, "noise_file": None},
                "story_segments": 8, "seed": 0, "results": rows, **extra}

    rows = placement.compare(file([1, 2, 3, 4]), file([4, 5]))
    late = next(r for r in rows if r["placement"] == "late")
    assert (late["fixed"], late["broken"], late["correct"]) == (3, 1, (6, 8)) and late["p"] == 0.625
    paths = []
    for name, data in (("a", file([1, 2, 3, 4])), ("b", file([4, 5])), ("old", file([1]))):
        paths.append(tmp_path / f"{name}.json")
        if name == "old":
            for row in data["results"]:
                del row["wrong_indexes"]
        paths[-1].write_text(json.dumps(data))
    assert placement.main(["--compare", str(paths[0]), str(paths[1])]) == 0
    assert "| 64 | late | 10 | 6 | 8 | 3 | 1 | 0.62 |" in capsys.readouterr().out
    assert placement.main(["--compare", str(paths[0]), str(paths[2])]) == 1
    assert "keeps no per-story answers" in capsys.readouterr().err
    (tmp_path / "s.json").write_text(json.dumps(file([1], seed=1)))
    assert placement.main(["--compare", str(paths[0]), str(tmp_path / "s.json")]) == 1
    assert "differ in seed" in capsys.readouterr().err
    assert placement.main(["--compare", str(paths[0]), str(tmp_path / "none.json")]) == 1
    assert "does not exist" in capsys.readouterr().err
    broken = file([1])
    del broken["results"][0]["placement"]
    (tmp_path / "m.json").write_text(json.dumps(broken))
    assert placement.main(["--compare", str(paths[0]), str(tmp_path / "m.json")]) == 1
    assert "malformed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        placement.main(["--compare", str(paths[0]), str(paths[1]), "--json", str(tmp_path / "x.json")])


def test_figure_draws_every_file_and_kind_and_refuses_bad_paths(placement, capsys, tmp_path):
    def file(name, tallies):
        rows = [{"placement": "early", "segments": n, "samples": sum(t for _, t in kinds.values()),
                 "correct": sum(r for r, _ in kinds.values()), "wrong_indexes": [],
                 "by_kind": {k: {"correct": r, "samples": t} for k, (r, t) in kinds.items()}}
                for n, kinds in tallies]
        return {"format": "rmt-lens-fact-placement", "checkpoint": {"name": name}, "seed": 0, "results": rows}

    one = file("reason", [(8, {"both reference": (9, 10), "one": (5, 10)}), (64, {"both reference": (5, 10)})])
    curves = placement.curves("reason", one)
    assert {c["series"] for c in curves} == {"reason, early"}
    assert [(c["name"], c["points"]) for c in curves] == [
        ("reason, early", [(8, 14, 20), (64, 5, 10)]),
        ('reason, early: "both reference"', [(8, 9, 10), (64, 5, 10)]),
        ('reason, early: "one"', [(8, 5, 10)])]
    paths = []
    for index, data in enumerate((one, file("reason", [(8, {"one": (1, 2)})]))):
        paths.append(tmp_path / f"f{index}.json")
        paths[-1].write_text(json.dumps(data))
    out = tmp_path / "curve.html"
    assert placement.main(["--figure", str(out), *map(str, paths)]) == 0
    html = out.read_text()
    # both files drawn, the second under its file's name since both checkpoints are called reason; a panel a kind
    assert '"reason, early"' in html and '"f1, early"' in html and "coin toss" in html
    assert all(f'"text":"\\"{kind}\\""' in html for kind in ("both reference", "one"))
    assert placement.main(["--figure", str(out), str(paths[0])]) == 1  # never replaces a file
    assert "exists" in capsys.readouterr().err and out.read_text() == html
    for bad, message in (([str(tmp_path / "c.txt"), str(paths[0])], "give a .png"),
                         ([str(tmp_path / "no" / "c.png"), str(paths[0])], "does not exist"),
                         ([str(tmp_path / "c.html"), str(tmp_path / "none.json")], "does not exist")):
        assert placement.main(["--figure", *bad]) == 1
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        placement.main(["--figure", str(tmp_path / "c.html")])  # no file to draw
    assert not (tmp_path / "c.html").exists()


def test_figure_joins_the_parts_of_one_checkpoint_s_curve(placement, capsys, tmp_path):
    def file(digest, lengths):
        rows = [{"placement": "early", "segments": n, "samples": 10, "correct": 5, "wrong_indexes": [], "by_kind": {}}
                for n in lengths]
        return {"checkpoint": {"name": "reason", "sha256": digest}, "results": rows}

    named = placement.join_runs([("a.json", file("x", [8, 64])), ("b.json", file("x", [4096])),
                                 ("c.json", file("x", [64])), ("d.json", file("y", [4096]))])
    # b continues a's curve; c measures 64 again and d is another checkpoint of the same name: lines of their own
    assert [(name, [r["segments"] for r in data["results"]]) for name, data in named] == [
        ("reason", [8, 64, 4096]), ("c", [64]), ("d", [4096])]
    assert [c["points"] for c in placement.curves(*named[0])] == [[(8, 5, 10), (64, 5, 10), (4096, 5, 10)]]
    checkpoint = {"name": "reason", "sha256": "x"}
    for index, (checkpoint, row) in enumerate(((checkpoint, {"segments": 8}), (checkpoint, {"placement": "early"}),
                                               ("reason", file("x", [8])["results"][0]))):
        # rows the join cannot place (the second file makes it compare their lengths), a checkpoint not an object
        path = tmp_path / f"broken{index}.json"
        path.write_text(json.dumps({"format": "rmt-lens-fact-placement", "checkpoint": checkpoint, "results": [row]}))
        assert placement.main(["--figure", str(tmp_path / f"b{index}.html"), str(path), str(path)]) == 1
        assert "malformed" in capsys.readouterr().err and not (tmp_path / f"b{index}.html").exists()
