"""Pure plotly figure builders: arrays and token lists in, a `plotly.graph_objects.Figure` out.

Nothing here loads a model or a trace; the dashboard and `rmt export` call the same functions. Shapes follow
a trace (SPEC section 5): T positions of a segment, m memory slots, d hidden size, L layers, H heads,
N segments, C classes.

    token_strip_figure      tokens and their roles                          tokens [T], roles [T]
    read_attention_figure   token queries onto memory keys                  [L, H, T, m]
    write_attention_figure  memory queries onto every key                   [L, H, m, T]
    answer_figure           the answer's class probabilities                logits [C]
    segment_answer_figure   the head's probabilities after every segment    [N, C]
    memory_norms_figure     norm of every slot across segments              states [N+1, m, d]
    memory_similarity_figure cosine similarity of memory between segments   states [N+1, m, d]
    memory_projection_figure 2-D (PCA) paths of the slots across segments   states [N+1, m, d]
    memory_change_figure    how far each slot moved in each segment         states [N+1, m, d]
    slot_change_figure      how far each slot moved in one segment (the fact's) states [N+1, m, d]
    overview_figure         the whole run: per-segment statistics in min/max bins  trace_stats.Envelope rows

Figures of probe results are drawn by their one renderer, `probes.figures`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from rmt_core.model import ROLE_FACT, ROLE_MEMORY, ROLE_NAMES, ROLE_NOISE, ROLE_PAD, ROLE_QUESTION, ROLE_SPECIAL

ROLE_COLOURS = {
    ROLE_NOISE: "#d9d9d9",
    ROLE_FACT: "#d62728",
    ROLE_QUESTION: "#1f77b4",
    ROLE_SPECIAL: "#555555",
    ROLE_MEMORY: "#9467bd",
    ROLE_PAD: "#ffffff",
}
ATTENTION_SCALE = "Viridis"
MAX_TICK_LABELS = 80  # beyond this many positions an axis shows position numbers, tokens stay in the hover


# ----- small helpers ---------------------------------------------------------------------------------------
def head_slice(attention: np.ndarray, layer: int | None = None, head: int | None = None) -> np.ndarray:
    """[L, H, A, B] attention -> [A, B]: one layer (None: mean over layers), one head (None: mean over heads)."""
    attention = np.asarray(attention, dtype=np.float32)
    if attention.ndim != 4:
        raise ValueError(f"attention must have shape [L, H, A, B], got {attention.shape}")
    layers = attention if layer is None else attention[layer : layer + 1]
    chosen = layers if head is None else layers[:, head : head + 1]
    return chosen.mean(axis=(0, 1))


def head_label(layer: int | None, head: int | None) -> str:
    """'layer 2, head 5', 'layer 2, mean of heads', 'mean of layers, head 0', 'mean of all layers and heads'."""
    if layer is None and head is None:
        return "mean of all layers and heads"
    left = "mean of layers" if layer is None else f"layer {layer}"
    right = "mean of heads" if head is None else f"head {head}"
    return f"{left}, {right}"


def visible_positions(roles: Sequence[int], keep_pad: bool = False) -> np.ndarray:
    """Indices of the positions a figure shows: every position but padding unless keep_pad."""
    roles = np.asarray(roles)
    return np.arange(len(roles)) if keep_pad else np.flatnonzero(roles != ROLE_PAD)


def _role_colourscale() -> list:
    """A stepwise colour scale over role codes 0..5 (a heatmap with zmin=-0.5, zmax=5.5)."""
    n = len(ROLE_NAMES)
    scale = []
    for code in range(n):
        scale.append([code / n, ROLE_COLOURS[code]])
        scale.append([(code + 1) / n, ROLE_COLOURS[code]])
    return scale


def _token_axis(fig: go.Figure, tokens: Sequence[str], positions: np.ndarray, row: int | None = None, col=None,
                labels: bool = True):
    """Label the x axis with tokens when there are few enough positions (and labels is true), else with position
    numbers (much quicker for a browser to draw: tokens stay in the hover)."""
    kwargs = {"row": row, "col": col} if row is not None else {}
    if labels and len(positions) <= MAX_TICK_LABELS:
        fig.update_xaxes(tickmode="array", tickvals=list(range(len(positions))),
                         ticktext=[str(tokens[p]) for p in positions], tickangle=-60, **kwargs)
    else:
        step = max(1, len(positions) // 16)
        fig.update_xaxes(tickmode="array", tickvals=list(range(0, len(positions), step)),
                         ticktext=[str(int(positions[i])) for i in range(0, len(positions), step)], **kwargs)


def _whole_numbers(fig: go.Figure, count: int, axis: str = "xaxis") -> None:
    """Ticks on whole numbers only (segments, memory states) while there are few of them."""
    if count <= 24:
        fig.update_layout({axis: dict(dtick=1, tick0=0)})


def _hover_tokens(tokens: Sequence[str], roles: Sequence[int], positions: np.ndarray) -> list[str]:
    return [f"pos {int(p)} · {tokens[p]} · {ROLE_NAMES[int(roles[p])]}" for p in positions]


def _role_legend(fig: go.Figure, roles_shown: np.ndarray) -> None:
    """Legend entries for the roles present (invisible points carrying the colours)."""
    for code in sorted(set(int(r) for r in roles_shown)):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=ROLE_NAMES[code], showlegend=True,
                                 marker=dict(size=10, symbol="square", color=ROLE_COLOURS[code]), hoverinfo="skip"))


def _check_tokens(tokens: Sequence[str], roles: Sequence[int], T: int, what: str) -> None:
    if len(tokens) != T or len(roles) != T:
        raise ValueError(f"{what}: {len(tokens)} tokens and {len(roles)} roles for {T} attention positions")


# ----- one segment -----------------------------------------------------------------------------------------
def token_strip_figure(tokens: Sequence[str], roles: Sequence[int], title: str = "Tokens and roles",
                       keep_pad: bool = False) -> go.Figure:
    """One row of coloured cells, one per position, coloured by role; the token and role in the hover."""
    _check_tokens(tokens, roles, len(tokens), "token strip")
    positions = visible_positions(roles, keep_pad)
    codes = np.asarray(roles)[positions]
    fig = go.Figure(go.Heatmap(
        z=[codes.tolist()], x=list(range(len(positions))), y=["role"],
        text=[_hover_tokens(tokens, roles, positions)], hovertemplate="%{text}<extra></extra>",
        colorscale=_role_colourscale(), zmin=-0.5, zmax=len(ROLE_NAMES) - 0.5, showscale=False, xgap=1,
        name="roles",
    ))
    _role_legend(fig, codes)
    _token_axis(fig, tokens, positions)
    fig.update_layout(title=title, height=230, margin=dict(l=40, r=20, t=60, b=90),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=1, xanchor="right"),
                      xaxis=dict(showgrid=False, zeroline=False), yaxis=dict(showticklabels=False))
    return fig


def _attention_figure(z: np.ndarray, tokens, roles, positions: np.ndarray, m: int, title: str,
                      hover_token_is: str, slot: str = "mem", token_labels: bool = True) -> go.Figure:
    """z: [m, len(positions)] attention of memory slots (rows) against token positions (columns); rows are
    named `{slot} k` ("mem", or a decoder's "read" / "write"); token_labels False: positions on the axis."""
    hover = _hover_tokens(tokens, roles, positions)
    text = [[f"{slot} slot {k} · {h}" for h in hover] for k in range(m)]
    codes = np.asarray(roles)[positions]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.86, 0.14], vertical_spacing=0.02)
    fig.add_trace(go.Heatmap(
        z=z, x=list(range(len(positions))), y=[f"{slot} {k}" for k in range(m)], text=text,
        hovertemplate=f"%{{text}}<br>{hover_token_is}<br>weight %{{z:.4f}}<extra></extra>",
        colorscale=ATTENTION_SCALE, zmin=0, colorbar=dict(title="weight", len=0.8, y=0.57), name="attention",
    ), row=1, col=1)
    fig.add_trace(go.Heatmap(
        z=[codes.tolist()], x=list(range(len(positions))), y=["role"], text=[hover],
        hovertemplate="%{text}<extra></extra>", colorscale=_role_colourscale(), zmin=-0.5,
        zmax=len(ROLE_NAMES) - 0.5, showscale=False, xgap=1, name="roles",
    ), row=2, col=1)
    _role_legend(fig, codes)
    _token_axis(fig, tokens, positions, row=2, col=1, labels=token_labels)
    fig.update_yaxes(showticklabels=False, row=2, col=1)
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    fig.update_layout(title=title, height=260 + 18 * m, margin=dict(l=60, r=20, t=60, b=90),
                      legend=dict(orientation="h", yanchor="bottom", y=1.01, x=1, xanchor="right"))
    return fig


# (map, architecture) -> (title, what a cell's hover says, the row name of a slot)
_MAP_TEXT = {
    ("read", "encoder"): ("Read: tokens attending to memory", "the token (query) reads this slot (key)", "mem"),
    ("read", "decoder"): ("Read: tokens attending to the read memory at the front",
                          "the token (query) reads this read slot (key)", "read"),
    ("write", "encoder"): ("Write: memory attending to tokens", "the slot (query) writes from this token (key)", "mem"),
    ("write", "decoder"): ("Write: the write memory at the end attending to tokens and read memory",
                           "the write slot (query) writes from this key", "write"),
}


def _map_figure(kind: str, architecture: str, z: np.ndarray, tokens, roles, positions: np.ndarray, m: int,
                layer: int | None, head: int | None, segment: int | None, token_labels: bool) -> go.Figure:
    """The read or write map of an encoder or decoder segment, titled and labelled for what it shows."""
    title, hover, slot = _MAP_TEXT[kind, "decoder" if architecture == "decoder" else "encoder"]
    where = "" if segment is None else f"segment {segment} · "
    return _attention_figure(z, tokens, roles, positions, m, f"{title} ({where}{head_label(layer, head)})", hover,
                             slot, token_labels)


def read_attention_figure(read_attention: np.ndarray, tokens: Sequence[str], roles: Sequence[int],
                          layer: int | None = None, head: int | None = None, segment: int | None = None,
                          keep_pad: bool = False, token_labels: bool = True,
                          architecture: str = "encoder") -> go.Figure:
    """Read attention [L, H, T, m] (every query position onto the memory keys) as memory slots x tokens; for a
    decoder, the keys are the read memory at the front of the segment (token_labels False: positions on the
    axis, tokens in the hover)."""
    read = np.asarray(read_attention)
    L, H, T, m = read.shape
    _check_tokens(tokens, roles, T, "read attention")
    positions = visible_positions(roles, keep_pad)
    z = head_slice(read, layer, head)[positions].T  # (m, T') slot k: how much each token reads from slot k
    return _map_figure("read", architecture, z, tokens, roles, positions, m, layer, head, segment, token_labels)


def write_attention_figure(write_attention: np.ndarray, tokens: Sequence[str], roles: Sequence[int],
                           layer: int | None = None, head: int | None = None, segment: int | None = None,
                           keep_pad: bool = False, token_labels: bool = True,
                           architecture: str = "encoder") -> go.Figure:
    """Write attention [L, H, m, T] (memory queries onto every key) as memory slots x tokens; for a decoder,
    the queries are the write memory at the end of the segment, its keys the read memory and the tokens
    (token_labels False: positions on the axis, tokens in the hover)."""
    write = np.asarray(write_attention)
    L, H, m, T = write.shape
    _check_tokens(tokens, roles, T, "write attention")
    positions = visible_positions(roles, keep_pad)
    z = head_slice(write, layer, head)[:, positions]  # (m, T')
    return _map_figure("write", architecture, z, tokens, roles, positions, m, layer, head, segment, token_labels)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def answer_figure(logits: np.ndarray, labels: Sequence[str], answer: int | None = None,
                  title: str = "Answer probabilities") -> go.Figure:
    """Bars of softmax(logits) [C]; the correct answer (when known) in green, the prediction outlined."""
    probs = softmax(np.asarray(logits).reshape(-1))
    predicted = int(np.argmax(probs))
    colours = ["#2ca02c" if answer is not None and k == answer else "#8c8c8c" for k in range(len(labels))]
    widths = [3 if k == predicted else 0 for k in range(len(labels))]
    fig = go.Figure(go.Bar(x=list(labels), y=probs.tolist(), marker=dict(color=colours, line=dict(width=widths,
                    color="#000000")), hovertemplate="%{x}: %{y:.3f}<extra></extra>", name="probability"))
    note = f"prediction: {labels[predicted]}"
    if answer is not None:
        note += f" · answer: {labels[answer]}"
    fig.update_layout(title=f"{title} ({note})", yaxis=dict(range=[0, 1], title="probability"), height=320,
                      margin=dict(l=60, r=20, t=60, b=40))
    return fig


def segment_answer_figure(segment_logits: np.ndarray, labels: Sequence[str], answer: int | None = None,
                          current: int | None = None) -> go.Figure:
    """Probability of each class from the head at every segment, segment_logits [N, C]."""
    probs = softmax(np.asarray(segment_logits), axis=-1)  # (N, C)
    N = probs.shape[0]
    fig = go.Figure()
    for k, label in enumerate(labels):
        is_answer = answer is not None and k == answer
        fig.add_trace(go.Scatter(x=list(range(N)), y=probs[:, k].tolist(), mode="lines+markers", name=label,
                                 line=dict(width=4 if is_answer else 1.5)))
    if current is not None:
        fig.add_vline(x=current, line_dash="dot", line_color="#444444")
    _whole_numbers(fig, N)
    fig.update_layout(title="The head's answer after each segment", xaxis_title="segment",
                      yaxis=dict(range=[0, 1], title="probability"), height=320, margin=dict(l=60, r=20, t=60, b=40))
    return fig


# ----- memory across segments ------------------------------------------------------------------------------
def _states(states: np.ndarray) -> np.ndarray:
    states = np.asarray(states, dtype=np.float64)
    if states.ndim != 3:
        raise ValueError(f"memory states must have shape [N+1, m, d], got {states.shape}")
    return states


def _mark_segments(fig: go.Figure, segments: Sequence[int] | None, label: str = "fact") -> None:
    for s in segments or ():
        fig.add_vline(x=s, line_dash="dash", line_color=ROLE_COLOURS[ROLE_FACT], annotation_text=label,
                      annotation_position="top")


def memory_norms_figure(states: np.ndarray, fact_segments: Sequence[int] | None = None, first: int = 0) -> go.Figure:
    """L2 norm of every slot: x = 0 (initial memory) .. N (memory after the last segment); states [N+1, m, d]
    (or a window of consecutive states whose first is state `first`)."""
    states = _states(states)
    norms = np.linalg.norm(states, axis=-1)  # (N+1, m)
    x = list(range(first, first + norms.shape[0]))
    fig = go.Figure()
    for k in range(norms.shape[1]):
        fig.add_trace(go.Scatter(x=x, y=norms[:, k].tolist(), mode="lines+markers" if len(x) <= 300 else "lines",
                                 name=f"mem {k}"))
    _mark_segments(fig, [s + 1 for s in fact_segments or () if first <= s + 1 < first + len(x)], "after fact")
    _whole_numbers(fig, norms.shape[0])
    fig.update_layout(title="Memory norms (0 = initial memory, t = after segment t-1)", xaxis_title="memory state",
                      yaxis_title="L2 norm", height=360, margin=dict(l=60, r=20, t=60, b=40))
    return fig


def cosine_matrix(states: np.ndarray) -> np.ndarray:
    """[N+1, N+1] cosine similarity between whole memory states (all slots flattened)."""
    flat = _states(states).reshape(len(states), -1)
    unit = flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
    return unit @ unit.T


def memory_similarity_figure(states: np.ndarray, first: int = 0) -> go.Figure:
    """Cosine similarity between the memory states (all slots flattened) of every pair of segments (states
    `first`, `first` + 1, ...)."""
    sim = cosine_matrix(states)
    n = sim.shape[0]
    axis = list(range(first, first + n))
    fig = go.Figure(go.Heatmap(z=sim.tolist(), x=axis, y=axis, colorscale="RdBu", zmid=0,
                               zmin=-1, zmax=1, hovertemplate="state %{y} vs %{x}: %{z:.3f}<extra></extra>",
                               colorbar=dict(title="cosine")))
    _whole_numbers(fig, n)
    _whole_numbers(fig, n, "yaxis")
    fig.update_layout(title="Cosine similarity of memory states", xaxis_title="memory state",
                      yaxis=dict(title="memory state", autorange="reversed"), height=420,
                      margin=dict(l=60, r=20, t=60, b=40))
    return fig


def pca_2d(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project points [P, d] on their first two principal components: (coords [P, 2], explained ratio [2])."""
    centred = points - points.mean(axis=0, keepdims=True)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:2].T
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    total = float((singular**2).sum()) or 1.0
    ratio = np.zeros(2)
    ratio[: min(2, len(singular))] = (singular[:2] ** 2) / total
    return coords, ratio


def memory_projection_figure(states: np.ndarray, first: int = 0) -> go.Figure:
    """Each slot's path through a 2-D PCA of all slot vectors of all states [N+1, m, d] (states `first`, ...)."""
    states = _states(states)
    n, m, d = states.shape
    coords, ratio = pca_2d(states.reshape(n * m, d))
    coords = coords.reshape(n, m, 2)
    fig = go.Figure()
    for k in range(m):
        fig.add_trace(go.Scatter(x=coords[:, k, 0].tolist(), y=coords[:, k, 1].tolist(), mode="lines+markers",
                                 name=f"mem {k}", text=[f"mem {k} · state {first + t}" for t in range(n)],
                                 hovertemplate="%{text}<extra></extra>",
                                 marker=dict(size=[10] + [6] * (n - 1), symbol=["diamond"] + ["circle"] * (n - 1))))
    fig.update_layout(title=f"Memory slots in 2-D (PCA, {100 * ratio.sum():.0f}% of variance; diamond = initial)",
                      xaxis_title=f"PC1 ({100 * ratio[0]:.0f}%)", yaxis_title=f"PC2 ({100 * ratio[1]:.0f}%)",
                      height=420, margin=dict(l=60, r=20, t=60, b=40))
    return fig


def memory_change(states: np.ndarray) -> np.ndarray:
    """[N, m] relative change of each slot in each segment: |M_out - M_in| / |M_in|."""
    states = _states(states)
    before, after = states[:-1], states[1:]
    return np.linalg.norm(after - before, axis=-1) / np.maximum(np.linalg.norm(before, axis=-1), 1e-12)


def memory_change_figure(states: np.ndarray, fact_segments: Sequence[int] | None = None, first: int = 0) -> go.Figure:
    """Heatmap of how far each slot moved in each segment (segments x slots), fact segments marked; with
    `first`, the states are a window starting at state `first` (its segments are first, first + 1, ...)."""
    change = memory_change(states)  # (N, m)
    N, m = change.shape
    fig = go.Figure(go.Heatmap(z=change.T.tolist(), x=list(range(first, first + N)), y=[f"mem {k}" for k in range(m)],
                               colorscale="Magma", colorbar=dict(title="|Δ|/|M|"),
                               hovertemplate="segment %{x} · %{y}: %{z:.3f}<extra></extra>"))
    _mark_segments(fig, [s for s in fact_segments or () if first <= s < first + N])
    _whole_numbers(fig, N)
    fig.update_layout(title="Which slots moved: relative change of each slot in each segment", xaxis_title="segment",
                      yaxis=dict(autorange="reversed"), height=260 + 18 * m, margin=dict(l=60, r=20, t=60, b=40))
    return fig


def slot_change_figure(states: np.ndarray | None, segment: int, label: str = "the fact's segment",
                       change: np.ndarray | None = None) -> go.Figure:
    """Bars: how far each slot moved in `segment`, beside its mean move over the other segments; states [N+1, m, d]
    (or, instead of states, the relative change [N, m] itself, e.g. `trace_stats(...).slot_change`)."""
    change = memory_change(states) if change is None else np.asarray(change, dtype=np.float64)  # (N, m)
    N, m = change.shape
    if not 0 <= segment < N:
        raise ValueError(f"segment {segment} is out of range 0..{N - 1}")
    others = np.delete(change, segment, axis=0)
    slots = [f"mem {k}" for k in range(m)]
    fig = go.Figure(go.Bar(x=slots, y=change[segment].tolist(), name=f"segment {segment} ({label})",
                           marker_color=ROLE_COLOURS[ROLE_FACT]))
    if len(others):
        fig.add_trace(go.Bar(x=slots, y=others.mean(axis=0).tolist(), name="mean of the other segments",
                             marker_color="#8c8c8c"))
    fig.update_layout(title=f"Which slots moved in segment {segment} ({label})", barmode="group",
                      yaxis_title="|Δ|/|M|", height=340, margin=dict(l=60, r=20, t=60, b=40),
                      legend=dict(orientation="h", y=1.12, x=1, xanchor="right"))
    return fig


# ----- the whole run: per-segment statistics in bins (rmt_core.trace_stats) -----------------------------------
OVERVIEW_COLOURS = ("#9467bd", "#1f77b4", "#2ca02c", "#ff7f0e", "#8c564b", "#17becf")


def _translucent(colour: str, alpha: float) -> str:
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def overview_figure(rows: Sequence[tuple], fact_segments: Sequence[int] = (), question_segments: Sequence[int] = (),
                    current: int | None = None, span: tuple[int, int] | None = None,
                    title: str = "The whole run", log_rows: Sequence[int] = ()) -> go.Figure:
    """Stacked rows sharing the segment axis, one per statistic: rows are (name, envelope) pairs, an envelope
    (`trace_stats.Envelope`: bins with first, last, low, high, mean, low_at, high_at) or None for a statistic
    the trace lacks. Binned rows draw the band from each bin's min to its max (so a one-segment spike stays
    visible) and the bin mean; single-segment bins draw the values. Fact segments (red), question segments
    (blue) and the `current` segment (dotted) are marked across all rows; `span` is the (first, last) segment
    shown; log_rows: indexes of rows drawn on a log scale."""
    n_rows = max(1, len(rows))
    fig = make_subplots(rows=n_rows, cols=1, shared_xaxes=True, vertical_spacing=0.035,
                        subplot_titles=[name for name, _ in rows])
    widest = 1
    for i, (name, env) in enumerate(rows, start=1):
        colour = OVERVIEW_COLOURS[(i - 1) % len(OVERVIEW_COLOURS)]
        if env is None or not len(env.first):
            fig.add_annotation(text="not recorded in this trace", x=0.5, y=0.5, xref=f"x{i} domain" if i > 1
                               else "x domain", yref=f"y{i} domain" if i > 1 else "y domain", showarrow=False,
                               font=dict(color="#777777"))
            continue
        first, last = np.asarray(env.first), np.asarray(env.last)
        widest = max(widest, int((last - first).max()) + 1)
        if env.binned:  # numpy arrays: plotly sends them as compact typed arrays
            centre = ((first + last) / 2).astype(np.float32)
            high, low = np.asarray(env.high, np.float32), np.asarray(env.low, np.float32)
            data = np.stack([first, last, env.high_at, env.low_at, low], axis=1).astype(np.float32)  # exact ints
            # invisible markers: a line alone cannot be clicked (selected), a point can
            fig.add_trace(go.Scatter(x=centre, y=high, mode="lines+markers", name=f"{name} max",
                                     line=dict(color=colour, width=1), marker=dict(size=6, opacity=0),
                                     customdata=data, showlegend=False,
                                     hovertemplate=f"{name}<br>segments %{{customdata[0]:.0f}}–%{{customdata[1]:.0f}}"
                                                   "<br>max %{y:.4g} (segment %{customdata[2]:.0f})<br>"
                                                   "min %{customdata[4]:.4g} (segment %{customdata[3]:.0f})"
                                                   "<extra></extra>"),
                          row=i, col=1)
            fig.add_trace(go.Scatter(x=centre, y=low, mode="lines", name=f"{name} min", hoverinfo="skip",
                                     line=dict(color=colour, width=1), fill="tonexty",
                                     fillcolor=_translucent(colour, 0.35), showlegend=False), row=i, col=1)
            fig.add_trace(go.Scatter(x=centre, y=np.asarray(env.mean, np.float32), mode="lines", hoverinfo="skip",
                                     name=f"{name} mean", line=dict(color=colour, width=1.5), showlegend=False),
                          row=i, col=1)
        else:
            fig.add_trace(go.Scatter(x=first.astype(np.int32), y=np.asarray(env.mean, np.float32), name=name,
                                     mode="lines+markers" if len(first) <= 400 else "lines",
                                     line=dict(color=colour, width=1.5), marker=dict(size=5), showlegend=False,
                                     hovertemplate=f"{name}<br>segment %{{x}}: %{{y:.4g}}<extra></extra>"),
                          row=i, col=1)
    lo, hi = span if span is not None else (0, None)
    marks = [(s, ROLE_COLOURS[ROLE_FACT], "dash", "fact", "right") for s in fact_segments] + \
            [(s, ROLE_COLOURS[ROLE_QUESTION], "dash", "question", "right") for s in question_segments]
    if current is not None:  # last, so a caller can move it (shapes[-1], annotations[-1])
        marks.append((current, "#222222", "dot", f"segment {current}", "left"))
    for i, (at, colour, dash, label, side) in enumerate(marks):
        if (at < lo or (hi is not None and at > hi)) and not (current is not None and i == len(marks) - 1):
            continue  # (the current segment's marker is always there, off the shown range if need be)
        fig.add_shape(type="line", x0=at, x1=at, xref="x", y0=0, y1=1, yref="paper",
                      line=dict(color=colour, dash=dash, width=1.5))
        fig.add_annotation(x=at, xref="x", y=1.0, yref="paper", yanchor="bottom", xanchor=side, text=label,
                           showarrow=False, font=dict(size=10, color=colour))
    if span is not None:
        fig.update_xaxes(range=[span[0] - 0.5, span[1] + 0.5])
    for i in log_rows:
        fig.update_yaxes(type="log", row=i + 1, col=1)
    fig.update_xaxes(title_text="segment", row=n_rows, col=1)
    note = f" (bins of up to {widest} segments: band = min to max, line = mean)" if widest > 1 else ""
    # fixed axes: a drag neither pans nor zooms the bins client-side; a click picks a point, and the box-select
    # tool picks a range of segments (a caller redraws that range from the statistics)
    fig.update_xaxes(fixedrange=True)
    fig.update_yaxes(fixedrange=True)
    fig.update_layout(title=f"{title}{note}", height=120 + 150 * n_rows, margin=dict(l=60, r=20, t=80, b=40),
                      selectdirection="h", hovermode="closest")
    return fig
