"""Noise: natural English sentences that fill the segments around the facts.

Two sources: a text file (one passage a line, split into sentences) or a built-in generator of varied
English sentences written by this project (no download, no corpus in the repository, identical on every
machine). Optionally Python's own documentation prose (`pydoc_data.topics`) can be mixed in
("builtin:pydoc"); that text differs between Python versions, so it is not the default. "builtin:vocab"
mixes in sentences whose words are drawn from the tokenizer's own vocabulary, so that a model trained on it
has seen (nearly) every token as noise and meets real text without out-of-vocabulary surprises.

"builtin:decoys" is builtin:vocab plus decoys: sentences that look like facts but are not, such as people who
are not bAbI's going to places (bAbI's rooms among them), someone else's office, a harbour north of the
kitchen. Real text is full of them ("what did he expect when he went into the church?"); a model that never
met one in training takes the first it reads for a fact. In "builtin:decoys" about one sentence in five is a
decoy; "builtin:decoys:P" draws a decoy with probability P instead (such as builtin:decoys:0.01, nearer the
share of real text, where about 0.6% of 64-token segments hold a room and a movement verb), so a model meets
decoys without every input being full of them.

Any noise can take decoys the same way: "BASE+decoys:P" draws one of the decoys above with probability P and a
sentence of BASE (a noise file or a built-in name) otherwise; "BASE+questions:P" draws question decoys instead,
questions about such people and rooms ("why couldn't the baker use his own bathroom?"), the form real text's
fact-like sentences most often take in QuALITY's questions. The decoy pool keeps its size whatever P is, so a
low share does not mean a few decoys seen many times. (A file whose name looks like that is read as the file.)

No noise sentence may state where a bAbI person is or how two bAbI places relate (see `is_fact_like`).
Each sentence is tokenised once; samples draw token-id lists from the cached pool.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from rmt_core.babi import DIRECTIONS, MOVE_VERBS, PEOPLE, PLACES, _open_text
from rmt_core.errors import TaskError

BUILTIN = "builtin"
BUILTIN_PYDOC = "builtin:pydoc"
BUILTIN_VOCAB = "builtin:vocab"
BUILTIN_DECOYS = "builtin:decoys"
BUILTIN_NAMES = (BUILTIN, BUILTIN_PYDOC, BUILTIN_VOCAB, BUILTIN_DECOYS)
DECOY_SHARE_PREFIX = BUILTIN_DECOYS + ":"  # builtin:decoys:P, a decoy drawn with probability P
DECOY_KINDS = ("decoys", "questions")  # BASE+decoys:P and BASE+questions:P
_MIX = re.compile(r"^(?P<base>.+)\+(?P<kind>" + "|".join(DECOY_KINDS) + r"):(?P<share>[^+]*)$")
VOCAB_POOL_SIZE = 12000
DECOY_POOL_SIZE = 4000
BUILTIN_POOL_SIZE = 6000
MIN_SENTENCES = 20

_PERSON_WORD = re.compile(r"\b(" + "|".join(PEOPLE) + r")\b", re.IGNORECASE)
_PLACE_WORD = re.compile(r"\b(" + "|".join(PLACES) + r")s?\b", re.IGNORECASE)
_DIRECTION_WORD = re.compile(r"\b(" + "|".join(DIRECTIONS) + r")(ern|ward|wards)?\b", re.IGNORECASE)
# A sentence ends at . ! or ? (closing quotes or brackets may follow) before whitespace.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'\u2019\u201d)\]]*\s+")


def is_fact_like(sentence: str) -> bool:
    """True when a sentence could state a bAbI fact: a bAbI person and a place, or two places and a direction."""
    places = len(_PLACE_WORD.findall(sentence))
    if places and _PERSON_WORD.search(sentence):
        return True
    return places >= 2 and _DIRECTION_WORD.search(sentence) is not None


def split_sentences(passage: str) -> list[str]:
    """A passage cut into sentences, whitespace normalised, empty pieces dropped."""
    passage = " ".join(passage.split())
    return [s.strip() for s in _SENTENCE_END.split(passage) if s.strip()]


def clean_sentences(sentences, min_words: int = 3, max_words: int = 60) -> list[str]:
    """Sentences of a usable length that are not fact-like, in order, duplicates dropped."""
    kept, seen = [], set()
    for sentence in sentences:
        words = len(sentence.split())
        if words < min_words or words > max_words or is_fact_like(sentence) or sentence in seen:
            continue
        seen.add(sentence)
        kept.append(sentence)
    return kept


# --- the built-in generator -------------------------------------------------------------------------

_NAMES = ("Oliver", "Clara", "Tomas", "Helen", "Marcus", "Ruth", "Felix", "Agnes", "Victor", "Nora", "Hugo",
          "Iris", "Walter", "Lena", "Arthur", "Edith", "Simon", "Greta", "Leon", "Martha", "Peter", "Alice",
          "Samuel", "Rosa", "Theo", "Vera", "Jonas", "Ida", "Oscar", "Lucy")
_ROLES = ("the old captain", "the young doctor", "a tired traveller", "the baker", "the schoolteacher",
          "my grandmother", "the stranger", "a quiet student", "the mayor", "the fisherman", "her brother",
          "the pilot", "the librarian", "a clever engineer", "the gardener", "his neighbour", "the farmer",
          "the postman", "an elderly painter", "the shopkeeper", "the nurse", "our teacher", "the blacksmith",
          "a curious child", "the soldier", "the widow", "the priest", "a young sailor", "the carpenter")
_THINGS = ("the letter", "a lantern", "the old map", "a basket of apples", "the wooden box", "a small boat",
           "the broken clock", "a heavy coat", "the silver key", "a blue umbrella", "the newspaper",
           "a loaf of bread", "the violin", "a cup of tea", "the photograph", "a bundle of firewood",
           "the red bicycle", "a notebook", "the telescope", "a jar of honey", "the green scarf", "a pair of boots",
           "the iron kettle", "a stack of books", "the rusty anchor", "a paper kite", "the bread knife",
           "a glass of milk", "the leather bag", "a bunch of flowers", "the chess board", "a fishing net")
_PAST_VERBS = ("found", "carried", "repaired", "painted", "sold", "lost", "opened", "borrowed", "wrapped",
               "examined", "cleaned", "hid", "dropped", "described", "praised", "forgot", "returned", "polished",
               "measured", "delivered", "counted", "mended", "admired", "ignored", "shared", "packed", "weighed")
_PLAIN_VERBS = ("laughed", "waited", "sighed", "listened", "hesitated", "smiled", "slept", "whistled",
                "argued", "worked", "wandered", "paused", "shivered", "nodded", "sang", "coughed", "frowned", "rested",
                "prayed", "yawned", "complained", "grumbled")
_MANNERS = ("quietly", "slowly", "without a word", "with great care", "in a hurry", "for a long time",
            "once again", "rather nervously", "almost at once", "with a grin", "very politely", "loudly",
            "patiently", "for no reason at all", "as usual", "with some relief", "more than once")
_TIMES = ("that morning", "in the evening", "after dinner", "before the storm", "on Sunday", "at dawn",
          "late at night", "the next day", "during the winter", "years ago", "in the spring", "at noon",
          "last autumn", "on a Tuesday", "after the war", "before breakfast", "at midnight", "that summer")
_SETTINGS = ("the harbour", "the market square", "the village", "the station", "the forest", "the old mill",
             "the river bank", "the library", "the hill", "the church", "the bakery", "the meadow", "the bridge",
             "the lighthouse", "the orchard", "the school", "the factory", "the farm", "the castle", "the pier")
_ADJECTIVES = ("cold", "bright", "quiet", "crowded", "dusty", "warm", "strange", "peaceful", "noisy", "grey",
               "small", "enormous", "gloomy", "cheerful", "empty", "damp", "silent", "busy", "ancient", "lovely",
               "freezing", "tidy", "dark")
_WEATHER = ("the rain kept falling", "the wind grew stronger", "the sky was clear", "fog covered the valley",
            "snow had started to fall", "the sun finally came out", "the air smelled of smoke",
            "thunder rolled over the hills", "the clouds hung low", "a cold wind blew from the sea")
_THOUGHTS = ("the plan would work", "the bridge was safe", "the letter had arrived", "nobody had noticed",
             "the train was late", "the price was too high", "the story was true", "it was time to leave",
             "the shop would open soon", "the old road was closed", "the harvest would be good",
             "the ship had sailed", "the doctor was right", "the money was enough", "someone was lying")
_ROOMS = ("cellar", "attic", "porch", "library", "study", "pantry", "parlour", "workshop", "nursery", "staircase",
          "laundry", "corridor")
# A room sentence names a bAbI place ("The kitchen was dusty.") this often, so that about 1 generated sentence in
# 200 names one, as QuALITY's dev questions do (0.5%; 0.3% in the fortunes we train on): noise a model must learn
# to pass over, as rare as in the real text it stands in for (docs/experiments/builtin-noise-places/).
BABI_ROOM_SHARE = 0.05


def _subject(rng: random.Random) -> str:
    return rng.choice(_NAMES) if rng.random() < 0.5 else rng.choice(_ROLES)


def _capital(text: str) -> str:
    return text[0].upper() + text[1:]


def _clause(rng: random.Random) -> str:
    pick = rng.randrange(4)
    if pick == 0:
        return f"{_subject(rng)} {rng.choice(_PAST_VERBS)} {rng.choice(_THINGS)}"
    if pick == 1:
        return f"{_subject(rng)} {rng.choice(_PLAIN_VERBS)} {rng.choice(_MANNERS)}"
    if pick == 2:
        return rng.choice(_WEATHER)
    return f"{rng.choice(_SETTINGS)} was {rng.choice(_ADJECTIVES)} {rng.choice(_TIMES)}"


def generate_sentence(rng: random.Random) -> str:
    """One English sentence from a small project-written grammar."""
    pick = rng.randrange(10)
    if pick == 0:
        text = f"{_subject(rng)} {rng.choice(_PAST_VERBS)} {rng.choice(_THINGS)} {rng.choice(_TIMES)}"
    elif pick == 1:
        text = f"{_subject(rng)} {rng.choice(_PLAIN_VERBS)} {rng.choice(_MANNERS)} near {rng.choice(_SETTINGS)}"
    elif pick == 2:
        text = f"{rng.choice(_TIMES)}, {_clause(rng)}"
    elif pick == 3:
        text = f"when {_clause(rng)}, {_clause(rng)}"
    elif pick == 4:
        text = f"{_subject(rng)} said that {rng.choice(_THOUGHTS)}"
    elif pick == 5:
        text = f"{_subject(rng)} wondered whether {rng.choice(_THOUGHTS)}"
    elif pick == 6:
        text = f"{_clause(rng)}, but {_clause(rng)}"
    elif pick == 7:
        room = rng.choice(PLACES) if rng.random() < BABI_ROOM_SHARE else rng.choice(_ROOMS)
        text = f"the {room} was {rng.choice(_ADJECTIVES)} {rng.choice(_TIMES)}"
    elif pick == 8:
        text = f"nobody knew why {_clause(rng)}"
    else:
        text = f"{_clause(rng)} and {_clause(rng)}"
    return _capital(text) + "."


def _distinct_pool(generate, count: int, seed: int) -> list[str]:
    """Up to `count` distinct sentences of `generate(rng)`, in order, fact-like ones dropped (the same everywhere)."""
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    for _ in range(count * 20):
        if len(seen) >= count:
            break
        seen.setdefault(generate(rng), None)
    return clean_sentences(seen)


def builtin_sentences(count: int = BUILTIN_POOL_SIZE, seed: int = 0) -> list[str]:
    """A fixed pool of distinct generated sentences (the same on every machine)."""
    return _distinct_pool(generate_sentence, count, seed)


_DECOY_VERBS = MOVE_VERBS + ("walked", "ran", "drove", "hurried", "came back", "returned", "rushed", "crept")
_DECOY_BASE_VERBS = ("go", "move", "travel", "run", "walk", "come back", "return", "hurry")
_DECOY_PLACES = PLACES + ("cellar", "attic", "porch", "library", "study")
_DECOY_PREPOSITIONS = ("to the", "into the", "out of the", "back to the", "towards the", "through the")


def _decoy_destination(rng: random.Random) -> str:
    return f"the {rng.choice(_DECOY_PLACES)}" if rng.random() < 0.6 else rng.choice(_SETTINGS)


def generate_decoy(rng: random.Random) -> str:
    """One fact-like sentence that states no bAbI fact: someone who is not a bAbI person goes somewhere, owns or
    visits a room, asks why; or a place lies in a direction of another where at most one is a bAbI place."""
    pick = rng.randrange(7)
    if pick == 0:
        text = f"{_subject(rng)} {rng.choice(_DECOY_VERBS)} {rng.choice(_DECOY_PREPOSITIONS)} {rng.choice(_DECOY_PLACES)}"
    elif pick == 1:
        text = f"{_subject(rng)} {rng.choice(_DECOY_VERBS)} to {_decoy_destination(rng)} {rng.choice(_TIMES)}"
    elif pick == 2:
        text = f"{rng.choice(_NAMES)}'s {rng.choice(_DECOY_PLACES)} was {rng.choice(_ADJECTIVES)} {rng.choice(_TIMES)}"
    elif pick == 3:
        text = (f"{rng.choice(('why did', 'when did', 'where did', 'how did'))} {_subject(rng)} "
                f"{rng.choice(_DECOY_BASE_VERBS)} to {_decoy_destination(rng)}")
        return _capital(text) + "?"
    elif pick == 4:
        text = f"{_subject(rng)} {rng.choice(_PAST_VERBS)} {rng.choice(_THINGS)} in the {rng.choice(_DECOY_PLACES)}"
    elif pick == 5:
        text = f"after {_clause(rng)}, {_subject(rng)} {rng.choice(_DECOY_VERBS)} to {_decoy_destination(rng)}"
    else:
        here, there = rng.choice(_SETTINGS), (f"the {rng.choice(PLACES)}" if rng.random() < 0.5 else rng.choice(_SETTINGS))
        text = f"{here} is {rng.choice(DIRECTIONS)} of {there}"
    return _capital(text) + "."


def decoy_sentences(count: int = DECOY_POOL_SIZE, seed: int = 0) -> list[str]:
    """A fixed pool of distinct decoys (the same on every machine); any that `is_fact_like` would flag are dropped."""
    return _distinct_pool(generate_decoy, count, seed)


_POSSESSIVES = ("his", "her", "their")
_ASKS = ("why did", "when did", "where did", "how did")
_QUESTION_FORMS = ("{ask} {who} {verb} to {where}", "what did {who} expect to find in {where}",
                   "why couldn't {who} use {their} own {room}", "why is {name}'s {room} so {adjective}",
                   "who was waiting in {where} when {who} came back", "what was {who} looking for in {where} {time}",
                   "how long did {who} stay in {where}", "why did {who} leave {where} {time}",
                   "what happened after {who} went into {where}",
                   "where did {who} hide {thing} before going to {where}")


def generate_question_decoy(rng: random.Random) -> str:
    """One question about someone who is not a bAbI person and a place: the fact-like question of real text."""
    form = rng.choice(_QUESTION_FORMS)
    text = form.format(ask=rng.choice(_ASKS), who=_subject(rng), verb=rng.choice(_DECOY_BASE_VERBS),
                       where=_decoy_destination(rng), their=rng.choice(_POSSESSIVES), room=rng.choice(_DECOY_PLACES),
                       name=rng.choice(_NAMES), adjective=rng.choice(_ADJECTIVES), time=rng.choice(_TIMES),
                       thing=rng.choice(_THINGS))
    return _capital(text) + "?"


def question_decoy_sentences(count: int = DECOY_POOL_SIZE, seed: int = 0) -> list[str]:
    """A fixed pool of distinct question decoys (the same on every machine), fact-like ones dropped."""
    return _distinct_pool(generate_question_decoy, count, seed)


def decoy_mix(name: str) -> tuple[str, str, float] | None:
    """(base noise, decoy kind, share) of "builtin:decoys:P", "BASE+decoys:P" or "BASE+questions:P"; None for
    any other name (a file that exists under such a name included). A P that is not a number between 0 and 1
    is a TaskError naming the fix."""
    if name.startswith(DECOY_SHARE_PREFIX):
        base, kind, text = BUILTIN_VOCAB, "decoys", name[len(DECOY_SHARE_PREFIX):]
    else:
        match = _MIX.match(name)
        if match is None or Path(name).exists():
            return None
        base, kind, text = match["base"], match["kind"], match["share"]
        if decoy_mix(base) is not None:
            raise TaskError(f"noise {name}: give one decoy share, such as {base.split('+')[0]}+{kind}:0.01")
    try:
        share = float(text)
    except ValueError:
        share = float("nan")
    if not 0 < share < 1:  # NaN fails too
        example = "builtin:decoys:0.01" if base == BUILTIN_VOCAB and kind == "decoys" else f"{base}+{kind}:0.01"
        raise TaskError(f"noise {name}: the decoy share {text!r} must be a number between 0 and 1 (exclusive), "
                        f"such as {example}")
    return base, kind, share


def pydoc_sentences() -> list[str]:
    """English prose sentences from Python's own documentation (`pydoc_data.topics`), cleaned."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise TaskError("Python's pydoc_data module is missing; use the plain builtin noise or --noise-file") from None
    sentences = []
    for key in sorted(topics):
        for paragraph in re.split(r"\n\s*\n", topics[key]):
            lines = paragraph.splitlines()
            # Prose paragraphs start unindented and hold no code or markup characters.
            if not lines or lines[0].startswith(" ") or re.search(r"[*=#>{}\[\]_\\]|\"\w+\(|\(\)", paragraph):
                continue
            for sentence in split_sentences(paragraph):
                if re.fullmatch(r"[A-Z][A-Za-z ,;:'\"()\-]+[.!?]", sentence):
                    sentences.append(sentence)
    return clean_sentences(sentences, min_words=5, max_words=40)


# Glue words keep vocabulary sentences roughly English-shaped; the content words are drawn at random.
_GLUE = ("the", "of", "and", "to", "a", "in", "was", "that", "he", "she", "it", "for", "with", "his", "her",
         "they", "on", "as", "had", "not", "but", "at", "by", "from", "were", "this", "is", "would", "which",
         "how", "does", "what", "why", "who", "did", "so", "do", "can", "most", "about", "-")
_OPENERS = ("How does", "What does", "Why does", "Why did", "What is", "Which of the following", "How did",
            "Who is", "What was", "According to the passage,", "Where was", "Where did", "Where does", "Where is the")
_POSSESSIVE = ("'s", "’s", "n't", "'")
_EXCLUDED = {w.lower() for w in PEOPLE + PLACES + DIRECTIONS}


def vocab_words(tokenizer) -> tuple[list[str], list[str]]:
    """The tokenizer's whole lower-case words and its '##' continuation pieces, bAbI words left out, sorted."""
    vocab = sorted(tokenizer.get_vocab())
    words = [t for t in vocab if re.fullmatch(r"[a-z]{2,}", t) and t not in _EXCLUDED
             and not _PLACE_WORD.fullmatch(t) and not _DIRECTION_WORD.fullmatch(t)]
    pieces = [t[2:] for t in vocab if re.fullmatch(r"##[a-z]{1,}", t)]
    if not words:
        raise TaskError("the tokenizer has no plain lower-case words; builtin:vocab needs a WordPiece-style "
                        "vocabulary, use builtin or --noise-file")
    return words, pieces


def vocab_sentences(tokenizer, count: int = VOCAB_POOL_SIZE, seed: int = 0) -> list[str]:
    """`count` sentences of random vocabulary words between glue words (the same for the same tokenizer)."""
    words, pieces = vocab_words(tokenizer)
    rng = random.Random(seed)
    sentences = []
    for _ in range(count):
        question = rng.random() < 0.2  # QA-style noise: a question that is not a bAbI question
        out = [rng.choice(_OPENERS)] if question else []
        for _ in range(rng.randint(5, 18)):
            if rng.random() < 0.35:
                out.append(rng.choice(_GLUE))
                continue
            word = rng.choice(words)
            if pieces and rng.random() < 0.15:  # a rarer word, split into several pieces
                word += rng.choice(pieces)
            if rng.random() < 0.05:
                word += rng.choice(_POSSESSIVE)
            if rng.random() < 0.03:
                word = f'"{word}"'
            out.append(word)
            if rng.random() < 0.08:
                out[-1] += ","
        text = " ".join(out).rstrip(",")
        sentences.append(_capital(text) + ("?" if question else "."))
    return clean_sentences(sentences)


def file_sentences(path: str | Path) -> list[str]:
    """Sentences of a noise file (one passage a line), fact-like sentences dropped."""
    lines = _open_text(path, "noise file")
    numbered = sum(1 for line in lines[:50] if re.match(r"^\d+ ", line))
    tabbed = sum(1 for line in lines[:50] if "\t" in line)
    if numbered and tabbed and numbered >= len([line for line in lines[:50] if line.strip()]) // 2:
        raise TaskError(f"noise file {path} looks like a bAbI task file; give plain text, one passage a line")
    sentences = clean_sentences(s for line in lines for s in split_sentences(line))
    if len(sentences) < MIN_SENTENCES:
        raise TaskError(f"noise file {path} gives only {len(sentences)} usable sentences (need {MIN_SENTENCES}); "
                        "give a longer English text, one passage a line")
    return sentences


@dataclass
class NoiseSource:
    """A pool of noise sentences and their token ids (no special tokens), drawn from by samples."""

    name: str  # file path, one of BUILTIN_NAMES, builtin:decoys:P, BASE+decoys:P or BASE+questions:P
    sentences: list[str]
    token_ids: list[list[int]]
    # a decoy share: the sentences from `decoy_from` on are decoys, drawn together with probability P
    decoy_from: int | None = None
    decoy_share: float | None = None
    by_length: dict[int, list[int]] = field(init=False, repr=False)  # token count -> sentence indices

    def __post_init__(self):
        self.by_length = {}
        for index, ids in enumerate(self.token_ids):
            self.by_length.setdefault(len(ids), []).append(index)

    @classmethod
    def load(cls, noise_file: str | Path | None, tokenizer) -> "NoiseSource":
        """The noise of a file, or the built-in noise for None / "builtin" / "builtin:pydoc" / "builtin:vocab" /
        "builtin:decoys" / "builtin:decoys:P", either with decoys mixed in ("BASE+decoys:P", "BASE+questions:P");
        cached."""
        name = BUILTIN if noise_file is None else str(noise_file)
        base, kind, share = decoy_mix(name) or (name, None, None)
        key = (name, _file_stamp(base), _tokenizer_key(tokenizer))
        if key not in _CACHE:  # the entry keeps the tokenizer alive, so its id() is not reused
            sentences = _plain_sentences(base, tokenizer)
            plain = len(sentences)  # sentences before the decoys (a name with a decoy share)
            if kind is not None:
                sentences += decoy_sentences() if kind == "decoys" else question_decoy_sentences()
            token_ids = tokenize_all(tokenizer, sentences)
            # Text such as "[SEP]" would tokenise to a special token; samples hold none, so drop it.
            special = set(getattr(tokenizer, "all_special_ids", []) or [])
            usable = [bool(ids) and not special.intersection(ids) for ids in token_ids]
            kept = [(s, ids) for s, ids, ok in zip(sentences, token_ids, usable) if ok]
            if len(kept) < MIN_SENTENCES:
                raise TaskError(f"noise {name} gives only {len(kept)} usable sentences (need {MIN_SENTENCES}); "
                                "give a longer English text, one passage a line")
            source = cls(name, [s for s, _ in kept], [ids for _, ids in kept])
            if share is not None:
                source.decoy_from, source.decoy_share = sum(usable[:plain]), share
            _CACHE[key] = (tokenizer, source)
        return _CACHE[key][1]

    def __len__(self) -> int:
        return len(self.token_ids)


def _plain_sentences(name: str, tokenizer) -> list[str]:
    """The sentences of a noise file or a built-in name (decoy shares are `NoiseSource.load`'s)."""
    if name == BUILTIN:
        return builtin_sentences()
    if name == BUILTIN_PYDOC:
        return builtin_sentences() + pydoc_sentences()
    if name == BUILTIN_VOCAB:
        return builtin_sentences() + vocab_sentences(tokenizer)
    if name == BUILTIN_DECOYS:
        return _plain_sentences(BUILTIN_VOCAB, tokenizer) + decoy_sentences()
    return file_sentences(name)


class NoiseStream:
    """Noise tokens taken sentence by sentence at random; a sentence cut at a segment's end goes on in the next.

    `take(budget)` returns chunks `(ids, starts_sentence, ends_sentence)` totalling exactly `budget` tokens.
    """

    def __init__(self, source: NoiseSource, rng: random.Random):
        self.pool = source.token_ids
        self.by_length = source.by_length
        self.rng = rng
        self.leftover: list[int] = []
        self.decoy_from, self.decoy_share = source.decoy_from, source.decoy_share

    def _draw(self) -> list[int]:
        """One sentence at random: uniform over the pool, or (a decoy share P) a decoy with probability P."""
        pool, rng = self.pool, self.rng
        if self.decoy_share is None:
            return pool[rng.randrange(len(pool))]
        if rng.random() < self.decoy_share:
            return pool[rng.randrange(self.decoy_from, len(pool))]
        return pool[rng.randrange(self.decoy_from)]

    def take(self, budget: int, final: bool = False) -> list[tuple[list[int], bool, bool]]:
        """Exactly `budget` tokens as chunks. With `final` (nothing follows but the question) a sentence
        that does not fit is swapped for one that fills the rest exactly, when the pool has one."""
        chunks: list[tuple[list[int], bool, bool]] = []
        remaining = budget
        if self.leftover and remaining > 0:
            piece = self.leftover[:remaining]
            self.leftover = self.leftover[remaining:]
            chunks.append((piece, False, not self.leftover))
            remaining -= len(piece)
        pool, rng = self.pool, self.rng
        while remaining > 0:
            ids = self._draw()
            if len(ids) > remaining and final and remaining in self.by_length:
                exact = self.by_length[remaining]
                ids = pool[exact[rng.randrange(len(exact))]]
            if len(ids) <= remaining:
                chunks.append((ids, True, True))
                remaining -= len(ids)
            else:
                chunks.append((ids[:remaining], True, False))
                self.leftover = ids[remaining:]
                remaining = 0
        if final:
            self.leftover = []
        return chunks

    def take_ids(self, budget: int) -> list[int]:
        """Exactly `budget` noise token ids, as one flat list (the sentence boundaries dropped)."""
        return [t for ids, _, _ in self.take(budget) for t in ids]


def pure_noise(source: NoiseSource, tokens: int, samples: int, seed: int = 0) -> list[list[int]]:
    """`samples` inputs of `tokens` noise tokens and nothing else, sample b drawn with seed * 100_003 + b (the
    inputs the memory-in-noise scripts run)."""
    return [NoiseStream(source, random.Random(seed * 100_003 + b)).take_ids(tokens) for b in range(samples)]


def tokenize_all(tokenizer, sentences: list[str]) -> list[list[int]]:
    """Token ids of each sentence, without special tokens."""
    if not sentences:
        return []
    return [list(ids) for ids in tokenizer(list(sentences), add_special_tokens=False)["input_ids"]]


def _file_stamp(name: str) -> tuple:
    """Size and modification time of a noise file, so an edited file is read again; () for built-ins."""
    if name in BUILTIN_NAMES:  # a decoy share is stamped by its base
        return ()
    try:
        stat = Path(name).stat()
    except OSError:
        return ()
    return (stat.st_size, stat.st_mtime_ns)


def _tokenizer_key(tokenizer) -> tuple:
    return (type(tokenizer).__name__, getattr(tokenizer, "name_or_path", ""), len(tokenizer), id(tokenizer))


_CACHE: dict[tuple, tuple] = {}
