"""The one recurrence: named activations in a cache, hooks that replace them, ragged inputs, and the layout."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_rmt

from probes import interventions
from rmt_core.inputs import ModelInput, SegmentBatch, make_input
from rmt_core.layout import ROLE_FACT, ROLE_MEMORY, ROLE_NOISE, ROLE_PAD, ROLE_QUESTION, ROLE_SPECIAL, EncoderLayout
from rmt_core.recurrence import HookError, activation_names, run, run_with_cache, run_with_hooks
from rmt_core.tasks import TaskBuilder

REPO = Path(__file__).resolve().parents[1]
TEXT = ("The orchard was quiet that morning. Mary went back to the kitchen. Rain fell on the old roof while the "
        "farmer counted his sheep and the dog slept by the fire. ") * 3


def _ids(samples) -> torch.Tensor:
    return torch.tensor([s.input_ids for s in samples])


def _by_hand(model, segments: torch.Tensor, memory: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The loop written out with the model's segment step, as the probes ran it before the recurrence."""
    logits = None
    for t in range(start, segments.shape[1]):
        step = model.segment_step(memory, segments[:, t])
        memory, logits = step.memory_out, step.logits
    return logits, memory


def test_a_hook_on_mem_out_gives_exactly_the_old_patching(tokenizer):
    model = make_tiny_rmt(tokenizer, segment_size=24)
    builder = TaskBuilder("memorize", tokenizer, 24)
    a, b = _ids(builder.samples(4, 6, seed=0)), _ids(builder.samples(4, 6, seed=1))
    segment = 1
    with torch.no_grad():
        from_b = run(model, b, stop=segment + 1).memory  # (6, m, d) memory B's segment 1 writes
        _, written_a = _by_hand(model, a.view(6, 4, 24)[:, :segment + 1], model.initial_memory(6), 0)
        old_logits, _ = _by_hand(model, a.view(6, 4, 24), from_b, segment + 1)  # continue A from B's memory
    hooked = run_with_hooks(model, a, hooks=[(f"seg.{segment}.mem_out", lambda value, name: from_b)])
    assert torch.equal(hooked.logits, old_logits)
    assert not torch.equal(from_b, written_a)  # the patch changes something

    answers_a = np.zeros(6, dtype=int)
    answers_b = np.ones(6, dtype=int)
    result = interventions.patch(model, a, b, answers_a, answers_b, segment, "all")
    expected = (old_logits.argmax(-1).numpy() == answers_b).mean()
    assert result["iia"] == pytest.approx(expected)


def test_cache_attention_equals_the_backbone_run_by_hand(tokenizer):
    model = make_tiny_rmt(tokenizer, segment_size=20, layers=3)
    sample = TaskBuilder("detect", tokenizer, 20).sample(3, seed=4)
    out = run_with_cache(model, sample, names=["seg.*.mem_in", "seg.2.blocks.*.attn.pattern", "seg.2.blocks.1.mem",
                                               "seg.2.blocks.2.out"])
    memory = out.cache["seg.2.mem_in"]
    tokens = torch.tensor([sample.segments()[2]])
    ids, mask = model.layout.build(tokens)
    embeds = model.layout.insert_memory(model.backbone.get_input_embeddings()(ids), memory)
    with torch.no_grad(), model.recording():
        by_hand = model.backbone(inputs_embeds=embeds, attention_mask=mask, output_attentions=True,
                                 output_hidden_states=True)
    for layer in range(3):
        assert torch.allclose(out.cache[f"seg.2.blocks.{layer}.attn.pattern"], by_hand.attentions[layer], atol=1e-6)
    write = model.layout.write_positions
    assert torch.allclose(out.cache["seg.2.blocks.1.mem"], by_hand.hidden_states[2][:, write], atol=1e-5)
    assert torch.allclose(out.cache["seg.2.blocks.2.out"], by_hand.hidden_states[3], atol=1e-5)
    assert "seg.1.blocks.0.attn.pattern" not in out.cache
    assert model.attention_kernel == "sdpa"  # the run put the fast kernel back


def test_cache_memory_chains_and_matches_forward(tokenizer):
    model = make_tiny_rmt(tokenizer, segment_size=16)
    samples = TaskBuilder("memorize", tokenizer, 16).samples(5, 3, seed=0)
    out = run_with_cache(model, samples)
    for t in range(4):
        assert torch.equal(out.cache[f"seg.{t}.mem_out"], out.cache[f"seg.{t + 1}.mem_in"])
    with torch.no_grad():
        forward = model(_ids(samples))
    assert torch.allclose(out.cache["seg.4.mem_out"], forward.memory_out, atol=1e-5)
    assert torch.allclose(out.logits, forward.logits, atol=1e-5)
    assert set(out.cache) == {n for n in activation_names(5, 2) if n.split(".")[2] in ("mem_in", "mem_out", "logits")}


def test_a_layer_hook_changes_what_memory_is_written(tokenizer):
    model = make_tiny_rmt(tokenizer, segment_size=16)
    sample = TaskBuilder("memorize", tokenizer, 16).sample(3, seed=1)
    clean = run_with_cache(model, sample, names=["seg.*.mem_out"])
    zeroed = run_with_hooks(model, sample, hooks=[("seg.1.blocks.1.mem", lambda v, name: torch.zeros_like(v))])
    assert not torch.allclose(clean.memory, zeroed.memory)
    later_only = run_with_cache(model, sample, names=["seg.*.mem_out"],
                                hooks=[("seg.2.blocks.0.out", lambda v, name: None)])  # reads, changes nothing
    assert torch.equal(later_only.cache["seg.2.mem_out"], clean.cache["seg.2.mem_out"])


def test_bad_hooks_and_names_are_one_line_errors(tokenizer):
    model = make_tiny_rmt(tokenizer, segment_size=16)
    sample = TaskBuilder("memorize", tokenizer, 16).sample(2, seed=1)
    with pytest.raises(HookError, match="matched no activation"):
        run_with_hooks(model, sample, hooks=[("seg.9.mem_out", lambda v, n: v)])
    with pytest.raises(HookError, match="shape"):
        run_with_hooks(model, sample, hooks=[("seg.0.mem_out", lambda v, n: v[:, :1])])
    with pytest.raises(HookError, match="read, not replaced"):
        run_with_hooks(model, sample, hooks=[("seg.0.blocks.0.attn.pattern", lambda v, n: v)])
    with pytest.raises(HookError, match="must look like"):
        run_with_cache(model, sample, names=["memory"])


def test_patching_free_text_with_a_short_last_segment(tokenizer):
    model = make_tiny_rmt(tokenizer, segment_size=16)
    a = make_input(model, text=TEXT, question="Where is Mary?")
    b = make_input(model, text=TEXT.replace("kitchen", "garden") + " The end came.", question="Where is Mary?")
    assert len(a.segments[-1]) < 16 and len(b.segments[-1]) < 16  # ragged last segments
    assert a.n_segments == b.n_segments
    segment = a.n_segments - 2
    from_b = run_with_cache(model, b, names=[f"seg.{segment}.mem_out"]).cache[f"seg.{segment}.mem_out"]
    result = interventions.patch(model, [a], [b], [0], [1], segment, "all")
    # by hand: A's last segment (short, unpadded) read from B's memory
    with torch.no_grad():
        last = model.segment_step(from_b, torch.tensor([a.segments[-1]])).logits
    assert result["iia"] == float(last.argmax(-1).item() == 1)
    patched = run_with_hooks(model, a, hooks=[(f"seg.{segment}.mem_out", lambda v, n: from_b)])
    assert torch.allclose(patched.logits, last, atol=1e-6)


def test_a_ragged_batch_equals_each_input_alone(tokenizer):
    model = make_tiny_rmt(tokenizer, segment_size=16)
    a = make_input(model, text=TEXT, question="Where is Mary?")
    b = make_input(model, text=TEXT + " More words here.", question="Where is the dog?")
    assert a.n_segments == b.n_segments and len(a.segments[-1]) != len(b.segments[-1])
    together = run_with_cache(model, [a, b])
    alone = [run_with_cache(model, x) for x in (a, b)]
    for row, single in enumerate(alone):
        assert torch.allclose(together.logits[row], single.logits[0], atol=1e-5)
        assert torch.allclose(together.memory[row], single.memory[0], atol=1e-5)


def test_layout_builds_and_inverts_in_torch_and_numpy():
    layout = EncoderLayout(num_mem_tokens=2, segment_size=5, cls_id=101, sep_id=102, pad_id=0)
    assert layout.input_size == 10 and layout.read_positions == layout.write_positions == slice(1, 3)
    tokens = torch.tensor([[7, 8, 9], [7, 8, 0]])
    ids, mask = layout.build(tokens, torch.tensor([[1, 1, 1], [1, 1, 0]]))
    assert ids.tolist() == [[101, 0, 0, 102, 7, 8, 9, 102, 0, 0], [101, 0, 0, 102, 7, 8, 102, 0, 0, 0]]
    assert mask.tolist() == [[1] * 8 + [0] * 2, [1] * 7 + [0] * 3]
    row_ids, row_roles = layout.build_numpy([7, 8, 9], [ROLE_NOISE, ROLE_FACT, ROLE_QUESTION])
    assert row_ids.tolist() == [101, -1, -1, 102, 7, 8, 9, 102, 0, 0]
    assert row_roles.tolist() == [ROLE_SPECIAL, ROLE_MEMORY, ROLE_MEMORY, ROLE_SPECIAL, ROLE_NOISE, ROLE_FACT,
                                  ROLE_QUESTION, ROLE_SPECIAL, ROLE_PAD, ROLE_PAD]
    assert layout.tokens_of(row_ids, row_roles).tolist() == [7, 8, 9]
    torch_roles = layout.position_roles(torch.tensor([[ROLE_NOISE, ROLE_FACT, ROLE_QUESTION]]))
    assert torch_roles[0].tolist() == row_roles.tolist()


def test_segment_batch_rows_and_bad_shapes():
    batch = SegmentBatch.from_ids(np.arange(24).reshape(2, 12), 4)
    assert batch.n_segments == 3 and batch.batch_size == 2
    ids, mask = batch.rows(slice(1, 2)).segment(2)
    assert ids.tolist() == [[20, 21, 22, 23]] and mask is None
    with pytest.raises(Exception, match="whole segments"):
        SegmentBatch.from_ids(np.zeros((2, 10)), 4)
    with pytest.raises(Exception, match="one number of segments"):
        SegmentBatch.from_inputs([ModelInput.from_segments([[1]]), ModelInput.from_segments([[1], [2]])])


def test_api_doc_example_runs():
    code = re.search(r"```python\n(.*?)```", (REPO / "docs" / "api.md").read_text(), re.S).group(1)
    namespace: dict = {}
    import contextlib
    import io
    import os

    printed = io.StringIO()
    previous = os.getcwd()
    os.chdir(REPO)
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(code, "docs/api.md", "exec"), namespace)
    finally:
        os.chdir(previous)
    assert namespace["memory_after_5"].shape == (1, 10, 128)
    assert namespace["read"].shape[-1] == 10
    before, after = printed.getvalue().split("->")
    assert before.split()[1] != after.split()[0]  # the patched answer differs from the clean one


def test_probes_run_on_traces_of_rmt_replay(tokenizer, tmp_path):
    from probes.run import run_probes
    from probes.states import collect
    from rmt_core.replay import RecordingPolicy, replay

    model = make_tiny_rmt(tokenizer, segment_size=16)
    builder = TaskBuilder("memorize", tokenizer, 16)
    samples = [builder.sample(3, seed=s) for s in range(12)]
    policy = RecordingPolicy(attention_budget_mib=0, edge_segments=0, fact_segments=False, segment_logits=False)
    for i, sample in enumerate(samples):
        replay(model, sample, out=tmp_path / "traces" / f"t{i:02d}", policy=policy, progress=False)
    results = run_probes(model, "memorize", 3, 12, traces=tmp_path / "traces", out=None, progress=False,
                         ablation=False, patching=True, intervention_samples=12, figures=None)
    assert results["settings"]["samples"] == 12 and results["settings"]["segments"] == 3
    assert results["samples_meta"]["seeds"] == [s.seed for s in samples]
    fresh = collect(model, torch.tensor([s.input_ids for s in samples]))
    assert results["clean"]["predictions"] == fresh.logits.argmax(-1).tolist()
    assert results["probes"] and results["patching"]
    other = make_tiny_rmt(tokenizer, segment_size=16, seed=1)
    with pytest.raises(Exception, match="other weights"):
        run_probes(other, "memorize", 3, 12, traces=tmp_path / "traces", out=None, progress=False, figures=None)
