"""Export: every format opens as what it claims; trace and probe figures by name; `rmt export`; offline bertviz."""

from __future__ import annotations

import csv
import io
import json
import shutil
import xml.etree.ElementTree as ElementTree

import numpy as np
import plotly.graph_objects as go
import pytest

from conftest import make_tiny_rmt

from rmt_core.viz import bertviz_offline, export
from rmt_core.errors import ProbeError
from rmt_core.model import ROLE_MEMORY

HAS_CHROMIUM = any(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome"))
needs_chromium = pytest.mark.skipif(not HAS_CHROMIUM, reason="PNG/SVG/PDF export needs Chromium (apt-get install "
                                    "chromium); .ci/run installs it")


@pytest.fixture(scope="module")
def trace(tokenizer):
    from rmt_core.replay import RecordingPolicy, replay_in_memory
    from rmt_core.tasks import TaskBuilder

    model = make_tiny_rmt(tokenizer, segment_size=24, num_mem_tokens=4)
    sample = TaskBuilder("detect", tokenizer, 24).sample(3, seed=5)
    return replay_in_memory(model, sample, RecordingPolicy(full_attention_segments=[1]))


def small_figure():
    return go.Figure(go.Bar(x=["garden", "kitchen"], y=[0.25, 0.75], name="probability-bars"),
                     layout=dict(title="export check"))


@needs_chromium
def test_image_formats_open_as_what_they_claim(tmp_path):
    fig = small_figure()
    png = export.figure_bytes(fig, "png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    svg = export.figure_bytes(fig, "svg")
    root = ElementTree.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert "export check" in svg.decode("utf-8")
    pdf = export.figure_bytes(fig, "pdf")
    assert pdf.startswith(b"%PDF-") and b"%%EOF" in pdf[-1024:]
    written = export.write_figure(fig, tmp_path / "sub" / "figure.png")  # folder made, format from the suffix
    assert written.read_bytes().startswith(b"\x89PNG")
    assert not [p for p in written.parent.iterdir() if p.name.endswith(".tmp")]


@needs_chromium
def test_concurrent_image_exports_stay_apart():
    """The dashboard renders downloads on several threads at once; each must get its own format back."""
    from concurrent.futures import ThreadPoolExecutor

    fig = small_figure()
    formats = ["png", "svg", "pdf"] * 2
    with ThreadPoolExecutor(max_workers=len(formats)) as pool:
        outputs = list(pool.map(lambda fmt: export.figure_bytes(fig, fmt), formats))
    signatures = {"png": b"\x89PNG", "svg": b"<svg", "pdf": b"%PDF-"}
    assert [out[:len(signatures[fmt])] for fmt, out in zip(formats, outputs)] == [signatures[f] for f in formats]


def test_html_holds_the_figure_and_plotly_inline():
    html = export.figure_bytes(small_figure(), "HTML").decode("utf-8")
    assert html.lstrip().lower().startswith("<html") or html.lstrip().lower().startswith("<!doctype html")
    assert "probability-bars" in html and "export check" in html
    assert "Plotly.newPlot" in html
    assert 'src="http' not in html  # plotly.js is inlined: the page works offline


def test_unknown_formats_and_names_are_our_errors(tmp_path):
    with pytest.raises(export.ExportError, match="format"):
        export.figure_bytes(small_figure(), "gif")
    with pytest.raises(export.ExportError, match="cannot tell the format"):
        export.format_of(tmp_path / "figure")
    with pytest.raises(export.ExportError, match="folder"):
        export.write_bytes(tmp_path, b"x")


def test_table_csv_round_trips():
    rows = [{"segment": 0, "slot": "all", "accuracy": np.float32(0.5)}, {"segment": 1, "slot": 3, "extra": "x"}]
    parsed = list(csv.DictReader(io.StringIO(export.table_csv(rows))))
    assert list(parsed[0]) == ["segment", "slot", "accuracy", "extra"]
    assert parsed[0]["accuracy"] == "0.5" and parsed[1]["extra"] == "x" and parsed[1]["accuracy"] == ""


def test_every_trace_figure_and_table_builds(trace):
    for name, (_, per_segment) in export.TRACE_FIGURES.items():
        fig = export.trace_figure(trace, name, segment=1 if per_segment else None)
        assert fig.data, name
    read = export.trace_figure(trace, "read_attention", segment=2, layer=1, head=0)
    keep = np.flatnonzero(trace.roles(2) != 5)
    assert np.allclose(np.array(read.data[0].z), np.asarray(trace.read_attention(2), np.float32)[1, 0][keep].T)
    tokens = export.trace_table(trace, "tokens", segment=0)
    assert tokens[1]["role"] == "memory" and tokens[0]["token"] == "[CLS]"
    assert len(export.trace_table(trace, "memory_change")) == 3 * 4
    probabilities = export.trace_table(trace, "answer")
    assert np.isclose(sum(r["probability"] for r in probabilities), 1.0)
    assert sum(r["answer"] for r in probabilities) == 1
    assert export.fact_segments(trace) == [trace.metadata["facts"][0]["segment"]]


def test_trace_figure_errors_name_the_fix(trace):
    with pytest.raises(export.ExportError, match="out of range"):
        export.trace_figure(trace, "tokens", segment=3)
    with pytest.raises(export.ExportError, match="layer 7"):
        export.trace_figure(trace, "read_attention", segment=0, layer=7)
    with pytest.raises(export.ExportError, match="choose one of"):
        export.trace_figure(trace, "heatmap")


def test_results_figures_and_tables(tmp_path):
    results = {
        "probes": [{"target": "answer", "segment": t, "slot": s, "accuracy": 0.5, "ci_low": 0.4, "ci_high": 0.6,
                    "majority": 0.2, "control_accuracy": 0.3, "selectivity": 0.2} for t in range(2) for s in ("all", 0)],
        "ablation": [{"segment": 0, "slot": 0, "mode": "zeros", "accuracy": 0.4, "accuracy_drop": 0.1}],
        "patching": [],
    }
    (tmp_path / "results.json").write_text(json.dumps(results))
    loaded = export.read_results(tmp_path)
    from probes.figures import results_figure

    for name in ("probe_accuracy", "slots", "selectivity", "ablation"):
        assert results_figure(loaded, name).data
    assert results_figure(loaded, "ablation", mode="zeros").data
    with pytest.raises(ProbeError, match="no 'patching' rows"):
        results_figure(loaded, "patching")
    with pytest.raises(ProbeError, match="no 'ablation' rows with mode=mean"):
        results_figure(loaded, "ablation", mode="mean")
    assert export.results_table(loaded, "ablation")[0]["accuracy_drop"] == 0.1
    with pytest.raises(export.ExportError, match="does not exist"):
        export.read_results(tmp_path / "missing")


def test_rmt_export_command(trace, tmp_path, capsys):
    from rmt_cli.main import main

    folder = tmp_path / "trace"
    trace.save(folder)
    out = tmp_path / "figures"
    assert main(["export", "--trace", str(folder), "--figure", "write_attention", "--segment", "1",
                 "--out", str(out / "write.html")]) == 0
    html = (out / "write.html").read_text()
    assert "Write: memory attending to tokens (segment 1" in html
    assert main(["export", "--trace", str(folder), "--table", "tokens", "--segment", "-1",
                 "--out", str(out / "tokens.csv")]) == 0
    rows = list(csv.DictReader((out / "tokens.csv").open()))
    assert rows[0]["segment"] == "2" and rows[1]["role"] == "memory"
    assert main(["export", "--trace", str(folder), "--figure", "tokens", "--segment", "9",
                 "--out", str(out / "x.png")]) == 1
    assert "out of range" in capsys.readouterr().err
    assert main(["export", "--trace", str(folder), "--figure", "tokens", "--out", str(out / "x.gif")]) == 1
    assert main(["export", "--trace", str(folder), "--figure", "head_view", "--segment", "1",
                 "--out", str(out / "head.html")]) == 0
    assert "[mem 0]" in (out / "head.html").read_text()
    assert main(["export", "--trace", str(folder), "--figure", "head_view", "--segment", "0",
                 "--out", str(out / "head0.html")]) == 1
    assert "--full-attention 0" in capsys.readouterr().err


@needs_chromium
def test_rmt_export_command_images(trace, tmp_path):
    from rmt_cli.main import main

    folder = tmp_path / "trace"
    trace.save(folder)
    assert main(["export", "--trace", str(folder), "--figure", "memory_norms", "--format", "svg",
                 "--out", str(tmp_path / "norms.out")]) == 0
    assert ElementTree.parse(tmp_path / "norms.out").getroot().tag.endswith("svg")
    assert main(["export", "--trace", str(folder), "--figure", "read_attention", "--out", str(tmp_path / "r.pdf")]) == 0
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF-")


# ----- bertviz offline ---------------------------------------------------------------------------------------
def test_window_keeps_cls_memory_sep_and_tokens_around_the_fact(trace):
    roles = trace.roles(1)
    fact = int(np.flatnonzero(roles == 1)[0]) if (roles == 1).any() else None
    positions = bertviz_offline.window_positions(roles, "fact", width=6)
    m = trace.num_mem_tokens
    assert positions[:m + 2] == list(range(m + 2))
    assert len(positions) == m + 2 + 6
    if fact is not None:
        assert fact in positions
    assert all(roles[p] != 5 for p in positions)
    with pytest.raises(bertviz_offline.ViewerError):
        bertviz_offline.window_positions(roles, "middle")
    labels = bertviz_offline.view_tokens(trace.tokens(1), roles)
    assert [labels[p] for p in np.flatnonzero(roles == ROLE_MEMORY)] == [f"[mem {k}]" for k in range(m)]


def test_bertviz_views_are_offline_and_small():
    L, H, T, m = 12, 12, 512, 10
    rng = np.random.default_rng(0)
    attention = rng.random((L, H, T, T), dtype=np.float32).astype(np.float16)  # a 12-layer model at 512 tokens
    roles = np.zeros(T, dtype=np.int8)
    roles[0], roles[m + 1], roles[-1] = 3, 3, 3
    roles[1:m + 1] = ROLE_MEMORY
    roles[200:208] = 1
    tokens = [f"t{i}" for i in range(T)]
    html = bertviz_offline.head_view_html(attention, tokens, roles, layers=[0, 11], heads=[0, 1, 2])
    assert len(html) < 2_000_000  # the whole view would be hundreds of MB
    assert "cdnjs" not in html and 'src="http' not in html and "require.config" not in html
    assert "[mem 9]" in html and "t200" in html and "t400" not in html
    model_html = bertviz_offline.model_view_html(attention, tokens, roles, layers=[11], heads=[0, 5])
    assert len(model_html) < 2_000_000 and "cdnjs" not in model_html
    with pytest.raises(bertviz_offline.ViewerError, match="head 12"):
        bertviz_offline.head_view_html(attention, tokens, roles, heads=[12])
    with pytest.raises(bertviz_offline.ViewerError, match="too large"):
        bertviz_offline.head_view_html(attention, tokens, roles, positions=list(range(T)))


def test_javascript_libraries_ship_with_the_package(tmp_path, monkeypatch):
    monkeypatch.delenv("RMT_JS_DIR", raising=False)
    paths = bertviz_offline.js_library_paths()
    assert {p.parent for p in paths.values()} == {bertviz_offline.JS_DIR}
    assert paths["d3"].read_text(encoding="utf-8").startswith("// https://d3js.org v5.")
    assert all((bertviz_offline.JS_DIR / f"LICENSE.{name}.txt").is_file() for name in ("d3", "jquery"))
    (tmp_path / "d3.min.js").write_text("window.d3 = 'mine';")
    (tmp_path / "jquery.min.js").write_text("window.jQuery = 'mine';")
    monkeypatch.setenv("RMT_JS_DIR", str(tmp_path))  # a folder of the user's own copies comes first
    assert bertviz_offline.js_library_paths()["d3"] == tmp_path / "d3.min.js"


def test_missing_javascript_libraries_name_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("RMT_JS_DIR", str(tmp_path))
    monkeypatch.setattr(bertviz_offline, "JS_DIR", tmp_path / "vendor")
    with pytest.raises(bertviz_offline.ViewerError, match="reinstall rmt-lens"):
        bertviz_offline.js_library_paths()


def test_segment_attention_matches_the_replay(tokenizer, trace):
    """The views' attention, recomputed from memory_in(t), is the replay's full attention of that segment."""
    model = make_tiny_rmt(tokenizer, segment_size=24, num_mem_tokens=4)  # same seed: the traced model
    attention = bertviz_offline.segment_attention(model, trace, 1)
    assert attention.shape == np.asarray(trace.full_attention(1)).shape
    assert np.allclose(attention, np.asarray(trace.full_attention(1), dtype=np.float32), atol=2e-3)
    read = np.asarray(trace.read_attention(2), dtype=np.float32)
    m = trace.num_mem_tokens
    assert np.allclose(bertviz_offline.segment_attention(model, trace, 2)[..., 1:m + 1], read, atol=2e-3)
    other = make_tiny_rmt(tokenizer, segment_size=20, num_mem_tokens=4)
    with pytest.raises(bertviz_offline.ViewerError, match="not recorded with this checkpoint"):
        bertviz_offline.segment_attention(other, trace, 1)


def test_rmt_export_names_a_bad_trace_or_segment_before_a_missing_browser(trace, tmp_path, capsys, monkeypatch):
    from rmt_cli.main import main
    from rmt_core.viz import export

    folder = tmp_path / "trace"
    trace.save(folder)
    monkeypatch.setattr(export, "no_browser_reason", lambda: "no Chromium on this machine")
    png = str(tmp_path / "x.png")
    assert main(["export", "--trace", str(folder), "--figure", "tokens", "--segment", "9", "--out", png]) == 1
    assert "out of range" in capsys.readouterr().err
    assert main(["export", "--trace", str(tmp_path / "none"), "--figure", "tokens", "--out", png]) == 1
    assert "Chromium" not in capsys.readouterr().err
    assert main(["export", "--trace", str(folder), "--figure", "tokens", "--segment", "1", "--out", png]) == 1
    assert "PNG export needs Chromium: no Chromium on this machine" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
