"""Figure builders: arrays and token lists in, plotly figures out, with the data they claim to show."""

from __future__ import annotations

import numpy as np
import pytest

from rmt_core.viz import figures
from rmt_core.model import ROLE_FACT, ROLE_MEMORY, ROLE_NOISE, ROLE_PAD, ROLE_QUESTION, ROLE_SPECIAL

M = 3  # memory slots


def segment_layout(n_tokens=8, pads=2):
    """Tokens and roles of one segment: [CLS] mem*M [SEP] tokens [SEP] [PAD]*pads."""
    tokens = ["[CLS]"] + [f"[mem{k}]" for k in range(M)] + ["[SEP]"]
    roles = [ROLE_SPECIAL] + [ROLE_MEMORY] * M + [ROLE_SPECIAL]
    body_roles = [ROLE_FACT, ROLE_FACT] + [ROLE_NOISE] * (n_tokens - 4) + [ROLE_QUESTION, ROLE_QUESTION]
    tokens += [f"w{i}" for i in range(n_tokens)] + ["[SEP]"] + ["[PAD]"] * pads
    roles += body_roles + [ROLE_SPECIAL] + [ROLE_PAD] * pads
    return tokens, np.array(roles)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_head_slice_means_and_picks(rng):
    attention = rng.random((2, 3, 5, 4))
    assert np.allclose(figures.head_slice(attention), attention.mean(axis=(0, 1)))
    assert np.allclose(figures.head_slice(attention, layer=1, head=2), attention[1, 2])
    assert np.allclose(figures.head_slice(attention, layer=0), attention[0].mean(axis=0))
    assert np.allclose(figures.head_slice(attention, head=1), attention[:, 1].mean(axis=0))
    with pytest.raises(ValueError):
        figures.head_slice(attention[0])


def test_read_attention_figure_shows_slots_against_tokens_without_padding(rng):
    tokens, roles = segment_layout()
    T = len(tokens)
    read = rng.random((2, 2, T, M))  # [L, H, T, m]
    fig = figures.read_attention_figure(read, tokens, roles, layer=1, head=0, segment=4)
    heat, strip = fig.data[0], fig.data[1]
    keep = np.flatnonzero(roles != ROLE_PAD)
    assert np.allclose(np.array(heat.z), read[1, 0][keep].T)  # (m, T'): slot k against every token
    assert list(strip.z[0]) == roles[keep].tolist()
    assert "segment 4" in fig.layout.title.text and "layer 1, head 0" in fig.layout.title.text
    legend = {trace.name for trace in fig.data if trace.showlegend}
    assert legend == {"fact", "question", "special", "memory", "noise"}  # roles present, padding hidden
    assert list(fig.layout.xaxis2.ticktext) == [tokens[p] for p in keep]


def test_write_attention_figure_uses_memory_queries(rng):
    tokens, roles = segment_layout()
    T = len(tokens)
    write = rng.random((2, 2, M, T))  # [L, H, m, T]
    fig = figures.write_attention_figure(write, tokens, roles)
    keep = np.flatnonzero(roles != ROLE_PAD)
    assert np.allclose(np.array(fig.data[0].z), write.mean(axis=(0, 1))[:, keep])
    assert "mean of all layers and heads" in fig.layout.title.text
    full = figures.write_attention_figure(write, tokens, roles, keep_pad=True)
    assert np.array(full.data[0].z).shape == (M, T)


def test_attention_figure_rejects_mismatched_tokens(rng):
    tokens, roles = segment_layout()
    with pytest.raises(ValueError, match="tokens"):
        figures.read_attention_figure(rng.random((1, 1, len(tokens) + 1, M)), tokens, roles)


def test_long_segments_label_positions_not_tokens(rng):
    tokens, roles = segment_layout(n_tokens=200, pads=0)
    fig = figures.token_strip_figure(tokens, roles)
    assert len(fig.layout.xaxis.ticktext) < 30  # position numbers every few tokens
    assert all(text.isdigit() for text in fig.layout.xaxis.ticktext)


def test_token_strip_codes_and_hover(rng):
    tokens, roles = segment_layout()
    fig = figures.token_strip_figure(tokens, roles, title="Segment 2")
    keep = np.flatnonzero(roles != ROLE_PAD)
    assert list(fig.data[0].z[0]) == roles[keep].tolist()
    assert fig.data[0].text[0][M + 2] == f"pos {M + 2} · w0 · fact"
    assert fig.layout.title.text == "Segment 2"


def states_with_a_jump(n_segments=4, jump_at=1, slot=2, d=6, seed=0):
    rng = np.random.default_rng(seed)
    states = np.repeat(rng.normal(size=(1, M, d)), n_segments + 1, axis=0)
    states += 0.01 * rng.normal(size=states.shape)
    states[jump_at + 1:, slot] += 5.0  # slot `slot` moves in segment `jump_at` and stays moved
    return states


def test_memory_change_finds_the_slot_that_moved():
    states = states_with_a_jump(jump_at=1, slot=2)
    change = figures.memory_change(states)
    assert change.shape == (4, M)
    assert np.unravel_index(change.argmax(), change.shape) == (1, 2)
    fig = figures.memory_change_figure(states, fact_segments=[1])
    assert np.allclose(np.array(fig.data[0].z), change.T)
    assert [shape.x0 for shape in fig.layout.shapes] == [1]  # the fact's segment is marked
    bars = figures.slot_change_figure(states, 1)
    assert np.allclose(bars.data[0].y, change[1])
    assert np.allclose(bars.data[1].y, np.delete(change, 1, axis=0).mean(axis=0))
    with pytest.raises(ValueError):
        figures.slot_change_figure(states, 4)


def test_memory_norms_similarity_and_projection():
    states = states_with_a_jump()
    norms = figures.memory_norms_figure(states, fact_segments=[1])
    assert len(norms.data) == M
    assert np.allclose(norms.data[2].y, np.linalg.norm(states[:, 2], axis=-1))
    sim = figures.cosine_matrix(states)
    assert sim.shape == (5, 5) and np.allclose(np.diag(sim), 1) and np.allclose(sim, sim.T)
    assert sim[0, 1] > sim[0, 2]  # the jump after segment 1 lowers similarity to the initial memory
    projection = figures.memory_projection_figure(states)
    assert len(projection.data) == M and all(len(trace.x) == 5 for trace in projection.data)
    coords, ratio = figures.pca_2d(states.reshape(-1, states.shape[-1]))
    assert coords.shape == (5 * M, 2) and 0.5 < ratio.sum() <= 1 + 1e-9  # a strong first axis: the jump


def test_pca_of_a_single_point_does_not_fail():
    coords, ratio = figures.pca_2d(np.ones((1, 4)))
    assert coords.shape == (1, 2) and np.allclose(coords, 0)


def test_answer_figures():
    logits = np.array([0.0, 3.0, 0.0, 0.0, 1.0, 0.0])
    labels = ["bathroom", "bedroom", "garden", "hallway", "kitchen", "office"]
    fig = figures.answer_figure(logits, labels, answer=4)
    assert np.isclose(sum(fig.data[0].y), 1.0)
    assert fig.data[0].marker.color[4] == "#2ca02c"  # the true answer
    assert "prediction: bedroom" in fig.layout.title.text and "answer: kitchen" in fig.layout.title.text
    per_segment = figures.segment_answer_figure(np.stack([logits, logits[::-1]]), labels, answer=1, current=1)
    assert len(per_segment.data) == 6 and np.allclose(per_segment.data[1].y, figures.softmax(
        np.stack([logits, logits[::-1]]))[:, 1])


