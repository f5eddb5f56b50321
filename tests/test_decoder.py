"""The decoder RMT on small random GPT-2 and Llama backbones: one segment step is the backbone run by hand on
[m, emb(x), m]; memory is the only path between segments and comes from the write positions; generation is
greedy decoding by hand from the same memory; the loss is a shifted cross-entropy by hand."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from rmt_core.decoder import BACKBONES, DecoderConfig, decoder_from_backbone
from rmt_core.inputs import ModelInput, SegmentBatch
from rmt_core.layout import ROLE_MEMORY, ROLE_PAD, DecoderLayout
from rmt_core.recurrence import backbone_layers, run, run_with_cache, run_with_hooks

VOCAB = 120
M, S, D, LAYERS = 3, 8, 32, 2


class _Tokenizer:
    """What the model asks of a tokenizer: GPT-2's kind, no pad token, end-of-text as end of answer."""

    pad_token_id = None
    eos_token_id = 1
    sep_token_id = None


def make_decoder(kind: str, seed: int = 0, eos: bool = False, **config) -> torch.nn.Module:
    torch.manual_seed(seed)
    backbone = BACKBONES[kind](VOCAB, hidden_size=D, num_layers=LAYERS, num_heads=2)
    settings = dict(num_mem_tokens=M, segment_size=S)
    settings.update(config)
    model = decoder_from_backbone(backbone, _Tokenizer(), DecoderConfig(**settings)).eval()
    if not eos:
        model.eos_id = None
    return model


def _ids(*shape, seed=1) -> torch.Tensor:
    return torch.randint(2, VOCAB, shape, generator=torch.Generator().manual_seed(seed))


KINDS = pytest.mark.parametrize("kind", ["gpt2", "llama", "bert"])  # bert: decoder mode, as the minilm backbone


@KINDS
def test_a_segment_step_is_the_backbone_on_memory_tokens_memory(kind):
    model = make_decoder(kind)
    tokens, memory = _ids(2, S), torch.randn(2, M, D)
    with torch.no_grad():
        step = model.segment_step(memory, tokens)
        by_hand = model.backbone(inputs_embeds=torch.cat([memory, model.embed(tokens), memory], dim=1),
                                 output_hidden_states=True)
    assert step.hidden.shape == (2, 2 * M + S, D)
    assert torch.allclose(step.hidden, by_hand.hidden_states[-1], atol=1e-5)
    assert torch.allclose(step.memory_out, by_hand.hidden_states[-1][:, -M:], atol=1e-5)
    assert torch.allclose(step.logits, by_hand.logits[:, M:M + S], atol=1e-5)  # memory positions dropped


@KINDS
def test_a_short_row_writes_memory_right_after_its_own_tokens(kind):
    model = make_decoder(kind)
    tokens, memory = _ids(2, S), torch.randn(2, M, D)
    mask = torch.ones(2, S, dtype=torch.long)
    mask[1, 5:] = 0
    with torch.no_grad():
        step = model.segment_step(memory, tokens, mask)
        alone = model.backbone(inputs_embeds=torch.cat([memory[1:], model.embed(tokens[1:, :5]), memory[1:]], 1),
                               output_hidden_states=True)
        full = model.segment_step(memory[:1], tokens[:1])
    assert torch.allclose(step.memory_out[1:], alone.hidden_states[-1][:, -M:], atol=1e-5)
    assert torch.allclose(step.logits[1:, :5], alone.logits[:, M:M + 5], atol=1e-5)
    assert torch.allclose(step.memory_out[:1], full.memory_out, atol=1e-5)  # the padded row leaves the other alone


@KINDS
def test_earlier_segments_reach_later_ones_only_through_memory(kind):
    model = make_decoder(kind)
    a, b = _ids(2, 3 * S, seed=1), _ids(2, 3 * S, seed=2)
    b[:, 2 * S:] = a[:, 2 * S:]  # the same last segment, different earlier ones
    with torch.no_grad():
        out_a = run_with_cache(model, SegmentBatch.from_ids(a, S), names=["seg.1.mem_out", "seg.2.logits"])
        plain_b = run_with_cache(model, SegmentBatch.from_ids(b, S), names=["seg.2.logits"])
    patched_b = run_with_cache(model, SegmentBatch.from_ids(b, S), names=["seg.2.logits"],
                               hooks=[("seg.1.mem_out", lambda v, name: out_a.cache["seg.1.mem_out"])])
    # A fresh post-LN BERT mixes weakly, so the check is relative: the earlier segments change the last one's
    # logits, and with their memory patched in they do not, to 1e-6 and 100 times less than without.
    apart = (plain_b.cache["seg.2.logits"] - out_a.cache["seg.2.logits"]).abs().max()
    patched = (patched_b.cache["seg.2.logits"] - out_a.cache["seg.2.logits"]).abs().max()
    assert apart > 1e-6 and patched < min(1e-6, apart / 100)
    assert torch.allclose(patched_b.memory, out_a.memory, atol=1e-6)


@KINDS
def test_memory_is_the_write_positions_never_the_first_m_outputs(kind):
    model = make_decoder(kind)
    x = SegmentBatch.from_ids(_ids(2, 2 * S), S)
    last = f"seg.0.blocks.{LAYERS - 1}.out"
    noise = torch.randn(2, M, D) * 10

    def spoil(slots):
        def hook(value, name):
            value = value.clone()
            value[:, slots] = noise
            return value
        return hook

    with torch.no_grad():
        plain = run_with_cache(model, x, names=["seg.0.mem_out", "seg.0.blocks.*.mem"])
    read_spoiled = run_with_hooks(model, x, hooks=[(last, spoil(model.layout.read_positions))])
    write_spoiled = run_with_hooks(model, x, hooks=[(last, spoil(model.layout.write_positions))])
    assert torch.equal(read_spoiled.memory, plain.memory)  # the read block's outputs go nowhere
    assert not torch.allclose(write_spoiled.memory, plain.memory)
    # The layer activation named `mem` is taken at the write positions as well.
    assert model.layout.write_positions == slice(M + S, 2 * M + S)
    assert plain.cache[f"seg.0.blocks.{LAYERS - 1}.mem"].shape == (2, M, D)


@KINDS
def test_generation_is_greedy_decoding_by_hand_from_the_same_memory(kind):
    model = make_decoder(kind)
    rows = [ModelInput.from_segments([_ids(S, seed=3).tolist(), _ids(S, seed=4).tolist(), _ids(5, seed=5).tolist()]),
            ModelInput.from_segments([_ids(S, seed=6).tolist(), _ids(S, seed=7).tolist(), _ids(S, seed=8).tolist()])]
    generation = model.generate(rows, max_new_tokens=6)
    for i, row in enumerate(rows):
        with torch.no_grad():
            memory = run(model, [row], stop=2).memory  # all but the last segment
            sequence = torch.cat([memory, model.embed(torch.tensor([row.segments[2]]))], dim=1)
            expected = []
            for _ in range(6):  # greedy, no cache, read memory only
                nxt = model.backbone(inputs_embeds=sequence).logits[0, -1].argmax()
                expected.append(int(nxt))
                sequence = torch.cat([sequence, model.embed(nxt.view(1, 1))], dim=1)
        assert torch.allclose(generation.memory[i], memory[0], atol=1e-6)
        assert generation.tokens[i].tolist() == expected


def test_generation_stops_each_row_at_the_end_of_answer_token():
    batch = torch.cat([_ids(2 * S, seed=s).view(1, 2, S) for s in (9, 10, 11)])
    free = make_decoder("gpt2").generate(batch, max_new_tokens=5).tokens
    model = make_decoder("gpt2", eos=True)
    model.eos_id = int(free[0, 0])  # pretend row 0's first token ends its answer
    generation = model.generate(batch, max_new_tokens=5)
    assert generation.lengths[0] == 0
    for i in range(3):
        ends = [k for k in range(5) if free[i, k] == model.eos_id]
        n = ends[0] if ends else 5
        assert int(generation.lengths[i]) == n
        assert generation.tokens[i, :n + 1].tolist() == free[i, :n + 1].tolist()  # the answer and its end token
        assert (generation.tokens[i, n + 1:] == model.pad_id).all()


@KINDS
@pytest.mark.parametrize("loss_on", ["answer", "all"])
def test_the_loss_is_the_shifted_cross_entropy_by_hand(kind, loss_on):
    model = make_decoder(kind, loss_on=loss_on)
    ids = _ids(2, 3 * S - 2)  # the last segment is short: cut left-aligned
    labels_mask = torch.zeros_like(ids)
    labels_mask[:, -4:] = 1
    labels_mask[0, 3] = 1  # a target in the first segment too
    with torch.no_grad():
        out = model(ids, labels_mask=labels_mask)
        segments = run(model, [ModelInput.from_segments([r[i:i + S].tolist() for i in range(0, 3 * S - 2, S)])
                               for r in ids], segment_logits=True).segment_logits
    logits = torch.cat(segments, dim=1)  # (B, L, V)
    wanted = (labels_mask[:, 1:] == 1) if loss_on == "answer" else torch.ones_like(ids[:, 1:], dtype=torch.bool)
    expected = F.cross_entropy(logits[:, :-1][wanted], ids[:, 1:][wanted])
    assert out.answer_tokens == int(wanted.sum())
    assert torch.allclose(out.loss, expected, atol=1e-5)


def test_a_ragged_batch_has_the_loss_of_its_rows():
    model = make_decoder("gpt2", loss_on="all")
    ids = _ids(2, 3 * S)
    mask = torch.ones_like(ids)
    mask[1, 2 * S + 3:] = 0  # row 1 ends 3 tokens into its last segment
    with torch.no_grad():
        both = model(ids, attention_mask=mask)
        first = model(ids[:1])
        second = model(ids[1:, :2 * S + 3])
    per_token = (first.loss * first.answer_tokens + second.loss * second.answer_tokens) / (
        first.answer_tokens + second.answer_tokens)
    assert both.answer_tokens == first.answer_tokens + second.answer_tokens
    assert torch.allclose(both.loss, per_token, atol=1e-5)


def test_truncated_backpropagation_cuts_the_gradient_to_the_initial_memory():
    ids = _ids(2, 3 * S)
    labels_mask = torch.zeros_like(ids)
    labels_mask[:, -3:] = 1  # the loss looks only at the last segment
    grads = {}
    for depth in (None, 1, 2):
        model = make_decoder("gpt2", bptt_depth=depth).train()
        model(ids, labels_mask=labels_mask).loss.backward()
        grads[depth] = model.memory.grad.abs().sum().item()
    assert grads[None] > 0 and grads[2] > 0  # 3 segments: 2 transitions lead from the initial memory to the loss
    assert grads[1] == 0.0  # only the last transition kept: no path back to the initial memory


def test_the_initial_memory_is_noise_at_the_embeddings_scale():
    model = make_decoder("gpt2", num_mem_tokens=64)
    scale = model.backbone.get_input_embeddings().weight.std().item()
    assert model.memory.shape == (64, D)
    assert model.memory.std().item() == pytest.approx(scale, rel=0.15)


@KINDS
def test_the_recurrence_finds_the_layers(kind):
    model = make_decoder(kind)
    assert len(backbone_layers(model.backbone)) == LAYERS


def test_the_layout_puts_padding_between_the_tokens_and_the_write_memory():
    layout = DecoderLayout(num_mem_tokens=2, segment_size=5, pad_id=0)
    tokens = torch.tensor([[7, 8, 9, 10, 11], [7, 8, 9, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    ids, attention = layout.build(tokens, mask)
    assert attention.tolist() == [[1] * 9, [1, 1, 1, 1, 1, 0, 0, 1, 1]]
    assert layout.positions(attention)[1].tolist()[-2:] == [5, 6]  # right after the 3 tokens (2 + 3)
    assert layout.positions(attention)[0].tolist() == list(range(9))
    row, roles = layout.build_numpy([7, 8, 9], [0, 1, 2])
    assert roles.tolist() == [ROLE_MEMORY] * 2 + [0, 1, 2] + [ROLE_PAD] * 2 + [ROLE_MEMORY] * 2
    assert layout.tokens_of(row, roles).tolist() == [7, 8, 9]
    assert layout.describe()["read_positions"] == [0, 1] and layout.describe()["write_positions"] == [7, 8]
