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
