"""Where memory and tokens sit in one segment's input: one layout object per architecture.

Every part of RMT Lens that builds a segment's input or reads one back (the model, replay, probes, figures,
bertviz) asks the layout, so a new architecture is a new layout, not new index arithmetic in each module.

The encoder RMT of the paper (`EncoderLayout`), T = segment_size + m + 3 positions:

    position  0      1 .. m        m+1    m+2 .. m+1+n      m+2+n    m+3+n ..
              [CLS]  [mem] * m     [SEP]  segment tokens    [SEP]    [PAD] ...

Memory is read and written at the same positions (1..m): `read_positions == write_positions`. A segment with
n < segment_size tokens (a ragged last segment) is padded after its closing [SEP], and the attention mask
hides the padding.

The decoder RMT (`DecoderLayout`), T = m + segment_size + m positions: read memory at 0..m-1, the tokens from
m, write memory at the end (padding of a short segment sits between the tokens and the write memory, masked
and skipped by the position ids). Read and write positions differ.

Roles name what sits at each position (`ROLE_NAMES`); the input tokens carry noise, fact or question roles,
the layout adds special, memory and pad.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Roles of the positions of one segment's input, shared by replay, traces, probes and figures.
ROLE_NOISE, ROLE_FACT, ROLE_QUESTION, ROLE_SPECIAL, ROLE_MEMORY, ROLE_PAD = 0, 1, 2, 3, 4, 5
ROLE_NAMES = ("noise", "fact", "question", "special", "memory", "pad")
INPUT_ROLES = (ROLE_NOISE, ROLE_FACT, ROLE_QUESTION)  # the roles an input token may carry
# The answer tokens that close a generative task sample (rmt_core.babilong): a training target, never a model
# input at answer time, so never a position role (not in ROLE_NAMES).
ROLE_ANSWER = 6
MEMORY_TOKEN_ID = -1  # what the numpy layout stores at memory positions (they hold vectors, not ids)


@dataclass(frozen=True)
class EncoderLayout:
    """`[CLS] [mem]*m [SEP] tokens [SEP] [PAD]...` of the encoder RMT; memory read and written at 1..m."""

    num_mem_tokens: int
    segment_size: int
    cls_id: int
    sep_id: int
    pad_id: int

    architecture = "encoder"

    # ----- where things sit ------------------------------------------------------------------------------
    @property
    def input_size(self) -> int:
        """T: positions of one segment's input."""
        return self.segment_size + self.num_mem_tokens + 3

    @property
    def read_positions(self) -> slice:
        """Positions where the segment reads memory (its memory vectors go in here)."""
        return slice(1, self.num_mem_tokens + 1)

    @property
    def write_positions(self) -> slice:
        """Positions whose last-layer states are the memory this segment writes."""
        return slice(1, self.num_mem_tokens + 1)

    @property
    def token_start(self) -> int:
        """Position of a segment's first token."""
        return self.num_mem_tokens + 2

    @property
    def answer_position(self) -> int:
        """Position the answer head reads ([CLS])."""
        return 0

    def token_positions(self, n: int) -> slice:
        """Positions of a segment's n tokens."""
        return slice(self.token_start, self.token_start + n)

    # ----- building the input ----------------------------------------------------------------------------
    def build(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Input ids (B, T), with [PAD] at the memory positions, and the attention mask (B, T) of one segment.

        tokens: (B, n) ids without special tokens, n <= segment_size; mask: (B, n), 1 for real tokens (a
        row's real tokens come first; a row may be shorter than n: a ragged batch).
        """
        B, n = tokens.shape
        m, T = self.num_mem_tokens, self.input_size
        if n > self.segment_size:
            raise ValueError(f"a segment holds at most {self.segment_size} tokens, got {n}")
        lengths = mask.sum(dim=1) if mask is not None else torch.full((B,), n, device=tokens.device)
        ids = torch.full((B, T), self.pad_id, dtype=torch.long, device=tokens.device)
        ids[:, 0] = self.cls_id
        ids[:, m + 1] = self.sep_id
        body = tokens if mask is None else torch.where(mask.bool(), tokens, torch.full_like(tokens, self.pad_id))
        ids[:, m + 2:m + 2 + n] = body
        rows = torch.arange(B, device=tokens.device)
        ids[rows, m + 2 + lengths] = self.sep_id
        positions = torch.arange(T, device=tokens.device).unsqueeze(0)  # (1, T)
        attention_mask = (positions <= (m + 2 + lengths).unsqueeze(1)).long()  # (B, T)
        return ids, attention_mask

    def insert_memory(self, embeds: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """(B, T, d) input embeddings with the memory vectors (B, m, d) at the read positions."""
        m = self.num_mem_tokens
        return torch.cat([embeds[:, :1], memory.to(embeds.dtype), embeds[:, m + 1:]], dim=1)

    def build_numpy(self, tokens, roles) -> tuple[np.ndarray, np.ndarray]:
        """Ids [T] int32 (MEMORY_TOKEN_ID at memory positions) and roles [T] int8 of one segment, as the
        backbone sees it. tokens, roles: the segment's n ids and their input roles."""
        m, T, n = self.num_mem_tokens, self.input_size, len(tokens)
        ids = np.full(T, self.pad_id, dtype=np.int32)
        role = np.full(T, ROLE_PAD, dtype=np.int8)
        ids[0], role[0] = self.cls_id, ROLE_SPECIAL
        ids[1:m + 1], role[1:m + 1] = MEMORY_TOKEN_ID, ROLE_MEMORY
        ids[m + 1], role[m + 1] = self.sep_id, ROLE_SPECIAL
        ids[m + 2:m + 2 + n], role[m + 2:m + 2 + n] = tokens, roles
        ids[m + 2 + n], role[m + 2 + n] = self.sep_id, ROLE_SPECIAL
        return ids, role

    def position_roles(self, token_roles: torch.Tensor) -> torch.Tensor:
        """Roles (B, T) of every position, from the roles (B, n) of a segment's tokens."""
        B, n = token_roles.shape
        m, T = self.num_mem_tokens, self.input_size
        roles = torch.full((B, T), ROLE_PAD, dtype=torch.long, device=token_roles.device)
        roles[:, 0] = ROLE_SPECIAL
        roles[:, 1:m + 1] = ROLE_MEMORY
        roles[:, m + 1] = ROLE_SPECIAL
        roles[:, m + 2:m + 2 + n] = token_roles
        if m + 2 + n < T:
            roles[:, m + 2 + n] = ROLE_SPECIAL
        return roles

    # ----- reading it back -------------------------------------------------------------------------------
    def tokens_of(self, ids, roles) -> np.ndarray:
        """The segment's input token ids (in order) from a position row of ids and roles: the inverse of build."""
        ids, roles = np.asarray(ids), np.asarray(roles)
        return ids[np.isin(roles, INPUT_ROLES)]

    def describe(self) -> dict:
        """The layout as a trace manifest records it."""
        m = self.num_mem_tokens
        return {
            "architecture": self.architecture,
            "positions": "0 [CLS], 1..m memory, m+1 [SEP], m+2.. segment tokens, [SEP], then [PAD]",
            "memory_positions": [1, m],
            "read_positions": [1, m],
            "write_positions": [1, m],
            "role_names": list(ROLE_NAMES),
            "memory_token_id": MEMORY_TOKEN_ID,
        }


def position_labels(vocab: dict[int, str], ids, roles, write_start: int | None = None) -> list[str]:
    """A readable label for every position of a recorded segment: `[memk]` at the k-th memory position, else
    the token string (`[idN]` for an id the vocabulary lacks). Works for any layout: memory is found by role.
    With `write_start` (a decoder's first write position), memory before it is `[readk]`, from it `[writek]`."""
    labels, k, w = [], 0, 0
    for p, (v, role) in enumerate(zip(np.asarray(ids), np.asarray(roles))):
        if int(role) == ROLE_MEMORY and write_start is not None and p >= write_start:
            labels.append(f"[write{w}]")
            w += 1
        elif int(role) == ROLE_MEMORY:
            labels.append(f"[read{k}]" if write_start is not None else f"[mem{k}]")
            k += 1
        else:
            labels.append(vocab.get(int(v), f"[id{int(v)}]"))
    return labels


@dataclass(frozen=True)
class DecoderLayout:
    """`[mem]*m tokens [PAD]... [mem]*m` of the decoder RMT: read memory at the front, write memory at the end.

    T = m + segment_size + m positions, the same for every segment:

        position  0 .. m-1        m .. m+n-1        m+n .. m+S-1     m+S .. 2m+S-1
                  read memory     segment tokens    [PAD] (n < S)    write memory

    The same memory state goes into both memory blocks; the last layer's states at the write positions are the
    memory the segment writes. A segment with n < S tokens (a ragged row, a short last segment) is padded
    between its tokens and the write memory; the attention mask hides the padding from every query and the
    position ids skip it (`positions`), so the write memory sits at positions m+n .. 2m+n-1 for the backbone,
    right after the row's last real token, as if there were no padding. Causal attention: the read memory sees
    only itself, a token sees the read memory and the tokens before it, a write slot sees the read memory, the
    real tokens and the write slots before it.
    """

    num_mem_tokens: int
    segment_size: int
    pad_id: int

    architecture = "decoder"

    # ----- where things sit ------------------------------------------------------------------------------
    @property
    def input_size(self) -> int:
        """T: positions of one segment's input."""
        return self.segment_size + 2 * self.num_mem_tokens

    @property
    def read_positions(self) -> slice:
        """Positions of the read memory (the front)."""
        return slice(0, self.num_mem_tokens)

    @property
    def write_positions(self) -> slice:
        """Positions of the write memory (the end); their last-layer states are the memory this segment writes."""
        return slice(self.num_mem_tokens + self.segment_size, 2 * self.num_mem_tokens + self.segment_size)

    @property
    def token_start(self) -> int:
        return self.num_mem_tokens

    def token_positions(self, n: int) -> slice:
        return slice(self.token_start, self.token_start + n)

    # ----- building the input ----------------------------------------------------------------------------
    def build(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Input ids (B, T), [PAD] at the memory positions and after each row's tokens, and the attention mask
        (B, T): 1 at both memory blocks and at the real tokens."""
        B, n = tokens.shape
        m, S, T = self.num_mem_tokens, self.segment_size, self.input_size
        if n > S:
            raise ValueError(f"a segment holds at most {S} tokens, got {n}")
        ids = torch.full((B, T), self.pad_id, dtype=torch.long, device=tokens.device)
        body = tokens if mask is None else torch.where(mask.bool(), tokens, torch.full_like(tokens, self.pad_id))
        ids[:, m:m + n] = body
        attention_mask = torch.zeros((B, T), dtype=torch.long, device=tokens.device)
        attention_mask[:, :m] = 1
        attention_mask[:, m:m + n] = 1 if mask is None else mask.long()
        attention_mask[:, m + S:] = 1
        return ids, attention_mask

    def positions(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """Position ids (B, T): counted over the unmasked positions only, so the write memory follows the row's
        last real token; a padding position repeats the position before it (it is masked anyway)."""
        return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)

    def insert_memory(self, embeds: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """(B, T, d) input embeddings with the memory vectors (B, m, d) at the read and the write positions."""
        m, S = self.num_mem_tokens, self.segment_size
        memory = memory.to(embeds.dtype)
        return torch.cat([memory, embeds[:, m:m + S], memory], dim=1)

    def build_numpy(self, tokens, roles) -> tuple[np.ndarray, np.ndarray]:
        """Ids [T] int32 (MEMORY_TOKEN_ID at both memory blocks) and roles [T] int8 of one segment."""
        m, S, n = self.num_mem_tokens, self.segment_size, len(tokens)
        ids = np.full(self.input_size, self.pad_id, dtype=np.int32)
        role = np.full(self.input_size, ROLE_PAD, dtype=np.int8)
        ids[:m], role[:m] = MEMORY_TOKEN_ID, ROLE_MEMORY
        ids[m:m + n], role[m:m + n] = tokens, roles
        ids[m + S:], role[m + S:] = MEMORY_TOKEN_ID, ROLE_MEMORY
        return ids, role

    def position_roles(self, token_roles: torch.Tensor) -> torch.Tensor:
        """Roles (B, T) of every position, from the roles (B, n) of a segment's tokens."""
        B, n = token_roles.shape
        m, S = self.num_mem_tokens, self.segment_size
        roles = torch.full((B, self.input_size), ROLE_PAD, dtype=torch.long, device=token_roles.device)
        roles[:, :m] = ROLE_MEMORY
        roles[:, m:m + n] = token_roles
        roles[:, m + S:] = ROLE_MEMORY
        return roles

    # ----- reading it back -------------------------------------------------------------------------------
    def tokens_of(self, ids, roles) -> np.ndarray:
        """The segment's input token ids (in order) from a position row of ids and roles: the inverse of build."""
        ids, roles = np.asarray(ids), np.asarray(roles)
        return ids[np.isin(roles, INPUT_ROLES)]

    def describe(self) -> dict:
        """The layout as a trace manifest records it (positions count from 0, ranges inclusive)."""
        m, S = self.num_mem_tokens, self.segment_size
        return {
            "architecture": self.architecture,
            "positions": "0..m-1 read memory, m.. segment tokens, [PAD] up to m+S-1, m+S..2m+S-1 write memory",
            "memory_positions": [0, m - 1],
            "read_positions": [0, m - 1],
            "write_positions": [m + S, 2 * m + S - 1],
            "role_names": list(ROLE_NAMES),
            "memory_token_id": MEMORY_TOKEN_ID,
        }

