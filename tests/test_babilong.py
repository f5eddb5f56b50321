"""BABILong-style generative tasks: a whole bAbI story in order in noise, the question, then the answer tokens;
exact lengths, full metadata, answers that follow from the story, on WordPiece and GPT-2 tokenizers."""

from __future__ import annotations

import random

import numpy as np

import pytest

from rmt_core import babi
from rmt_core.babilong import GENERATIVE_TASKS, StoryTaskBuilder, generate_story, make_builder, solve, story_items
from rmt_core.errors import TaskError
from rmt_core.inputs import ModelInput
from rmt_core.layout import ROLE_ANSWER, ROLE_FACT, ROLE_NOISE, ROLE_QUESTION
from rmt_core.tasks import Sample


def _check(sample, builder):
    S, n = sample.segment_size, sample.n_segments
    assert len(sample.input_ids) == len(sample.roles) == n * S
    ids, roles = sample.input_ids, sample.roles
    # Every fact, in story order, where its span says, whole.
    assert [f.story_index for f in sample.facts] == list(range(len(sample.facts)))
    assert all(a.end <= b.start for a, b in zip(sample.facts, sample.facts[1:]))
    for fact in sample.facts:
        assert ids[fact.start:fact.end] == builder.ids(fact.text)
        assert set(roles[fact.start:fact.end]) == {ROLE_FACT}
        assert fact.segment == (fact.end - 1) // S
    assert sum(r == ROLE_FACT for r in roles) == sum(f.end - f.start for f in sample.facts)
    q0, q1 = sample.question_span
    a0, a1 = sample.answer_span
    assert (q1, a1) == (a0, n * S)  # the question, then the answer closes the sample
    assert ids[q0:q1] == builder.ids(sample.question) and set(roles[q0:q1]) == {ROLE_QUESTION}
    assert ids[a0:a1] == builder.answer_ids(sample.answer_name) and set(roles[a0:a1]) == {ROLE_ANSWER}
    assert ids[a1 - 1] == builder.end_id
    assert set(roles[:q0]) <= {ROLE_NOISE, ROLE_FACT}
    # The answer follows from the story's facts, and it is the asked one's latest place.
    assert solve([f.text for f in sample.facts], sample.question) == sample.answer_name
    assert babi.PLACES[sample.answer] == sample.answer_name


@pytest.mark.parametrize("task", GENERATIVE_TASKS)
@pytest.mark.parametrize("n", [1, 2, 4])
def test_samples_have_exact_lengths_and_whole_stories_in_order(tokenizer, task, n):
    builder = make_builder(task, tokenizer, 64)
    assert isinstance(builder, StoryTaskBuilder)
    for seed in range(5):
        _check(builder.sample(n, seed), builder)


def test_gpt2_tokenizer_samples(gpt2_tokenizer):
    builder = StoryTaskBuilder("qa1", gpt2_tokenizer, 64)
    sample = builder.sample(4, 7)
    _check(sample, builder)
    assert builder.end_id == gpt2_tokenizer.eos_token_id
    assert gpt2_tokenizer.decode(builder.answer_ids(sample.answer_name)[:-1]).strip() == sample.answer_name


def test_a_seed_gives_one_sample_and_json_round_trips(tokenizer):
    builder = StoryTaskBuilder("qa1", tokenizer, 48)
    a, b = builder.sample(3, 11), builder.sample(3, 11)
    assert a == b and a != builder.sample(3, 12)
    assert Sample.from_json(a.to_json()) == a
    assert a.to_json()["answer_span"] == list(a.answer_span)


def test_facts_scatter_over_the_whole_input(tokenizer):
    builder = StoryTaskBuilder("qa1", tokenizer, 64)
    segments = {f.segment for seed in range(30) for f in builder.sample(4, seed).facts}
    assert segments == {0, 1, 2, 3}


def test_stories_from_the_babi_files_keep_every_fact_up_to_the_question(tokenizer, shared_data):
    folder = shared_data / "babi" / "en-10k"
    questions = babi.read_babi(babi.find_task_file(folder, "qa1", "test"))
    items = story_items(questions, "qa1")
    assert len(items) == len(questions)
    assert {len(item.facts) for item in items} == {2, 4, 6, 8, 10}
    assert items[1].facts == [questions[1].story[i] for i in sorted(questions[1].story)]
    # bAbI's own answers agree with the world the facts describe, for every question of qa2's test split too.
    assert len(story_items(babi.read_babi(babi.find_task_file(folder, "qa2", "test")), "qa2")) == 1000
    builder = StoryTaskBuilder("qa1", tokenizer, 64, babi_dir=folder, split="test",
                               noise_file=shared_data / "quality" / "questions.dev.txt")
    sample = builder.sample(4, 0)
    _check(sample, builder)
    item = next(i for i in items if i.line == sample.sources["babi_line"])
    assert [f.text for f in sample.facts] == item.facts
    assert sample.sources["story_facts"] == len(item.facts) and sample.sources["split"] == "test"


def test_a_story_that_cannot_fit_is_a_clear_error(tokenizer):
    with pytest.raises(TaskError, match="fits in 8 tokens.*more or longer segments"):
        StoryTaskBuilder("qa1", tokenizer, 8).sample(1, 0)


def test_the_model_reads_up_to_the_question_and_the_batch_marks_the_answer(tokenizer):
    builder = StoryTaskBuilder("qa1", tokenizer, 32)
    sample = builder.sample(3, 5)
    item = ModelInput.from_sample(sample)
    a0, a1 = sample.answer_span
    assert sum(item.segments, []) == sample.input_ids[:a0]
    assert [len(s) for s in item.segments] == [32, 32, 32 - (a1 - a0)]
    assert item.metadata["answer_span"] == [a0, a1] and item.sample is sample
    ids, mask = builder.batch(3, 4, seed=0)
    assert ids.shape == mask.shape == (4, 96)
    assert mask[:, -(a1 - a0):].sum() > 0 and mask.sum(dim=1).tolist() == [
        len(builder.answer_ids(s.answer_name)) for s in builder.samples(3, 4, seed=0)]


def test_generated_stories_answer_from_the_latest_fact():
    rng = random.Random(0)
    for task in GENERATIVE_TASKS:
        for _ in range(50):
            story = generate_story(task, rng)
            assert solve(story.facts, story.question) == story.answer
    moved = ["Mary went to the kitchen.", "John went to the garden.", "Mary travelled to the office."]
    assert solve(moved, "Where is Mary?") == "office"
    carried = ["John went to the garden.", "John got the milk there.", "John moved to the hallway.",
               "John put down the milk.", "John went to the office."]
    assert solve(carried, "Where is the milk?") == "hallway"


def test_world_state_targets_follow_the_facts_read_so_far(tokenizer):
    from probes.targets import WORLD_TARGETS, build_targets

    builder = StoryTaskBuilder("qa1", tokenizer, 48)
    samples = [builder.sample(4, seed) for seed in range(12)]
    targets = build_targets(samples)
    assert set(WORLD_TARGETS) <= set(targets)
    for k, sample in enumerate(samples):
        for person in ("Mary", "John", "Daniel", "Sandra"):
            where, previous = targets[f"where_{person}"], targets[f"previous_{person}"]
            for t in range(4):
                moves = [f for f in sorted(sample.facts, key=lambda f: f.story_index)
                         if f.person == person and f.segment <= t]
                assert where.classes[where.labels[k, t]] == (moves[-1].place if moves else "unknown")
                assert previous.classes[previous.labels[k, t]] == (moves[-2].place if len(moves) > 1 else "none")
        # The asked person's place after the last segment is the answer.
        asked = sample.question.split()[-1].rstrip("?")
        assert targets[f"where_{asked}"].classes[targets[f"where_{asked}"].labels[k, 3]] == sample.answer_name


def _world_memory(samples, keep_previous: bool, seed: int = 0):
    """Hand-made memory states (K, N+1, 8, 7): slot p one-hot of person p's current place (index 0: unknown);
    with keep_previous, slot 4+p also holds p's place after the segment before: a memory that does not
    overwrite an old place when a new one arrives."""
    from probes.targets import PEOPLE, places_seen
    from rmt_core.tasks import PLACES

    rng = np.random.default_rng(seed)
    K, N = len(samples), samples[0].n_segments
    states = rng.normal(0, 0.1, size=(K, N + 1, 8, 7)).astype(np.float32)
    for k, sample in enumerate(samples):
        for t in range(N):
            for p, person in enumerate(PEOPLE):
                places = places_seen(sample, person, t)
                states[k, t + 1, p, 1 + PLACES.index(places[-1]) if places else 0] += 1.0
                earlier = places_seen(sample, person, t - 1) if t > 0 else []
                if keep_previous and earlier:
                    states[k, t + 1, 4 + p, 1 + PLACES.index(earlier[-1])] += 1.0
    return states


def test_the_overwrite_test_tells_overwriting_from_keeping(tokenizer):
    from probes.linear import split_samples
    from probes.world import overwrite_events, overwrite_test

    builder = StoryTaskBuilder("qa1", tokenizer, 48)
    samples = [builder.sample(4, seed) for seed in range(600)]
    events = overwrite_events(samples, "Mary")
    assert events and all(t_new > 0 and old != new for _, t_new, old, new, _ in events)
    fit, test = split_samples(len(samples), 0.5, 0)
    people = ("Mary", "Sandra")

    def mean(rows, target, offset):
        values = [r["accuracy"] for r in rows if r["target"] == target and r["offset"] == offset]
        return sum(values) / len(values)

    overwriting = overwrite_test(_world_memory(samples, keep_previous=False), samples, fit, test, people)
    keeping = overwrite_test(_world_memory(samples, keep_previous=True), samples, fit, test, people)
    assert mean(overwriting, "old place", -1) > 0.9 and mean(overwriting, "old place", 0) < 0.5
    assert mean(overwriting, "new place", 0) > 0.9 and mean(overwriting, "new place", -1) < 0.5
    assert mean(keeping, "old place", 0) > 0.9


def test_hard_samples_are_not_answered_by_the_last_fact(tokenizer):
    from rmt_core.babilong import last_fact_answers

    def shortcut_share(builder):
        return np.mean([builder.sample(1, seed).facts[-1].place == builder.sample(1, seed).answer_name
                        for seed in range(200)])

    natural = StoryTaskBuilder("qa1", tokenizer, 64, noise_file="builtin:vocab")
    hard = StoryTaskBuilder("qa1", tokenizer, 64, noise_file="builtin:vocab", hard_fraction=1.0)
    assert shortcut_share(natural) > 0.4  # "the place mentioned last" is often right in the natural mix
    assert shortcut_share(hard) == 0.0
    for seed in range(50):
        sample = hard.sample(1, seed)
        assert sample.answer_name == solve([f.text for f in sample.facts], sample.question)
    assert not last_fact_answers(babi.BabiItem(["Mary went to the office.", "John went to the garden."],
                                               "Where is Mary?", "office"))
    with pytest.raises(TaskError, match="hard fraction"):
        StoryTaskBuilder("qa1", tokenizer, 64, noise_file="builtin:vocab", hard_fraction=1.5)


def test_every_person_closes_a_training_sample_with_each_placed_persons_place(tokenizer):
    builder = StoryTaskBuilder("qa1", tokenizer, 64, noise_file="builtin:vocab", every_person=True)
    for seed in range(30):
        sample = builder.sample(2, seed)
        assert len(sample.input_ids) == len(sample.roles) == 128
        q0, q1 = sample.question_span
        a0, a1 = sample.answer_span
        assert sample.input_ids[q0:q1] == builder.ids(sample.question) and q1 == a0
        assert sample.input_ids[a0:a1] == builder.answer_ids(sample.answer_name)
        assert set(sample.roles[a1:]) <= {ROLE_QUESTION, ROLE_ANSWER}  # only the other questions follow
        facts = [f.text for f in sample.facts]
        people = {f.person for f in sample.facts}
        pairs = [(sample.question, sample.answer_name)] + [tuple(p) for p in sample.sources["more_questions"]]
        assert sorted(q for q, _ in pairs) == sorted(f"Where is {p}?" for p in people)
        assert all(solve(facts, q) == a for q, a in pairs)
        assert sum(r == ROLE_ANSWER for r in sample.roles) == sum(len(builder.answer_ids(a)) for _, a in pairs)
        (first,), (_, mask) = builder.samples(2, 1, seed), builder.batch(2, 1, seed)
        assert int(mask.sum()) == sum(r == ROLE_ANSWER for r in first.roles)  # the loss sees every answer
    with pytest.raises(TaskError, match="every_person is for qa1"):
        StoryTaskBuilder("qa2", tokenizer, 64, noise_file="builtin:vocab", every_person=True)


def test_quiz_asks_about_another_placed_person_after_every_fact(tokenizer):
    builder = StoryTaskBuilder("qa1", tokenizer, 64, noise_file="builtin:vocab", quiz=True)
    plain = StoryTaskBuilder("qa1", tokenizer, 64, noise_file="builtin:vocab")
    asked_other = 0
    for seed in range(30):
        sample = builder.sample(2, seed)
        assert len(sample.input_ids) == len(sample.roles) == 128
        facts, quiz = [f.text for f in sample.facts], sample.sources["quiz"]
        assert len(quiz) == len(facts) and quiz[0] is not None  # the first fact's person is the only one placed
        for index, (fact, pair) in enumerate(zip(sample.facts, quiz)):
            question, answer = pair
            assert solve(facts[:index + 1], question) == answer  # the place at that point of the story
            asked_other += question != f"Where is {fact.person}?"
            # the question and answer follow the fact directly
            end = fact.end + len(builder.ids(question))
            assert sample.input_ids[fact.end:end] == builder.ids(question)
            assert sample.input_ids[end:end + len(builder.answer_ids(answer))] == builder.answer_ids(answer)
        a0, a1 = sample.answer_span  # the asked question still closes the sample
        assert a1 == 128 and sample.answer_name == solve(facts, sample.question)
        answers = sum(len(builder.answer_ids(a)) for _, a in quiz) + a1 - a0
        assert sum(r == ROLE_ANSWER for r in sample.roles) == answers
        assert builder.sample(2, seed).input_ids == sample.input_ids  # deterministic
        assert "quiz" not in plain.sample(2, seed).sources
    assert asked_other > 30  # mostly about someone other than the fact's own person
    with pytest.raises(TaskError, match="quiz is for qa1"):
        StoryTaskBuilder("qa2", tokenizer, 64, noise_file="builtin:vocab", quiz=True)


def test_the_shortcut_script_scores_the_last_place_shortcut(tokenizer):
    from conftest import load_script

    module = load_script("qa1_shortcuts")
    natural = module.shortcut_accuracies(StoryTaskBuilder("qa1", tokenizer, 64, noise_file="builtin:vocab"), 1, 100)
    hard = module.shortcut_accuracies(
        StoryTaskBuilder("qa1", tokenizer, 64, noise_file="builtin:vocab", hard_fraction=1.0), 1, 100)
    assert 20 < natural["last place"][0] < 100 and natural["last place"][1] == 100
    assert hard["last place"] == (0, 100)  # no hard story is answered by its last fact
