"""scripts/binding_diagnostic.py: its samples hold the story, then each question with its own answer."""

from __future__ import annotations

import random

from conftest import load_script


def test_samples_answer_each_question_from_the_story(tokenizer):
    from rmt_core.babilong import solve

    bd = load_script("binding_diagnostic")
    rng = random.Random(0)
    for kind, every in (("two", False), ("unique", True), ("any", True)):
        data = bd.Samples(tokenizer, kind)
        for _ in range(20):
            state = rng.getstate()
            ids, targets = data.sample(rng, every)
            rng.setstate(state)
            item = bd.story(rng, kind)
            rng.setstate(state)
            data.sample(rng, every)  # the same draws as the first call
            people = [f.split()[0] for f in item.facts]
            if kind == "two":
                assert len(item.facts) == 2 and len(set(people)) == 2 and len(targets) == 1
            if kind == "unique":
                assert len(set(people)) == len(people) and len(targets) == len(people)
            assert item.answer == solve(item.facts, item.question)
            assert len(ids) == bd.MAX_TOKENS
            first = targets[0]
            assert ids[first] == data.ids(item.answer)[0]
            assert ids[first - len(data.ids(item.question)):first] == data.ids(item.question)
    assert bd.main(["--steps", "0"]) == 1


def test_the_lm_loss_adds_the_next_token_loss_of_every_real_token():
    import torch
    from torch.nn import functional as F

    bd = load_script("binding_diagnostic")
    torch.manual_seed(0)
    model, body, head = bd.backbone("gpt2", 50, 16, 1, 2)
    ids = torch.tensor([[5, 6, 7, 8, 9, 0, 0], [5, 6, 7, 8, 10, 11, 0]])
    targets = [[4], [4, 5]]
    answers = bd.answer_loss(head, body, ids, targets)
    both = bd.answer_loss(head, body, ids, targets, lm_loss=True)
    logits = head(body(ids).last_hidden_state)
    by_hand = F.cross_entropy(torch.cat([logits[0, :4], logits[1, :5]]), torch.tensor([6, 7, 8, 9, 6, 7, 8, 10, 11]))
    assert torch.allclose(both - answers, by_hand, atol=1e-6)
