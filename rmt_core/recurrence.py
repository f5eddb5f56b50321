"""The one loop over segments, with named activations that a caller can read (a cache) or replace (hooks).

Everything that runs an RMT over segments calls `run`: training's forward, evaluation, replay, probe
collection, interventions, the bertviz views and the benchmarks. The model supplies one segment step
(`model.segment_step(memory, tokens, mask, output_attentions)`) and its layout; the loop carries the memory
from segment to segment, handles ragged segments through masks, picks the attention kernel once per segment
(the fast one unless attention probabilities are asked for at that segment), and calls the hooks.

Names of the activations (t: segment, l: layer, both from 0; B batch, T positions, m memory slots, d hidden,
H heads, C classes):

    seg.{t}.mem_in                    (B, m, d)  memory segment t reads
    seg.{t}.mem_out                   (B, m, d)  memory segment t writes (= seg.{t+1}.mem_in)
    seg.{t}.logits                    (B, C)     the answer head at segment t
    seg.{t}.blocks.{l}.out            (B, T, d)  output of layer l at every position
    seg.{t}.blocks.{l}.mem            (B, m, d)  output of layer l at the positions memory is written from
    seg.{t}.blocks.{l}.attn.pattern   (B, H, T, T)  attention probabilities of layer l (read only)

`names` and hook names may be glob patterns (`seg.*.mem_out`, `seg.3.blocks.*.mem`). A hook is
`fn(value, name)`; it returns a tensor of the same shape to replace the activation, or None to leave it.
Replacing `seg.{t}.mem_out` changes what segment t+1 reads; replacing a layer's `out` or `mem` changes what
the next layer (and, through the last layer, the memory) sees.

    out = run_with_cache(model, inputs, names=["seg.*.mem_out", "seg.2.blocks.1.attn.pattern"])
    out.cache["seg.5.mem_out"]                          # (B, m, d)
    run_with_hooks(model, inputs, hooks=[("seg.3.mem_out", lambda v, name: other_memory)])
"""

from __future__ import annotations

import fnmatch
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.utils.checkpoint

from rmt_core.errors import RMTError

Hook = Callable[[torch.Tensor, str], "torch.Tensor | None"]
_LAYER_KINDS = ("out", "mem")


class HookError(RMTError):
    """A hook or cache name that matches nothing, or a hook that returns something unusable."""


@dataclass
class SegmentResult:
    """What the loop hands `on_segment` after segment t."""

    t: int
    memory_in: torch.Tensor  # (B, m, d)
    memory_out: torch.Tensor  # (B, m, d) after any mem_out hook
    logits: torch.Tensor  # (B, C)
    attentions: tuple[torch.Tensor, ...] | None  # L x (B, H, T, T) when asked at this segment


@dataclass
class RunOutput:
    memory: torch.Tensor  # (B, m, d) memory after the last segment run
    logits: torch.Tensor | None  # (B, C) the answer head at the last segment run (None when none ran)
    segment_logits: list[torch.Tensor] | None = None  # per segment run, when asked
    cache: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> activation, when names were asked


# ----- names -----------------------------------------------------------------------------------------------
def activation_names(n_segments: int, n_layers: int) -> list[str]:
    """Every activation name of a run of n_segments through a backbone of n_layers layers."""
    names = []
    for t in range(n_segments):
        names += [f"seg.{t}.mem_in", f"seg.{t}.mem_out", f"seg.{t}.logits"]
        for l in range(n_layers):
            names += [f"seg.{t}.blocks.{l}.out", f"seg.{t}.blocks.{l}.mem", f"seg.{t}.blocks.{l}.attn.pattern"]
    return names


class _Patterns:
    """Glob patterns of names, matched per segment and layer."""

    def __init__(self, patterns: Iterable[str]):
        self.patterns = list(patterns)
        for p in self.patterns:
            if not isinstance(p, str) or not p.startswith("seg."):
                raise HookError(f"activation name {p!r} must look like seg.T.mem_out or seg.T.blocks.L.attn.pattern "
                                "(globs allowed: seg.*.mem_out)")
        self._regex = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in self.patterns)) if self.patterns else None

    def __bool__(self) -> bool:
        return self._regex is not None

    def match(self, name: str) -> bool:
        return self._regex is not None and self._regex.match(name) is not None


class _Hooks:
    def __init__(self, hooks):
        self.items = []
        for item in hooks or ():
            try:
                name, fn = item
            except (TypeError, ValueError):
                raise HookError(f"a hook is a (name, function) pair, got {item!r}") from None
            if not callable(fn):
                raise HookError(f"the hook for {name!r} is not callable")
            self.items.append((_Patterns([name]), fn))
        self.used: set[int] = set()

    def __bool__(self) -> bool:
        return bool(self.items)

    def wants(self, name: str) -> bool:
        return any(p.match(name) for p, _ in self.items)

    def apply(self, name: str, value: torch.Tensor) -> torch.Tensor:
        for i, (pattern, fn) in enumerate(self.items):
            if pattern.match(name):
                self.used.add(i)
                new = fn(value, name)
                if new is not None:
                    if not isinstance(new, torch.Tensor) or new.shape != value.shape:
                        got = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
                        raise HookError(f"the hook on {name} returned {got}; return a tensor of shape "
                                        f"{tuple(value.shape)} or None")
                    value = new.to(device=value.device, dtype=value.dtype)
        return value


# ----- the backbone's layers ---------------------------------------------------------------------------------
def backbone_layers(backbone) -> list[torch.nn.Module]:
    """The transformer blocks of a Hugging Face backbone, in order (BERT-style encoders, GPT-2, Llama-family), looked
    up in its base model, so that a model with a language-model head (GPT-2's, Llama's, BERT's decoder mode) finds
    the same blocks as its body."""
    body = getattr(backbone, "base_model", backbone)
    for path in ("encoder.layer", "h", "layers", "decoder.layers"):
        module = body
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, torch.nn.ModuleList):
            return list(module)
    raise HookError(f"cannot find the layers of a {type(backbone).__name__}; layer activations need a BERT-, "
                    "GPT-2- or Llama-style backbone")


# ----- the kernel ----------------------------------------------------------------------------------------------
def fast_kernel(model) -> str:
    """'sdpa' when the backbone supports it, else the kernel it uses now (checked once per model)."""
    known = getattr(model, "_fast_kernel", None)
    if known is not None:
        return known
    current = model.attention_kernel
    fast = current
    if current != "sdpa":
        try:
            model.set_attention_kernel("sdpa")
            fast = "sdpa"
        except (ValueError, ImportError, NotImplementedError):
            pass
        model.set_attention_kernel(current)
    object.__setattr__(model, "_fast_kernel", fast)
    return fast


# ----- the loop ------------------------------------------------------------------------------------------------
def run(model, inputs, *, memory: torch.Tensor | None = None, start: int = 0, stop: int | None = None,
        names: Iterable[str] = (), hooks=(), attention: Callable[[int], bool] | Iterable[int] | None = None,
        on_segment: Callable[[SegmentResult], None] | None = None, detach_before: int | None = None,
        graph_before: int | None = None, recompute: bool = False, segment_logits: bool = False,
        progress: bool = False, cache_device="cpu") -> RunOutput:
    """Run segments start..stop-1 of `inputs` through `model`, carrying memory from one to the next.

    inputs: a SegmentBatch, or anything `rmt_core.inputs.batch_of` takes (ModelInputs, task samples, id arrays).
    memory: (B, m, d) memory segment `start` reads (default: the model's initial memory).
    names: activations to keep (glob patterns); they come back in `.cache`, on `cache_device` (None: where
        they are), detached. hooks: [(name, fn)] pairs that read or replace activations.
    attention: the segments whose attention probabilities `on_segment` gets (a set of indexes or a predicate);
        attention is also computed wherever a cached or hooked name asks for a pattern.
    detach_before: memory is detached from the graph before this segment (truncated backpropagation).
    graph_before: the segments a loss reaches are those before this one (a term on their memory, logits, states
        or attention); segments from graph_before to the cut (detach_before, else the end) run without a graph:
        no loss reaches them, and the cut stops the one after them. None: every segment keeps its graph.
    recompute: with graph_before, the segments before it run with activation checkpointing: their activations
        are recomputed in the backward pass instead of kept, so training memory grows with the input's length
        only by what each segment hands on (its memory, its logits, a little bookkeeping), at the cost of
        running them twice. The gradients are the same.
    segment_logits: keep the answer head's logits of every segment run.
    Gradients follow the caller's mode: wrap in torch.no_grad() / inference_mode() for inference.
    """
    from rmt_core.inputs import batch_of

    batch = batch_of(model, inputs)
    N = batch.n_segments
    stop = N if stop is None else stop
    if not 0 <= start <= stop <= N:
        raise HookError(f"segments {start}..{stop - 1} are out of range for an input of {N} segments")
    cached, hooked = _Patterns(names), _Hooks(hooks)
    wants_attention = _attention_predicate(attention)
    layered = (cached or hooked) and _any_layer_names(cached, hooked)
    layers = backbone_layers(model.backbone) if layered and hasattr(model, "backbone") else []
    n_layers = len(layers)
    device = model.device if isinstance(getattr(model, "device", None), torch.device) else torch.device("cpu")
    memory = model.initial_memory(batch.batch_size) if memory is None else memory.to(device)
    out = RunOutput(memory=memory, logits=None, segment_logits=[] if segment_logits else None)

    def keep(name: str, value: torch.Tensor) -> None:
        out.cache[name] = value.detach().to(cache_device) if cache_device is not None else value.detach()

    def visit(name: str, value: torch.Tensor) -> torch.Tensor:
        """Hooks, then the cache, for one activation."""
        if hooked:
            value = hooked.apply(name, value)
        if cached and cached.match(name):
            keep(name, value)
        return value

    layer_state = {"t": -1, "names": None}
    handles = []
    if layers:
        write = model.layout.write_positions
        for l, layer in enumerate(layers):
            handles.append(layer.register_forward_hook(_layer_hook(l, layer_state, visit, write)))

    kernel = getattr(model, "attention_kernel", None)  # None: a model without kernel choice (hand-built ones)
    fast = fast_kernel(model) if kernel is not None else None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=stop - start, desc="segments", unit="seg", file=sys.stderr, dynamic_ncols=True)
    lean = graph_before is not None and torch.is_grad_enabled()
    cut = stop if detach_before is None else detach_before
    try:
        for t in range(start, stop):
            if detach_before is not None and t == detach_before and t > 0:
                memory = memory.detach()
            layer_names = _segment_layer_names(t, n_layers, cached, hooked) if n_layers else {}
            patterns = [l for l, kinds in layer_names.items() if "attn.pattern" in kinds]
            need_attention = wants_attention(t) or bool(patterns)
            wanted_kernel = "eager" if need_attention else fast
            if kernel is not None and model.attention_kernel != wanted_kernel:
                model.set_attention_kernel(wanted_kernel)
            memory_in = visit(f"seg.{t}.mem_in", memory) if (cached or hooked) else memory
            tokens, mask = batch.segment(t, device)
            layer_state["t"], layer_state["names"] = t, layer_names
            if lean and graph_before <= t < cut:  # no loss reaches it
                with torch.no_grad():
                    step = model.segment_step(memory_in, tokens, mask, output_attentions=need_attention)
            elif lean and recompute and t < graph_before and not (cached or hooked):  # hooks would run twice
                step = _checkpointed(model, memory_in, tokens, mask, need_attention, wanted_kernel)
                if t % _TRIM_EVERY == _TRIM_EVERY - 1:
                    release_free_heap()
            else:
                step = model.segment_step(memory_in, tokens, mask, output_attentions=need_attention)
            memory = step.memory_out
            logits = step.logits
            if cached or hooked:
                memory = visit(f"seg.{t}.mem_out", memory)
                logits = visit(f"seg.{t}.logits", logits)
                for l in patterns:
                    name = f"seg.{t}.blocks.{l}.attn.pattern"
                    if hooked and hooked.wants(name):
                        raise HookError(f"{name} can be read, not replaced: hook a layer's out or mem instead")
                    keep(name, step.attentions[l])
            if segment_logits:
                out.segment_logits.append(logits)
            if on_segment is not None:
                on_segment(SegmentResult(t, memory_in, memory, logits, step.attentions if need_attention else None))
            out.logits = logits
            if bar is not None:
                bar.update(1)
    finally:
        for handle in handles:
            handle.remove()
        if kernel is not None and model.attention_kernel != kernel:
            model.set_attention_kernel(kernel)
        if bar is not None:
            bar.close()
    out.memory = memory
    if hooked and len(hooked.used) < len(hooked.items):
        unused = [p.patterns[0] for i, (p, _) in enumerate(hooked.items) if i not in hooked.used]
        raise HookError(f"hook name {unused[0]!r} matched no activation of this run (segments {start}..{stop - 1}); "
                        "see rmt_core.recurrence.activation_names")
    return out


_TRIM_EVERY = 16  # checkpointed segments between two returns of the C heap's free pages
_MALLOC_TRIM = None  # glibc's malloc_trim once looked up, False where there is none


def release_free_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc's malloc_trim; nothing elsewhere). Checkpointed
    segments free their activations one after another while small allocations that live on (the graph's
    bookkeeping, each segment's memory) land between them, so the freed space stays in the process as holes
    that later segments do not fit (bench/train_memory.py at 1,024 segments and batch 8, with the non-reentrant
    checkpoint on every step: 5.3 GB before the trim, 2.7 after)."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            import ctypes

            _MALLOC_TRIM = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


@dataclass
class _Recomputed:
    """A checkpointed step's outputs, where the loop reads them."""

    memory_out: torch.Tensor
    logits: torch.Tensor
    attentions: tuple[torch.Tensor, ...] | None


def _checkpointed(model, memory, tokens, mask, attentions: bool, kernel: str | None):
    """One segment's step with activation checkpointing: its activations are recomputed in the backward pass,
    under the attention kernel it ran with, instead of kept. A model whose step hands back all it computes
    (`whole_steps`, the encoder) is checkpointed whole: the forward pass builds no graph inside the step, only one
    node for it. Otherwise (the decoder's step also collects its token states on the side) the graph is built and
    only its saved tensors are dropped and recomputed; what a step computes after those, such as a decoder's
    logits outside its lean mode, is not recomputed (torch stops early)."""

    def step(memory_in):
        held = getattr(model, "attention_kernel", None)
        switch = kernel is not None and held != kernel
        if switch:
            model.set_attention_kernel(kernel)
        try:
            return model.segment_step(memory_in, tokens, mask, output_attentions=attentions)
        finally:
            if switch:
                model.set_attention_kernel(held)

    if getattr(model, "whole_steps", False) and memory.requires_grad:  # whole: the gradient enters through memory
        def whole(memory_in):
            out = step(memory_in)
            return (out.memory_out, out.logits, *(out.attentions or ()))

        memory_out, logits, *maps = torch.utils.checkpoint.checkpoint(whole, memory, use_reentrant=True)
        return _Recomputed(memory_out, logits, tuple(maps) if attentions else None)
    return torch.utils.checkpoint.checkpoint(step, memory, use_reentrant=False)


def _attention_predicate(attention) -> Callable[[int], bool]:
    if attention is None:
        return lambda t: False
    if callable(attention):
        return attention
    chosen = {int(t) for t in attention}
    return chosen.__contains__


def _any_layer_names(cached: _Patterns, hooked: _Hooks) -> bool:
    """Whether any pattern can name a layer activation (one with 'blocks' or a glob in it)."""
    patterns = list(cached.patterns) + [p.patterns[0] for p, _ in hooked.items]
    return any("blocks" in p or any(c in p for c in "*?[") for p in patterns)


def _segment_layer_names(t: int, n_layers: int, cached: _Patterns, hooked: _Hooks) -> dict[int, set[str]]:
    """{layer: kinds} of the layer activations of segment t that a cache or hook asks for."""
    wanted: dict[int, set[str]] = {}
    for l in range(n_layers):
        for kind in (*_LAYER_KINDS, "attn.pattern"):
            name = f"seg.{t}.blocks.{l}.{kind}"
            if cached.match(name) or (hooked and hooked.wants(name)):
                wanted.setdefault(l, set()).add(kind)
    return wanted


def _layer_hook(l: int, state: dict, visit, write: slice):
    def hook(module, args, output):
        kinds = state["names"].get(l) if state["names"] else None
        if not kinds or kinds == {"attn.pattern"}:
            return None
        t = state["t"]
        hidden = output[0] if isinstance(output, tuple) else output  # (B, T, d)
        new = hidden
        if "out" in kinds:
            new = visit(f"seg.{t}.blocks.{l}.out", new)
        if "mem" in kinds:
            slot = new[:, write]
            changed = visit(f"seg.{t}.blocks.{l}.mem", slot)
            if changed is not slot:
                new = new.clone()
                new[:, write] = changed
        if new is hidden:
            return None
        return (new, *output[1:]) if isinstance(output, tuple) else new

    return hook


# ----- conveniences --------------------------------------------------------------------------------------------
def run_with_cache(model, inputs, names: Iterable[str] = ("seg.*.mem_in", "seg.*.mem_out", "seg.*.logits"),
                   **kwargs) -> RunOutput:
    """`run` without gradients, keeping the named activations: `out.cache[name]`."""
    with torch.no_grad():
        return run(model, inputs, names=names, **kwargs)


def run_with_hooks(model, inputs, hooks, **kwargs) -> RunOutput:
    """`run` without gradients, with hooks [(name, fn)] that read or replace activations mid-run."""
    with torch.no_grad():
        return run(model, inputs, hooks=hooks, **kwargs)
