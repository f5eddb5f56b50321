"""Forward-pass FLOPs of a full-attention Transformer against RMT (the paper's Figure 3).

Counting: Hoffmann et al. 2022 ("Chinchilla"), appendix F, for one sequence of `s` positions, model width d,
h heads of size k (h * k = d here), feed-forward width f, vocabulary V, L layers:

    embeddings            2 s V d                    (a one-hot matmul; switch off to count a lookup as free)
    per layer, attention  KQV projections 2 * 3 s d (h k),  logits QK^T 2 s^2 (h k),  softmax 3 h s^2,
                          reduction (softmax @ V) 2 s^2 (h k),  output projection 2 s (h k) d
    per layer, dense      2 s (d f + f d)
    final logits          2 s d V
    forward               embeddings + L * (attention + dense) + final logits

A full-attention model reads the whole input of T tokens as one sequence (counted in closed form even where
it would not fit in any memory). RMT reads ceil(T / segment) segments of `segment` tokens; where its memory
tokens sit is an accounting choice (`memory`):

    "inside"      memory takes positions inside the segment's window: each step is a plain `segment`-position
                  pass (the encoder RMT's 512-position input, counted as 512 tokens a segment)
    "read"        each step reads segment + mem positions (memory once, as in the encoder RMT)
    "read_write"  each step reads segment + 2 mem positions (read and write memory, as in the decoder RMT)

`PAPER_COUNTING` (embeddings as a free lookup, logits counted, memory inside the window) reproduces the
paper's x29 for OPT-175B; docs/efficiency.md tabulates every choice and explains the x295.
All counts are exact Python integers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

MEMORY_LAYOUTS = ("inside", "read", "read_write")
OPT_VOCAB = 50272


@dataclass(frozen=True)
class ModelShape:
    """The sizes FLOPs depend on. `embed_dim`: width of the vocabulary projection when it differs from
    d_model (OPT-350M projects 1024 -> 512 before its logits and after its embeddings)."""

    name: str
    layers: int
    d_model: int
    heads: int
    ffn: int
    vocab: int = OPT_VOCAB
    embed_dim: int | None = None

    @property
    def key_size(self) -> int:
        return self.d_model // self.heads


# Zhang et al. 2022 (OPT), Table 1 and the released configs.
OPT_CONFIGS: dict[str, ModelShape] = {
    shape.name: shape
    for shape in (
        ModelShape("OPT-125M", 12, 768, 12, 3072),
        ModelShape("OPT-350M", 24, 1024, 16, 4096, embed_dim=512),
        ModelShape("OPT-1.3B", 24, 2048, 32, 8192),
        ModelShape("OPT-2.7B", 32, 2560, 32, 10240),
        ModelShape("OPT-6.7B", 32, 4096, 32, 16384),
        ModelShape("OPT-13B", 40, 5120, 40, 20480),
        ModelShape("OPT-30B", 48, 7168, 56, 28672),
        ModelShape("OPT-66B", 64, 9216, 72, 36864),
        ModelShape("OPT-175B", 96, 12288, 96, 49152),
    )
}


@dataclass(frozen=True)
class Counting:
    """The accounting choices of a FLOPs estimate (see the module docstring)."""

    embeddings: bool = True  # the input embedding as a matmul (Chinchilla) or a free lookup (False)
    logits: bool = True  # the final vocabulary logits
    softmax: bool = True  # 3 h s^2 per layer
    memory: str = "read"  # "inside", "read" or "read_write": positions a segment step adds for memory

    def to_dict(self) -> dict:
        return asdict(self)


CHINCHILLA_COUNTING = Counting(embeddings=True, logits=True, softmax=True, memory="read")
# Reproduces the paper's x29 (OPT-175B) at 2,048,000 tokens and x295 (OPT-125M) at 4096 x 512 tokens.
PAPER_COUNTING = Counting(embeddings=False, logits=True, softmax=True, memory="inside")
COUNTINGS = {"paper": PAPER_COUNTING, "chinchilla": CHINCHILLA_COUNTING}

# Paper Figure 3: 512 to 32,000 tokens (panel a) and 32,000 to 2,048,000 (panel b); plus 2^21 = 4096 x 512.
DEFAULT_TOKENS = (512, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000, 512000, 1024000, 2048000,
                  2097152)


def shape_of(model: str | ModelShape) -> ModelShape:
    """An OPT name ("OPT-125M", "125m", "opt-175b") or a ModelShape -> ModelShape."""
    if isinstance(model, ModelShape):
        return model
    key = str(model).strip().upper()
    key = key if key.startswith("OPT-") else f"OPT-{key}"
    for name, shape in OPT_CONFIGS.items():
        if name.upper() == key:
            return shape
    raise ValueError(f"unknown model {model!r}; choose one of {', '.join(OPT_CONFIGS)}")


def forward_flops(model: str | ModelShape, seq_len: int, *, embeddings: bool = True, logits: bool = True,
                  softmax: bool = True) -> dict[str, int]:
    """Forward FLOPs of one sequence of `seq_len` positions, by component (Chinchilla appendix F).

    Keys: embeddings, kqv, attention_logits, softmax, reduction, projection, attention (the five summed, one
    layer), dense (one layer), layers (L * (attention + dense)), logits, total.
    """
    m = shape_of(model)
    s, d, f, V = int(seq_len), m.d_model, m.ffn, m.vocab
    hk = m.heads * m.key_size
    e = m.embed_dim or d
    projection_in_out = 2 * s * e * d if e != d else 0  # OPT-350M's project_in / project_out
    parts = {
        "embeddings": (2 * s * V * e + projection_in_out) if embeddings else 0,
        "kqv": 2 * 3 * s * d * hk,
        "attention_logits": 2 * s * s * hk,
        "softmax": 3 * m.heads * s * s if softmax else 0,
        "reduction": 2 * s * s * hk,
        "projection": 2 * s * hk * d,
    }
    parts["attention"] = parts["kqv"] + parts["attention_logits"] + parts["softmax"] + parts["reduction"] + parts[
        "projection"]
    parts["dense"] = 2 * s * (d * f + f * d)
    parts["layers"] = m.layers * (parts["attention"] + parts["dense"])
    parts["logits"] = (2 * s * d * V if e == d else projection_in_out + 2 * s * e * V) if logits else 0
    parts["total"] = parts["embeddings"] + parts["layers"] + parts["logits"]
    return parts


def resolve_counting(counting: Counting | str | None = None, overrides: dict | None = None) -> Counting:
    """A Counting from a preset name ("paper", the default, or "chinchilla") or a Counting, with single
    choices overridden by `overrides` (None values ignored)."""
    if counting is None:
        counting = PAPER_COUNTING
    elif isinstance(counting, str):
        if counting not in COUNTINGS:
            raise ValueError(f"unknown counting {counting!r}; choose one of {', '.join(COUNTINGS)}")
        counting = COUNTINGS[counting]
    values = counting.to_dict()
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    if values["memory"] not in MEMORY_LAYOUTS:
        raise ValueError(f"unknown memory layout {values['memory']!r}; choose one of {', '.join(MEMORY_LAYOUTS)}")
    return Counting(**values)


def full_flops(model: str | ModelShape, tokens: int, counting: Counting | str | None = None, *,
               special: int = 0, **overrides) -> int:
    """Forward FLOPs of a full-attention model over all `tokens` at once (+ `special` positions such as
    [CLS]/[SEP]). `counting`: a Counting, "paper" (default) or "chinchilla"; keyword overrides
    (embeddings=, logits=, softmax=) change single choices."""
    c = resolve_counting(counting, overrides)
    return forward_flops(model, int(tokens) + special, embeddings=c.embeddings, logits=c.logits,
                         softmax=c.softmax)["total"]


def rmt_segments(tokens: int, segment: int = 512) -> int:
    """Segments RMT needs for `tokens`: ceil(tokens / segment)."""
    return -(-int(tokens) // int(segment))


def segment_positions(segment: int = 512, mem: int = 10, memory: str = "read", special: int = 0) -> int:
    """Positions one RMT step processes under a memory layout (see the module docstring)."""
    extra = {"inside": 0, "read": mem, "read_write": 2 * mem}
    if memory not in extra:
        raise ValueError(f"unknown memory layout {memory!r}; choose one of {', '.join(MEMORY_LAYOUTS)}")
    return int(segment) + extra[memory] + int(special)


def rmt_flops(model: str | ModelShape, tokens: int, segment: int = 512, mem: int = 10,
              counting: Counting | str | None = None, *, special: int = 0, **overrides) -> int:
    """Forward FLOPs of RMT over `tokens`: ceil(tokens / segment) steps of `segment_positions(...)` positions.

    `counting` as for `full_flops`, plus memory= "inside" | "read" | "read_write"; `special`: extra positions
    a step adds ([CLS], [SEP], [SEP] in the encoder RMT).
    """
    c = resolve_counting(counting, overrides)
    positions = segment_positions(segment, mem, c.memory, special)
    step = forward_flops(model, positions, embeddings=c.embeddings, logits=c.logits, softmax=c.softmax)["total"]
    return rmt_segments(tokens, segment) * step


def flops_table(models=None, tokens=DEFAULT_TOKENS, segment: int = 512, mem: int = 10,
                counting: Counting | str | None = None, **overrides) -> list[dict]:
    """Rows {model, tokens, full_flops, rmt_flops, ratio, segments} for every model and token count.

    models: OPT names or ModelShapes (default: all nine OPT configurations); ratio = full / RMT.
    """
    c = resolve_counting(counting, overrides)
    rows = []
    for model in (models or list(OPT_CONFIGS)):
        shape = shape_of(model)
        for n in tokens:
            full = full_flops(shape, n, c)
            rmt = rmt_flops(shape, n, segment, mem, c)
            rows.append({"model": shape.name, "tokens": int(n), "full_flops": full, "rmt_flops": rmt,
                         "ratio": full / rmt, "segments": rmt_segments(n, segment)})
    return rows


def ratio_grid(models=("OPT-125M", "OPT-175B"), tokens=(2_048_000, 2_097_152), segment: int = 512,
               mem: int = 10) -> list[dict]:
    """The full / RMT ratio under every combination of accounting choices (for docs/efficiency.md)."""
    rows = []
    for embeddings in (True, False):
        for logits in (True, False):
            for memory in MEMORY_LAYOUTS:
                c = Counting(embeddings=embeddings, logits=logits, softmax=True, memory=memory)
                for model in models:
                    for n in tokens:
                        ratio = full_flops(model, n, c) / rmt_flops(model, n, segment, mem, c)
                        rows.append({**c.to_dict(), "model": shape_of(model).name, "tokens": n, "ratio": ratio})
    return rows


def flops_figure(rows: list[dict]):
    """Paper Figure 3 from `flops_table` rows: forward FLOPs against input tokens per model, full attention
    (solid) and RMT (dashed), log-log; and the full / RMT ratio. Returns a plotly Figure."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                           subplot_titles=("Forward-pass FLOPs", "Full attention / RMT"))
    models = list(dict.fromkeys(row["model"] for row in rows))
    palette = qualitative.Plotly
    for i, model in enumerate(models):
        color = palette[i % len(palette)]
        mine = sorted((r for r in rows if r["model"] == model), key=lambda r: r["tokens"])
        x = [r["tokens"] for r in mine]
        figure.add_trace(go.Scatter(x=x, y=[float(r["full_flops"]) for r in mine], name=f"{model} full attention",
                                    legendgroup=model, mode="lines+markers", line=dict(color=color)), row=1, col=1)
        figure.add_trace(go.Scatter(x=x, y=[float(r["rmt_flops"]) for r in mine], name=f"{model} RMT",
                                    legendgroup=model, mode="lines+markers", line=dict(color=color, dash="dash")),
                         row=1, col=1)
        figure.add_trace(go.Scatter(x=x, y=[r["ratio"] for r in mine], name=f"{model} ratio", legendgroup=model,
                                    showlegend=False, mode="lines+markers", line=dict(color=color),
                                    hovertemplate="%{x:,} tokens: x%{y:.1f}<extra>" + model + "</extra>"),
                         row=1, col=2)
    for col in (1, 2):
        figure.update_xaxes(type="log", title_text="input tokens", row=1, col=col)
    figure.update_yaxes(type="log", title_text="FLOPs", exponentformat="power", row=1, col=1)
    figure.update_yaxes(type="log", title_text="full / RMT FLOPs", row=1, col=2)
    figure.update_layout(title="FLOPs of RMT (512-token segments) against full attention, OPT configurations",
                         template="plotly_white", legend=dict(font=dict(size=10)))
    return figure
