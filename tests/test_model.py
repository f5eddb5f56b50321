"""The RMT recurrence: equivalence with the backbone, gradients through memory, memory as the only path."""

import torch

from conftest import make_tiny_rmt


def random_ids(model, batch, n_segments, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1000, 2000, (batch, n_segments * model.config.segment_size), generator=g)


def test_one_segment_equals_backbone_by_hand(tiny_rmt):
    model = tiny_rmt
    ids = random_ids(model, 2, 1)
    m, S = model.num_mem_tokens, model.config.segment_size
    # By hand: [CLS] mem*m [SEP] tokens [SEP] through the backbone's embeddings, pooler and the linear head.
    emb = model.backbone.get_input_embeddings()
    cls = emb(torch.full((2, 1), model.cls_id))
    sep = emb(torch.full((2, 1), model.sep_id))
    embeds = torch.cat([cls, model.memory.expand(2, -1, -1), sep, emb(ids), sep], dim=1)
    assert embeds.shape[1] == S + m + 3
    out = model.backbone(inputs_embeds=embeds)
    expected = model.classifier(out.pooler_output)
    with torch.no_grad():
        got = model(ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_full_bptt_reaches_initial_memory(tokenizer):
    model = make_tiny_rmt(tokenizer).train()
    ids = random_ids(model, 2, 3)
    model(ids, labels=torch.tensor([0, 1])).loss.backward()
    assert model.memory.grad is not None and model.memory.grad.abs().sum() > 0


def test_truncated_bptt_stops_before_the_cut(tokenizer):
    model = make_tiny_rmt(tokenizer, bptt_depth=2).train()
    ids = random_ids(model, 2, 4)
    memories = []
    original = model.segment_step

    def spy(memory, *args, **kwargs):
        if memory.requires_grad:
            memory.retain_grad()
        memories.append(memory)
        return original(memory, *args, **kwargs)

    model.segment_step = spy
    model(ids, labels=torch.tensor([0, 1])).loss.backward()
    # Segments 0 and 1 lie before the cut (4 - 2): no gradient reaches the initial memory or memory_in of 1.
    assert model.memory.grad is None or model.memory.grad.abs().sum() == 0
    assert memories[1].grad is None or memories[1].grad.abs().sum() == 0
    # Inside the last 2 segments the gradient flows: memory_in of the last segment gets one.
    assert memories[3].grad is not None and memories[3].grad.abs().sum() > 0


def test_earlier_segments_reach_the_answer_only_through_memory(tiny_rmt):
    model = tiny_rmt
    torch.nn.init.normal_(model.classifier.weight, std=1.0)  # a random head with std 0.02 hides small effects
    segments = list(random_ids(model, 1, 3).view(1, 3, -1).unbind(1))
    with torch.no_grad():
        memory0 = model.initial_memory(1)
        out1 = model.segment_step(memory0, segments[0])

        def finish(memory_after_first):
            memory = memory_after_first
            for seg in segments[1:]:
                memory_step = model.segment_step(memory, seg)
                memory = memory_step.memory_out
            return memory_step.logits

        base = finish(out1.memory_out)
        torch.testing.assert_close(base, model(torch.cat(segments, 1)).logits)
        perturbed = finish(out1.memory_out + 0.5 * torch.randn_like(out1.memory_out))
        assert (perturbed - base).abs().max() > 1e-4  # float noise is ~1e-7
        # Different tokens in segment 1 but the same memory_out: the answer cannot change.
        other = torch.randint(2000, 3000, segments[0].shape)
        assert not torch.equal(model.segment_step(memory0, other).memory_out, out1.memory_out)
        torch.testing.assert_close(finish(out1.memory_out), base, atol=0, rtol=0)


def test_attention_kernel_switch_records_probabilities(tiny_rmt):
    model = tiny_rmt
    ids = random_ids(model, 1, 1)
    assert model.attention_kernel == "sdpa"
    with torch.no_grad(), model.recording():
        step = model.segment_step(model.initial_memory(1), ids, output_attentions=True)
    assert model.attention_kernel == "sdpa"
    L = model.backbone.config.num_hidden_layers
    T = model.config.input_size
    assert len(step.attentions) == L and step.attentions[0].shape == (1, 2, T, T)
    torch.testing.assert_close(step.attentions[0].sum(-1), torch.ones(1, 2, T))
    with torch.no_grad():
        fast = model(ids).logits
    torch.testing.assert_close(step.logits, fast, atol=1e-5, rtol=0)


def test_padded_last_segment_ignores_padding(tiny_rmt):
    model = tiny_rmt
    S = model.config.segment_size
    ids = random_ids(model, 1, 1)
    mask = torch.ones_like(ids)
    mask[:, S // 2 :] = 0
    garbage = ids.clone()
    garbage[:, S // 2 :] = 7
    with torch.no_grad():
        a = model(ids, attention_mask=mask).logits
        b = model(garbage, attention_mask=mask).logits
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
