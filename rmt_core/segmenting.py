"""Free text and a question cut into RMT segments, with the role of every token.

The paper's segmenting (SPEC section 2): special tokens are stripped from the flat input, which is cut into
`segment_size` pieces; the question ends the last segment. For free text:

    text tokens:  | S | S | ... | r |          (every piece full but the last text piece, r <= S tokens)
    question:     appended to the last text piece when r + q <= S, else a last segment of its own

so the question is never split across segments and the last segment may be shorter than S (the model pads
after its closing [SEP] with an attention mask).

Checkpoints imported from the paper's encoder code (`rmt import`) record `segmenting = "right"`: that code
strips [PAD], [CLS], [SEP] (and <s>, </s>) from the flat input `text + question`, keeps its first
`max_segments * S` tokens when a maximum is known, and splits it right-aligned, so the first segment may be short
and the question may span segments:

    flat input:   | r | S | S | ... | S |      (r <= S tokens; the question is the end of the last pieces)

Decoder checkpoints imported from the authors' RecurrentWrapper record `segmenting = "left"`: the flat input
`text question`, tokenized as one string with nothing removed, split left-aligned (every segment full but the
last). Both of the authors' cuts tokenize `text question` as one string; a token whose characters reach into
the question is a question token.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from rmt_core.errors import ReplayError
from rmt_core.layout import ROLE_NOISE, ROLE_QUESTION


class Segmented(NamedTuple):
    """Token ids of each segment and the role of each token (ROLE_NOISE for text, ROLE_QUESTION)."""

    segments: list[list[int]]  # N lists of at most segment_size ids, no special tokens
    roles: list[list[int]]  # same shape as `segments`

    @property
    def n_tokens(self) -> int:
        return sum(len(s) for s in self.segments)


MAX_TEXT_BYTES = 2**26  # 64 MiB of text: about as many tokens as one sample may hold (tasks.MAX_SAMPLE_TOKENS)


def read_text_file(path: str | Path) -> str:
    """The UTF-8 text of `path` ('-' reads standard input); ReplayError when missing or not UTF-8."""
    import sys

    path = str(path)
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_TEXT_BYTES + 1)
        else:
            with open(path, "rb") as handle:
                data = handle.read(MAX_TEXT_BYTES + 1)
    except FileNotFoundError:
        raise ReplayError(f"text file {path} does not exist; pass --text-file with an existing UTF-8 file") from None
    except IsADirectoryError:
        raise ReplayError(f"{path} is a folder; pass --text-file with a UTF-8 text file") from None
    except OSError as error:
        raise ReplayError(f"cannot read text file {path} ({error.strerror}); check its permissions") from None
    if len(data) > MAX_TEXT_BYTES:
        raise ReplayError(f"text file {path} is larger than {MAX_TEXT_BYTES // 2**20} MiB, more than one replay "
                          "can hold; replay a part of it")
    return decode_text(data, f"text file {path}")


def decode_text(data: bytes | str, what: str = "text") -> str:
    """`data` as a str, refusing bytes that are not UTF-8 (also lone surrogates left by surrogateescape)."""
    if isinstance(data, str):
        try:
            data.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ReplayError(f"{what} holds characters that are not valid UTF-8 (at character {error.start}); "
                              "convert it to UTF-8 first") from None
        return data
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as error:
        raise ReplayError(f"{what} is not valid UTF-8 (byte {error.start}: {data[error.start]:#04x}); "
                          "convert it to UTF-8 first (e.g. iconv -t utf-8)") from None


SEGMENTINGS = ("lens", "right", "left")


def segmenting_of(config) -> tuple[str, int | None]:
    """(segmenting, max_segments) of a model's config: ("lens", None) unless the checkpoint records others."""
    segmenting = getattr(config, "segmenting", None) or "lens"
    if segmenting not in SEGMENTINGS:
        raise ReplayError(f"unknown segmenting {segmenting!r} in the checkpoint's config; expected one of "
                          f"{', '.join(SEGMENTINGS)}")
    return segmenting, getattr(config, "max_segments", None) or None


def split_right(ids: list, segment_size: int) -> list[list]:
    """`ids` cut into pieces of segment_size from the end: every piece full but the first."""
    cuts = list(range(len(ids), 0, -segment_size))[::-1]
    return [ids[max(0, end - segment_size):end] for end in cuts]


def token_ids(tokenizer, text: str) -> list[int]:
    """Ids of `text` without special tokens: none added, and any the text spells out (e.g. '[SEP]') removed."""
    special = set(tokenizer.all_special_ids)
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    return [int(i) for i in ids if i not in special]


def segments_from_text(tokenizer, text: str | bytes, question: str | bytes, segment_size: int,
                       segmenting: str = "lens", max_segments: int | None = None) -> Segmented:
    """Cut `text` into segments of `segment_size` tokens and end the last one with `question`.

    segmenting "right" (with max_segments): cut `text + question` as the paper's encoder code does (see the
    module's docstring); "lens" (the default) as below.

    Returns Segmented(segments, roles): N lists of token ids (each at most segment_size long, all full except
    possibly the last text piece and the last segment) and their roles (ROLE_NOISE text, ROLE_QUESTION).
    Raises ReplayError for empty text or question, non-UTF-8 input, text shorter than the question, or a
    question longer than a segment.
    """
    if isinstance(segment_size, bool) or not isinstance(segment_size, int) or segment_size < 1:
        raise ReplayError(f"segment size must be a positive integer, got {segment_size!r}")
    text = decode_text(text, "the text")
    question = decode_text(question, "the question")
    if not text.strip():
        raise ReplayError("the text is empty; give a text file with some text to replay")
    if not question.strip():
        raise ReplayError("the question is empty; pass --question with the question that ends the input")
    if segmenting in ("right", "left"):
        return _authors_segments(tokenizer, text, question, segment_size, max_segments, segmenting)
    if segmenting != "lens":
        raise ReplayError(f"unknown segmenting {segmenting!r}; expected one of {', '.join(SEGMENTINGS)}")
    question_ids = token_ids(tokenizer, question)
    if not question_ids:
        raise ReplayError(f"the question {question!r} has no tokens besides special ones; pass a real question")
    if len(question_ids) > segment_size:
        raise ReplayError(f"the question has {len(question_ids)} tokens, more than a segment holds ({segment_size}); "
                          "shorten the question")
    text_ids = token_ids(tokenizer, text)
    if not text_ids:
        raise ReplayError("the text has no tokens besides special ones; give a text file with some text to replay")
    if len(text_ids) < len(question_ids):
        raise ReplayError(f"the text ({len(text_ids)} tokens) is shorter than the question ({len(question_ids)} "
                          "tokens); give a longer text or a shorter question")

    segments = [text_ids[i:i + segment_size] for i in range(0, len(text_ids), segment_size)]
    roles = [[ROLE_NOISE] * len(s) for s in segments]
    if len(segments[-1]) + len(question_ids) <= segment_size:
        segments[-1] = segments[-1] + question_ids
        roles[-1] = roles[-1] + [ROLE_QUESTION] * len(question_ids)
    else:  # the question is never split: it opens a segment of its own
        segments.append(list(question_ids))
        roles.append([ROLE_QUESTION] * len(question_ids))
    return Segmented(segments, roles)


def _authors_segments(tokenizer, text: str, question: str, segment_size: int, max_segments: int | None,
                      align: str) -> Segmented:
    """The flat input `text question` cut as the authors' code cuts it (align "right": the encoder's, special
    tokens removed, truncated to max_segments pieces, right-aligned; "left": the decoder's, left-aligned)."""
    joint = f"{text} {question}"
    try:
        encoded = tokenizer(joint, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    except NotImplementedError:  # a slow tokenizer has no offsets
        raise ReplayError("this checkpoint's tokenizer has no character offsets; save its fast tokenizer "
                          "(tokenizer.json) into the checkpoint folder") from None
    dropped = set()
    if align == "right":
        dropped = {getattr(tokenizer, f"{name}_token_id", None) for name in ("pad", "cls", "sep", "bos", "eos")}
    question_start = len(text) + 1
    flat, roles = [], []
    for token, (_, end) in zip(encoded["input_ids"], encoded["offset_mapping"]):
        if token not in dropped:
            flat.append(int(token))
            roles.append(ROLE_QUESTION if end > question_start else ROLE_NOISE)
    if ROLE_QUESTION not in roles:
        raise ReplayError(f"the question {question!r} has no tokens besides special ones; pass a real question")
    if ROLE_NOISE not in roles:
        raise ReplayError("the text has no tokens besides special ones; give a text file with some text to replay")
    if max_segments:
        flat, roles = flat[:max_segments * segment_size], roles[:max_segments * segment_size]
    if align == "left":
        cut = [(start, start + segment_size) for start in range(0, len(flat), segment_size)]
        return Segmented([flat[a:b] for a, b in cut], [roles[a:b] for a, b in cut])
    return Segmented(split_right(flat, segment_size), split_right(roles, segment_size))
