"""Figures of probe results: pure functions from a results dict (`probes.run.run_probes`) to a plotly figure.

Nothing here loads a model or reads a file; the dashboard and `rmt probe` call the same builders.

    accuracy_by_segment   all-slot probe accuracy per segment, 95% CI band, majority and control lines
    slot_heatmap          accuracy (or selectivity) of each slot and of all slots, slot x segment
    aligned_curve         all-slot accuracy against segment - fact segment
    ablation_bars         accuracy drop (or logit change) per slot and mode, one panel per segment
    patching_curve        interchange intervention accuracy (or logit effect) per segment, per patched slots
    attention_heatmaps    write enrichment on fact tokens and [CLS] read mass on memory, layer x head
    all_figures           name -> figure for everything the results hold
    results_figure        one of RESULTS_FIGURES by name (what `rmt export --results` draws)

This is the one renderer of probe results: `rmt probe`, the dashboard's Probes page and `rmt export` use it.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from rmt_core.errors import ProbeError

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
MODE_COLOURS = {"mean": "#1f77b4", "zeros": "#d62728", "initial": "#2ca02c"}


def _rows(results: dict, key: str, **match) -> list[dict]:
    rows = [r for r in (results.get(key) or []) if all(r.get(k) == v for k, v in match.items())]
    if not rows:
        wanted = ", ".join(f"{k}={v}" for k, v in match.items())
        raise ProbeError(f"the results hold no '{key}' rows{' with ' + wanted if wanted else ''}; "
                         "run rmt probe with that stage enabled")
    return rows


def _targets(rows: list[dict], target: str | None) -> list[str]:
    names = list(dict.fromkeys(r["target"] for r in rows))
    if target is None:
        return names
    if target not in names:
        raise ProbeError(f"no probe rows for target {target!r}; the results hold {', '.join(names)}")
    return [target]


def rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _curve(fig, rows: list[dict], x_key: str, colour: str, name: str, row: int | None = None, col: int | None = None,
           legend: bool = True) -> None:
    """Accuracy line with its CI band, and the majority (dashed) and control (dotted) lines of the same rows."""
    rows = sorted(rows, key=lambda r: r[x_key])
    x = [r[x_key] for r in rows]
    fig.add_trace(go.Scatter(x=x + x[::-1], y=[r["ci_high"] for r in rows] + [r["ci_low"] for r in rows][::-1],
                             mode="lines", fill="toself", fillcolor=rgba(colour, 0.18), line=dict(width=0),
                             hoverinfo="skip",
                             showlegend=False), row=row, col=col)
    fig.add_trace(go.Scatter(x=x, y=[r["accuracy"] for r in rows], mode="lines+markers", name=f"{name} probe",
                             line=dict(color=colour, width=3), legendgroup=name, showlegend=legend,
                             customdata=[[r["ci_low"], r["ci_high"], r.get("n_test")] for r in rows],
                             hovertemplate="%{x}: %{y:.3f} [%{customdata[0]:.3f}, %{customdata[1]:.3f}], "
                                           "n=%{customdata[2]}<extra></extra>"), row=row, col=col)
    fig.add_trace(go.Scatter(x=x, y=[r["majority"] for r in rows], mode="lines", name=f"{name} majority",
                             line=dict(color=colour, dash="dash", width=1.5), legendgroup=name, showlegend=legend),
                  row=row, col=col)
    fig.add_trace(go.Scatter(x=x, y=[r["control_accuracy"] for r in rows], mode="lines", name=f"{name} control task",
                             line=dict(color=colour, dash="dot", width=1.5), legendgroup=name, showlegend=legend),
                  row=row, col=col)


def accuracy_by_segment(results: dict, target: str | None = None) -> go.Figure:
    """All-slot probe accuracy by segment: one panel per target (or the one asked for)."""
    rows = _rows(results, "probes", slot="all")
    names = _targets(rows, target)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, shared_yaxes=True)
    for i, name in enumerate(names):
        _curve(fig, [r for r in rows if r["target"] == name], "segment", COLOURS[i % len(COLOURS)], name, 1, i + 1)
        fig.update_xaxes(title_text="segment (memory written by)", dtick=1, row=1, col=i + 1)
    fig.update_yaxes(range=[0, 1.05], title_text="held-out accuracy", row=1, col=1)
    fig.update_layout(title="Linear probes on all memory slots: accuracy, majority (dashed), control task (dotted)",
                      height=420, width=max(520, 420 * len(names)), margin=dict(l=60, r=20, t=70, b=50))
    return fig


def slot_heatmap(results: dict, target: str = "answer", value: str = "accuracy") -> go.Figure:
    """Per-slot (and all-slot) probe accuracy or selectivity of one target, slots x segments."""
    if value not in ("accuracy", "selectivity", "control_accuracy"):
        raise ProbeError(f"unknown heatmap value {value!r}; choose accuracy, selectivity or control_accuracy")
    rows = _rows(results, "probes", target=target)
    segments = sorted({r["segment"] for r in rows})
    slots = sorted({r["slot"] for r in rows}, key=lambda s: -1 if s == "all" else int(s))
    grid = np.full((len(slots), len(segments)), np.nan)
    for r in rows:
        grid[slots.index(r["slot"]), segments.index(r["segment"])] = r[value]
    scale = dict(colorscale="Viridis", zmin=0, zmax=1) if value != "selectivity" else dict(colorscale="RdBu", zmid=0)
    fig = go.Figure(go.Heatmap(z=np.where(np.isnan(grid), None, grid).tolist(), x=segments,
                               y=["all slots" if s == "all" else f"slot {s}" for s in slots],
                               colorbar=dict(title=value.replace("_", " ")), **scale,
                               hovertemplate="segment %{x}, %{y}: %{z:.3f}<extra></extra>"))
    fig.update_layout(title=f"Probe {value.replace('_', ' ')} by slot and segment: {target}",
                      xaxis=dict(title="segment (memory written by)", dtick=1), yaxis=dict(autorange="reversed"),
                      height=260 + 20 * len(slots), margin=dict(l=80, r=20, t=60, b=50))
    return fig


def aligned_curve(results: dict, target: str | None = None) -> go.Figure:
    """All-slot probe accuracy against offset = segment - (last) fact segment; 0 is where the fact lands."""
    rows = _rows(results, "aligned")
    names = _targets(rows, target)
    fig = go.Figure()
    for i, name in enumerate(names):
        _curve(fig, [r for r in rows if r["target"] == name], "offset", COLOURS[i % len(COLOURS)], name)
    fig.add_vline(x=0, line=dict(color="#555555", dash="dash"), annotation_text="fact lands")
    fig.update_layout(title="Probes aligned to the fact: accuracy, majority (dashed), control task (dotted)",
                      xaxis=dict(title="segment - fact segment", dtick=1),
                      yaxis=dict(range=[0, 1.05], title="held-out accuracy"), height=420,
                      margin=dict(l=60, r=20, t=70, b=50))
    return fig


def ablation_bars(results: dict, metric: str = "accuracy_drop", segment: int | None = None,
                  mode: str | None = None) -> go.Figure:
    """Ablation effect per slot ('all' first), bars by mode (or the one asked for); one panel per segment (or the
    one asked for)."""
    if metric not in ("accuracy_drop", "logit_change", "accuracy"):
        raise ProbeError(f"unknown ablation metric {metric!r}; choose accuracy_drop, logit_change or accuracy")
    match = {k: v for k, v in (("segment", segment), ("mode", mode)) if v is not None}
    rows = _rows(results, "ablation", **match)
    segments = sorted({r["segment"] for r in rows})
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    fig = make_subplots(rows=len(segments), cols=1, shared_xaxes=True,
                        subplot_titles=[f"memory written by segment {t}" for t in segments],
                        vertical_spacing=min(0.08, 0.3 / max(1, len(segments))))
    for i, t in enumerate(segments):
        for mode in modes:
            part = sorted((r for r in rows if r["segment"] == t and r["mode"] == mode),
                          key=lambda r: -1 if r["slot"] == "all" else int(r["slot"]))
            fig.add_trace(go.Bar(x=["all" if r["slot"] == "all" else f"slot {r['slot']}" for r in part],
                                 y=[r[metric] for r in part], name=mode, legendgroup=mode, showlegend=i == 0,
                                 marker_color=MODE_COLOURS.get(mode)), row=i + 1, col=1)
        fig.update_yaxes(title_text=metric.replace("_", " "), row=i + 1, col=1)
    fig.update_layout(title=f"Ablation: {metric.replace('_', ' ')} when a slot is replaced (mean, zeros, initial)",
                      barmode="group", height=200 + 220 * len(segments), margin=dict(l=60, r=20, t=70, b=50))
    return fig


def patching_curve(results: dict, metric: str = "iia") -> go.Figure:
    """Interchange intervention accuracy (or normalised logit effect) against the segment patched."""
    if metric not in ("iia", "logit_effect", "b_prediction_rate"):
        raise ProbeError(f"unknown patching metric {metric!r}; choose iia, logit_effect or b_prediction_rate")
    rows = _rows(results, "patching")
    groups = sorted({str(r["slots"]) for r in rows}, key=lambda s: (s != "all", int(s) if s.isdigit() else 0, s))
    fig = go.Figure()
    for name in groups:
        part = sorted((r for r in rows if str(r["slots"]) == name), key=lambda r: r["segment"])
        fig.add_trace(go.Scatter(x=[r["segment"] for r in part], y=[r[metric] for r in part], mode="lines+markers",
                                 name="all slots" if name == "all" else f"slot {name}",
                                 line=dict(width=4 if name == "all" else 1.2, color="#000000" if name == "all" else None)))
    title = {"iia": "interchange intervention accuracy (answer becomes B's)",
             "logit_effect": "normalised logit effect", "b_prediction_rate": "answer becomes the model's answer on B"}
    fig.update_layout(title=f"Patching memory from B into A: {title[metric]}",
                      xaxis=dict(title="segment (memory written by)", dtick=1),
                      yaxis=dict(title=metric.replace("_", " "), range=[-0.05, 1.05] if metric != "logit_effect" else None),
                      height=420, margin=dict(l=60, r=20, t=70, b=50))
    return fig


def attention_heatmaps(results: dict) -> go.Figure:
    """Layer x head: write enrichment on fact tokens (fact segment) and [CLS] read mass on memory (last segment)."""
    attention = results.get("attention") or {}
    write, read = attention.get("write") or [], attention.get("read") or []
    if not write and not read:
        raise ProbeError("the results hold no attention read-outs; run rmt probe without --no-attention")
    panels = [(write, "enrichment", "write: fact / noise attention per token"),
              (read, "memory_mass", "read: [CLS] attention mass on memory")]
    panels = [p for p in panels if p[0]]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[2] for p in panels], horizontal_spacing=0.15)
    for i, (rows, key, _) in enumerate(panels):
        layers = sorted({r["layer"] for r in rows})
        heads = sorted({r["head"] for r in rows})
        grid = np.full((len(layers), len(heads)), np.nan)
        for r in rows:
            if r.get(key) is not None:
                grid[layers.index(r["layer"]), heads.index(r["head"])] = r[key]
        scale = dict(colorscale="RdBu_r", zmid=1.0) if key == "enrichment" else dict(colorscale="Viridis")
        fig.add_trace(go.Heatmap(z=np.where(np.isnan(grid), None, grid).tolist(), x=heads, y=layers,
                                 **scale, colorbar=dict(x=0.42 if i == 0 and len(panels) > 1 else 1.0,
                                                                     title=key.replace("_", " ")),
                                 hovertemplate="layer %{y}, head %{x}: %{z:.3f}<extra></extra>"), row=1, col=i + 1)
        fig.update_xaxes(title_text="head", dtick=1, row=1, col=i + 1)
        fig.update_yaxes(title_text="layer", dtick=1, autorange="reversed", row=1, col=i + 1)
    fig.update_layout(title="Attention read-outs", height=420, width=1000, margin=dict(l=60, r=20, t=70, b=50))
    return fig


def all_figures(results: dict) -> dict[str, go.Figure]:
    """Every figure the results can draw, by file name stem."""
    built: dict[str, go.Figure] = {}
    if any(r.get("slot") == "all" for r in results.get("probes") or []):
        built["accuracy_by_segment"] = accuracy_by_segment(results)
        for name in dict.fromkeys(r["target"] for r in results["probes"]):
            built[f"slot_heatmap_{name}"] = slot_heatmap(results, name)
            built[f"selectivity_heatmap_{name}"] = slot_heatmap(results, name, "selectivity")
    if results.get("aligned"):
        built["aligned"] = aligned_curve(results)
    if results.get("ablation"):
        built["ablation"] = ablation_bars(results)
    if results.get("patching"):
        built["patching"] = patching_curve(results)
    attention = results.get("attention") or {}
    if attention.get("write") or attention.get("read"):
        built["attention"] = attention_heatmaps(results)
    return built


RESULTS_FIGURES: dict[str, str] = {
    "probe_accuracy": "all-slot probe accuracy by segment, 95% interval, majority and control baselines",
    "slots": "probe accuracy of each slot and of all slots, slot x segment",
    "selectivity": "probe selectivity (accuracy - control accuracy), slot x segment",
    "aligned": "probe accuracy against the segment where the fact lands",
    "ablation": "answer accuracy drop when a slot is ablated, by mode",
    "patching": "interchange-intervention accuracy of memory patching",
    "attention": "write enrichment on fact tokens and [CLS] read mass on memory, layer x head",
}


def results_figure(results: dict, name: str, target: str | None = None, mode: str | None = None) -> go.Figure:
    """The figure `name` of RESULTS_FIGURES from a results dict; ProbeError naming what is missing."""
    if name not in RESULTS_FIGURES:
        raise ProbeError(f"unknown results figure {name!r}; choose one of {', '.join(RESULTS_FIGURES)}")
    if name == "probe_accuracy":
        return accuracy_by_segment(results, target)
    if name in ("slots", "selectivity"):
        first = target or _targets(_rows(results, "probes"), None)[0]
        return slot_heatmap(results, first, "accuracy" if name == "slots" else "selectivity")
    if name == "aligned":
        return aligned_curve(results, target)
    if name == "ablation":
        return ablation_bars(results, mode=mode)
    if name == "patching":
        return patching_curve(results)
    attention = results.get("attention") or {}
    if not (attention.get("write") or attention.get("read")):
        raise ProbeError("the results hold no attention read-outs; run rmt probe without --no-attention")
    return attention_heatmaps(results)
