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
