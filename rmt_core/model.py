"""The encoder Recurrent Memory Transformer (Bulatov, Kuratov, Burtsev 2022/2023), wrapping an unchanged backbone.

Reading order: `RMTConfig` (settings, paper defaults), `SegmentOutput` / `RMTOutput` (what a pass returns),
`RMT` (memory, one segment step, the answer head), then constructors. The loop over segments is
`rmt_core.recurrence.run`, which `RMT.forward` calls like every other user of the model.

Segment layout fed to the backbone through `inputs_embeds`: `rmt_core.layout.EncoderLayout`,
`[CLS] [mem]*m [SEP] tokens [SEP] [PAD]...`. The backbone adds its own position and token-type embeddings.
The last layer's hidden states at the memory positions are the memory of the next segment, with no projection.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from rmt_core import recurrence
from rmt_core.inputs import SegmentBatch
from rmt_core.memory_module import MemoryModule
from rmt_core.pretrained import minilm_dir  # noqa: F401  (part of this module's public names)
from rmt_core.layout import (  # noqa: F401  (the roles are part of this module's public names)
    ROLE_FACT,
    ROLE_MEMORY,
    ROLE_NAMES,
    ROLE_NOISE,
    ROLE_PAD,
    ROLE_QUESTION,
    ROLE_SPECIAL,
    EncoderLayout,
)

PLACES = ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office")


@dataclass
class RMTConfig:
    """RMT settings, stored under the key `rmt` of a checkpoint's config.json. Defaults follow the paper."""

    task: str = "memorize"
    num_mem_tokens: int = 10
    segment_size: int = 499  # 512 input positions - 10 memory - [CLS] [SEP] [SEP]
    labels: list[str] = field(default_factory=lambda: list(PLACES))
    trained_segments: int = 0  # the longest curriculum stage this model was trained on
    bptt_depth: int | None = None  # None: backpropagate through all segments; k: through the last k only
    loss_on: str = "last"  # "last": loss on the last segment; "all": mean of the head's loss at every segment
    classifier_dropout: float = 0.1
    # How inputs are cut into segments (rmt_core.segmenting): "lens", this project's (text left-aligned, the
    # question ends the last segment), or "right", the paper's encoder code (imported checkpoints): the flat input,
    # first truncated to max_segments * segment_size tokens when max_segments is known, split right-aligned.
    segmenting: str = "lens"
    max_segments: int | None = None

    @property
    def input_size(self) -> int:
        """Positions one segment occupies in the backbone: [CLS] + memory + [SEP] + tokens + [SEP]."""
        return self.segment_size + self.num_mem_tokens + 3

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "RMTConfig":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class SegmentOutput:
    """What one segment step returns. B batch, T = input_size, m memory tokens, d hidden, L layers, H heads."""

    memory_out: torch.Tensor  # (B, m, d) last-layer states at the memory positions
    hidden: torch.Tensor  # (B, T, d) last-layer states at every position
    logits: torch.Tensor  # (B, C) the answer head on this segment's [CLS]
    attentions: tuple[torch.Tensor, ...] | None = None  # L x (B, H, T, T), only when asked (eager kernel)


@dataclass
class RMTOutput:
    logits: torch.Tensor  # (B, C) the answer at the last segment
    loss: torch.Tensor | None = None
    memory_out: torch.Tensor | None = None  # (B, m, d) memory after the last segment
    segment_logits: list[torch.Tensor] | None = None  # N x (B, C), when asked
    stillness: torch.Tensor | None = None  # the memory-change term in `loss`, unweighted, when `still` was given
    anchor_drift: torch.Tensor | None = None  # the anchor term in `loss`, unweighted, when `anchored` was given
    answer_hold: torch.Tensor | None = None  # the answer-hold term in `loss`, unweighted, when `hold` was given
    answer_step: torch.Tensor | None = None  # the answer-step term in `loss`, unweighted, when `step` was given
    answer_restore: torch.Tensor | None = None  # the restore term in `loss`, unweighted, when `restore` was given
    write_shortfall: torch.Tensor | None = None  # the fact-write term in `loss`, unweighted, when `write` was given
    memory_read: torch.Tensor | None = None  # (B, m, d) the memory the last segment read, when `keep_read`
    memory_reads: torch.Tensor | None = None  # (B, N-1, m, d) the memory segments 1..N-1 read, when `keep_reads`
    read_loss: torch.Tensor | None = None  # the write-attention term in `loss`, unweighted, when `read` was given
    answer_loss: torch.Tensor | None = None  # the question-read term in `loss`, unweighted, when `answer` was given
    noted_slots: torch.Tensor | None = None  # (B, N, S) long: the slot each token marked by `note` went to, else -1


def _stacked(reads: list[torch.Tensor], memory: torch.Tensor) -> torch.Tensor:
    """(B, T, m, d) the memories `reads` holds, T = 0 for a one-segment input."""
    return torch.stack(reads, dim=1) if reads else memory.new_zeros((memory.shape[0], 0, *memory.shape[1:]))


def memory_change(memory_in: torch.Tensor, memory_out: torch.Tensor) -> torch.Tensor:
    """(B,) how far a segment moved each sample's memory: |out - in|^2 / |in|^2 over all slots, in float32."""
    memory_in, memory_out = memory_in.float(), memory_out.float()
    moved = (memory_out - memory_in).pow(2).sum(dim=(1, 2))
    return moved / memory_in.pow(2).sum(dim=(1, 2)).clamp_min(1e-6)


def memory_moves(model, inputs, reference: int):
    """Run `inputs` (anything `recurrence.run` takes) without gradients and follow the memory: returns
    (change, cosine, out). change[t, b] is segment t's `memory_change`; cosine[t, b] the cosine of the memory
    after segment t with the memory after segment `reference` (counted from 0; 1 up to it); out the RunOutput."""
    kept: dict[str, torch.Tensor] = {}
    changes, cosines = [], []

    def on_segment(result) -> None:
        changes.append(memory_change(result.memory_in, result.memory_out))
        memory = result.memory_out.flatten(1).float()
        if result.t == reference:
            kept["reference"] = memory.clone()
        cosines.append(torch.nn.functional.cosine_similarity(memory, kept["reference"], dim=-1)
                       if "reference" in kept else torch.ones(len(memory)))

    with torch.inference_mode():
        out = recurrence.run(model, inputs, on_segment=on_segment)
    return torch.stack(changes), torch.stack(cosines), out


class RMT(MemoryModule):
    """Recurrent Memory Transformer around a Hugging Face BERT-style encoder (`BertModel`, `RobertaModel`, ...).

    The backbone must have been built with its pooler (`add_pooling_layer=True`); the answer head is
    pooler -> dropout -> linear on the last segment's [CLS], as in BERT's sequence classification.
    """

    whole_steps = True  # segment_step hands back all it computes: recurrence may checkpoint a step whole

    def __init__(self, backbone: nn.Module, config: RMTConfig, cls_id: int, sep_id: int, pad_id: int):
        super().__init__()
        if getattr(backbone, "pooler", None) is None:
            raise ValueError("the backbone needs its pooler: build it with add_pooling_layer=True")
        max_positions = backbone.config.max_position_embeddings
        if config.input_size > max_positions:
            raise ValueError(
                f"segment_size {config.segment_size} + {config.num_mem_tokens} memory + 3 special tokens = "
                f"{config.input_size} positions exceeds the backbone's {max_positions}; use a smaller --segment-size"
            )
        self.backbone = backbone
        self.config = config
        self.cls_id, self.sep_id, self.pad_id = int(cls_id), int(sep_id), int(pad_id)
        d = backbone.config.hidden_size
        std = getattr(backbone.config, "initializer_range", 0.02)
        self.memory = nn.Parameter(torch.randn(config.num_mem_tokens, d) * std)  # (m, d) trainable initial memory
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(d, len(config.labels))
        nn.init.normal_(self.classifier.weight, std=std)
        nn.init.zeros_(self.classifier.bias)
        self.tokenizer = None  # set by load_checkpoint / build helpers; not part of the weights

    # ----- shapes and layout (num_mem_tokens, hidden_size, device, initial_memory: MemoryModule) ----------
    @property
    def layout(self) -> EncoderLayout:
        """Built from the config, so a curriculum stage that changes the segment size changes the layout."""
        return EncoderLayout(self.config.num_mem_tokens, self.config.segment_size, self.cls_id, self.sep_id,
                             self.pad_id)

    def segment_inputs(self, tokens: torch.Tensor, mask: torch.Tensor | None = None):
        """Input ids (B, T) and attention mask (B, T) of one segment: `layout.build`."""
        return self.layout.build(tokens, mask)

    # ----- one segment -----------------------------------------------------------------------------------
    def segment_step(
        self,
        memory: torch.Tensor,
        tokens: torch.Tensor,
        mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> SegmentOutput:
        """Run one segment. memory: (B, m, d); tokens: (B, n) ids; mask: (B, n) or None.

        Attention probabilities need the eager kernel: wrap many calls in `recording()`; a lone call switches itself.
        """
        if output_attentions and self.attention_kernel != "eager":
            with self.recording():
                return self.segment_step(memory, tokens, mask, output_attentions=True)
        ids, attention_mask = self.layout.build(tokens, mask)  # (B, T), (B, T)
        embeds = self.layout.insert_memory(self.backbone.get_input_embeddings()(ids), memory)  # (B, T, d)
        out = self.backbone(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            output_attentions=output_attentions,
            return_dict=True,
        )
        hidden = out.last_hidden_state  # (B, T, d)
        logits = self.classifier(self.dropout(out.pooler_output))  # (B, C) pooler reads [CLS] at position 0
        attentions = tuple(out.attentions) if output_attentions else None  # L x (B, H, T, T)
        return SegmentOutput(memory_out=hidden[:, self.layout.write_positions], hidden=hidden, logits=logits,
                             attentions=attentions)

    # ----- the recurrence ----------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        return_segment_logits: bool = False,
        still: torch.Tensor | None = None,
        still_weight: float = 0.0,
        anchored: torch.Tensor | None = None,
        anchor_weight: float = 0.0,
        anchor_start: torch.Tensor | None = None,
        hold: torch.Tensor | None = None,
        hold_weight: float = 0.0,
        step: torch.Tensor | None = None,
        step_weight: float = 0.0,
        restore: torch.Tensor | None = None,
        restore_weight: float = 0.0,
        restore_scale: float = 1.0,
        write: torch.Tensor | None = None,
        write_weight: float = 0.0,
        write_margin: float = 1.0,
        keep_read: bool = False,
        keep_reads: bool = False,
        read: torch.Tensor | None = None,
        read_weight: float = 0.0,
        answer: torch.Tensor | None = None,
        answer_weight: float = 0.0,
        note: torch.Tensor | None = None,
        recompute: bool = False,
    ) -> RMTOutput:
        """input_ids: (B, N, S) segments, or (B, N*S) flat with S = segment_size; special tokens stripped.

        attention_mask: same shape, 1 for real tokens. labels: (B,) answer indices.
        still: (B, N) bool, the segments whose memory should stay as it came in (noise that holds no fact): the
        mean relative squared change of memory over them (`memory_change`) is added to the loss, times
        still_weight. It is local to each segment, so it reaches segments before a --bptt-depth cut too.
        anchored: (B, N) bool, the segments whose memory should stay where the last unmarked segment left it (noise
        after a fact): the mean relative squared distance of the memory after each of them from that anchor (the
        memory after the sample's last segment not marked, or the memory the first segment read if none is yet;
        detached; `anchor_drift`) is added to the loss, times anchor_weight. `still` weighs each step, so noise can
        carry memory away a little at a time; this weighs where the steps have taken it. anchor_start: (B, m, d)
        the anchor until a sample's first unmarked segment, in place of the memory the first segment reads (for
        inputs that start after their fact, as --far-facts rows do: the memory that fact wrote).
        hold: (B, N) bool, a subset of `anchored`: segments after which the question (the last segment's tokens) is
        also read from the memory they leave, and from the anchor (no gradient); the mean over them of the KL
        divergence of the first answer from the second (`answer_hold`) is added to the loss, times hold_weight.
        It holds still what memory tells the question, where `anchored` holds all of memory. Marks before a
        --bptt-depth cut add nothing: their memory has no gradient.
        step: (B, N) bool, segments after which the question is read from the memory they leave and from the memory
        they read (no gradient): the mean over them of the KL divergence of the first answer from the second
        (`answer_step`) is added to the loss, times step_weight. Where `hold` weighs how far the answer has moved
        since the fact, this weighs how far one segment moves it; it is local to the segment, so it reaches
        segments before a --bptt-depth cut too, where the gradient from the question through many segments fades.
        restore: (B, N) bool, a subset of `anchored`: segments that also run once more on a memory pushed further
        along its drift, m + restore_scale (m - anchor) with m the memory they read (no gradient), after which the
        question is read from the memory that run leaves and from the anchor (no gradient); the mean over them of
        the KL divergence of the first answer from the second (`answer_restore`) is added to the loss, times
        restore_weight. `step` asks a segment not to move the answer; this asks it to bring the answer back when
        noise has carried memory off, so errors stop adding up over thousands of segments. Its gradient stays in
        the segment's own run (it reaches no other segment), so it keeps no graph before a --bptt-depth cut.
        write: (B, N) bool, the segments that hold a fact and should write it: the mean of max(0, write_margin -
        memory_change) over them is added to the loss, times write_weight. With `still`, only a segment that tells
        a fact from noise-that-looks-like-one can lower both terms; without it, writing nothing at all keeps
        noise still for free.
        keep_read: also return the memory the last segment read (`memory_read`, in the graph), for objectives on
        what memory carries to the question (rmt_core.recall). keep_reads: the same for every segment from the
        second on (`memory_reads`), for objectives on what memory holds after each write.
        read: (B, N, S) bool, tokens memory should read as it is written: for each, the most attention any memory
        slot's head of the last layer pays it (`strongest_read`); the mean of -log of that over the marked tokens
        (`read_loss`) is added to the loss, times read_weight. It asks one slot to take the token, not all.
        answer: (B, N, S) bool, at most one token a sample, before the last segment: the token whose slot the
        question should read. Where it is written, the slot whose head of the last layer pays it the most
        attention is noted (no gradient); in the last segment, -log of the most attention any head of the last
        layer pays from the answer position ([CLS]) to that slot as it is read is averaged over the marked samples
        (`answer_loss`) and added to the loss, times answer_weight.
        note: (B, N, S) bool, tokens whose slot to note as they are written, as for `answer` (no gradient): the
        slot whose head of the last layer pays each the most attention comes back in `noted_slots`, -1 elsewhere
        (rmt_core.slot_recall).
        recompute: segments before a --bptt-depth cut that one of the terms above reaches recompute their
        activations in the backward pass instead of keeping them (training memory nearly flat in the input's
        length, those segments run twice; the same gradients). Segments before the cut that no term reaches run
        without a graph either way.
        """
        batch = SegmentBatch.from_ids(input_ids, self.config.segment_size, masks=attention_mask)
        N = batch.n_segments
        cut = N - self.config.bptt_depth if self.config.bptt_depth else None  # no gradient before the last k
        changes, shortfalls, kept, reads, misses, drifts, holds, steps = [], [], [], [], [], [], [], []
        restores = []
        anchor = None if anchor_start is None else anchor_start.detach().clone()  # (B, m, d) for `anchored`
        on_segment = None
        for name, tokens in (("read", read), ("answer", answer), ("note", note)):
            if tokens is not None and tuple(tokens.shape) != (batch.batch_size, N, self.config.segment_size):
                raise ValueError(f"{name} has shape {tuple(tokens.shape)}; expected ({batch.batch_size}, {N}, "
                                 f"{self.config.segment_size})")
        if answer is not None and (answer[:, -1].any() or (answer.sum((1, 2)) > 1).any()):
            raise ValueError("answer marks at most one token a sample, before the last segment")
        slots = torch.full((batch.batch_size,), -1, dtype=torch.long)  # the slot that took each sample's answer token
        answered = []
        noted = None if note is None else torch.full(note.shape, -1, dtype=torch.long)
        for name, mask in (("still", still), ("write", write), ("anchored", anchored), ("hold", hold),
                           ("step", step), ("restore", restore)):
            if mask is not None and tuple(mask.shape) != (batch.batch_size, N):
                raise ValueError(f"{name} has shape {tuple(mask.shape)}; expected ({batch.batch_size}, {N})")
        if anchor_start is not None and tuple(anchor_start.shape[:1]) != (batch.batch_size,):
            raise ValueError(f"anchor_start has {anchor_start.shape[0]} rows; expected one a sample "
                             f"({batch.batch_size})")
        if hold is not None and (anchored is None or (hold & ~anchored).any()):
            raise ValueError("hold marks a subset of anchored: the question is held to what the anchor tells it")
        if restore is not None and (anchored is None or (restore & ~anchored).any()):
            raise ValueError("restore marks a subset of anchored: memory is pushed away from the anchor")
        if hold is not None and cut is not None:
            hold = hold.clone()
            hold[:, :max(cut, 0)] = False
        asks = [m for m in (hold, step, restore) if m is not None and m.any()]
        question = batch.segment(N - 1, self.device) if asks else None
        if any(m is not None for m in (still, write, anchored, step, read, answer, note)) or keep_read or keep_reads:

            def marked(mask, result):
                """This segment's column of a mask on the memory's device, or None when it marks no sample."""
                if mask is None or not mask[:, result.t].any():
                    return None
                return mask[:, result.t].to(result.memory_out.device)

            def on_segment(result):
                nonlocal anchor
                if keep_read and result.t == N - 1:
                    kept.append(result.memory_in)
                if keep_reads and result.t > 0:
                    reads.append(result.memory_in)
                if result.attentions is not None and read is not None and read[:, result.t].any():
                    marks = read[:, result.t].to(result.memory_out.device)
                    misses.append(-torch.log(self.strongest_read(result.attentions[-1])[marks] + 1e-6))
                strongest = None  # (B, S) on the CPU: each token's strongest slot, found once a segment
                if result.attentions is not None and answer is not None:
                    if result.t == N - 1:
                        answered.append(self.answer_read(result.attentions[-1], slots))
                    elif answer[:, result.t].any():
                        b, j = answer[:, result.t].nonzero(as_tuple=True)
                        strongest = self.strongest_slot(result.attentions[-1].detach()).cpu()
                        slots[b] = strongest[b, j]
                if result.attentions is not None and note is not None and note[:, result.t].any():
                    if strongest is None:
                        strongest = self.strongest_slot(result.attentions[-1].detach()).cpu()
                    marks = note[:, result.t]
                    noted[:, result.t][marks] = strongest[marks]
                quiet, writes = marked(still, result), marked(write, result)
                if anchored is not None:
                    if anchor is None:  # the memory the first segment read (or anchor_start), until one not marked
                        anchor = result.memory_in.detach().clone()
                    held, moved = marked(anchored, result), slice(None)  # moved: the samples whose anchor moves here
                    if held is not None:
                        drifts.append(memory_change(anchor[held], result.memory_out[held]))
                        moved = ~held
                        asked = marked(hold, result)
                        if asked is not None:
                            holds.append(self.answer_shift(anchor[asked], result.memory_out[asked], question, asked))
                        pushed = marked(restore, result)
                        if pushed is not None:
                            restores.append(self._restored(anchor[pushed], result, pushed, restore_scale, batch,
                                                           question))
                    anchor[moved] = result.memory_out.detach()[moved]
                stepped = marked(step, result)
                if stepped is not None:
                    steps.append(self.answer_shift(result.memory_in.detach()[stepped], result.memory_out[stepped],
                                                   question, stepped))
                if quiet is None and writes is None:
                    return
                change = memory_change(result.memory_in, result.memory_out)
                if quiet is not None:
                    changes.append(change[quiet])
                if writes is not None:
                    shortfalls.append(F.relu(write_margin - change[writes]))

        looked = None  # the segments whose attention the read and answer terms need
        if read is not None or answer is not None or note is not None:
            looked = {t for marks in (read, answer, note) if marks is not None for t in range(N) if marks[:, t].any()}
            looked |= {N - 1} if answer is not None else set()
        weighted = ((still, still_weight), (write, write_weight), (anchored, anchor_weight), (step, step_weight),
                    (read, read_weight))
        reached = self._reached_before(cut, N, labels is not None, keep_reads,
                                       *(marks if weight else None for marks, weight in weighted))
        run = recurrence.run(self, batch, memory=memory, detach_before=cut, segment_logits=True,
                             on_segment=on_segment, attention=looked, graph_before=reached, recompute=recompute)
        memory, segment_logits = run.memory, run.segment_logits
        logits = segment_logits[-1]
        loss = None
        if labels is not None:
            if self.config.loss_on == "all":
                loss = torch.stack([F.cross_entropy(l.float(), labels) for l in segment_logits]).mean()
            else:
                loss = F.cross_entropy(logits.float(), labels)
        stillness = shortfall = None
        if still is not None:
            stillness = torch.cat(changes).mean() if changes else logits.new_zeros((), dtype=torch.float32)
            if loss is not None and still_weight:
                loss = loss + still_weight * stillness
        anchor_drift = None
        if anchored is not None:
            anchor_drift = torch.cat(drifts).mean() if drifts else logits.new_zeros((), dtype=torch.float32)
            if loss is not None and anchor_weight:
                loss = loss + anchor_weight * anchor_drift
        if write is not None:
            shortfall = torch.cat(shortfalls).mean() if shortfalls else logits.new_zeros((), dtype=torch.float32)
            if loss is not None and write_weight:
                loss = loss + write_weight * shortfall
        read_loss = None
        if read is not None:
            read_loss = torch.cat(misses).mean() if misses else logits.new_zeros((), dtype=torch.float32)
            if loss is not None and read_weight:
                loss = loss + read_weight * read_loss
        answer_hold = None
        if hold is not None:
            answer_hold = torch.cat(holds).mean() if holds else logits.new_zeros((), dtype=torch.float32)
            if loss is not None and hold_weight:
                loss = loss + hold_weight * answer_hold
        answer_step = None
        if step is not None:
            answer_step = torch.cat(steps).mean() if steps else logits.new_zeros((), dtype=torch.float32)
            if loss is not None and step_weight:
                loss = loss + step_weight * answer_step
        answer_restore = None
        if restore is not None:
            answer_restore = torch.cat(restores).mean() if restores else logits.new_zeros((), dtype=torch.float32)
            if loss is not None and restore_weight:
                loss = loss + restore_weight * answer_restore
        answer_loss = None
        if answer is not None:
            answer_loss = answered[0] if answered else logits.new_zeros((), dtype=torch.float32)
            if loss is not None and answer_weight:
                loss = loss + answer_weight * answer_loss
        return RMTOutput(
            logits=logits,
            loss=loss,
            memory_out=memory,
            segment_logits=segment_logits if return_segment_logits else None,
            stillness=stillness,
            anchor_drift=anchor_drift,
            answer_hold=answer_hold,
            answer_step=answer_step,
            answer_restore=answer_restore,
            write_shortfall=shortfall,
            memory_read=kept[0] if kept else None,
            memory_reads=_stacked(reads, memory) if keep_reads else None,
            read_loss=read_loss,
            answer_loss=answer_loss,
            noted_slots=noted,
        )

    def _reached_before(self, cut: int | None, N: int, labelled: bool, keep_reads: bool, *marks) -> int | None:
        """For `recurrence.run`'s graph_before: one past the last segment before the cut that a loss term reaches
        (the marks of the weighted terms: (B, N) or (B, N, S) bool, or None), 0 when none does; None without a
        cut."""
        if cut is None or cut <= 0:
            return None
        if keep_reads or (labelled and self.config.loss_on == "all"):
            return cut  # every segment's memory or logits reach a loss
        marked = [m.reshape(m.shape[0], N, -1).any(-1).any(0)[:cut] for m in marks if m is not None]
        reached = torch.stack(marked).any(0).nonzero() if marked else []
        return int(reached.max()) + 1 if len(reached) else 0

    def answer_shift(self, anchor: torch.Tensor, memory: torch.Tensor, question: tuple, rows: torch.Tensor):
        """(K,) for K samples: the KL divergence of the question's answer read from `memory` (K, m, d) from its
        answer read from `anchor` (K, m, d; no gradient). question: the (tokens, mask) of the last segment, all
        rows; rows: (B,) bool, the K samples."""
        tokens, mask = question
        rows = rows.to(tokens.device)
        tokens, mask = tokens[rows], None if mask is None else mask[rows]
        with torch.no_grad():
            target = F.log_softmax(self.segment_step(anchor, tokens, mask).logits.float(), dim=-1)
        read = F.log_softmax(self.segment_step(memory, tokens, mask).logits.float(), dim=-1)
        return F.kl_div(read, target, log_target=True, reduction="none").sum(-1).clamp_min(0)  # >= 0 but for rounding

    def _restored(self, anchor: torch.Tensor, result, rows: torch.Tensor, scale: float, batch, question: tuple):
        """(K,) for the K `rows` of segment result.t: the segment run again on the memory it read pushed `scale`
        times its distance further from `anchor` (K, m, d), and the KL divergence of the question's answer read
        from what that run leaves from the answer read from `anchor`."""
        tokens, mask = batch.segment(result.t, result.memory_out.device)
        rows_here = rows.to(tokens.device)
        start = result.memory_in.detach()[rows]
        pushed = start + scale * (start - anchor)
        out = self.segment_step(pushed, tokens[rows_here], None if mask is None else mask[rows_here])
        return self.answer_shift(anchor, out.memory_out, question, rows)

    def strongest_read(self, attention: torch.Tensor) -> torch.Tensor:
        """(B, S): for each token of a segment, the most attention any memory slot's head pays it, from one
        layer's (B, H, T, T) attention probabilities."""
        return self._slot_rows(attention).flatten(1, 2).max(1).values

    def strongest_slot(self, attention: torch.Tensor) -> torch.Tensor:
        """(B, S) long: for each token of a segment, the memory slot whose head pays it the most attention, from
        one layer's (B, H, T, T) attention probabilities."""
        return self._slot_rows(attention).max(1).values.argmax(1)

    def _slot_rows(self, attention: torch.Tensor) -> torch.Tensor:
        """(B, H, m, S): the attention each memory slot's head pays each token of the segment."""
        start = self.layout.token_start
        return attention[:, :, self.layout.write_positions, start:start + self.config.segment_size]

    def answer_read(self, attention: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """The mean over samples with a slot (>= 0) of -log of the most attention any head pays from the answer
        position to that slot as memory is read, from the last segment's (B, H, T, T) attention probabilities;
        zero when no sample has one."""
        keep = (slots >= 0).nonzero(as_tuple=True)[0]
        if not len(keep):
            return attention.new_zeros((), dtype=torch.float32)
        rows = attention[keep.to(attention.device), :, self.layout.answer_position, self.layout.read_positions]
        taken = rows[torch.arange(len(keep)), :, slots[keep].to(attention.device)]  # (K, H)
        return -torch.log(taken.max(1).values.float() + 1e-6).mean()



# ----- constructors ----------------------------------------------------------------------------------------
def special_ids(tokenizer) -> tuple[int, int, int]:
    """[CLS], [SEP], [PAD] ids of a BERT-style tokenizer (RoBERTa's <s>, </s>, <pad> work the same way)."""
    cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if cls_id is None or sep_id is None:
        raise ValueError("the tokenizer has no [CLS]/[SEP] (or <s>/</s>) tokens; use a BERT-style tokenizer")
    return int(cls_id), int(sep_id), int(pad_id)


def from_backbone(backbone, tokenizer, config: RMTConfig | None = None, attn_implementation: str = "sdpa") -> RMT:
    """Wrap a backbone: a folder on disk (loaded offline), or a `transformers` config to build fresh weights."""
    from transformers import AutoConfig, AutoModel, PretrainedConfig

    config = config or RMTConfig()
    if isinstance(backbone, (str, Path)):
        module = AutoModel.from_pretrained(
            str(backbone), add_pooling_layer=True, attn_implementation=attn_implementation, local_files_only=True
        )
    elif isinstance(backbone, PretrainedConfig):
        backbone = AutoConfig.for_model(**backbone.to_dict()) if type(backbone) is PretrainedConfig else backbone
        backbone._attn_implementation = attn_implementation
        module = AutoModel.from_config(backbone, add_pooling_layer=True, attn_implementation=attn_implementation)
    else:
        module = backbone
    model = RMT(module, config, *special_ids(tokenizer))
    model.tokenizer = tokenizer
    return model


def small_bert_config(
    vocab_size: int,
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    max_positions: int = 512,
    dropout: float = 0.0,
):
    """A BERT configuration for models trained from scratch (and for tests)."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=4 * hidden_size,
        max_position_embeddings=max_positions,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
