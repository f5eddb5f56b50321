"""bertviz head and model views of one segment that work offline and stay small.

bertviz's HTML loads require.js, d3 and jQuery from a CDN (blank without a network) and embeds the full
[L, H, T, T] attention as JSON (hundreds of MB for a 12-layer model at 512 tokens). Here:

- d3 and jQuery ship with the package (rmt_core/vendor/, with their licences; env RMT_JS_DIR may name another
  folder holding d3.min.js and jquery.min.js) and are inlined into the page; a three-line stand-in for
  require.js hands them to bertviz's own script, whose CDN configuration is removed;
- the view shows a window of positions: [CLS], the memory tokens (labelled `[mem k]`), the first [SEP] and a
  window of tokens around the fact or the question, for chosen layers and heads; weights rounded to 3 decimals.
  A decoder's segment shows its read memory (`[read k]`), the window and its write memory (`[write k]`).

The attention inside the window is the model's (rows are not renormalised), so a row sums to less than 1 when
part of its attention falls outside the window.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rmt_core.errors import RMTError
from rmt_core.layout import ROLE_FACT, ROLE_MEMORY, ROLE_PAD, ROLE_QUESTION

JS_DIR = Path(__file__).resolve().parents[1] / "vendor"  # package data of rmt_core: in a wheel and in the source tree
LIBRARIES = {"jquery": "jquery.min.js", "d3": "d3.min.js"}
DEFAULT_WINDOW = 32  # tokens around the centre, besides [CLS], memory and [SEP]
MAX_POSITIONS = 160  # a larger view is refused: its HTML grows with the square of the positions

# bertviz's scripts call require.config(...) then requirejs([...], fn); this stand-in resolves the inlined globals.
_REQUIRE_STANDIN = (
    "window.require = window.require || {config: function () {}};\n"
    "window.requirejs = function (names, run) {\n"
    "  var libs = {jquery: window.jQuery, d3: window.d3};\n"
    "  run.apply(null, names.map(function (name) { return libs[name]; }));\n"
    "};\n"
)
_CDN_SCRIPT = re.compile(r"<script\s+src=\"https?://[^\"]*\"\s*>\s*</script>")
_REQUIRE_CONFIG = re.compile(r"require\.config\(\{.*?\}\);", re.DOTALL)


class ViewerError(RMTError):
    """The bertviz views cannot be built (JavaScript libraries not installed, bad window or heads)."""


# ----- the JavaScript libraries, shipped in rmt_core/vendor -------------------------------------------------
def js_dirs() -> list[Path]:
    """Folders searched for d3.min.js and jquery.min.js: $RMT_JS_DIR, then rmt_core/vendor."""
    dirs = []
    if os.environ.get("RMT_JS_DIR"):
        dirs.append(Path(os.environ["RMT_JS_DIR"]))
    dirs.append(JS_DIR)
    return dirs


def js_library_paths() -> dict[str, Path]:
    """Name -> file of each library the views inline; ViewerError naming the fix when one is missing."""
    for folder in js_dirs():
        paths = {name: folder / file for name, file in LIBRARIES.items()}
        if all(p.is_file() for p in paths.values()):
            return paths
    searched = ", ".join(str(d) for d in js_dirs())
    raise ViewerError(
        f"the bertviz views need d3.min.js and jquery.min.js (searched {searched}); reinstall rmt-lens, "
        "whose rmt_core/vendor holds them (or set RMT_JS_DIR to a folder holding both)"
    )


def _script(source: str) -> str:
    return "<script>\n" + source.replace("</script", "<\\/script") + "\n</script>\n"


def _inline_libraries() -> str:
    paths = js_library_paths()
    return "".join(_script(paths[name].read_text(encoding="utf-8")) for name in LIBRARIES) + _script(_REQUIRE_STANDIN)


# ----- which positions to show ---------------------------------------------------------------------------
def _memory_blocks(roles) -> list[np.ndarray]:
    """The runs of consecutive memory positions: one for the encoder, two (read, then write) for a decoder."""
    memory = np.flatnonzero(np.asarray(roles) == ROLE_MEMORY)
    if not len(memory):
        return []
    return np.split(memory, np.flatnonzero(np.diff(memory) > 1) + 1)


def view_tokens(tokens: Sequence[str], roles: Sequence[int]) -> list[str]:
    """Tokens with the memory positions labelled `[mem k]`; a decoder's as `[read k]` and `[write k]`."""
    labelled = [str(token) for token in tokens]
    blocks = _memory_blocks(roles)
    names = ["mem"] if len(blocks) == 1 else ["read", "write"] + ["mem"] * max(0, len(blocks) - 2)
    for name, block in zip(names, blocks):
        for k, p in enumerate(block):
            labelled[p] = f"[{name} {k}]"
    return labelled


def window_positions(roles: Sequence[int], centre: str | int = "fact", width: int = DEFAULT_WINDOW) -> list[int]:
    """Positions a view shows: the leading [CLS], memory and [SEP], plus `width` tokens around the centre.

    centre: "fact" (the first fact token of the segment, else the question, else the first token), "question",
    "start", or a position index. Padding is never shown.
    """
    roles = np.asarray(roles)
    if width < 1:
        raise ViewerError(f"the window must hold at least one token, got {width}")
    blocks = _memory_blocks(roles)
    tail: list[int] = []
    if len(blocks) == 2:  # a decoder: read memory in front, the tokens, write memory at the end
        head_end, tail = int(blocks[0][-1]) + 1, [int(p) for p in blocks[1]]
    else:
        head_end = int(blocks[-1][-1]) + 2 if blocks else 1  # [CLS] mem... [SEP]
    head = [p for p in range(min(head_end, len(roles))) if roles[p] != ROLE_PAD]
    body = [p for p in range(head_end, len(roles)) if roles[p] != ROLE_PAD and p not in tail]
    if not body:
        return head + tail
    if isinstance(centre, (int, np.integer)):
        at = int(centre)
    else:
        facts = [p for p in body if roles[p] == ROLE_FACT]
        questions = [p for p in body if roles[p] == ROLE_QUESTION]
        choices = {"fact": facts or questions, "question": questions or facts, "start": []}
        if centre not in choices:
            raise ViewerError(f"unknown window centre {centre!r}; choose fact, question, start or a position")
        at = choices[centre][0] if choices[centre] else body[0]
    index = min(range(len(body)), key=lambda i: abs(body[i] - at))
    start = max(0, min(index - width // 3, len(body) - width))
    return head + body[start:start + width] + tail


def segment_attention(model, trace, t: int) -> np.ndarray:
    """[L, H, T, T] attention of segment t of a trace: the recorded full attention when the trace kept it,
    else one segment step of the recurrence from the trace's memory_in(t) and tokens (the replay's own numbers
    without replaying segments 0..t-1), float32."""
    import torch

    from rmt_core.inputs import ModelInput
    from rmt_core.recurrence import run_with_cache

    t = trace.segment_index(t)
    roles, ids = np.asarray(trace.roles(t)), np.asarray(trace.token_ids(t))
    if len(roles) != model.config.input_size or trace.num_mem_tokens != model.num_mem_tokens:
        raise ViewerError("the trace was not recorded with this checkpoint (other segment layout); "
                          "open the checkpoint the trace names")
    if trace.has_full_attention(t):
        return np.asarray(trace.full_attention(t), dtype=np.float32)
    tokens = model.layout.tokens_of(ids, roles).astype(np.int64).tolist()
    memory = torch.as_tensor(np.asarray(trace.memory_in(t)), dtype=model.memory.dtype, device=model.device)
    out = run_with_cache(model, ModelInput.from_segments([tokens]), memory=memory.unsqueeze(0),
                         names=["seg.0.blocks.*.attn.pattern"])
    L = model.backbone.config.num_hidden_layers
    return torch.stack([out.cache[f"seg.0.blocks.{l}.attn.pattern"][0] for l in range(L)]).float().numpy()


def _window_attention(attention: np.ndarray, positions: Sequence[int]) -> np.ndarray:
    attention = np.asarray(attention)
    if attention.ndim != 4 or attention.shape[2] != attention.shape[3]:
        raise ViewerError(f"full attention must have shape [L, H, T, T], got {tuple(attention.shape)}")
    if len(positions) > MAX_POSITIONS:
        raise ViewerError(f"a view of {len(positions)} positions is too large; use a window of at most "
                          f"{MAX_POSITIONS} positions")
    index = np.asarray(positions)
    window = attention[:, :, index][:, :, :, index]  # (L, H, P, P)
    return np.round(window.astype(np.float64), 3)


def _check_indices(values: Sequence[int] | None, size: int, what: str) -> list[int]:
    if values is None:
        return list(range(size))
    values = [int(v) for v in values]
    if not values:
        raise ViewerError(f"choose at least one {what}")
    bad = [v for v in values if not 0 <= v < size]
    if bad:
        raise ViewerError(f"{what} {bad[0]} is out of range; the model has {what}s 0..{size - 1}")
    return sorted(set(values))


# ----- the views -----------------------------------------------------------------------------------------
def _page(body: str, title: str) -> str:
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{title}</title></head>\n<body style=\"margin:0;background:#ffffff\">\n"
        + _inline_libraries() + body + "\n</body></html>\n"
    )


def _offline(bertviz_html: str) -> str:
    """Strip bertviz's CDN script tag and require.js configuration; the inlined libraries take their place."""
    html = _CDN_SCRIPT.sub("", bertviz_html)
    return _REQUIRE_CONFIG.sub("", html, count=1)


def head_view_html(attention: np.ndarray, tokens: Sequence[str], roles: Sequence[int],
                   positions: Sequence[int] | None = None, layers: Sequence[int] | None = None,
                   heads: Sequence[int] | None = None, layer: int | None = None) -> str:
    """bertviz's head view of one segment as a self-contained offline HTML page.

    attention: [L, H, T, T] full attention; tokens, roles: [T]; positions: indices to show (default: the
    window around the fact, `window_positions`); layers, heads: the ones to include (default all); layer: the
    layer shown first.
    """
    import torch
    from bertviz import head_view

    attention = np.asarray(attention)
    L, H = attention.shape[:2]
    layers = _check_indices(layers, L, "layer")
    heads = _check_indices(heads, H, "head")
    positions = list(positions) if positions is not None else window_positions(roles)
    window = _window_attention(attention, positions)[:, heads]  # (L, H', P, P)
    labels = [view_tokens(tokens, roles)[p] for p in positions]
    per_layer = [torch.from_numpy(window[l]).unsqueeze(0) for l in range(L)]  # L x (1, H', P, P)
    first = layer if layer in layers else layers[0]
    html = head_view(attention=per_layer, tokens=labels, include_layers=layers, layer=first,
                     html_action="return").data
    note = _note(positions, layers, heads)
    return _page(note + _offline(html), "bertviz head view")


def model_view_html(attention: np.ndarray, tokens: Sequence[str], roles: Sequence[int],
                    positions: Sequence[int] | None = None, layers: Sequence[int] | None = None,
                    heads: Sequence[int] | None = None) -> str:
    """bertviz's model view (a grid of layers x heads) of one segment as a self-contained offline HTML page."""
    import torch
    from bertviz import model_view

    attention = np.asarray(attention)
    L, H = attention.shape[:2]
    layers = _check_indices(layers, L, "layer")
    heads = _check_indices(heads, H, "head")
    positions = list(positions) if positions is not None else window_positions(roles)
    window = _window_attention(attention, positions)
    labels = [view_tokens(tokens, roles)[p] for p in positions]
    per_layer = [torch.from_numpy(window[l]).unsqueeze(0) for l in range(L)]
    html = model_view(attention=per_layer, tokens=labels, include_layers=layers, include_heads=heads,
                      display_mode="light", html_action="return").data
    return _page(_note(positions, layers, heads) + _offline(html), "bertviz model view")


def _note(positions: Sequence[int], layers: Sequence[int], heads: Sequence[int]) -> str:
    text = (f"positions {len(positions)} shown ([CLS], memory, [SEP] and a window of tokens); "
            f"layers {', '.join(map(str, layers))}; heads {', '.join(map(str, heads))}")
    return ("<div style=\"font:12px Helvetica,Arial,sans-serif;color:#555;padding:4px 0\">"
            + json.dumps(text)[1:-1].replace("<", "&lt;") + "</div>\n")
