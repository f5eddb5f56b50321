"""Generative tasks built the way BABILong builds them: a whole bAbI story hidden in noise, the answer generated.

A sample of task `qa1` (or `qa2`) holds every fact of one bAbI story up to its question, in story order, each
placed at a random sentence boundary of a noise stream; the question follows the noise, and the answer tokens
(the place, then the end-of-answer token) close the input. The whole sample is exactly
`n_segments * segment_size` tokens: a decoder RMT trains on all of it (the loss on the answer tokens) and, to
answer, reads everything up to the question and generates the rest.

    qa1  "Where is Mary?"          the asked person's latest place (several people move about)
    qa2  "Where is the football?"  the place of an object: where its holder is, or where it was put down

Facts come from a bAbI v1.2 file (`babi_file`, or the qa1/qa2 file of `split` in `babi_dir`) or from the
built-in generator with bAbI's vocabulary (stories of 2, 4, ..., 10 facts, as bAbI's own qa1 stories).
A story that does not fit the sample with its question and answer is redrawn. A fact may cross a segment
boundary: `Fact.segment` is the segment where it ends (where the model has read all of it).
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from rmt_core import babi
from rmt_core.errors import TaskError
from rmt_core.layout import ROLE_ANSWER, ROLE_FACT, ROLE_NOISE, ROLE_QUESTION
from rmt_core.noise import NoiseSource, NoiseStream

GENERATIVE_TASKS = ("qa1", "qa2")
OBJECTS = ("apple", "football", "milk")
TAKE_VERBS = ("got", "grabbed", "picked up", "took")
DROP_VERBS = ("dropped", "discarded", "put down", "left")
STORY_FACTS = (2, 4, 6, 8, 10)  # facts before a question in bAbI's qa1 stories
QA2_STORY_FACTS = tuple(range(2, 21))
MAX_REDRAWS = 200

_OBJECT = "|".join(OBJECTS)
_TAKE = re.compile(r"^(\w+) (got|grabbed|picked up|took) the (" + _OBJECT + r") there\.$")
_DROP = re.compile(r"^(\w+) (dropped|discarded|put down|left) the (" + _OBJECT + r")( there)?\.$")
_WHERE_OBJECT = re.compile(r"^Where is the (" + _OBJECT + r")\?$")


# ----- the world a story describes ----------------------------------------------------------------------------
class World:
    """Where everyone and everything is after each fact of a qa1/qa2 story."""

    def __init__(self):
        self.person: dict[str, str] = {}  # person -> place
        self.holder: dict[str, str] = {}  # object -> person holding it
        self.dropped: dict[str, str] = {}  # object -> place it was put down

    def read(self, fact: str) -> dict:
        """Apply one fact; returns what it says ({"person", "place"} or {"person", "object", "action"})."""
        moved = babi.parse_move(fact)
        if moved is not None:
            self.person[moved[0]] = moved[1]
            return {"person": moved[0], "place": moved[1]}
        taken = _TAKE.match(fact)
        if taken is not None:
            self.holder[taken.group(3)] = taken.group(1)
            self.dropped.pop(taken.group(3), None)
            return {"person": taken.group(1), "object": taken.group(3), "action": "take"}
        put = _DROP.match(fact)
        if put is not None:
            obj = put.group(3)
            if self.holder.get(obj) == put.group(1):
                del self.holder[obj]
                if put.group(1) in self.person:
                    self.dropped[obj] = self.person[put.group(1)]
            return {"person": put.group(1), "object": obj, "action": "drop"}
        raise TaskError(f"{fact!r} is not a qa1/qa2 statement (a move, or taking or putting down an object)")

    def place_of_object(self, obj: str) -> str | None:
        if obj in self.holder:
            return self.person.get(self.holder[obj])
        return self.dropped.get(obj)

    def answer(self, question: str) -> str | None:
        asked = babi._WHERE.match(question)
        if asked is not None:
            return self.person.get(asked.group(1))
        obj = _WHERE_OBJECT.match(question)
        return self.place_of_object(obj.group(1)) if obj is not None else None


def last_fact_answers(item: babi.BabiItem) -> bool:
    """True when the story's last fact names the answer (the shortcut "the place mentioned last" is right)."""
    return item.answer in item.facts[-1]


def solve(facts: list[str], question: str) -> str | None:
    """The answer to `question` after reading `facts` in order (None when the story does not say)."""
    world = World()
    for fact in facts:
        world.read(fact)
    return world.answer(question)


# ----- stories from files and from the generator -------------------------------------------------------------
def story_items(questions: list[babi.BabiQuestion], task: str) -> list[babi.BabiItem]:
    """BABILong items of a qa1/qa2 file: every story line before each question (story order), the question, the
    answer; checked against the story (the answer must follow from the facts)."""
    items = []
    for q in questions:
        where = f"bAbI file {q.path}:{q.line}"
        form = babi._WHERE if task == "qa1" else _WHERE_OBJECT
        if form.match(q.question) is None:
            wanted = "Where is <person>?" if task == "qa1" else "Where is the <object>?"
            raise TaskError(f"{where}: {q.question!r} is not a {task} question ('{wanted}'); give a {task} file")
        facts = [q.story[i] for i in sorted(q.story)]
        try:
            answer = solve(facts, q.question)
        except TaskError as error:
            raise TaskError(f"{where}: {error}; give a {task} file") from None
        if answer != q.answer:
            raise TaskError(f"{where}: the answer {q.answer!r} does not follow from the story; give a {task} file")
        items.append(babi.BabiItem(facts, q.question, q.answer, q.line))
    return items


def generate_story(task: str, rng: random.Random, n_facts: int | None = None) -> babi.BabiItem:
    """A qa1 or qa2 story in bAbI's vocabulary, with a question whose answer follows from it."""
    while True:
        count = n_facts or rng.choice(STORY_FACTS if task == "qa1" else QA2_STORY_FACTS)
        world, facts = World(), []
        for _ in range(count):
            person = rng.choice(babi.PEOPLE)
            held = [o for o, p in world.holder.items() if p == person]
            free = [o for o in OBJECTS if o not in world.holder]
            roll = rng.random()
            if task == "qa2" and person in world.person and held and roll < 0.25:
                fact = f"{person} {rng.choice(DROP_VERBS)} the {rng.choice(held)}."
            elif task == "qa2" and person in world.person and free and roll < 0.5:
                fact = f"{person} {rng.choice(TAKE_VERBS)} the {rng.choice(free)} there."
            else:
                fact = f"{person} {rng.choice(babi.MOVE_VERBS)} to the {rng.choice(babi.PLACES)}."
            world.read(fact)
            facts.append(fact)
        if task == "qa1":
            question = f"Where is {rng.choice(sorted(world.person))}?"
        else:
            known = [o for o in OBJECTS if world.place_of_object(o) is not None]
            if not known:
                continue
            question = f"Where is the {rng.choice(known)}?"
        return babi.BabiItem(facts, question, world.answer(question))


# ----- samples -------------------------------------------------------------------------------------------------
def end_of_answer_id(tokenizer) -> int | None:
    """The token that ends a generated answer: GPT-2's end-of-text, a BERT-style tokenizer's [SEP]."""
    end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    return None if end is None else int(end)


def check_task(task: str, architecture: str) -> None:
    """TaskError unless `task` is one the architecture answers: the paper's three for an encoder (an answer
    head), qa1/qa2 for a decoder (a generated answer)."""
    generative = task in GENERATIVE_TASKS
    if generative != (architecture == "decoder"):
        wanted = "decoder" if generative else "encoder"
        raise TaskError(f"task {task} is for the {wanted} and this model is the {architecture}; give a "
                        f"{'generative task (qa1, qa2)' if architecture == 'decoder' else 'task memorize, detect or reason'}"
                        f" or {'an encoder' if wanted == 'encoder' else 'a decoder'} checkpoint")


def make_builder(task: str, tokenizer, segment_size: int, **sources):
    """The sample builder of any task: `StoryTaskBuilder` for the generative ones (qa1, qa2), `tasks.TaskBuilder`
    for the paper's three. `sources`: babi_file, babi_dir, noise_file, split (and TaskBuilder's options)."""
    from rmt_core.tasks import TASKS, TaskBuilder

    if task in GENERATIVE_TASKS:
        return StoryTaskBuilder(task, tokenizer, segment_size, **sources)
    if task not in TASKS:
        raise TaskError(f"unknown task {task!r}; choose one of {', '.join(TASKS + GENERATIVE_TASKS)}")
    return TaskBuilder(task, tokenizer, segment_size, **sources)


class StoryTaskBuilder:
    """Builds samples and training batches of a generative task (qa1, qa2), BABILong style; the same interface
    as `tasks.TaskBuilder` (`sample`, `samples`, `batch`), batches carrying an answer mask instead of labels."""

    def __init__(self, task: str, tokenizer, segment_size: int, babi_file: str | Path | None = None,
                 babi_dir: str | Path | None = None, noise_file: str | Path | None = None, split: str = "train",
                 hard_fraction: float = 0.0, every_person: bool = False, quiz: bool = False):
        from rmt_core.tasks import _check_int, check_sources

        if task not in GENERATIVE_TASKS:
            raise TaskError(f"unknown generative task {task!r}; choose one of {', '.join(GENERATIVE_TASKS)}")
        check_sources(split, babi_file, babi_dir)
        if not 0.0 <= hard_fraction <= 1.0:
            raise TaskError(f"hard fraction {hard_fraction!r} must lie in 0..1; give --hard-fraction between 0 and 1")
        self.task, self.tokenizer, self.split = task, tokenizer, split
        if every_person and task != "qa1":
            raise TaskError(f"every_person is for qa1 (people's places), not {task}; drop --every-person")
        if quiz and task != "qa1":
            raise TaskError(f"quiz is for qa1 (people's places), not {task}; drop --quiz")
        self.hard_fraction, self.every_person, self.quiz = hard_fraction, every_person, quiz
        self.segment_size = _check_int(segment_size, "segment size", 1, "give a positive --segment-size")
        if babi_dir is not None:
            babi_file = babi.find_task_file(babi_dir, task, split)
        self.babi_path = Path(babi_file) if babi_file is not None else None
        self.items = story_items(babi.read_babi(self.babi_path), task) if self.babi_path is not None else None
        self.noise = NoiseSource.load(noise_file, tokenizer)
        self.end_id = end_of_answer_id(tokenizer)
        self._ids: dict[str, list[int]] = {}

    def ids(self, text: str) -> list[int]:
        """Token ids of a fact, question or answer as it follows other text (a leading space: GPT-2's BPE
        spells a word after a space differently; WordPiece ignores it)."""
        if text not in self._ids:
            self._ids[text] = list(self.tokenizer(" " + text, add_special_tokens=False)["input_ids"])
        return self._ids[text]

    def answer_ids(self, answer: str) -> list[int]:
        """The tokens a model generates for `answer`: the word, then the end-of-answer token."""
        return self.ids(answer) + ([] if self.end_id is None else [self.end_id])

    def _item(self, rng: random.Random, room: int, quiz_rng: random.Random | None = None):
        # With hard_fraction, that share of samples is redrawn until the story's last fact does not give the answer
        # (so "the place mentioned last" is wrong and only binding the asked person to their place answers it).
        hard = self.hard_fraction > 0 and rng.random() < self.hard_fraction
        for _ in range(MAX_REDRAWS):
            if self.items is not None:
                item = self.items[rng.randrange(len(self.items))]
            else:
                item = generate_story(self.task, rng)
            quiz = self._quiz(item, quiz_rng) if self.quiz else [None] * len(item.facts)
            need = sum(len(self.ids(f)) for f in item.facts) + sum(
                len(self.ids(q)) + len(self.answer_ids(a)) for q, a in self._questions(item) + [p for p in quiz if p])
            if need <= room and not (hard and last_fact_answers(item)):
                return item, quiz
        raise TaskError(f"no {self.task} story of {self.babi_path or 'the generator'} fits in {room} tokens with its "
                        "question and answer after many draws; use more or longer segments")

    def _questions(self, item: babi.BabiItem) -> list[tuple[str, str]]:
        """The (question, answer) pairs that close a sample: the item's own; with every_person, then one for
        every other person the story has placed (story order of first mention), each answered from the story."""
        pairs = [(item.question, item.answer)]
        if self.every_person:
            world = World()
            for fact in item.facts:
                world.read(fact)
            pairs += [(f"Where is {p}?", place) for p, place in world.person.items()
                      if f"Where is {p}?" != item.question]
        return pairs

    @staticmethod
    def _quiz(item: babi.BabiItem, rng: random.Random) -> list[tuple[str, str] | None]:
        """One question and answer after each fact, about a person placed so far other than the fact's own (when
        there is one), answered from the story up to that fact: "the place just mentioned" is then wrong whenever
        someone else has been placed (with two people placed, "the place before it" still answers)."""
        world, pairs = World(), []
        for fact in item.facts:
            said = world.read(fact)
            others = sorted(p for p in world.person if p != said.get("person")) or sorted(world.person)
            person = rng.choice(others) if others else None
            pairs.append((f"Where is {person}?", world.person[person]) if person else None)
        return pairs

    def sample(self, n_segments: int, seed: int):
        """One sample of exactly n_segments * segment_size tokens (facts, noise, question, answer), from `seed`."""
        from rmt_core.tasks import Fact, Sample, _as_int, _check_int

        n = _check_int(n_segments, "number of segments", 1, "give --segments 1 or more")
        seed = _as_int(seed)
        if seed is None:
            raise TaskError("seed must be an integer; give --seed as a whole number")
        total = n * self.segment_size
        rng = random.Random(seed)
        item, quiz = self._item(rng, total, random.Random(seed * 7919 + 1))
        fact_ids = [self.ids(f) for f in item.facts]
        quiz_ids = [(self.ids(pair[0]), self.answer_ids(pair[1])) if pair else ([], []) for pair in quiz]
        question_ids, answer_ids = self.ids(item.question), self.answer_ids(item.answer)
        more_pairs = self._questions(item)[1:]
        more = [(self.ids(q), self.answer_ids(a)) for q, a in more_pairs]
        noise = total - sum(map(len, fact_ids)) - len(question_ids) - len(answer_ids) - sum(
            len(q) + len(a) for q, a in more + quiz_ids)
        chunks = NoiseStream(self.noise, rng).take(noise, final=True)
        # Facts go in at sentence starts (or the end of the noise), each at a random one, kept in story order.
        boundaries = [i for i in range(len(chunks) + 1) if i == len(chunks) or chunks[i][1]]
        points = sorted(rng.choice(boundaries) for _ in fact_ids)
        input_ids: list[int] = []
        roles: list[int] = []
        spans = []
        k = 0
        for i in range(len(chunks) + 1):
            while k < len(fact_ids) and points[k] == i:
                spans.append((len(input_ids), len(input_ids) + len(fact_ids[k])))
                input_ids += fact_ids[k]
                roles += [ROLE_FACT] * len(fact_ids[k])
                quiz_question, quiz_answer = quiz_ids[k]  # quiz: a question about someone, right after the fact
                input_ids += quiz_question + quiz_answer
                roles += [ROLE_QUESTION] * len(quiz_question) + [ROLE_ANSWER] * len(quiz_answer)
                k += 1
            if i < len(chunks):
                input_ids += chunks[i][0]
                roles += [ROLE_NOISE] * len(chunks[i][0])
        question_span = (len(input_ids), len(input_ids) + len(question_ids))
        input_ids += question_ids
        roles += [ROLE_QUESTION] * len(question_ids)
        answer_span = (len(input_ids), len(input_ids) + len(answer_ids))
        input_ids += answer_ids
        roles += [ROLE_ANSWER] * len(answer_ids)
        for more_question, more_answer in more:  # every_person: the other people's places, after the asked one
            input_ids += more_question + more_answer
            roles += [ROLE_QUESTION] * len(more_question) + [ROLE_ANSWER] * len(more_answer)
        if len(input_ids) != total:  # a bug, never a user error
            raise AssertionError(f"sample has {len(input_ids)} tokens, expected {total}")
        facts, world = [], World()
        for index, (text, (start, end)) in enumerate(zip(item.facts, spans)):
            said = world.read(text)
            facts.append(Fact(text=text, kind="location" if "place" in said else "object", start=start, end=end,
                              segment=(end - 1) // self.segment_size, story_index=index, person=said["person"],
                              place=said.get("place"), object=said.get("object"), action=said.get("action")))
        return Sample(
            task=self.task, n_segments=n, segment_size=self.segment_size, input_ids=input_ids, roles=roles,
            facts=facts, question=item.question, question_span=question_span,
            answer=babi.PLACES.index(item.answer), answer_name=item.answer, seed=seed,
            sources={"babi": str(self.babi_path) if self.babi_path else "builtin", "babi_line": item.line,
                     "noise": self.noise.name, "split": self.split, "story_facts": len(item.facts),
                     **({"more_questions": [list(p) for p in more_pairs]} if self.every_person else {}),
                     **({"quiz": [list(p) if p else None for p in quiz]} if self.quiz else {})},
            answer_span=answer_span,
        )

    def samples(self, n_segments: int, batch_size: int, seed: int) -> list:
        from rmt_core.tasks import _check_int, sample_seed

        _check_int(batch_size, "batch size", 1, "give a batch size of 1 or more")
        return [self.sample(n_segments, sample_seed(seed, i)) for i in range(batch_size)]

    def batch(self, n_segments: int, batch_size: int, seed: int):
        """(input_ids LongTensor [B, N * S], answer mask LongTensor [B, N * S]: 1 at the answer tokens)."""
        import torch

        samples = self.samples(n_segments, batch_size, seed)
        ids = torch.tensor([s.input_ids for s in samples], dtype=torch.long)
        mask = torch.tensor([[int(r == ROLE_ANSWER) for r in s.roles] for s in samples], dtype=torch.long)
        return ids, mask
