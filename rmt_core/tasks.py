"""The paper's three tasks (memorize, detect, reason) as tokenised samples of exactly N segments.

A sample is a flat list of `n_segments * segment_size` token ids (no special tokens): noise sentences with
the fact(s) placed whole inside segments and the question ending the last segment. Every sample records
where its facts landed, its question, answer, seed and sources, and is the same for a seed on any machine.
"""

from __future__ import annotations

import functools
import hashlib
import operator
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rmt_core import babi
from rmt_core.errors import TaskError
from rmt_core.layout import ROLE_FACT, ROLE_NOISE, ROLE_QUESTION  # noqa: F401  (re-exported)
from rmt_core.noise import NoiseSource, NoiseStream

TASKS = ("memorize", "detect", "reason")
LATE_WINDOW = 8  # late_facts: facts land in the last this many segments
PLACES = babi.PLACES  # label index = position
DEFAULT_SEGMENT_SIZE = 499  # 512 input positions - [CLS], [SEP], [SEP] - 10 memory tokens, as in the paper
SPLITS = ("train", "test")
# Tokens one sample may hold: 8 times the paper's 2,048,000, and a sample's token lists take ~16 bytes a token.
MAX_SAMPLE_TOKENS = 2**24
MAX_BATCH_TOKENS = 2**25  # tokens of one training batch (its lists and its int64 tensor: ~0.8 GB)
_BABI_TASK = {"memorize": "qa1", "detect": "qa1", "reason": "qa4"}


@dataclass
class Fact:
    """A fact sentence and where it landed: token span [start, end) of the flat sequence, and its segment."""

    text: str
    kind: str  # "location" (qa1) or "relation" (qa4)
    start: int
    end: int
    segment: int
    story_index: int = 0  # position of the fact in its bAbI story (qa4 facts may be placed in either order)
    prior: bool = False  # a fact of another story, earlier in the input (prior_facts)
    person: str | None = None  # location facts: who ...
    place: str | None = None  # ... is where
    subject: str | None = None  # relation facts: subject is `direction` of `reference`
    direction: str | None = None
    reference: str | None = None
    object: str | None = None  # qa2 facts (rmt_core.babilong): the object a person takes or puts down ...
    action: str | None = None  # ... "take" or "drop"


@dataclass
class Sample:
    """One task input with its metadata. `input_ids` and `roles` have n_segments * segment_size entries."""

    task: str
    n_segments: int
    segment_size: int
    input_ids: list[int]
    roles: list[int]
    facts: list[Fact]
    question: str
    question_span: tuple[int, int]
    answer: int
    answer_name: str
    seed: int
    sources: dict = field(default_factory=dict)
    # Generative tasks (rmt_core.babilong): the answer tokens close the sample; the model reads up to the question.
    answer_span: tuple[int, int] | None = None

    def segments(self) -> list[list[int]]:
        """The input cut into n_segments lists of segment_size ids."""
        size = self.segment_size
        return [self.input_ids[t * size:(t + 1) * size] for t in range(self.n_segments)]

    def to_json(self) -> dict:
        """All metadata and the token ids as plain JSON types."""
        data = asdict(self)
        data["question_span"] = list(self.question_span)
        if self.answer_span is None:  # the paper's tasks: the same JSON as before generative tasks existed
            del data["answer_span"]
        else:
            data["answer_span"] = list(self.answer_span)
        for fact in data["facts"]:  # fields of later kinds of fact appear only where they are set
            for key in ("object", "action"):
                if fact[key] is None:
                    del fact[key]
            if not fact["prior"]:
                del fact["prior"]
        return data

    @classmethod
    def from_json(cls, data: dict) -> "Sample":
        """The inverse of `to_json`."""
        fields = dict(data)
        fields["facts"] = [Fact(**fact) for fact in data["facts"]]
        fields["question_span"] = tuple(data["question_span"])
        if fields.get("answer_span") is not None:
            fields["answer_span"] = tuple(fields["answer_span"])
        return cls(**fields)


@functools.lru_cache(maxsize=1)
def default_tokenizer():
    """The uncased WordPiece tokenizer of all-MiniLM-L6-v2, loaded offline from its installed package."""
    try:
        from transformers import AutoTokenizer

        from rmt_core.pretrained import minilm_dir

        folder = minilm_dir()
    except ImportError as error:
        raise TaskError(f"cannot load the default tokenizer ({error}); install the requirements "
                        "(pip install -r requirements.txt)") from None
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample `index` of a batch seeded `seed` (a stable hash, not Python's hash())."""
    digest = hashlib.sha256(f"{seed}/{index}".encode()).digest()
    return int.from_bytes(digest[:7], "big")


_ITEMS: dict[tuple, list[babi.BabiItem]] = {}


def _load_items(path: Path, kind: str) -> list[babi.BabiItem]:
    """qa1 or qa4 items of a bAbI file, cached by path, size and modification time."""
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, kind)
    except OSError:
        key = None
    if key is None or key not in _ITEMS:
        questions = babi.read_babi(path)
        items = babi.qa1_items(questions) if kind == "qa1" else babi.qa4_items(questions)
        if key is None:
            return items
        _ITEMS[key] = items
    return _ITEMS[key]


def _as_int(value) -> int | None:
    """value as a Python int when it is an integer (numpy integers included, bools not), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def max_segments(segment_size: int) -> int:
    """The most segments of `segment_size` tokens one sample may hold (MAX_SAMPLE_TOKENS in all)."""
    return max(1, MAX_SAMPLE_TOKENS // max(1, int(segment_size)))


def check_sample_size(n_segments: int, segment_size: int) -> None:
    """TaskError, before anything is built, when a sample of n_segments x segment_size tokens is too long."""
    if n_segments * segment_size > MAX_SAMPLE_TOKENS:
        raise TaskError(f"{n_segments:,} segments of {segment_size} tokens is more than the {MAX_SAMPLE_TOKENS:,} "
                        f"tokens one sample may hold; give --segments {max_segments(segment_size):,} or fewer")


def _check_int(value, name: str, minimum: int, fix: str) -> int:
    number = _as_int(value)
    if number is None or number < minimum:
        raise TaskError(f"{name} must be an integer >= {minimum}, got {value!r}; {fix}")
    return number


def check_sources(split: str, babi_file, babi_dir) -> None:
    """TaskError for an unknown split or for both a bAbI file and a bAbI folder."""
    if split not in SPLITS:
        raise TaskError(f"unknown split {split!r}; choose train or test")
    if babi_file is not None and babi_dir is not None:
        raise TaskError("give a bAbI file or a bAbI folder, not both")


class TaskBuilder:
    """Builds samples and training batches of one task.

    Facts come from `babi_file`, from the qa1 (memorize, detect) or qa4 (reason) file of `split` in
    `babi_dir`, or from the built-in generator when neither is given. Noise comes from `noise_file`
    (one passage a line), or the built-in generator (None, "builtin"; "builtin:pydoc" mixes in Python's docs).
    """

    def __init__(self, task: str, tokenizer, segment_size: int, babi_file: str | Path | None = None,
                 babi_dir: str | Path | None = None, noise_file: str | Path | None = None, split: str = "train",
                 hard_fraction: float = 0.0, question_form: str | None = None, late_facts: float = 0.0,
                 prior_facts: float = 0.0, prior_asked: float = 0.0, facts_behind: float = 0.0,
                 prior_decoys: float = 0.0, chain_fraction: float = 0.0):
        if task not in TASKS:
            raise TaskError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
        check_sources(split, babi_file, babi_dir)
        if not 0.0 <= hard_fraction <= 1.0 or (hard_fraction and task != "reason"):
            raise TaskError(f"hard fraction {hard_fraction!r} must lie in 0..1 and is for the reason task only")
        if not 0.0 <= chain_fraction <= 1.0 - hard_fraction + 1e-9 or (chain_fraction and task != "reason"):
            raise TaskError(f"chain fraction {chain_fraction!r} must lie in 0..1 less the hard fraction and is for the "
                            "reason task only")
        if question_form not in (None, *babi.QUESTION_FORMS) or (question_form and task != "reason"):
            raise TaskError(f"question form {question_form!r} must be "
                            + " or ".join(f"'{k}' ('{v}')" for k, v in babi.QUESTION_FORMS.items())
                            + " and is for the reason task only")
        if not 0.0 <= late_facts <= 1.0 or (late_facts and task == "memorize"):
            raise TaskError(f"late facts {late_facts!r} must lie in 0..1 and is for detect and reason (memorize's "
                            "fact is always in the first segment)")
        if not 0.0 <= prior_facts <= 1.0 or (prior_facts and task != "detect"):
            raise TaskError(f"prior facts {prior_facts!r} must lie in 0..1 and is for detect only (its one fact is "
                            "the only one the question needs)")
        if not 0.0 <= prior_asked <= 1.0 or (prior_asked and not prior_facts):
            raise TaskError(f"prior asked {prior_asked!r} must lie in 0..1 and needs prior facts; "
                            "give --prior-facts too")
        if not 0.0 <= prior_decoys <= 1.0 or (prior_decoys and task != "detect"):
            raise TaskError(f"prior decoys {prior_decoys!r} must lie in 0..1 and is for detect only (a decoy before "
                            "its one fact)")
        if not 0.0 <= facts_behind <= 1.0 or (facts_behind and task != "reason"):
            raise TaskError(f"facts behind {facts_behind!r} must lie in 0..1 and is for reason only (its question "
                            "needs two facts)")
        self.task = task
        self.hard_fraction = hard_fraction
        self.chain_fraction = chain_fraction
        self.facts_behind = facts_behind
        self.late_facts = late_facts
        self.prior_facts = prior_facts
        self.prior_asked = prior_asked
        self.prior_decoys = prior_decoys
        self.question_form = question_form
        self.tokenizer = tokenizer
        self.segment_size = _check_int(segment_size, "segment size", 1, "give a positive --segment-size")
        self.split = split
        self.kind = _BABI_TASK[task]
        if babi_dir is not None:
            babi_file = babi.find_task_file(babi_dir, self.kind, split)
        self.babi_path = Path(babi_file) if babi_file is not None else None
        self.items = _load_items(self.babi_path, self.kind) if self.babi_path is not None else None
        self.noise = NoiseSource.load(noise_file, tokenizer)
        self._ids: dict[str, list[int]] = {}
        self._check_segment_size()

    # --- token ids of fact and question texts, tokenised once --------------------------------------

    def _tokenize(self, texts) -> None:
        new = sorted({t for t in texts if t not in self._ids})
        if new:
            for text, ids in zip(new, self.tokenizer(new, add_special_tokens=False)["input_ids"]):
                self._ids[text] = list(ids)

    def ids(self, text: str) -> list[int]:
        """Token ids of a fact or question text (no special tokens)."""
        if text not in self._ids:
            self._tokenize([text])
        return self._ids[text]

    def _check_segment_size(self) -> None:
        """Every fact and the question of a sample must fit in one segment together (N = 1)."""
        if self.items is None:
            facts, questions = babi.all_generated_texts(self.kind)
            self._tokenize(facts + questions)
            per_item = 2 if self.kind == "qa4" else 1
            need = max(len(self._ids[q]) for q in questions) + per_item * max(len(self._ids[f]) for f in facts)
        else:
            self._tokenize([t for item in self.items for t in item.facts + [item.question]])
            need = max(len(self._ids[item.question]) + sum(len(self._ids[f]) for f in item.facts)
                       for item in self.items)
        if self.segment_size < need:
            raise TaskError(f"segment size {self.segment_size} is smaller than the question and facts of a "
                            f"{self.task} sample ({need} tokens); use a segment size of at least {need}")
        self.min_segment_size = need

    # --- samples ----------------------------------------------------------------------------------

    def _item(self, rng: random.Random) -> babi.BabiItem:
        # With hard_fraction, that share of reason samples is redrawn until place names alone cannot answer it;
        # with chain_fraction, that share is redrawn until only one fact names the asked place (babi.relation_kind
        # "one"), so that the other fact's far place is the wrong answer to tell apart;
        # with question_form, every reason sample is redrawn until its question has that form.
        draw = rng.random() if self.hard_fraction > 0 or self.chain_fraction > 0 else 1.0
        hard = draw < self.hard_fraction
        chain = self.hard_fraction <= draw < self.hard_fraction + self.chain_fraction
        for _ in range(1000):
            if self.items is not None:
                item = self.items[rng.randrange(len(self.items))]
            else:
                item = babi.generate_qa1(rng) if self.kind == "qa1" else babi.generate_qa4(rng)
            if hard and not babi.needs_direction(item.facts, item.question):
                continue
            if chain and babi.relation_kind(item.facts, item.question) != "one":
                continue
            if self.question_form and (babi.parse_relation_question(item.question) or ("",))[0] != self.question_form:
                continue
            return item
        raise TaskError("the bAbI file holds no question of the kind asked for; use --hard-fraction 0, "
                        "--chain-fraction 0 and --question-form any")

    def sample(self, n_segments: int, seed: int) -> Sample:
        """One sample of exactly n_segments * segment_size tokens, determined by `seed`."""
        n = _check_int(n_segments, "number of segments", 1, "give --segments 1 or more")
        check_sample_size(n, self.segment_size)
        seed = _as_int(seed)
        if seed is None:
            raise TaskError("seed must be an integer; give --seed as a whole number")
        size = self.segment_size
        rng = random.Random(seed)
        item = self._item(rng)
        fact_ids = [self.ids(text) for text in item.facts]
        question_ids = self.ids(item.question)

        # Segment of each fact: memorize the first; detect and reason uniformly at random, each fact alone. With
        # late_facts, that share of samples draws them from the last LATE_WINDOW segments instead: facts written
        # after a long stretch of noise. With facts_behind (reason), that share of samples of 2 or more segments keeps
        # them out of the question's segment: memory alone carries both facts to the question.
        if self.task == "memorize":
            fact_segments = [0] * len(fact_ids)
        else:
            first = max(0, n - LATE_WINDOW) if self.late_facts and rng.random() < self.late_facts else 0
            end = n - 1 if self.facts_behind and n > 1 and rng.random() < self.facts_behind else n
            fact_segments = [rng.randrange(first, end) for _ in fact_ids]
        # With prior_facts (detect), that share of samples whose fact is not in the first segment also gets the fact
        # of another story in an earlier segment: memory already holds a fact when the one asked about arrives, and
        # the later fact must still write (a person's last move is where they are, as in bAbI's own stories).
        # With prior_asked, that share of the samples whose earlier fact is about someone else asks about that
        # person instead: both facts must then be kept, each with its person, and neither replaces the other.
        texts, question, answer = list(item.facts), item.question, item.answer
        if self.prior_facts and fact_segments[0] > 0 and rng.random() < self.prior_facts:
            texts.append(self._item(rng).facts[0])
            fact_ids.append(self.ids(texts[-1]))
            fact_segments.append(rng.randrange(0, fact_segments[0]))
            if self.prior_asked:
                person, place = babi.parse_move(texts[-1])
                if person != babi.parse_move(item.facts[0])[0] and rng.random() < self.prior_asked:
                    question, answer = f"Where is {person}?", place
                    question_ids = self.ids(question)

        # With prior_decoys (detect), that share of samples whose fact is not in the first segment gets one decoy,
        # a fact-like sentence that states no bAbI fact (prior_decoy_pool), in an earlier segment: the fact
        # must still write into memory that the decoy should have left alone. The decoy is noise, not a fact.
        inserts = list(fact_ids)  # what goes in at a sentence boundary: the facts, then a decoy
        insert_segments = list(fact_segments)
        decoy = None
        if self.prior_decoys and fact_segments[0] > 0 and rng.random() < self.prior_decoys:
            pool = prior_decoy_pool()
            decoy = pool[rng.randrange(len(pool))]
            inserts.append(self.ids(decoy))
            insert_segments.append(rng.randrange(0, fact_segments[0]))

        input_ids: list[int] = []
        roles: list[int] = []
        spans: dict[int, tuple[int, int, int]] = {}  # story index -> (start, end, segment)
        stream = NoiseStream(self.noise, rng)
        for t in range(n):
            here = [k for k, s in enumerate(insert_segments) if s == t]
            last = t == n - 1
            budget = size - sum(len(inserts[k]) for k in here) - (len(question_ids) if last else 0)
            chunks = stream.take(budget, final=last)
            points: dict[int, int] = {}  # story index -> chunk index the fact goes before
            if here:
                if self.task == "memorize":
                    points = {k: 0 for k in here}
                else:
                    boundaries = [i for i in range(len(chunks) + 1)
                                  if (chunks[i][1] if i < len(chunks) else (not chunks or chunks[-1][2]))]
                    if not boundaries:  # one long sentence fills the segment: its start is the only choice
                        boundaries = [0]
                    points = {k: boundaries[rng.randrange(len(boundaries))] for k in here}
            for i in range(len(chunks) + 1):
                for k in here:
                    if points[k] == i:
                        start = len(input_ids)
                        input_ids.extend(inserts[k])
                        is_fact = k < len(fact_ids)
                        roles.extend([ROLE_FACT if is_fact else ROLE_NOISE] * len(inserts[k]))
                        if is_fact:
                            spans[k] = (start, len(input_ids), t)
                if i < len(chunks):
                    input_ids.extend(chunks[i][0])
                    roles.extend([ROLE_NOISE] * len(chunks[i][0]))
            if last:
                input_ids.extend(question_ids)
                roles.extend([ROLE_QUESTION] * len(question_ids))
        total = n * size
        if len(input_ids) != total:  # a bug, never a user error
            raise AssertionError(f"sample has {len(input_ids)} tokens, expected {total}")

        facts = []
        for k, text in enumerate(texts):
            start, end, segment = spans[k]
            fact = Fact(text=text, kind="location" if self.kind == "qa1" else "relation", start=start, end=end,
                        segment=segment, story_index=k, prior=k >= len(item.facts))
            if self.kind == "qa1":
                fact.person, fact.place = babi.parse_move(text)
            else:
                fact.subject, fact.direction, fact.reference = babi.parse_relation(text)
            facts.append(fact)
        facts.sort(key=lambda f: f.start)
        return Sample(
            task=self.task, n_segments=n, segment_size=size, input_ids=input_ids, roles=roles, facts=facts,
            question=question, question_span=(total - len(question_ids), total),
            answer=PLACES.index(answer), answer_name=answer, seed=seed,
            sources={"babi": str(self.babi_path) if self.babi_path else "builtin", "babi_line": item.line,
                     "noise": self.noise.name, "split": self.split, **({"prior_decoy": decoy} if decoy else {})},
        )

    def samples(self, n_segments: int, batch_size: int, seed: int) -> list[Sample]:
        """The samples of `batch(n_segments, batch_size, seed)`; sample i has seed `sample_seed(seed, i)`."""
        _check_int(batch_size, "batch size", 1, "give a batch size of 1 or more")
        n = _check_int(n_segments, "number of segments", 1, "give --segments 1 or more")
        check_sample_size(n, self.segment_size)
        if batch_size * n * self.segment_size > MAX_BATCH_TOKENS:  # a batch is held at once
            raise TaskError(f"a batch of {batch_size:,} samples of {n:,} x {self.segment_size} tokens is more than "
                            f"the {MAX_BATCH_TOKENS:,} tokens one batch may hold; give a smaller --batch-size")
        return [self.sample(n_segments, sample_seed(seed, i)) for i in range(batch_size)]

    def batch(self, n_segments: int, batch_size: int, seed: int, fact_segments: bool = False):
        """(input_ids LongTensor [B, n_segments * segment_size], labels LongTensor [B]), deterministic in seed.

        fact_segments: also return a BoolTensor [B, n_segments], True where a segment holds a fact."""
        return self.tensors(self.samples(n_segments, batch_size, seed), n_segments, fact_segments)

    @staticmethod
    def tensors(samples: list[Sample], n_segments: int, fact_segments: bool = False):
        """`batch`'s tensors of samples already drawn (all of n_segments segments)."""
        import torch

        input_ids = torch.tensor([s.input_ids for s in samples], dtype=torch.long)  # (B, N * S)
        labels = torch.tensor([s.answer for s in samples], dtype=torch.long)  # (B,)
        if not fact_segments:
            return input_ids, labels
        holds = torch.zeros(len(samples), n_segments, dtype=torch.bool)
        for i, sample in enumerate(samples):
            for fact in sample.facts:
                holds[i, fact.segment] = True
        return input_ids, labels, holds


@functools.cache
def prior_decoy_pool() -> tuple[str, ...]:
    """The decoys --prior-decoys draws from: the project's question decoys and statement decoys (rmt_core.noise),
    fact-like sentences about people who are not bAbI people, each once; the same on every machine."""
    from rmt_core.noise import decoy_sentences, question_decoy_sentences

    return tuple(dict.fromkeys(question_decoy_sentences() + decoy_sentences()))  # distinct, in a fixed order


def sample_for(task: str, n_segments: int, seed: int, segment_size: int = DEFAULT_SEGMENT_SIZE,
               tokenizer=None, **sources) -> Sample:
    """One sample with the default tokenizer unless one is given; `sources` as for TaskBuilder."""
    builder = TaskBuilder(task, tokenizer or default_tokenizer(), segment_size, **sources)
    return builder.sample(n_segments, seed)
