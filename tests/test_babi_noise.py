"""The bAbI reader and generator, and the noise sources and their fact filter."""

from __future__ import annotations

import collections
import random
import re

import pytest

from rmt_core import babi, noise
from rmt_core.errors import TaskError
from rmt_core.tasks import TaskBuilder, default_tokenizer

QA1 = "qa1_single-supporting-fact"
QA4 = "qa4_two-arg-relations"


@pytest.fixture(scope="module")
def tok():
    return default_tokenizer()


# --- bAbI reader ----------------------------------------------------------------------------------


@pytest.mark.parametrize("folder,split,count", [("en-10k", "train", 10000), ("en-10k", "test", 1000),
                                                ("en", "train", 1000), ("en", "test", 1000)])
def test_reads_every_shared_question(shared_data, folder, split, count):
    qa1 = babi.read_babi(shared_data / "babi" / folder / f"{QA1}_{split}.txt")
    qa4 = babi.read_babi(shared_data / "babi" / folder / f"{QA4}_{split}.txt")
    assert len(qa1) == len(qa4) == count
    items1, items4 = babi.qa1_items(qa1), babi.qa4_items(qa4)
    assert len(items1) == len(items4) == count
    assert all(item.answer in babi.PLACES for item in items1 + items4)
    assert all(len(item.facts) == 1 for item in items1)
    assert all(len(item.facts) == 2 for item in items4)
    first = qa1[0]
    assert first.line == 3 and first.supporting == [1] and first.question.startswith("Where is ")
    assert first.answer == babi.parse_move(first.story[1])[1]


def test_wrong_task_file_is_rejected(shared_data):
    qa1 = babi.read_babi(shared_data / "babi" / "en" / f"{QA1}_test.txt")
    qa4 = babi.read_babi(shared_data / "babi" / "en" / f"{QA4}_test.txt")
    with pytest.raises(TaskError, match=r"_test\.txt:3: .*not a qa4 question"):
        babi.qa4_items(qa1)
    with pytest.raises(TaskError, match=r"_test\.txt:3: .*not a qa1 question"):
        babi.qa1_items(qa4)


GOOD = "1 Mary moved to the bathroom.\n2 John went to the hallway.\n3 Where is Mary? \tbathroom\t1\n"


@pytest.mark.parametrize("bad_line,problem", [
    ("Mary moved to the office.", "expected 'ID text'"),
    ("5 Sandra went to the garden.", "does not follow"),
    ("4 Where is John?\thallway", "tab-separated fields"),
    ("4 Where is John?\thallway\ttwo", "not numbers"),
    ("4 Where is John?\thallway\t9", "not a story line"),
    ("4 Where is John?\t\t2", "without question or answer"),
])
def test_malformed_line_named(tmp_path, bad_line, problem):
    path = tmp_path / "bad.txt"
    path.write_text(GOOD + bad_line + "\n" + "1 Daniel went to the office.\n")
    with pytest.raises(TaskError) as error:
        babi.read_babi(path)
    assert "bad.txt:4" in str(error.value) and problem in str(error.value)
    assert "\n" not in str(error.value)


def test_file_problems(tmp_path):
    with pytest.raises(TaskError, match="does not exist"):
        babi.read_babi(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(TaskError, match="empty"):
        babi.read_babi(tmp_path / "empty.txt")
    (tmp_path / "binary.txt").write_bytes(b"1 Mary\x00\xff\n")
    with pytest.raises(TaskError, match="binary"):
        babi.read_babi(tmp_path / "binary.txt")
    (tmp_path / "story.txt").write_text("1 Mary moved to the bathroom.\n")
    with pytest.raises(TaskError, match="no question lines"):
        babi.read_babi(tmp_path / "story.txt")
    with pytest.raises(TaskError, match="not a file"):
        babi.read_babi(tmp_path)
    with pytest.raises(TaskError, match="does not exist"):
        babi.find_task_file(tmp_path / "none", "qa1", "train")


def test_qa1_support_must_state_the_place(tmp_path):
    path = tmp_path / "qa1.txt"
    path.write_text("1 Mary moved to the bathroom.\n2 John went to the hallway.\n3 Where is Mary? \tbathroom\t2\n")
    with pytest.raises(TaskError, match=r"qa1\.txt:3: supporting fact"):
        babi.qa1_items(babi.read_babi(path))


def test_generator_vocabulary():
    rng = random.Random(0)
    for _ in range(500):
        item = babi.generate_qa1(rng)
        person, place = babi.parse_move(item.facts[0])
        assert person in babi.PEOPLE and place == item.answer
        assert item.question == f"Where is {person}?"
        item = babi.generate_qa4(rng)
        assert all(babi.parse_relation(f) for f in item.facts)
        assert babi.solve_relations(item.facts, item.question) == {item.answer}
        assert item.answer in babi.PLACES



def _qa4_layout(item: babi.BabiItem) -> tuple[str, str, str]:
    """How a qa4 item is laid out: the shared place's role in each statement (R reference, S subject, sorted),
    whether the two directions are the same, opposite or across, and the answer's role in the statement that
    answers the question on its own."""
    relations = [babi.parse_relation(fact) for fact in item.facts]
    (shared,) = {relations[0][0], relations[0][2]} & {relations[1][0], relations[1][2]}
    roles = "".join(sorted("R" if r == shared else "S" for _, _, r in relations))
    d1, d2 = relations[0][1], relations[1][1]
    turn = "same" if d1 == d2 else "opposite" if babi.OPPOSITE[d1] == d2 else "across"
    (answering,) = [(s, d, r) for s, d, r in relations
                    if babi.solve_relations([f"The {s} is {d} of the {r}."], item.question) == {item.answer}]
    return roles, turn, "subject" if item.answer == answering[0] else "reference"


def test_generator_lays_out_qa4_as_babi_does():
    # Three places on a line (directions the same or opposite, never across), the shared place the reference of
    # both statements in about 4 of 9 samples and the subject of both in 1 of 9, the answer always the subject
    rng = random.Random(3)
    layouts = [_qa4_layout(babi.generate_qa4(rng)) for _ in range(3000)]
    assert {turn for _, turn, _ in layouts} == {"same", "opposite"}
    assert {answer for _, _, answer in layouts} == {"subject"}
    share = {roles: sum(r == roles for r, _, _ in layouts) / len(layouts) for roles in ("RR", "RS", "SS")}
    assert share["RR"] == pytest.approx(4 / 9, abs=0.03) and share["SS"] == pytest.approx(1 / 9, abs=0.02)


def test_generator_matches_babi_train_split(shared_data):
    # Each of the layouts above is as common in generated samples as in bAbI's en-10k train split, within 3 points
    items = babi.qa4_items(babi.read_babi(shared_data / "babi" / "en-10k" / f"{QA4}_train.txt"))
    rng = random.Random(4)
    generated = [babi.generate_qa4(rng) for _ in range(len(items))]
    counts = [collections.Counter(_qa4_layout(item) for item in group) for group in (items, generated)]
    assert set(counts[0]) == set(counts[1])
    for layout in counts[0]:
        assert abs(counts[0][layout] - counts[1][layout]) / len(items) < 0.03, layout


# --- noise ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("sentence,fact_like", [
    ("Mary went to the kitchen.", True),
    ("Later, daniel travelled back to the Office with his dog.", True),
    ("The garden is north of the office.", True),
    ("The kitchen was small.", False),
    ("Mary smiled at the stranger.", False),
    ("The gardener walked north.", False),
    ("John and the hallways of the east wing", True),
])
def test_fact_filter(sentence, fact_like):
    assert noise.is_fact_like(sentence) is fact_like


def test_planted_facts_are_removed(tmp_path, tok):
    planted = ["Mary went to the kitchen.", "John journeyed to the garden.", "The office is east of the bedroom."]
    rng = random.Random(1)
    lines = []
    for i in range(60):
        passage = [f"Passage {i} tells a story about a lighthouse keeper.", "The kitchen was small and warm.",
                   rng.choice(planted), f"Nobody asked question number {i} again."]
        lines.append(" ".join(passage))
    path = tmp_path / "noise.txt"
    path.write_text("\n".join(lines) + "\n")
    source = noise.NoiseSource.load(path, tok)
    assert not any(s in planted for s in source.sentences)
    assert "The kitchen was small and warm." in source.sentences
    # and no sample built on it carries a planted sentence as noise
    planted_ids = [tok(s, add_special_tokens=False)["input_ids"] for s in planted]
    builder = TaskBuilder("detect", tok, 64, noise_file=path)
    for seed in range(50):
        sample = builder.sample(4, seed)
        text = sample.input_ids
        noise_only = [t if r == 0 else -1 for t, r in zip(text, sample.roles)]
        for ids in planted_ids:
            assert not any(noise_only[i:i + len(ids)] == ids for i in range(len(noise_only) - len(ids) + 1))


def test_builtin_noise(tok):
    sentences = noise.builtin_sentences()
    assert sentences == noise.builtin_sentences()  # the same on every call and machine
    assert len(set(sentences)) >= 3000
    assert not any(noise.is_fact_like(s) for s in sentences)
    assert any(re.search(r"\bkitchen\b", s) for s in sentences)  # place words alone do occur
    words = {w.lower().strip(".,") for s in sentences for w in s.split()}
    assert len(words) > 250


def _place_share(sentences) -> float:
    return sum(bool(noise._PLACE_WORD.search(s)) for s in sentences) / len(sentences)


def test_builtin_noise_names_babi_places_about_as_rarely_as_real_text():
    # about 1 sentence in 200 (QuALITY's dev questions 0.5%, the training fortunes 0.3%); at the 6.6% it once
    # drew, "The kitchen was dusty." after a fact cost the shipped detect 11 points of its bare rmt eval
    assert 0.003 <= _place_share(noise.builtin_sentences()) <= 0.008


def test_builtin_noise_names_babi_places_as_often_as_quality(shared_data):
    real = [s for line in (shared_data / "quality" / "questions.dev.txt").read_text().splitlines()
            for s in noise.split_sentences(line)]
    assert 0.5 <= _place_share(noise.builtin_sentences()) / _place_share(real) <= 2


def test_pydoc_noise(tok):
    sentences = noise.pydoc_sentences()
    assert len(sentences) > 100
    assert not any(noise.is_fact_like(s) for s in sentences)
    sample = TaskBuilder("memorize", tok, 32, noise_file=noise.BUILTIN_PYDOC).sample(3, 0)
    assert sample.sources["noise"] == noise.BUILTIN_PYDOC and len(sample.input_ids) == 96


def test_vocab_noise_covers_the_vocabulary_without_babi_words(tok):
    sentences = noise.vocab_sentences(tok, count=3000)
    assert sentences == noise.vocab_sentences(tok, count=3000)  # deterministic for one tokenizer
    assert len(sentences) > 2900 and not any(noise.is_fact_like(s) for s in sentences)
    banned = {w.lower() for w in babi.PEOPLE + babi.PLACES + babi.DIRECTIONS}
    words = {w.lower().strip('.,?"\'') for s in sentences for w in s.split()}
    assert not banned & words
    assert any(s.endswith("?") for s in sentences) and any(s.endswith(".") for s in sentences)
    # The grammar alone uses a few hundred token types; the vocabulary pool reaches most of the tokenizer.
    builtin = noise.NoiseSource.load(noise.BUILTIN, tok)
    pooled = noise.NoiseSource.load(noise.BUILTIN_VOCAB, tok)
    types = lambda source: {i for ids in source.token_ids for i in ids}  # noqa: E731
    assert len(types(builtin)) < 1000 < 15000 < len(types(pooled))
    assert set(builtin.sentences) <= set(pooled.sentences)
    sample = TaskBuilder("detect", tok, 64, noise_file=noise.BUILTIN_VOCAB).sample(4, 3)
    assert sample.sources["noise"] == noise.BUILTIN_VOCAB and len(sample.input_ids) == 256


def test_decoy_noise_looks_like_facts_and_states_none(tok):
    decoys = noise.decoy_sentences()
    assert decoys == noise.decoy_sentences() and len(set(decoys)) >= 3000
    assert not any(noise.is_fact_like(s) for s in decoys)  # no bAbI person with a place, no two bAbI places
    assert not any(re.search(r"\b(" + "|".join(babi.PEOPLE) + r")\b", s) for s in decoys)
    moves = [s for s in decoys if re.search(r"\b(went|moved|journeyed|travelled)\b", s)]
    rooms = [s for s in moves if re.search(r"\b(" + "|".join(babi.PLACES) + r")\b", s)]
    assert len(moves) > 400 and len(rooms) > 200  # the verbs of bAbI's facts, with its rooms
    assert any(s.endswith("?") for s in decoys) and any(re.search(r"'s (office|kitchen)", s) for s in decoys)
    assert any(re.search(r" is (north|south|east|west) of the (" + "|".join(babi.PLACES) + r")\.", s) for s in decoys)
    pooled = noise.NoiseSource.load(noise.BUILTIN_DECOYS, tok)
    assert set(noise.NoiseSource.load(noise.BUILTIN_VOCAB, tok).sentences) < set(pooled.sentences)
    assert set(decoys) <= set(pooled.sentences)
    sample = TaskBuilder("detect", tok, 64, noise_file=noise.BUILTIN_DECOYS).sample(4, 3)
    assert sample.sources["noise"] == noise.BUILTIN_DECOYS and len(sample.facts) == 1
    # the one fact of the sample is still the one a bAbI question can be answered from
    assert babi.parse_move(sample.facts[0].text)[0] in babi.PEOPLE


def test_decoy_share_draws_decoys_at_the_asked_rate(tok):
    import random
    decoys = set(noise.decoy_sentences())
    for name, lo, hi in (("builtin:decoys:0.02", 0.01, 0.03), ("builtin:decoys:0.5", 0.45, 0.55),
                         (noise.BUILTIN_DECOYS, 0.12, 0.25)):
        source = noise.NoiseSource.load(name, tok)
        assert set(source.sentences) == set(noise.NoiseSource.load(noise.BUILTIN_DECOYS, tok).sentences)
        stream = noise.NoiseStream(source, random.Random(1))
        text = {tuple(ids): s for s, ids in zip(source.sentences, source.token_ids)}
        drawn = [text[tuple(stream._draw())] for _ in range(4000)]
        share = sum(s in decoys for s in drawn) / len(drawn)
        assert lo < share < hi, (name, share)
    # the plain name draws exactly as before: uniform over the pool
    source = noise.NoiseSource.load(noise.BUILTIN_DECOYS, tok)
    rng = random.Random(5)
    expected = [source.token_ids[rng.randrange(len(source))] for _ in range(50)]
    stream = noise.NoiseStream(source, random.Random(5))
    assert [stream._draw() for _ in range(50)] == expected
    sample = TaskBuilder("detect", tok, 64, noise_file="builtin:decoys:0.01").sample(4, 3)
    assert sample.sources["noise"] == "builtin:decoys:0.01" and len(sample.facts) == 1


@pytest.mark.parametrize("name", ["builtin:decoys:0", "builtin:decoys:1", "builtin:decoys:nan",
                                  "builtin:decoys:lots", "builtin:decoys:", "builtin:decoys:-0.1"])
def test_decoy_share_must_be_a_probability(tok, name):
    with pytest.raises(TaskError, match=r"between 0 and 1.*builtin:decoys:0\.01"):
        noise.NoiseSource.load(name, tok)


def test_question_decoys_are_fact_like_questions_that_state_none():
    questions = noise.question_decoy_sentences()
    assert questions == noise.question_decoy_sentences() and len(set(questions)) >= 3000
    assert all(s.endswith("?") for s in questions)
    assert not any(noise.is_fact_like(s) for s in questions)
    assert not any(re.search(r"\b(" + "|".join(babi.PEOPLE) + r")\b", s) for s in questions)
    rooms = [s for s in questions if re.search(r"\b(" + "|".join(babi.PLACES) + r")\b", s)]
    assert len(rooms) > 1000  # bAbI's rooms, in someone else's question


def _noise_file(tmp_path, name="prose.txt", count=200):
    path = tmp_path / name
    path.write_text("".join(f"The ship number {i} sailed past the lighthouse at dawn.\n" for i in range(count)))
    return path


@pytest.mark.parametrize("kind", ["questions", "decoys"])
def test_any_noise_takes_decoys_at_the_asked_rate(tok, tmp_path, kind):
    path = _noise_file(tmp_path)
    pool = set(noise.question_decoy_sentences() if kind == "questions" else noise.decoy_sentences())
    name = f"{path}+{kind}:0.2"
    source = noise.NoiseSource.load(name, tok)
    assert source.decoy_from == 200 and source.decoy_share == 0.2 and len(source) > 3000  # the whole pool, any P
    assert set(source.sentences[:200]) == set(noise.NoiseSource.load(path, tok).sentences)
    text = {tuple(ids): s for s, ids in zip(source.sentences, source.token_ids)}
    stream = noise.NoiseStream(source, random.Random(3))
    drawn = [text[tuple(stream._draw())] for _ in range(4000)]
    share = sum(s in pool for s in drawn) / len(drawn)
    assert 0.17 < share < 0.23, share
    assert len({s for s in drawn if s in pool}) > 500  # many decoys, not a few seen often
    sample = TaskBuilder("detect", tok, 64, noise_file=name).sample(4, 3)
    assert sample.sources["noise"] == name and len(sample.facts) == 1
    # a built-in base works the same way
    assert noise.NoiseSource.load(f"builtin+{kind}:0.01", tok).decoy_from == len(noise.builtin_sentences())


def test_a_file_named_like_a_mix_is_read_as_the_file(tok, tmp_path):
    path = _noise_file(tmp_path, name="odd+questions:0.5")
    source = noise.NoiseSource.load(path, tok)
    assert source.decoy_share is None and len(source) == 200


@pytest.mark.parametrize("suffix, words", [("+questions:0", "between 0 and 1.*prose.txt\\+questions:0\\.01"),
                                           ("+decoys:nan", "between 0 and 1"),
                                           ("+decoys:0.1+questions:0.1", "one decoy share")])
def test_a_bad_decoy_mix_names_the_fix(tok, tmp_path, suffix, words):
    with pytest.raises(TaskError, match=words):
        noise.NoiseSource.load(f"{_noise_file(tmp_path)}{suffix}", tok)


def test_a_decoy_mix_of_a_missing_file_names_the_file(tok, tmp_path):
    with pytest.raises(TaskError, match=r"missing\.txt does not exist"):
        noise.NoiseSource.load(f"{tmp_path}/missing.txt+questions:0.01", tok)


def test_vocab_noise_needs_a_wordpiece_vocabulary():
    class Letters:
        def get_vocab(self):
            return {"[PAD]": 0, "a": 1, "b": 2}

    with pytest.raises(TaskError, match="builtin:vocab"):
        noise.vocab_sentences(Letters())


def test_quality_noise(tok, shared_data):
    path = shared_data / "quality" / "questions.dev.txt"
    source = noise.NoiseSource.load(path, tok)
    assert len(source) > 1500
    assert not any(noise.is_fact_like(s) for s in source.sentences)


def test_bad_noise_files(tmp_path, tok):
    babi_like = tmp_path / "babi.txt"
    babi_like.write_text(GOOD * 10)
    with pytest.raises(TaskError, match="looks like a bAbI"):
        noise.file_sentences(babi_like)
    short = tmp_path / "short.txt"
    short.write_text("Only one sentence here.\n")
    with pytest.raises(TaskError, match="usable sentences"):
        noise.file_sentences(short)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(TaskError, match="empty"):
        noise.file_sentences(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait.\n".encode("latin-1"))
    with pytest.raises(TaskError, match=r"latin1\.txt:1: not UTF-8"):
        noise.file_sentences(tmp_path / "latin1.txt")


def test_special_token_text_dropped(tmp_path, tok):
    path = tmp_path / "noise.txt"
    lines = [f"The sailor counted {i} gulls over the harbour." for i in range(30)]
    lines.append("This line smuggles a [SEP] token into the text.")
    path.write_text("\n".join(lines) + "\n")
    source = noise.NoiseSource.load(path, tok)
    assert len(source) == 30
    special = set(tok.all_special_ids)
    assert not any(special.intersection(ids) for ids in source.token_ids)


def test_take_ids_is_take_flattened_and_carries_the_cut_sentence_on(tokenizer):
    source = noise.NoiseSource.load("builtin", tokenizer)
    chunks, flat = noise.NoiseStream(source, random.Random(3)), noise.NoiseStream(source, random.Random(3))
    for budget in (7, 64, 5, 100):  # budgets that cut sentences: the rest starts the next call
        expected = [t for ids, _, _ in chunks.take(budget) for t in ids]
        assert flat.take_ids(budget) == expected and len(expected) == budget
