"""The dashboard under Streamlit's AppTest: every page runs, the Replay slider changes the segment shown, bad
input shows a one-line error rather than a traceback. A tiny random checkpoint stands in for the shipped one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import make_tiny_rmt

pytest.importorskip("streamlit.testing.v1")
from streamlit.testing.v1 import AppTest  # noqa: E402

MAIN = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
PAGES = ["sections/replay.py", "sections/memory.py", "sections/probes.py", "sections/length.py", "sections/efficiency.py"]
TIMEOUT = 120  # the first run of a session imports torch and transformers


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    from rmt_core.checkpoint import save_checkpoint

    model = make_tiny_rmt(tokenizer, segment_size=24, num_mem_tokens=4, task="detect", trained_segments=3)
    folder = save_checkpoint(model, tmp_path_factory.mktemp("app") / "tiny", tokenizer=tokenizer)
    results = [{"segments": n, "tokens": 24 * n, "accuracy": 0.9 - 0.1 * i, "samples": 10}
               for i, n in enumerate((1, 2, 4))]
    (folder / "eval.json").write_text(json.dumps({"results": results, "task": "detect"}))
    return folder


@pytest.fixture
def app(checkpoint, monkeypatch):
    monkeypatch.setenv("RMT_CHECKPOINT", str(checkpoint))
    return AppTest.from_file(MAIN, default_timeout=TIMEOUT)


def charts(at) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def chart_titled(at, start: str) -> dict:
    found = [c for c in charts(at) if c["layout"].get("title", {}).get("text", "").startswith(start)]
    assert found, f"no chart titled {start!r}"
    return found[0]


def token_strip(at) -> str:
    """The HTML of the Replay page's token strip (it names its segment in data-rmt-segment)."""
    found = [h.proto.body for h in at.get("html") if "data-rmt-segment" in h.proto.body]
    assert len(found) == 1, f"{len(found)} token strips"
    return found[0]


def assert_clean(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_opens_on_the_default_checkpoint_with_a_ready_sample(app, checkpoint):
    at = app.run()
    assert_clean(at)
    assert at.sidebar.selectbox(key="checkpoint_choice").value == str(checkpoint)
    titles = [c["layout"]["title"]["text"] for c in charts(at)]
    fact = int(next(m.value for m in at.markdown if "Fact in segment" in m.value).split("**")[1])
    assert f"Segment {fact}: tokens and roles" in token_strip(at)  # the page opens on the fact's segment
    assert any(t.startswith("The whole run") for t in titles)
    assert any(t.startswith("Read: tokens attending to memory") for t in titles)
    assert any(t.startswith("Write: memory attending to tokens") for t in titles)
    assert any(t.startswith("Answer probabilities") for t in titles)
    assert any("Fact in segment" in m.value for m in at.markdown)
    views = at.get("iframe")
    assert len(views) == 1  # one bertviz view at a time: the head view, then the model view
    html = views[0].proto.srcdoc
    assert "bertviz head view" in html and "[mem 0]" in html and "cdnjs" not in html
    at.radio(key="bv_view").set_value("Model view").run()
    assert_clean(at)
    assert "bertviz model view" in at.get("iframe")[0].proto.srcdoc
    assert {b.proto.label for b in at.get("download_button")} >= {"PNG", "SVG", "PDF", "HTML"}
    at.toggle(key="tokens_table_shown").set_value(True).run()  # the token table, on request
    assert_clean(at)
    assert at.dataframe and "CSV" in {b.proto.label for b in at.get("download_button")}


def test_replay_slider_changes_the_segment_shown(app):
    at = app.run()
    slider = next(s for s in at.slider if s.label == "Segment")
    assert slider.max == 2  # detect, 3 segments (the checkpoint's trained length)
    start = slider.value
    other = 0 if start != 0 else 1
    before_strip = token_strip(at)
    before_read = chart_titled(at, "Read:")
    assert f'data-rmt-segment="{start}"' in before_strip
    slider.set_value(other).run()
    assert_clean(at)
    after_strip = token_strip(at)
    after_read = chart_titled(at, "Read:")
    assert f'data-rmt-segment="{other}"' in after_strip
    assert f"segment {other}" in after_read["layout"]["title"]["text"]
    assert after_strip.split("line-height")[-1] != before_strip.split("line-height")[-1]  # other tokens
    assert after_read["data"][0]["z"] != before_read["data"][0]["z"]  # other attention


def test_layer_and_head_choice_reaches_the_heatmap(app):
    at = app.run()
    at.selectbox(key="layer").set_value(1)
    at.selectbox(key="head").set_value(0).run()
    assert_clean(at)
    assert "layer 1, head 0" in chart_titled(at, "Read:")["layout"]["title"]["text"]


@pytest.mark.parametrize("page", PAGES[1:])
def test_every_page_runs_without_an_exception(app, page):
    at = app.run()
    at.switch_page(page).run()
    assert_clean(at)
    if page != "sections/probes.py":  # the probes page draws once a run is asked for
        assert charts(at), f"{page} drew no chart"


def test_memory_page_marks_the_fact_segment(app):
    at = app.run()
    at.switch_page("sections/memory.py").run()
    assert_clean(at)
    titles = [c["layout"]["title"]["text"] for c in charts(at)]
    assert any(t.startswith("Memory norms") for t in titles) and any("Which slots moved in segment" in t
                                                                      for t in titles)


def test_length_page_reads_the_checkpoint_eval(app):
    at = app.run()
    at.switch_page("sections/length.py").run()
    assert_clean(at)
    length = chart_titled(at, "Accuracy against input length")
    ours = [trace for trace in length["data"] if trace["name"].endswith("(eval.json)")]
    assert ours and ours[0]["x"] == [1, 2, 4]


def test_probes_page_runs_a_small_probe(app):
    at = app.run()
    at.switch_page("sections/probes.py").run()
    assert_clean(at)
    form = at.get("form")[0] if at.get("form") else None
    assert form is not None
    at.number_input[0].set_value(2)  # segments
    at.number_input[1].set_value(16)  # samples
    at.checkbox[0].set_value(False)  # no ablation/patching: keeps the test quick
    at.button[0].click().run()
    assert_clean(at)
    assert charts(at), "no probe figure"
    assert any("Answer accuracy on these samples" in m.value for m in at.markdown)


def test_bad_checkpoint_folder_shows_an_error_not_a_traceback(app, tmp_path):
    at = app.run()
    at.sidebar.selectbox(key="checkpoint_choice").set_value("Other folder…").run()
    at.sidebar.text_input(key="checkpoint_folder").set_value(str(tmp_path / "nowhere")).run()
    assert not at.exception
    assert any("does not exist" in e.value for e in at.error)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    at.sidebar.text_input(key="checkpoint_folder").set_value(str(tmp_path / "broken")).run()
    assert not at.exception
    assert any("not valid JSON" in e.value for e in at.error)


def test_empty_text_shows_an_error(app):
    at = app.run()
    at.sidebar.radio(key="input_kind").set_value("Paste text").run()
    assert_clean(at)  # the example text replays
    at.sidebar.text_area(key="text").set_value("   ").run()
    assert not at.exception
    assert any("the text is empty" in e.value for e in at.error)
    at.sidebar.text_area(key="text").set_value("Mary went to the office. The sun was out.")
    at.sidebar.text_input(key="question").set_value("").run()
    assert not at.exception
    assert any("the question is empty" in e.value for e in at.error)


def test_pasted_text_replays_on_every_page(app):
    at = app.run()
    at.sidebar.radio(key="input_kind").set_value("Paste text").run()
    assert_clean(at)
    assert "tokens and roles" in token_strip(at)  # the example text and question, no fact marked
    assert chart_titled(at, "The whole run")
    at.switch_page("sections/memory.py").run()
    assert_clean(at)
    assert any("chosen segment" in c["layout"]["title"]["text"] for c in charts(at))


def test_missing_default_checkpoint_is_explained(monkeypatch, tmp_path):
    monkeypatch.setenv("RMT_CHECKPOINT", str(tmp_path / "not-trained-yet"))
    monkeypatch.setattr("rmt_core.checkpoint.CHECKPOINTS_DIR", tmp_path / "no-shipped")
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT).run()
    assert not at.exception and not at.error
    assert any("is not there yet" in w.value for w in at.sidebar.warning)
    assert any("Choose a checkpoint folder" in i.value for i in at.info)
    at.switch_page("sections/efficiency.py").run()  # pages that need no checkpoint still work
    assert_clean(at)
    assert charts(at)


def test_rmt_app_serves_localhost_unless_told(tmp_path, capsys):
    from rmt_cli.main import main
    from rmt_cli.commands import app as command

    arguments = command.streamlit_arguments()
    assert arguments[:2] == ["run", MAIN]
    assert arguments[arguments.index("--server.address") + 1] == "127.0.0.1"
    assert arguments[arguments.index("--server.headless") + 1] == "true"
    wide = command.streamlit_arguments(host="0.0.0.0", port=9000)
    assert wide[wide.index("--server.address") + 1] == "0.0.0.0" and "9000" in wide
    assert main(["app", "--checkpoint", str(tmp_path / "none")]) == 1
    assert "not a checkpoint folder" in capsys.readouterr().err
    assert main(["app", "--trace", str(tmp_path / "none")]) == 1  # refused before the server starts
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "half").mkdir()
    assert main(["app", "--trace", str(tmp_path / "half")]) == 1
    assert "no manifest.json" in capsys.readouterr().err


# ----- trace folders (`rmt app --trace`, the sidebar's Trace folder) and the Record page ----------------------
LONG = 1000


@pytest.fixture(scope="module")
def long_trace(checkpoint, tmp_path_factory):
    """1,000 segments of detect replayed by the tiny checkpoint; attention for the edges and the fact segment,
    full attention for the fact segment only."""
    import torch

    from rmt_core.checkpoint import load_checkpoint
    from rmt_core.replay import RecordingPolicy, replay
    from rmt_core.tasks import TaskBuilder

    model = load_checkpoint(checkpoint, device="cpu")
    sample = TaskBuilder("detect", model.tokenizer, model.config.segment_size).sample(LONG, seed=11)
    fact = sample.facts[0].segment
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trace = replay(model, sample, out=tmp_path_factory.mktemp("long") / "trace", progress=False,
                       policy=RecordingPolicy(attention_budget_mib=0, full_attention_segments=[fact]))
    finally:
        torch.set_num_threads(threads)
    return trace.path, fact


@pytest.fixture
def trace_app(long_trace, checkpoint, monkeypatch):
    monkeypatch.setenv("RMT_CHECKPOINT", str(checkpoint))
    monkeypatch.setenv("RMT_TRACE", str(long_trace[0]))  # what `rmt app --trace` sets
    return AppTest.from_file(MAIN, default_timeout=TIMEOUT)


def click(at, label: str):
    found = [b for b in at.button if b.label == label]
    assert found, f"no button {label!r}: {[b.label for b in at.button]}"
    return found[0].click().run()


def test_a_trace_folder_opens_on_its_overview_and_fact_segment(trace_app, long_trace):
    path, fact = long_trace
    at = trace_app.run()
    assert_clean(at)
    assert at.sidebar.radio(key="input_kind").value == "Trace folder"
    overview = chart_titled(at, "The whole run")
    assert "bins of up to 3 segments" in overview["layout"]["title"]["text"]
    assert [s["x0"] for s in overview["layout"]["shapes"]] == [fact, LONG - 1]  # fact and question marked
    assert f'data-rmt-segment="{fact}"' in token_strip(at)
    assert f"segment {fact}" in chart_titled(at, "Read:")["layout"]["title"]["text"]
    assert "bertviz head view" in at.get("iframe")[0].proto.srcdoc  # the recorded full attention
    slots = chart_titled(at, f"Which slots moved in segment {fact}")
    assert len(slots["data"][0]["y"]) == 4  # one bar a memory slot of the tiny checkpoint
    # a segment without attention or full attention says so, and offers the nearest ones
    other = fact + 1 if fact + 1 < LONG - 2 else fact - 1
    at.number_input(key=next(n.key for n in at.number_input if n.label == "Go to segment")).set_value(other).run()
    assert_clean(at)
    assert f'data-rmt-segment="{other}"' in token_strip(at)
    assert any("were not kept" in i.value for i in at.info)
    assert any("did not record the full attention" in i.value for i in at.info)
    assert not at.get("iframe")
    assert chart_titled(at, f"Answer probabilities after segment {other}")
    at = click(at, f"question segment {LONG - 1}")
    assert_clean(at)
    assert f'data-rmt-segment="{LONG - 1}"' in token_strip(at)


def test_the_overview_zooms_to_single_segments(trace_app):
    at = trace_app.run()
    slider = next(s for s in at.slider if s.label == "Segments shown")
    slider.set_value((100, 160)).run()
    assert_clean(at)
    overview = chart_titled(at, "The whole run")
    assert overview["layout"]["xaxis"]["range"] == [99.5, 160.5]
    assert "bins" not in overview["layout"]["title"]["text"]  # one point a segment
    at = click(at, "Whole run")
    assert chart_titled(at, "The whole run")["layout"]["xaxis"]["range"] == [-0.5, LONG - 0.5]
    at.toggle(key="overview_log").set_value(True).run()
    assert_clean(at)
    assert chart_titled(at, "The whole run")["layout"]["yaxis"]["type"] == "log"  # the memory change row


def test_memory_page_of_a_long_trace_shows_a_window(trace_app, long_trace):
    at = trace_app.run()
    at.switch_page("sections/memory.py").run()
    assert_clean(at)
    assert any("states" in c.value and "of 1,001" in c.value for c in at.caption)
    norms = chart_titled(at, "Memory norms")
    assert len(norms["data"][0]["x"]) == 256  # a window of states, not the whole run
    assert chart_titled(at, "Which slots moved in segment")


def test_bad_trace_folders_are_one_line_errors(app, tmp_path):
    at = app.run()
    at.sidebar.radio(key="input_kind").set_value("Trace folder").run()
    assert not at.exception
    assert any("Name a trace folder" in i.value for i in at.info)
    at.sidebar.text_input(key="trace_folder").set_value(str(tmp_path / "nowhere")).run()
    assert not at.exception and any("does not exist" in e.value for e in at.error)
    (tmp_path / "x.partial-123").mkdir()
    at.sidebar.text_input(key="trace_folder").set_value(str(tmp_path / "x.partial-123")).run()
    assert not at.exception and any("unfinished replay" in e.value for e in at.error)


def wait_for_jobs(at, seconds: float = 400):
    """Rerun the app until no background replay of the session runs any more."""
    import time

    deadline = time.monotonic() + seconds
    while any(job.state() == "running" for job in at.session_state["replay_jobs"]):
        assert time.monotonic() < deadline, "the background replay did not finish"
        time.sleep(0.5)
    return at.run()


def test_record_page_replays_in_the_background_then_opens_the_trace(app, tmp_path):
    at = app.run()
    at.switch_page("sections/record.py").run()
    assert_clean(at)
    at.number_input(key="record_segments").set_value(30)
    out = tmp_path / "recorded"
    at.text_input(key="record_out").set_value(str(out))
    at = click(at, "Record in the background")
    assert_clean(at)
    assert len(at.session_state["replay_jobs"]) == 1
    at = wait_for_jobs(at)
    job = at.session_state["replay_jobs"][0] if at.session_state["replay_jobs"] else None
    assert job is None or job.state() == "done", job.error()
    at = at.run()  # the finished job opens its trace on the next run
    assert not at.exception
    assert (out / "manifest.json").is_file() and not list(tmp_path.glob("recorded.partial-*"))
    assert at.sidebar.radio(key="input_kind").value == "Trace folder"
    assert at.sidebar.text_input(key="trace_folder").value == str(out)
    at.switch_page("sections/replay.py").run()
    assert_clean(at)
    assert any("30 segments" in m.value for m in at.markdown)


def test_a_cancelled_background_replay_leaves_nothing(app, tmp_path):
    import time

    at = app.run()
    at.switch_page("sections/record.py").run()
    at.number_input(key="record_segments").set_value(200_000)
    out = tmp_path / "cancelled"
    at.text_input(key="record_out").set_value(str(out))
    at = click(at, "Record in the background")
    job = at.session_state["replay_jobs"][0]
    deadline = time.monotonic() + 120
    while not job.partial.exists():  # let it start writing, so there is something to clean up
        assert time.monotonic() < deadline and job.state() == "running", job.error()
        time.sleep(0.2)
    at = click(at, "Cancel")
    assert not at.exception
    assert job.state() == "cancelled"
    assert not out.exists() and not list(tmp_path.iterdir())
    assert any("cancelled" in i.value for i in at.sidebar.info)


def test_a_click_on_the_overview_names_a_bins_highest_point():
    import numpy as np

    from app.run_view import point_segment
    from rmt_core.trace_stats import envelope

    values = np.zeros(1000)
    values[437] = 5.0  # in bin 4 of 10 (segments 400..499)
    values[455] = -5.0
    binned = envelope(values, 0, 1000, 10)
    single = envelope(values, 430, 440, 10)
    rows = [("missing", None), ("binned", binned), ("single", single)]
    assert point_segment(rows, {"curve_number": 0, "point_index": 4, "x": 449.5}) == 437  # max line: highest
    assert point_segment(rows, {"curve_number": 1, "point_index": 4, "x": 449.5}) == 455  # min line: lowest
    assert point_segment(rows, {"curve_number": 0, "x": 452.0}) == 437  # no index: the nearest bin
    assert point_segment(rows, {"curve_number": 3, "point_index": 7, "x": 437}) == 437  # single segments
    assert point_segment(rows, {"x": 12.4}) == 12


def test_length_page_splits_eval_json_by_where_the_fact_was(checkpoint, tmp_path, monkeypatch):
    import shutil

    from rmt_core import evaluate
    from rmt_core.checkpoint import load_checkpoint

    # the module's eval.json does not say how its samples were drawn: the page says so, and offers no split
    monkeypatch.setenv("RMT_CHECKPOINT", str(checkpoint))
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT).run()
    at.switch_page("sections/length.py").run()
    assert_clean(at)
    assert any("cannot be split" in i.value and "seed" in i.value and "rmt eval --json" in i.value for i in at.info)
    assert not [b for b in at.button if b.key == "split_run"]

    # a real one (rmt eval's own results) is split: one curve per length and the pooled one
    folder = tmp_path / "tiny"
    shutil.copytree(checkpoint, folder)
    result = evaluate.evaluate(load_checkpoint(folder), "detect", [2, 4], 12, seed=3, progress=False)
    (folder / "eval.json").write_text(json.dumps(result))
    monkeypatch.setenv("RMT_CHECKPOINT", str(folder))
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT).run()
    at.switch_page("sections/length.py").run()
    at.radio(key="split_by_4").set_value("before").run()  # detect: the last fact's two axes, the noise's places
    at.number_input(key="split_least").set_value(1).run()
    at.button(key="split_run").click().run()
    assert_clean(at)
    split = chart_titled(at, "tiny: accuracy by segments of input before the last fact")
    names = [trace["name"] for trace in split["data"]]
    assert names == ["2 segments", "4 segments", "all lengths pooled"]
    pooled = split["data"][-1]
    assert sum(c[1] for c in pooled["customdata"]) == 24  # every sample of both lengths, once
    at.radio(key="split_by_4").set_value("places-after").run()
    assert_clean(at)
    split = chart_titled(at, "tiny: accuracy by bAbI place words in the noise after the last fact")
    assert sum(c[1] for c in split["data"][-1]["customdata"]) == 24
