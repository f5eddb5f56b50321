"""The dashboard on a decoder checkpoint: every page runs; the Replay page shows the read map (tokens onto the
read memory at the front) and the write map (the write memory at the end), the generated answer, and bertviz
views with both blocks of slots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import save_tiny_decoder

pytest.importorskip("streamlit.testing.v1")
from streamlit.testing.v1 import AppTest  # noqa: E402

MAIN = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
PAGES = ["sections/replay.py", "sections/memory.py", "sections/probes.py", "sections/length.py", "sections/efficiency.py"]


@pytest.fixture(scope="module")
def decoder_checkpoint(tmp_path_factory, tokenizer):
    return save_tiny_decoder(tokenizer, tmp_path_factory.mktemp("app") / "qa1_tiny")


@pytest.fixture
def app(decoder_checkpoint, monkeypatch):
    monkeypatch.setenv("RMT_CHECKPOINT", str(decoder_checkpoint))
    return AppTest.from_file(MAIN, default_timeout=120)


def test_the_replay_page_labels_read_and_write_memory(app):
    at = app.run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    assert at.sidebar.selectbox(key=f"task_{at.sidebar.selectbox(key='checkpoint_choice').value}").value == "qa1"
    specs = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    by_title = {c["layout"]["title"]["text"].split(" (")[0]: c for c in specs}
    read = by_title["Read: tokens attending to the read memory at the front"]
    write = by_title["Write: the write memory at the end attending to tokens and read memory"]
    assert read["data"][0]["y"][0] == "read 0" and write["data"][0]["y"][0] == "write 0"
    assert any("generated answer" in m.value for m in at.markdown)
    html = at.get("iframe")[0].proto.srcdoc
    assert "[read 0]" in html and "[write 0]" in html


@pytest.mark.parametrize("page", PAGES[1:])
def test_every_page_runs_on_a_decoder(app, page):
    at = app.run()
    at.switch_page(page).run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    if page == "sections/probes.py":  # the probes page offers the decoder's own tasks
        assert at.selectbox[0].options == ["qa1", "qa2"]
