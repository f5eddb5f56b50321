"""bAbI facts: a reader for the standard file format and a built-in generator with bAbI's own vocabulary.

File format (bAbI v1.2): every line is `ID text`; IDs restart at 1 with each story. A question line is
`ID question<TAB>answer<TAB>supporting-fact-ids`. Only qa1 (single supporting fact) and qa4 (two-argument
relations) are turned into task items; `read_babi` parses the shared format of every task.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from rmt_core.errors import TaskError

PEOPLE = ("Mary", "John", "Daniel", "Sandra")
MOVE_VERBS = ("moved", "went", "went back", "journeyed", "travelled")
PLACES = ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office")
DIRECTIONS = ("north", "south", "east", "west")
OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}
# generate_qa4: the share of statements that name the middle of the three places as their reference (bAbI's qa4)
MIDDLE_AS_REFERENCE = 2 / 3

_LINE = re.compile(r"^(\d+) (.*)$")
_PLACE = "|".join(PLACES)
_DIRECTION = "|".join(DIRECTIONS)
# qa1 statement: "Daniel went back to the hallway."
_MOVE = re.compile(r"^(\w+) (moved|went back|went|journeyed|travelled) to the (" + _PLACE + r")\.$")
_WHERE = re.compile(r"^Where is (\w+)\?$")
# qa4 statement: "The hallway is east of the bathroom."
_RELATION = re.compile(r"^The (" + _PLACE + r") is (" + _DIRECTION + r") of the (" + _PLACE + r")\.$")
# qa4 questions: "What is north of the kitchen?" / "What is the garden east of?"
_WHAT_IS_DIR_OF = re.compile(r"^What is (" + _DIRECTION + r") of the (" + _PLACE + r")\?$")
_WHAT_IS_X_DIR_OF = re.compile(r"^What is the (" + _PLACE + r") (" + _DIRECTION + r") of\?$")


@dataclass
class BabiQuestion:
    """One question of a bAbI file with the story lines before it (id -> text) and where it was read."""

    question: str
    answer: str
    supporting: list[int]
    story: dict[int, str]
    line: int
    path: str


@dataclass
class BabiItem:
    """A task-ready unit: the fact sentences (story order), the question and its answer place."""

    facts: list[str]
    question: str
    answer: str
    line: int | None = None  # line of the question in its file; None for generated items
    extra: dict = field(default_factory=dict)


def _open_text(path: str | Path, what: str) -> list[str]:
    """The lines of a text file, or TaskError naming the path and the fix."""
    path = Path(path)
    if not path.exists():
        raise TaskError(f"{what} {path} does not exist; give the path of an existing file")
    if not path.is_file():
        raise TaskError(f"{what} {path} is not a file; give the path of a text file")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise TaskError(f"{what} {path} cannot be read ({error.strerror}); check its permissions") from None
    if not data.strip():
        raise TaskError(f"{what} {path} is empty; give a file with content")
    if b"\x00" in data:
        raise TaskError(f"{what} {path} is a binary file, not text; give a UTF-8 text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise TaskError(f"{what} {path}:{line}: not UTF-8 text; give a UTF-8 text file") from None
    return text.splitlines()


def read_babi(path: str | Path) -> list[BabiQuestion]:
    """Parse any bAbI v1.2 file into its questions, in file order.

    Raises TaskError naming path and line for a missing or empty file or a malformed line.
    """
    lines = _open_text(path, "bAbI file")
    questions: list[BabiQuestion] = []
    story: dict[int, str] = {}
    last_id = 0
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        where = f"bAbI file {path}:{number}"
        match = _LINE.match(raw)
        if match is None:
            raise TaskError(f"{where}: expected 'ID text' (a number, a space, the text), got {raw[:60]!r}; "
                            "give a file in the bAbI format")
        line_id, body = int(match.group(1)), match.group(2)
        if line_id == 1:
            story, last_id = {}, 0
        elif line_id != last_id + 1:
            raise TaskError(f"{where}: line id {line_id} does not follow {last_id} (ids count 1, 2, ... "
                            "within a story); give a file in the bAbI format")
        last_id = line_id
        if "\t" not in body:
            text = body.strip()
            if not text:
                raise TaskError(f"{where}: empty story line; give a file in the bAbI format")
            story[line_id] = text
            continue
        parts = body.split("\t")
        if len(parts) != 3:
            raise TaskError(f"{where}: a question line needs 'question<TAB>answer<TAB>fact ids', "
                            f"found {len(parts)} tab-separated fields; give a file in the bAbI format")
        question, answer, support = parts[0].strip(), parts[1].strip(), parts[2].split()
        if not question or not answer:
            raise TaskError(f"{where}: question line without question or answer; give a file in the bAbI format")
        if not support or not all(s.isdigit() for s in support):
            raise TaskError(f"{where}: supporting fact ids {parts[2]!r} are not numbers; "
                            "give a file in the bAbI format")
        supporting = [int(s) for s in support]
        for fact_id in supporting:
            if fact_id not in story:
                raise TaskError(f"{where}: supporting fact {fact_id} is not a story line before the question; "
                                "give a file in the bAbI format")
        questions.append(BabiQuestion(question, answer, supporting, dict(story), number, str(path)))
    if not questions:
        raise TaskError(f"bAbI file {path} holds no question lines (ID question<TAB>answer<TAB>ids); "
                        "give a bAbI task file")
    return questions


def parse_move(sentence: str) -> tuple[str, str] | None:
    """(person, place) of a qa1 statement such as 'Daniel went back to the hallway.', else None."""
    match = _MOVE.match(sentence)
    return (match.group(1), match.group(3)) if match else None


def parse_relation(sentence: str) -> tuple[str, str, str] | None:
    """(subject, direction, reference) of 'The hallway is east of the bathroom.', else None."""
    match = _RELATION.match(sentence)
    return (match.group(1), match.group(2), match.group(3)) if match else None


QUESTION_FORMS = {"of": "What is D of the P?", "is": "What is the P D of?"}  # parse_relation_question's forms


def parse_relation_question(question: str) -> tuple[str, str, str] | None:
    """A qa4 question as ('of', direction, place) for 'What is D of the P?' or ('is', place, direction)
    for 'What is the P D of?'; None when it is neither."""
    match = _WHAT_IS_DIR_OF.match(question)
    if match:
        return ("of", match.group(1), match.group(2))
    match = _WHAT_IS_X_DIR_OF.match(question)
    if match:
        return ("is", match.group(1), match.group(2))
    return None


def solve_relations(facts: list[str], question: str) -> set[str]:
    """Every place the qa4 question can be answered with, by direct facts and their inverses."""
    relations = set()  # (a, d, b): a is d of b
    for fact in facts:
        parsed = parse_relation(fact)
        if parsed:
            a, d, b = parsed
            relations.add((a, d, b))
            relations.add((b, OPPOSITE[d], a))
    form = parse_relation_question(question)
    if form is None:
        return set()
    if form[0] == "of":  # What is d of p?  -> a with (a, d, p)
        _, d, p = form
        return {a for a, rd, b in relations if rd == d and b == p}
    _, p, d = form  # What is p d of?  -> b with (p, d, b)
    return {b for a, rd, b in relations if a == p and rd == d}


RELATION_KINDS = {
    "one": "one fact names the asked place",
    "subject+reference": "the asked place is a subject in one fact, a reference in the other",
    "both reference": "the asked place is the reference of both facts",
    "both subject": "the asked place is the subject of both facts",
}


def relation_kind(facts: list[str], question: str) -> str | None:
    """Which key of RELATION_KINDS a qa4 question is: how the asked place sits in the two facts. Only
    "both reference" and "both subject" leave two candidates that place roles alone cannot tell apart."""
    form = parse_relation_question(question)
    if form is None:
        return None
    asked = form[2] if form[0] == "of" else form[1]
    roles = sorted("reference" if r == asked else "subject"
                   for a, _, r in filter(None, map(parse_relation, facts)) if asked in (a, r))
    if len(roles) < 2:
        return "one"
    return "subject+reference" if roles[0] != roles[1] else f"both {roles[0]}"


WRONG_ANSWER_KINDS = {
    "partner": "another place a fact relates to the asked place",
    "chain": "the far end of the chain: a place only the other fact names",
    "asked": "the asked place itself",
    "unnamed": "a place no fact names",
}


def wrong_answer_kind(facts: list[str], question: str, answer: str) -> str | None:
    """Which key of WRONG_ANSWER_KINDS a wrong answer to a qa4 question is (None when the question is not qa4's).
    "chain" is the place two steps from the asked one: with "The hallway is west of the garden." and "The bedroom
    is west of the hallway.", "bedroom" for "What is the garden east of?"."""
    form = parse_relation_question(question)
    if form is None:
        return None
    asked = form[2] if form[0] == "of" else form[1]
    relations = [r for r in map(parse_relation, facts) if r]
    if answer == asked:
        return "asked"
    if any(asked in (a, r) and answer in (a, r) for a, _, r in relations):
        return "partner"
    return "chain" if any(answer in (a, r) for a, _, r in relations) else "unnamed"


def needs_direction(facts: list[str], question: str) -> bool:
    """True when place names alone leave two answers: both facts relate the asked place to another place."""
    form = parse_relation_question(question)
    if form is None:
        return False
    asked = form[2] if form[0] == "of" else form[1]
    others = set()
    for fact in facts:
        parsed = parse_relation(fact)
        if parsed and asked in (parsed[0], parsed[2]):
            others.add(parsed[2] if parsed[0] == asked else parsed[0])
    return len(others) >= 2


def qa1_items(questions: list[BabiQuestion]) -> list[BabiItem]:
    """qa1 items: the one supporting fact states where the asked person is; the answer is its place."""
    items = []
    for q in questions:
        where = f"bAbI file {q.path}:{q.line}"
        asked = _WHERE.match(q.question)
        if asked is None:
            raise TaskError(f"{where}: {q.question!r} is not a qa1 question ('Where is <person>?'); "
                            "memorize and detect need a qa1 (single supporting fact) file")
        if q.answer not in PLACES:
            raise TaskError(f"{where}: answer {q.answer!r} is not one of the six places {', '.join(PLACES)}; "
                            "give a qa1 file")
        if len(q.supporting) != 1:
            raise TaskError(f"{where}: a qa1 question has one supporting fact, this one has "
                            f"{len(q.supporting)}; give a qa1 (single supporting fact) file")
        fact = q.story[q.supporting[0]]
        moved = parse_move(fact)
        if moved is None or moved != (asked.group(1), q.answer):
            raise TaskError(f"{where}: supporting fact {fact!r} does not say that {asked.group(1)} is in the "
                            f"{q.answer}; give a qa1 file")
        items.append(BabiItem([fact], q.question, q.answer, q.line, {"person": moved[0]}))
    return items


def qa4_items(questions: list[BabiQuestion]) -> list[BabiItem]:
    """qa4 items: the two statements of the question's story (story order) and the question."""
    items = []
    for q in questions:
        where = f"bAbI file {q.path}:{q.line}"
        if parse_relation_question(q.question) is None:
            raise TaskError(f"{where}: {q.question!r} is not a qa4 question ('What is <dir> of the <place>?' "
                            "or 'What is the <place> <dir> of?'); reason needs a qa4 (two-arg relations) file")
        if q.answer not in PLACES:
            raise TaskError(f"{where}: answer {q.answer!r} is not one of the six places; give a qa4 file")
        # The supporting statement(s) first, topped up with the latest other statements to make two.
        chosen = list(dict.fromkeys(q.supporting))[:2]
        for fact_id in reversed(sorted(q.story)):
            if len(chosen) >= 2:
                break
            if fact_id not in chosen:
                chosen.append(fact_id)
        chosen.sort()
        facts = [q.story[i] for i in chosen]
        if len(facts) != 2 or not all(parse_relation(f) for f in facts):
            raise TaskError(f"{where}: the story does not hold two relation statements "
                            "('The <place> is <dir> of the <place>.'); give a qa4 file")
        if solve_relations(facts, q.question) != {q.answer}:
            raise TaskError(f"{where}: the answer {q.answer!r} does not follow from {facts}; give a qa4 file")
        items.append(BabiItem(facts, q.question, q.answer, q.line))
    return items


def find_task_file(babi_dir: str | Path, task: str, split: str) -> Path:
    """The qa1 (task 'qa1') or qa4 file of a split ('train' or 'test') in a bAbI folder."""
    folder = Path(babi_dir)
    if not folder.is_dir():
        raise TaskError(f"bAbI folder {folder} does not exist; give a folder holding qaN_*_{split}.txt files")
    matches = sorted(folder.glob(f"{task}_*_{split}.txt"))
    if not matches:
        raise TaskError(f"bAbI folder {folder} has no {task}_*_{split}.txt file; "
                        "give a folder of bAbI v1.2 task files (such as en-10k/) or use --babi-file")
    return matches[0]


def generate_qa1(rng: random.Random) -> BabiItem:
    """A qa1-style fact and question from bAbI's own vocabulary."""
    person, verb, place = rng.choice(PEOPLE), rng.choice(MOVE_VERBS), rng.choice(PLACES)
    return BabiItem([f"{person} {verb} to the {place}."], f"Where is {person}?", place, None, {"person": person})


def generate_qa4(rng: random.Random) -> BabiItem:
    """Two qa4 relation statements and a question, laid out as bAbI's own qa4 stories are.

    In bAbI's qa4 files (measured on en-10k's train split) the three places of a story lie on one line: each
    statement relates the middle place to one of its two neighbours, naming the middle place as its reference
    in about two statements of three ("The office is north of the kitchen.") and as its subject otherwise.
    The question asks for one statement's subject from its reference, in either form ("What is north of the
    kitchen?" or "What is the kitchen south of?"). Samples drawn here follow that layout, so that a checkpoint
    trained on bAbI meets the same questions on a machine without the files.
    """
    near, middle, far = rng.sample(PLACES, 3)  # a line far - middle - near, running `direction`
    direction = rng.choice(DIRECTIONS)
    facts = []
    for subject, way, reference in ((near, direction, middle), (middle, direction, far)):
        middle_as_reference = rng.random() < MIDDLE_AS_REFERENCE
        if (reference == middle) != middle_as_reference:  # state it the other way round
            subject, way, reference = reference, OPPOSITE[way], subject
        facts.append((subject, way, reference))
    rng.shuffle(facts)
    subject, way, reference = rng.choice(facts)
    question = rng.choice((f"What is {way} of the {reference}?", f"What is the {reference} {OPPOSITE[way]} of?"))
    return BabiItem([f"The {s} is {w} of the {r}." for s, w, r in facts], question, subject)


def all_generated_texts(kind: str) -> tuple[list[str], list[str]]:
    """Every fact and question text the generator can produce (for worst-case length checks)."""
    if kind == "qa1":
        facts = [f"{p} {v} to the {x}." for p in PEOPLE for v in MOVE_VERBS for x in PLACES]
        return facts, [f"Where is {p}?" for p in PEOPLE]
    facts = [f"The {a} is {d} of the {b}." for a in PLACES for b in PLACES if a != b for d in DIRECTIONS]
    questions = [f"What is {d} of the {p}?" for d in DIRECTIONS for p in PLACES]
    questions += [f"What is the {p} {d} of?" for d in DIRECTIONS for p in PLACES]
    return facts, questions
