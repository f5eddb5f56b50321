"""Curriculum training of an RMT (paper section 3): one segment, then one more at a time.

Each stage starts from the previous stage's best checkpoint and moves on when validation accuracy has
converged (reached `target_accuracy` on `patience` evaluations in a row, or stopped improving for `plateau`
evaluations) or its step budget ends. A stage may also change the segment size (a short-segment warm-up,
e.g. `1x16,2x16,2x32,2x64,3x64,...`), which the model allows as long as it fits the backbone's positions.

Run folder (`--out`): a new or empty folder (a run never writes among files it did not make), or with
`--resume` the folder of the run to continue:

    config.json, model.safetensors, tokenizer files   the final model (best of the last stage)
    training_log.jsonl                                one JSON object a line: steps, evaluations, stage ends
    README.md                                         the model card
    stages/NN-<N>x<S>/                                the best checkpoint of each stage
    resume/                                           state for --resume (weights, optimizer, RNG: safetensors + JSON)

Several processes (torchrun / accelerate launch) split each global batch; rank 0 alone writes files.

`architecture="decoder"` trains a decoder RMT (`rmt_core.decoder`) on a generative task (qa1, qa2): the loss is
the shifted causal-LM loss on the answer tokens, and validation accuracy is the exact match of the greedily
generated answer. Backbones: "small" / "gpt2-small" (a GPT-2 from scratch), "llama-small" (a Llama from
scratch), both sized by hidden_size, num_layers and num_heads with the MiniLM tokenizer; "minilm" (the pretrained
all-MiniLM-L6-v2 weights as a causal LM: BERT in decoder mode); or a causal-LM folder.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import shutil
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.nn import functional as F

from rmt_core import babi
from rmt_core.checkpoint import (fill_tied, load_checkpoint, plain_state, portable_path, read_weights, save_checkpoint,
                                 training_only_prefixes)
from rmt_core.deep_memory import FAR_FACT_TERMS, REFRESH_STEPS, DeepMemoryPool, FarFactPool
from rmt_core.errors import TrainError
from rmt_core.model import RMT, RMTConfig, from_backbone, minilm_dir, small_bert_config
from rmt_core.recall import AT as RECALL_AT
from rmt_core.recall import ATTRIBUTE as RECALL
from rmt_core.recall import KINDS as RECALL_KINDS
from rmt_core.recall import LR_SCALE as RECALL_LR_SCALE
from rmt_core.recall import RecallHead
from rmt_core.recall import targets as recall_targets
from rmt_core.slot_recall import ATTRIBUTE as SLOT_RECALL
from rmt_core.slot_recall import SlotHead, slot_facts

RESUME_VERSION = 1


@dataclass
class Stage:
    """One curriculum stage: `segments` segments of `segment_size` tokens. With `min_segments`, each training batch
    has a random number of segments from min_segments to segments (validation and the trained length: segments)."""

    segments: int
    segment_size: int
    min_segments: int | None = None

    @property
    def name(self) -> str:
        low = "" if self.min_segments is None else f"{self.min_segments}-"
        return f"{low}{self.segments}x{self.segment_size}"

    def batch_segments(self, seed: int, draw: str = "uniform") -> int:  # draw: one of LENGTH_DRAWS
        """The number of segments of the training batch drawn with `seed`: every number from min_segments to
        segments equally often ("uniform"), or every scale equally often ("log": as many batches of 1-2 segments as
        of 128-256, so a stage up to 1,024 segments still trains the short lengths, at about 0.3 of uniform's
        segments)."""
        if self.min_segments is None:
            return self.segments
        rng = random.Random(f"segments {seed}")
        if draw == "log":
            n = math.exp(rng.uniform(math.log(self.min_segments), math.log(self.segments + 1)))
            return min(self.segments, max(self.min_segments, int(n)))
        return rng.randint(self.min_segments, self.segments)


def parse_stages(text: str | None, segments: str | None = None, segment_size: int = 64) -> list[Stage]:
    """'1x16,2x32,3x64' -> stages ('1-32x64': a random number of segments from 1 to 32 each training batch);
    or `segments` '1,2,3' all at `segment_size`."""
    try:
        if text:
            stages = []
            for part in text.split(","):
                n, s = part.lower().strip().split("x")
                low, dash, high = n.rpartition("-")
                if dash and not low:
                    raise ValueError(part)
                stages.append(Stage(int(high), int(s), int(low) if low else None))
        else:
            stages = [Stage(int(n), segment_size) for n in (segments or "1,2").split(",") if n.strip()]
    except ValueError:
        raise TrainError(f"cannot read the curriculum {text or segments!r}; write --stages 1x16,2x32 or --segments 1,2,3")
    if not stages or any(s.segments < 1 or s.segment_size < 4 for s in stages):
        raise TrainError("every curriculum stage needs at least 1 segment of at least 4 tokens")
    if any(s.min_segments is not None and not 1 <= s.min_segments <= s.segments for s in stages):
        raise TrainError(f"a random-length stage needs 1 <= low <= high segments ({text!r}); write e.g. --stages 1-32x64")
    return stages


LENGTH_DRAWS = ("uniform", "log")  # how a random-length stage draws each batch's number of segments
PATH_SETTINGS = ("out", "init_from", "backbone", "babi_file", "babi_dir", "noise_file", "stage_eval_babi_dir",
                 "stage_eval_noise_file")


@dataclass
class TrainConfig:
    task: str = "memorize"
    architecture: str = "encoder"  # "encoder" (the paper's RMT) or "decoder" (read and write memory, rmt_core.decoder)
    out: str = "runs/memorize"
    stages: list[Stage] = field(default_factory=lambda: [Stage(1, 64), Stage(2, 64)])
    backbone: str = "small"  # "small" (from scratch), "minilm" (the installed all-MiniLM-L6-v2) or a folder
    init_from: str | None = None  # start from this RMT checkpoint's weights (its backbone config and tokenizer)
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    max_positions: int = 512
    num_mem_tokens: int = 10
    dropout: float = 0.0
    batch_size: int = 32  # global batch, split across processes
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    max_steps: int = 1000  # per stage
    min_steps: int = 0  # per stage, before convergence may end it
    eval_every: int = 50
    val_samples: int = 256
    # Validate at these multiples of the stage's segment count, pooled: (1, 2) picks the model that also holds
    # at twice the length it trains on.
    val_multiples: tuple = (1,)
    # reason only: this share of training samples needs the directions (place names alone leave two answers);
    # validation keeps the natural mix.
    hard_fraction: float = 0.0
    chain_fraction: float = 0.0  # reason: this share of training samples is a question one fact answers directly
    every_person: bool = False  # qa1 training samples close with every placed person's question and answer
    quiz: bool = False  # qa1 training samples ask about someone else's current place after every fact
    late_facts: float = 0.0  # detect/reason: this share of training samples has its facts in the last 8 segments
    prior_facts: float = 0.0  # detect: this share of training samples has another story's fact before its own
    prior_decoys: float = 0.0  # detect: this share of training samples has a fact-like decoy before its fact
    prior_asked: float = 0.0  # detect: ... and this share of those (about someone else) asks about the earlier one
    facts_behind: float = 0.0  # reason: this share of training samples has no fact in the question's segment
    deep_memory: float = 0.0  # encoder: this share of training samples starts from memory after long noise
    deep_segments: int = 1024  # ... of up to this many segments (rmt_core.deep_memory)
    far_facts: float = 0.0  # encoder: this share of training samples asks about facts written long before
    far_segments: int = 1024  # ... up to this many segments of noise before the sample's own (FarFactPool)
    noise_stillness: float = 0.0  # encoder: weight of the memory's change over training segments without a fact
    noise_anchor: float = 0.0  # encoder: weight of the memory's distance, on noise after a fact, from the last write
    answer_hold: float = 0.0  # encoder: weight of the shift, on noise after a fact, of the answer memory gives
    hold_reads: int = 8  # ... read after this many noise segments a batch, spread over those the gradient reaches
    answer_step: float = 0.0  # encoder: weight of the shift of that answer over one noise segment after a fact
    step_reads: int = 8  # ... read after this many noise segments a batch, spread over all of them
    answer_restore: float = 0.0  # encoder: weight of that answer's return, over one noise segment after a fact,
    restore_reads: int = 8  # ... from memory pushed further along its drift; this many segments a batch, spread
    restore_scale: float = 1.0  # ... over all of them; pushed to m + restore_scale (m - the last write's memory)
    fact_write: float = 0.0  # encoder: weight of the shortfall of a fact segment's memory change below the margin
    fact_write_margin: float = 1.0  # ... the change a fact's segment should at least make (rmt_core.model.memory_change)
    fact_recall: float = 0.0  # reason, encoder: weight of a read-out's loss naming the carried facts (rmt_core.recall)
    fact_recall_target: str = "facts"  # ... what it names: each fact's parts, or the table of answers (recall.KINDS)
    fact_recall_at: str = "question"  # ... which memory it reads: the question's, or every segment's (recall.AT)
    write_attention: float = 0.0  # reason, encoder: weight of -log of the most attention a memory slot pays each
    # fact's direction token as memory is written (rmt_core.model.RMT.forward's `read`)
    question_read: float = 0.0  # reason, encoder: weight of -log of the question's [CLS] attention to the memory
    # slot that took the answering fact's direction word (rmt_core.model.RMT.forward's `answer`)
    slot_recall: float = 0.0  # reason, encoder: weight of a one-slot read-out's loss naming, at every later segment,
    # the subject and direction of the fact each slot took (rmt_core.slot_recall)
    question_form: str | None = None  # reason: train and validate on questions of one form only ("of" or "is")
    target_accuracy: float = 0.99
    # "best": a stage keeps its best model on validation; "last": the weights of its last evaluation (for runs whose
    # validation does not track what they are for, e.g. training noise against long held-out noise)
    keep: str = "best"
    patience: int = 2
    plateau: int = 8
    grad_clip: float = 1.0
    # skip the update of a batch whose gradient norm (before clipping) is above this or not finite: a rare sample
    # whose gradient explodes through the recurrence otherwise still moves the model by a whole clipped step
    skip_grad_norm: float | None = None
    length_draw: str = "uniform"  # random-length stages: "uniform" over the lengths, or "log" (every scale alike)
    accumulate: int = 1  # each process's share of a batch in this many parts, one after another, gradients summed
    bptt_depth: int | None = None  # encoder: the last k segments; decoder: the last k memory transitions
    recompute: bool = False  # encoder: segments before the bptt cut that a local term reaches are recomputed in the
    # backward pass, not kept (training memory nearly flat in the input's length; those segments run twice);
    # decoder: every segment
    loss_on: str = "last"  # encoder: "last" or "all" segments' heads; decoder: "last" = the answer tokens, "all" tokens
    seed: int = 0
    device: str | None = None
    bf16: bool | None = None  # None: on CUDA only
    babi_file: str | None = None
    babi_dir: str | None = None
    noise_file: str | None = None
    save_dtype: str = "float16"
    max_shard_mib: float | None = None
    threads: int | None = None
    log_every: int = 10
    time_budget_s: float | None = None  # end after the stage running when this much time has passed
    stop_at_step: int | None = None  # end the run at this evaluation step, the schedule still that of max_steps
    stage_eval_segments: list[int] = field(default_factory=list)  # evaluate each stage's best at these lengths
    stage_eval_samples: int = 200
    stage_eval_babi_dir: str | None = None
    stage_eval_noise_file: str | None = None
    command: str = ""

    def to_json(self) -> dict:
        """The settings as checkpoints record them: paths by `portable_path`, never absolute ones."""
        values = asdict(self)
        values["stages"] = ",".join(Stage(**s).name for s in values["stages"])
        for key in PATH_SETTINGS:
            values[key] = portable_path(values[key])
        return values


# ----- processes -------------------------------------------------------------------------------------------
class Processes:
    """Rank and world size from torchrun / accelerate launch environment variables; one process otherwise."""

    def __init__(self, device: str | None):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device:
            self.device = torch.device(device)
        elif torch.cuda.is_available():
            self.device = torch.device("cuda", local)
        else:
            self.device = torch.device("cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def average_gradients(self, model: torch.nn.Module) -> None:
        """Every gradient becomes its mean over the processes, what one process has on the whole batch.

        A parameter that no sample of one process's share used has no gradient there: it counts as zero in the
        mean, and stays without a gradient (the optimizer leaves it alone) only where no process gave it one. So
        every process sends the same number of values, whatever its share of the batch touched.
        """
        if self.world == 1:
            return
        params = [p for p in model.parameters() if p.requires_grad]
        given = torch.tensor([float(p.grad is not None) for p in params], device=params[0].device)
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params]
                         + [given])
        torch.distributed.all_reduce(flat)
        means, given = flat[: -len(params)] / self.world, flat[-len(params) :]
        offset = 0
        for p, anyone in zip(params, given.tolist()):
            mean = means[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
            if p.grad is not None:
                p.grad.copy_(mean)
            elif anyone:
                p.grad = mean.to(p.dtype).clone()

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


# ----- data --------------------------------------------------------------------------------------------------
def _batch_seed(seed: int, stage: int, step: int) -> int:
    # Every step's batch depends only on (seed, stage, step): resuming needs no data-loader state.
    return (seed * 1_000_003 + stage * 100_003 + step) % (2**31 - 1)


VAL_SEED_OFFSET = 500_000_000  # validation samples never share seeds with training batches


class Data:
    def __init__(self, cfg: TrainConfig, tokenizer):
        self.cfg, self.tokenizer, self.builders = cfg, tokenizer, {}

    def builder(self, segment_size: int, training: bool = False):
        """Samples of the training sources; training batches oversample hard questions (hard_fraction: reason, qa1, qa2).
        A question_form restricts training and validation alike: the stage's best is its best on that form."""
        from rmt_core.babilong import make_builder

        c = self.cfg
        options = {"hard_fraction": c.hard_fraction if training else 0.0}
        if c.every_person and training:
            options["every_person"] = True
        if c.quiz and training:
            options["quiz"] = True
        if c.late_facts and training:
            options["late_facts"] = c.late_facts
        if c.facts_behind and training:
            options["facts_behind"] = c.facts_behind
        if c.chain_fraction and training:
            options["chain_fraction"] = c.chain_fraction
        if c.prior_decoys and training:
            options["prior_decoys"] = c.prior_decoys
        if c.prior_facts and training:
            options["prior_facts"] = c.prior_facts
            if c.prior_asked:
                options["prior_asked"] = c.prior_asked
        if c.architecture != "decoder":
            options["question_form"] = c.question_form
        key = (segment_size, *sorted(options.items()))  # validation shares the training builder when they agree
        if key not in self.builders:
            self.builders[key] = make_builder(c.task, self.tokenizer, segment_size, babi_file=c.babi_file,
                                              babi_dir=c.babi_dir, noise_file=c.noise_file, split="train", **options)
        return self.builders[key]

    def batch(self, stage: Stage, stage_index: int, step: int):
        """(ids, labels, still, write, recall, read, answer, slots, anchored): still is None, or with
        --noise-stillness or a term on noise after facts the (B, N) segments whose memory change is penalized:
        every segment without a fact but the first and the last (the question's, whose memory nothing reads);
        write is None, or
        with --fact-write the segments that hold a fact, the last aside; recall is None, or with --fact-recall the
        targets of rmt_core.recall.targets; read is None, or with --write-attention the (B, N, S) tokens memory
        should read: each fact's direction word; answer is None, or with --question-read the (B, N, S) direction
        word of the fact that alone answers the question, when memory carries it (`answer_tokens`); slots is None,
        or with --slot-recall the carried facts (rmt_core.slot_recall.SlotFacts); anchored is None, or with a term
        on noise after facts (--noise-anchor, --answer-hold, --answer-step, --answer-restore) the segments of
        `still` that follow the sample's first fact."""
        seed = _batch_seed(self.cfg.seed, stage_index, step)
        builder = self.builder(stage.segment_size, training=True)
        n = stage.batch_segments(seed, self.cfg.length_draw)
        recall = read = answer = slots = None
        c = self.cfg
        anchoring = c.noise_anchor or c.answer_hold or c.answer_step or c.answer_restore  # terms on noise after facts
        if self.cfg.fact_recall or self.cfg.write_attention or self.cfg.question_read or self.cfg.slot_recall:
            # reason: the samples are drawn once, and every target comes from them
            samples = builder.samples(n, self.cfg.batch_size, seed)
            if self.cfg.fact_recall:
                recall = recall_targets(samples, n, self.cfg.fact_recall_target, self.cfg.fact_recall_at)
            if self.cfg.write_attention:
                read = direction_tokens(samples, n, stage.segment_size, self.tokenizer)
            if self.cfg.question_read:
                answer = answer_tokens(samples, n, stage.segment_size, self.tokenizer)
            if self.cfg.slot_recall:
                slots = slot_facts(samples, n, stage.segment_size,
                                   lambda fact, sample: _direction_position(fact, sample, self.tokenizer,
                                                                            "--slot-recall"))
            ids, labels, holds = builder.tensors(samples, n, fact_segments=True)
        elif not (c.noise_stillness or anchoring or c.fact_write):
            return (*builder.batch(n, self.cfg.batch_size, seed=seed), None, None, None, None, None, None, None)
        else:
            ids, labels, holds = builder.batch(n, self.cfg.batch_size, seed=seed, fact_segments=True)
        still = write = None
        if c.noise_stillness or anchoring:
            still = ~holds
            still[:, 0] = False  # the first segment turns the learned initial memory into a state; that is no drift
            still[:, -1] = False
        if self.cfg.fact_write:
            write = holds.clone()
            write[:, -1] = False  # the question's segment reads its own fact; its memory goes nowhere
        anchored = None
        if anchoring:
            anchored = still & (holds.cumsum(dim=1) > 0)  # noise after the sample's first fact
        return ids, labels, still, write, recall, read, answer, slots, anchored

    def validation(self, stage: Stage, batch_size: int = 64):
        """Validation batches: val_samples samples at each multiple of the stage's length in val_multiples."""
        n, out = self.cfg.val_samples, []
        for multiple in self.cfg.val_multiples:
            for start in range(0, n, batch_size):
                size = min(batch_size, n - start)
                out.append(self.builder(stage.segment_size).batch(stage.segments * multiple, size,
                                                                  seed=VAL_SEED_OFFSET + start))
        return out


# ----- model -----------------------------------------------------------------------------------------------
DECODER_BACKBONES = {"small": "gpt2", "gpt2-small": "gpt2", "llama-small": "llama"}


def build_decoder(cfg: TrainConfig, tokenizer):
    from rmt_core.decoder import BACKBONES, DecoderConfig, decoder_from_backbone, minilm_causal

    first = cfg.stages[0]
    rmt = DecoderConfig(task=cfg.task, num_mem_tokens=cfg.num_mem_tokens, segment_size=first.segment_size,
                        bptt_depth=cfg.bptt_depth, loss_on="all" if cfg.loss_on == "all" else "answer")
    if cfg.backbone == "minilm":
        backbone = minilm_causal(cfg.dropout)
    elif cfg.backbone in DECODER_BACKBONES:
        make = BACKBONES[DECODER_BACKBONES[cfg.backbone]]
        backbone = make(len(tokenizer), cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.max_positions)
        if DECODER_BACKBONES[cfg.backbone] == "gpt2":
            backbone.resid_pdrop = backbone.embd_pdrop = backbone.attn_pdrop = cfg.dropout
    else:
        backbone = Path(cfg.backbone)
        if not (backbone / "config.json").is_file():
            raise TrainError(f"--backbone {backbone} is not a model folder with config.json; pass a causal-LM folder "
                             f"or one of {', '.join(DECODER_BACKBONES)}")
    return decoder_from_backbone(backbone, tokenizer, rmt)


def build_model(cfg: TrainConfig, tokenizer) -> RMT:
    if cfg.architecture == "decoder":
        return build_decoder(cfg, tokenizer)
    first = cfg.stages[0]
    rmt = RMTConfig(
        task=cfg.task, num_mem_tokens=cfg.num_mem_tokens, segment_size=first.segment_size,
        trained_segments=0, bptt_depth=cfg.bptt_depth, loss_on=cfg.loss_on, classifier_dropout=cfg.dropout,
    )
    if cfg.backbone == "small":
        backbone = small_bert_config(
            len(tokenizer), cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.max_positions, dropout=cfg.dropout
        )
    elif cfg.backbone == "minilm":
        backbone = minilm_dir()
    else:
        backbone = Path(cfg.backbone)
        if not (backbone / "config.json").is_file():
            raise TrainError(f"--backbone {backbone} is not a model folder with config.json; pass a local backbone folder")
    return from_backbone(backbone, tokenizer, rmt)


def check_backbone(backbone: str, architecture: str = "encoder") -> None:
    """TrainError unless `backbone` is one of the architecture's built-in names or a local model folder: nothing is
    looked up online."""
    names = (*DECODER_BACKBONES, "minilm") if architecture == "decoder" else ("small", "minilm")
    if backbone in names:
        return
    folder = Path(backbone)
    if not (folder / "config.json").is_file():
        raise TrainError(f"--backbone {backbone} is neither {', '.join(repr(n) for n in names)} nor a local model "
                         f"folder with config.json for the {architecture}; pass one of those (models are never "
                         "downloaded)")


def check_run_folder(out: Path, resume: bool) -> None:
    """A new run writes only into a folder it makes (or an empty one); --resume only into a run of its own."""
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {out} is a file, not a folder; choose another --out")
    if resume:
        if not (out / "resume" / "state.json").is_file():
            raise TrainError(f"nothing to resume in {out}: {out / 'resume' / 'state.json'} is missing; "
                             "run without --resume")
        return
    if (out / "resume").exists():
        raise TrainError(f"{out} already holds a run; add --resume to continue it or choose another --out")
    if out.is_dir() and any(out.iterdir()):
        what = "a checkpoint" if (out / "config.json").exists() else "files"
        raise TrainError(f"--out {out} already holds {what} that rmt train did not write; choose a new or empty "
                         "folder for --out")


def check_stop(cfg: TrainConfig) -> None:
    """--stop-at-step names an evaluation before the end of the schedule, so the run ends on an evaluated model."""
    if cfg.stop_at_step is not None and (cfg.stop_at_step % cfg.eval_every or not 0 < cfg.stop_at_step < cfg.max_steps):
        raise TrainError(f"--stop-at-step {cfg.stop_at_step} must be a multiple of --eval-every ({cfg.eval_every}) "
                         f"below --max-steps ({cfg.max_steps}), so that the run ends on an evaluated model")


def direction_tokens(samples, n: int, segment_size: int, tokenizer) -> torch.Tensor:
    """(B, N, S) bool: the direction word of each qa4 fact ("The office is *north* of the kitchen."), the token
    where the backbone binds the fact's two places and direction (docs/findings.md, "memory reads the place
    tokens")."""
    marks = torch.zeros(len(samples), n * segment_size, dtype=torch.bool)
    for i, sample in enumerate(samples):
        for fact in sample.facts:
            if fact.kind == "relation":
                marks[i, _direction_position(fact, sample, tokenizer, "--write-attention")] = True
    return marks.view(len(samples), n, segment_size)


def answer_tokens(samples, n: int, segment_size: int, tokenizer) -> torch.Tensor:
    """(B, N, S) bool: the direction word of the one qa4 fact that answers the question by itself, in the samples
    where that fact lies before the question's segment, so that only memory can bring it to the question."""
    marks = torch.zeros(len(samples), n * segment_size, dtype=torch.bool)
    for i, sample in enumerate(samples):
        facts = [f for f in sample.facts if f.kind == "relation"]
        answering = [f for f in facts if babi.solve_relations([f.text], sample.question)]
        if len(answering) == 1 and answering[0].segment < n - 1:
            marks[i, _direction_position(answering[0], sample, tokenizer, "--question-read")] = True
    return marks.view(len(samples), n, segment_size)


def _direction_position(fact, sample, tokenizer, flag: str) -> int:
    """Where a qa4 fact's direction word sits in its sample's tokens."""
    word = tokenizer.convert_tokens_to_ids(fact.direction)
    span = sample.input_ids[fact.start:fact.end]
    if word not in span:
        raise TrainError(f"the tokenizer splits the direction {fact.direction!r} into pieces; "
                         f"{flag} needs it as one token (drop the flag for this backbone)")
    return fact.start + span.index(word)


def check_recall(cfg: TrainConfig) -> None:
    """--fact-recall reads the encoder's memory for reason's two facts, in one of recall.KINDS, at one of recall.AT."""
    if cfg.fact_recall and (cfg.task != "reason" or cfg.architecture != "encoder"):
        raise TrainError(f"--fact-recall is for the encoder's reason, not the {cfg.architecture}'s {cfg.task}; drop it")
    if cfg.fact_recall_target not in RECALL_KINDS:
        raise TrainError(f"--fact-recall-target must be one of {', '.join(RECALL_KINDS)}, "
                         f"not {cfg.fact_recall_target!r}")
    if cfg.fact_recall_at not in RECALL_AT:
        raise TrainError(f"--fact-recall-at must be one of {', '.join(RECALL_AT)}, not {cfg.fact_recall_at!r}")
    for flag, weight in (("--write-attention", cfg.write_attention), ("--question-read", cfg.question_read),
                         ("--slot-recall", cfg.slot_recall)):
        if weight and (cfg.task != "reason" or cfg.architecture != "encoder"):
            raise TrainError(f"{flag} is for the encoder's reason, not the {cfg.architecture}'s {cfg.task}; drop it")


def check_far_facts(cfg: TrainConfig) -> None:
    """--far-facts (FarFactPool) gives the encoder's training rows their starting memory and their own masks."""
    if not cfg.far_facts:
        return
    if cfg.architecture != "encoder":
        raise TrainError("--far-facts is for the encoder (the paper's RMT); drop it for a decoder")
    if cfg.deep_memory:
        raise TrainError("--deep-memory and --far-facts each choose the memory a training sample starts from; "
                         "give one of them")
    if cfg.fact_recall or cfg.question_read or cfg.slot_recall:
        raise TrainError(FAR_FACT_TERMS)


def check_recompute(cfg: TrainConfig) -> None:
    """--recompute works on the encoder's segments before a --bptt-depth cut (without one every segment's graph
    is the task loss's, and it would change nothing, so it is refused rather than ignored); on every segment of a
    decoder."""
    if cfg.recompute and cfg.architecture == "encoder" and not cfg.bptt_depth:
        raise TrainError("--recompute recomputes the segments before the --bptt-depth cut; give --bptt-depth too")


def check_sizes(cfg: TrainConfig) -> None:
    """Every stage's training batch and validation samples fit the task builder's limits, and its lengths are
    drawn in a known way (checked before the model is built, so a run that cannot work fails at once)."""
    from rmt_core.tasks import MAX_BATCH_TOKENS, check_sample_size

    if cfg.length_draw not in LENGTH_DRAWS:
        raise TrainError(f"length_draw {cfg.length_draw!r} is not one of {', '.join(LENGTH_DRAWS)}")
    longest = max(cfg.val_multiples or (1,))
    for stage in cfg.stages:
        check_sample_size(stage.segments * longest, stage.segment_size)
        if cfg.batch_size * stage.segments * stage.segment_size > MAX_BATCH_TOKENS:
            raise TrainError(f"stage {stage.name} with --batch-size {cfg.batch_size} is more than the "
                             f"{MAX_BATCH_TOKENS:,} tokens one batch may hold; give a smaller --batch-size")


def load_tokenizer(cfg: TrainConfig):
    from transformers import AutoTokenizer

    folder = minilm_dir() if cfg.backbone in ("small", "minilm", *DECODER_BACKBONES) else Path(cfg.backbone)
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def batch_loss(model, ids: torch.Tensor, labels: torch.Tensor, memory: torch.Tensor | None = None,
               masks: tuple | None = None, cfg: TrainConfig | None = None, anchor: torch.Tensor | None = None):
    """The training loss of a batch: the answer head's cross-entropy (encoder, labels = answers) or the shifted
    causal-LM loss on the answer tokens (decoder, labels = the answer mask). memory: (B, m, d) the first segment
    reads (default: the initial memory). masks (encoder): the (still, write, recall, read, answer, slots, anchored)
    of `Data.batch`; the masks add the --noise-stillness, --noise-anchor, --answer-hold, --answer-step,
    --answer-restore (at `hold_columns`),
    --fact-write, --write-attention and --question-read terms, the targets --fact-recall's (rmt_core.recall, the
    read-out at model.fact_recall) and slots --slot-recall's (rmt_core.slot_recall, the read-out at
    model.slot_recall), each with cfg's weight; then (loss, terms) comes back instead of the loss, terms the
    unweighted values to log. anchor: (B, m, d) where `anchored` segments hold memory until a row's first
    unmarked one (default: the memory the first segment reads; FarFactPool.rows gives it)."""
    if getattr(model.config, "architecture", "encoder") == "decoder":
        return model(ids, labels_mask=labels, memory=memory, recompute=bool(cfg and cfg.recompute)).loss
    if masks is None:
        return model(ids, labels=labels, memory=memory).loss
    quiet, write, recall, read, answer, slots, anchored = masks
    every = recall is not None and cfg.fact_recall_at == "every"
    size = model.config.segment_size
    note = None if slots is None else slots.marks(len(ids), ids.shape[1] // size if ids.dim() == 2 else ids.shape[1],
                                                  size)
    hold = step = restore = None
    if cfg.answer_hold and anchored is not None:
        hold = anchored & hold_columns(anchored, cfg.hold_reads, model.config.bptt_depth)
    if cfg.answer_step and anchored is not None:  # local to its segment: every segment can be read, not the last k
        step = anchored & hold_columns(anchored, cfg.step_reads, None)
    if cfg.answer_restore and anchored is not None:  # local as the step is
        restore = anchored & hold_columns(anchored, cfg.restore_reads, None)
    out = model(ids, labels=labels, memory=memory, still=quiet, still_weight=cfg.noise_stillness,
                anchored=anchored, anchor_weight=cfg.noise_anchor, anchor_start=anchor, hold=hold,
                hold_weight=cfg.answer_hold, step=step, step_weight=cfg.answer_step, restore=restore,
                restore_weight=cfg.answer_restore, restore_scale=cfg.restore_scale, write=write,
                write_weight=cfg.fact_write,
                write_margin=cfg.fact_write_margin,
                keep_read=recall is not None and not every, keep_reads=every or slots is not None,
                read=read, read_weight=cfg.write_attention, answer=answer, answer_weight=cfg.question_read,
                note=note, recompute=cfg.recompute)
    terms = {"stillness": out.stillness, "anchor_drift": out.anchor_drift, "answer_hold": out.answer_hold,
             "answer_step": out.answer_step, "answer_restore": out.answer_restore,
             "write_shortfall": out.write_shortfall,
             "write_attention": out.read_loss, "question_read": out.answer_loss}
    loss = out.loss
    if recall is not None:
        memory_read = out.memory_reads if every else out.memory_read
        terms["recall"], terms["recall_accuracy"] = getattr(model, RECALL).loss(memory_read, recall)
        loss = loss + cfg.fact_recall * terms["recall"]
    if slots is not None:
        terms["slot_recall"], terms["slot_recall_accuracy"] = getattr(model, SLOT_RECALL).loss(
            out.memory_reads, out.noted_slots, slots)
        loss = loss + cfg.slot_recall * terms["slot_recall"]
    return loss, {k: v for k, v in terms.items() if v is not None}


def hold_columns(anchored: torch.Tensor, reads: int, bptt_depth: int | None) -> torch.Tensor:
    """(N,) bool: the segments after which --answer-hold (bptt_depth: the model's) or --answer-step and
    --answer-restore (None) read the question: `reads` of those `anchored` marks in some sample, spread evenly over
    the last bptt_depth (all when None), the last of them always among them."""
    N = anchored.shape[1]
    first = max(0, N - bptt_depth) if bptt_depth else 0
    candidates = [t for t in range(first, N) if anchored[:, t].any()]
    columns = torch.zeros(N, dtype=torch.bool)
    if candidates and reads > 0:
        picks = {candidates[len(candidates) - 1 - (i * len(candidates)) // reads] for i in range(reads)}
        columns[sorted(picks)] = True
    return columns


def _parts(rows: int, parts: int) -> list[slice]:
    """A process's share of a batch (`rows` samples) in `parts` runs of rows, as equal as they come, trained one
    after another (--accumulate): one part's activations in memory at a time."""
    bounds = [rows * i // parts for i in range(parts + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def _rows(value, part: slice):
    """Rows `part` of a per-sample tensor or of the carried facts (SlotFacts, renumbered from 0); None stays None.
    A process's share of a batch, and each --accumulate part of that share."""
    if value is None:
        return value
    return value.rank_slice(part) if hasattr(value, "rank_slice") else value[part]


@torch.no_grad()
def validate(model: RMT, batches, device, autocast) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) on the validation batches; for a decoder, the exact match of the generated
    answers and the answer tokens' mean cross-entropy."""
    if getattr(model.config, "architecture", "encoder") == "decoder":
        return _validate_decoder(model, batches, device, autocast)
    model.eval()
    correct = total = 0
    loss = 0.0
    for ids, labels in batches:
        with autocast():
            logits = model(ids.to(device)).logits.float().cpu()
        correct += (logits.argmax(-1) == labels).sum().item()
        loss += F.cross_entropy(logits, labels, reduction="sum").item()
        total += len(labels)
    model.train()
    return correct / max(total, 1), loss / max(total, 1)


def _validate_decoder(model, batches, device, autocast) -> tuple[float, float]:
    from rmt_core.decoder import exact_matches

    model.eval()
    correct = total = 0
    loss = tokens = 0.0
    for ids, answer_mask in batches:
        ids, answer_mask = ids.to(device), answer_mask.to(device)
        with autocast():
            out = model(ids, labels_mask=answer_mask)
            hits = exact_matches(model, ids, answer_mask)
        correct += int(hits.sum())
        total += len(hits)
        loss += float(out.loss) * out.answer_tokens
        tokens += out.answer_tokens
    model.train()
    return correct / max(total, 1), loss / max(tokens, 1)


# ----- resume state (safetensors + JSON, never pickle) -----------------------------------------------------------
def save_resume(folder: Path, model: RMT, optimizer, scheduler, state: dict) -> None:
    from safetensors.torch import save_file

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(plain_state(model, training_heads=True), str(tmp / "model.safetensors"))
    names = {id(p): n for n, p in model.named_parameters()}
    tensors, steps = {}, {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p)
            if not st:
                continue
            name = names[id(p)]
            tensors[f"exp_avg/{name}"] = st["exp_avg"].detach().cpu().contiguous()
            tensors[f"exp_avg_sq/{name}"] = st["exp_avg_sq"].detach().cpu().contiguous()
            steps[name] = float(st["step"])
    tensors["rng/cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng/cuda"] = torch.cuda.get_rng_state()
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    meta = dict(state, version=RESUME_VERSION, optimizer_steps=steps, scheduler_step=scheduler.last_epoch)
    (tmp / "state.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def read_resume_point(folder: Path) -> tuple[int, int]:
    """(stage, step) that resume/state.json records; TrainError when the file is damaged."""
    file = folder / "state.json"
    try:
        state = json.loads(file.read_text(encoding="utf-8"))
        point = (state["stage"], state["step"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise TrainError(f"{file} is damaged ({type(error).__name__}); start a new run with another --out") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in point):
        raise TrainError(f"{file} records stage {point[0]!r}, step {point[1]!r}; start a new run with another --out")
    if state.get("version") != RESUME_VERSION:
        raise TrainError(f"{file} is from another RMT Lens version; start a new run with another --out")
    return point


def load_resume(folder: Path, model: RMT, optimizer, scheduler) -> dict:
    from safetensors.torch import load_file

    state = json.loads((folder / "state.json").read_text())
    if state.get("version") != RESUME_VERSION:
        raise TrainError(f"{folder / 'state.json'} is from another RMT Lens version; start a new run with another --out")
    weights = fill_tied(model, load_file(str(folder / "model.safetensors")))
    model.load_state_dict({k: v.to(model.memory.dtype) for k, v in weights.items()})
    tensors = load_file(str(folder / "optimizer.safetensors"))
    device = model.device
    for name, p in model.named_parameters():
        if name in state["optimizer_steps"]:
            optimizer.state[p] = {
                "step": torch.tensor(state["optimizer_steps"][name]),
                "exp_avg": tensors[f"exp_avg/{name}"].to(device),
                "exp_avg_sq": tensors[f"exp_avg_sq/{name}"].to(device),
            }
    scheduler.last_epoch = state["scheduler_step"]
    for group, lr in zip(optimizer.param_groups, _lrs(scheduler)):
        group["lr"] = lr
    scheduler._last_lr = _lrs(scheduler)
    torch.set_rng_state(tensors["rng/cpu"])
    if "rng/cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng/cuda"])
    return state


def _lrs(scheduler) -> list[float]:
    return [base * lam(scheduler.last_epoch) for base, lam in zip(scheduler.base_lrs, scheduler.lr_lambdas)]


def make_optimizer(model: RMT, cfg: TrainConfig):
    """AdamW: weight decay on matrices but the learned initial memory; a training-only head (--fact-recall's or
    --slot-recall's: a fresh linear read-out beside a trained model) learns at RECALL_LR_SCALE times the rate."""
    heads = training_only_prefixes(model)  # each ends in "."
    named = [(n, p) for n, p in model.named_parameters() if not n.startswith(heads)]
    decay = [p for n, p in named if p.dim() >= 2 and "memory" != n]
    no_decay = [p for n, p in named if not (p.dim() >= 2 and "memory" != n)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    head_params = [p for n, p in model.named_parameters() if n.startswith(heads)]
    if head_params:
        groups.append({"params": head_params, "weight_decay": 0.0, "lr": cfg.lr * RECALL_LR_SCALE})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, foreach=False)
    warmup, total = max(cfg.warmup_steps, 1), max(cfg.max_steps, cfg.warmup_steps + 1)

    def schedule(step: int) -> float:  # linear warm-up, then linear decay to zero at the stage's step budget
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(total - warmup, 1))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


# ----- the loop --------------------------------------------------------------------------------------------
class Log:
    """training_log.jsonl, appended as training goes (rank 0 only)."""

    def __init__(self, path: Path, enabled: bool, resume_at: tuple[int, int] | None):
        self.path, self.enabled = path, enabled
        if enabled and resume_at is not None and path.exists():
            # Drop what was logged after the resume point, so a resumed log reads as one uninterrupted run.
            def before(line: str) -> bool:
                try:
                    entry = json.loads(line)
                    key = (int(entry.get("stage", -1)), int(entry.get("step", -1)))
                except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
                    return False  # a line cut short by the stop that is being resumed
                return key < resume_at or (key == resume_at and resume_at[1] > 0)

            kept = [line for line in path.read_text().splitlines() if line.strip() and before(line)]
            path.write_text("".join(line + "\n" for line in kept))
        elif enabled and resume_at is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")

    def write(self, **entry) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(entry) + "\n")


def train(cfg: TrainConfig, resume: bool = False, stop_after: int | None = None, progress: bool = True) -> Path:
    """Run the curriculum; returns the run folder. `stop_after` (tests) raises after that many optimizer steps."""
    out = Path(cfg.out)
    resume_dir = out / "resume"
    check_run_folder(out, resume)
    check_backbone(cfg.backbone, cfg.architecture)
    check_sizes(cfg)
    check_stop(cfg)
    check_recall(cfg)
    check_far_facts(cfg)
    check_recompute(cfg)
    resume_at = read_resume_point(resume_dir) if resume else None
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    procs = Processes(cfg.device)
    if cfg.batch_size % (procs.world * cfg.accumulate):
        where = f"{procs.world} process{'es' if procs.world > 1 else ''}"
        parts = f", {cfg.accumulate} parts each (--accumulate)" if cfg.accumulate > 1 else ""
        raise TrainError(f"--batch-size {cfg.batch_size} does not split across {where}{parts}; give a multiple of "
                         f"{procs.world * cfg.accumulate}")
    device = procs.device
    use_bf16 = cfg.bf16 if cfg.bf16 is not None else device.type == "cuda"

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)

    torch.manual_seed(cfg.seed)
    origin = None  # the checkpoint this run starts from, hashed once; every stage checkpoint and the final one record it
    if cfg.init_from:
        model = load_checkpoint(cfg.init_from, device="cpu")
        if getattr(model.config, "architecture", "encoder") != cfg.architecture:
            raise TrainError(f"--init-from {cfg.init_from} is an {getattr(model.config, 'architecture', 'encoder')} "
                             f"checkpoint; give --architecture {getattr(model.config, 'architecture', 'encoder')}")
        origin = _identity(cfg.init_from)
        model.config.task, model.config.bptt_depth = cfg.task, cfg.bptt_depth
        if getattr(model.config, "architecture", "encoder") == "decoder":
            model.config.loss_on = "all" if cfg.loss_on == "all" else "answer"
        else:
            model.config.loss_on = cfg.loss_on
            model.dropout.p = cfg.dropout
        tokenizer = model.tokenizer
        model = model.to(device)
    else:
        tokenizer = load_tokenizer(cfg)
        try:
            model = build_model(cfg, tokenizer).to(device)
        except ValueError as error:  # the RMT refuses a layout that does not fit the backbone, and says why
            raise TrainError(str(error)) from None
    if cfg.fact_recall:  # a training-only read-out; checkpoints leave it out (rmt_core.recall)
        head = RecallHead(model.num_mem_tokens, model.hidden_size, cfg.fact_recall_target)
        setattr(model, RECALL, head.to(device))
    if cfg.slot_recall:  # a training-only read-out as well (rmt_core.slot_recall)
        setattr(model, SLOT_RECALL, SlotHead(model.hidden_size).to(device))
    extra = 2 * model.num_mem_tokens if cfg.architecture == "decoder" else model.num_mem_tokens + 3
    if max(s.segment_size for s in cfg.stages) + extra > model.backbone.config.max_position_embeddings:
        raise TrainError("a stage's segment size does not fit the backbone's positions; use shorter segments")
    data = Data(cfg, tokenizer)
    state = {"stage": 0, "step": 0, "best": -1.0, "best_loss": math.inf, "good": 0, "stale": 0, "elapsed": 0.0,
             "total_steps": 0}
    first_stage = resume_at[0] if resume_at else 0
    if first_stage >= len(cfg.stages):
        raise TrainError(f"the run in {out} stopped at stage {first_stage + 1}, but this curriculum has "
                         f"{len(cfg.stages)} stages; resume with the run's own --stages (see training_log.jsonl)")
    _check_sources(cfg, data, first_stage)
    log = Log(out / "training_log.jsonl", procs.main, resume_at)
    if procs.main and not resume:
        log.write(event="start", config=cfg.to_json(), world_size=procs.world, device=str(device), date=_now())
    started = time.time()
    out_of_time = False
    stopped_at = None  # --stop-at-step: the step the run ended at
    trained = converged = None  # the last stage trained, the last stage that reached target_accuracy
    rank_slice = slice(procs.rank * cfg.batch_size // procs.world, (procs.rank + 1) * cfg.batch_size // procs.world)

    for stage_index in range(first_stage, len(cfg.stages)):
        stage = cfg.stages[stage_index]
        model.config.segment_size = stage.segment_size
        model.config.trained_segments = stage.segments
        stage_dir = out / "stages" / f"{stage_index + 1:02d}-{stage.name}"
        model.train()
        optimizer, scheduler = make_optimizer(model, cfg)
        val = data.validation(stage)
        val_segments = [stage.segments * k for k in cfg.val_multiples]
        if resume and stage_index == first_stage:
            try:
                state = load_resume(resume_dir, model, optimizer, scheduler)
            except TrainError:
                raise
            except Exception as error:  # json, safetensors and torch raise many types for damaged files
                raise TrainError(f"the resume state in {resume_dir} is damaged ({type(error).__name__}: "
                                 f"{str(error)[:120]}); start a new run with another --out") from None
            started -= state["elapsed"]
            # The log keeps the command of every part of a run, a resumed one too (once its state has loaded).
            log.write(event="resume", stage=resume_at[0], step=resume_at[1], config=cfg.to_json(),
                      world_size=procs.world, device=str(device), date=_now())
        if not (resume and stage_index == first_stage and state["step"] > 0):
            # A fresh stage (or one resumed at its start): score the starting model, keep it as the first best.
            state.update(stage=stage_index, step=0, best=-1.0, best_loss=math.inf, good=0, stale=0)
            state["best"], state["best_loss"] = validate(model, val, device, autocast)
            state["kept_step"], state["kept_accuracy"] = 0, state["best"]
            log.write(event="eval", stage=stage_index, step=0, segments=stage.segments,
                      segment_size=stage.segment_size, val_segments=val_segments,
                      val_accuracy=state["best"], val_loss=state["best_loss"], best=state["best"])
            if procs.main:
                _save_stage(model, tokenizer, stage_dir, cfg, stage, 0, state["best"], origin)
        first_step = state["step"]
        pool = _deep_memory_pool(model, cfg, data, stage, stage_index, procs, log)
        bar = _bar(progress and procs.main, cfg.max_steps, first_step, f"stage {stage_index + 1}/{len(cfg.stages)} {stage.name}")
        losses, terms, norms, skipped = [], {}, [], 0
        step = first_step
        for step in range(first_step + 1, cfg.max_steps + 1):
            ids, labels, *masks = data.batch(stage, stage_index, step)
            ids, labels = ids[rank_slice].to(device), labels[rank_slice].to(device)
            masks = tuple(_rows(m, rank_slice) for m in masks)
            memory = anchor = None
            if pool is not None:
                if step % REFRESH_STEPS == 0:
                    pool.advance(model)
                seed = _batch_seed(cfg.seed, stage_index, step)
                if isinstance(pool, FarFactPool):
                    memory, ids, labels, masks, anchor = pool.rows(model, ids, labels, masks, cfg.far_facts, seed)
                else:
                    memory = pool.batch_memory(model, len(ids), cfg.deep_memory, seed)
            optimizer.zero_grad(set_to_none=True)
            loss = 0.0
            for part in _parts(len(ids), cfg.accumulate):
                with autocast():
                    if all(m is None for m in masks):
                        part_loss = batch_loss(model, ids[part], labels[part], _rows(memory, part), None, cfg)
                    else:
                        part_loss, values = batch_loss(model, ids[part], labels[part], _rows(memory, part),
                                                       tuple(_rows(m, part) for m in masks), cfg,
                                                       _rows(anchor, part))
                        for name, value in values.items():
                            terms.setdefault(name, []).append(value.item())
                # A part's mean loss counts by its share of the rows, as each process's share does in
                # Processes.average_gradients: the summed gradient is the whole share's (exactly, for a mean over
                # samples; for the terms that average over marked segments, up to how the marks fall).
                weight = (part.stop - part.start) / len(ids)
                (part_loss * weight).backward()
                loss += part_loss.detach() * weight
            procs.average_gradients(model)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
            norms.append(grad_norm)
            if cfg.skip_grad_norm is not None and not grad_norm <= cfg.skip_grad_norm:
                skipped += 1  # the schedule still advances, so the run keeps the learning rates of its plan
                state["skipped"] = state.get("skipped", 0) + 1
            else:
                optimizer.step()
            with warnings.catch_warnings():  # a skipped first update: torch warns of an order the schedule ignores
                warnings.filterwarnings("ignore", "Detected call of `lr_scheduler", UserWarning)
                scheduler.step()
            state["total_steps"] += 1
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                raise TrainError(f"the training loss became {losses[-1]} at stage {stage.name}, step {step}; lower "
                                 f"--lr (now {cfg.lr:g}) or --grad-clip, then start again")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}", best=f"{state['best']:.3f}")
            if step % cfg.log_every == 0:
                extra = {name: sum(values) / len(values) for name, values in terms.items()}
                if cfg.skip_grad_norm is not None:
                    extra["skipped"] = skipped
                log.write(event="step", stage=stage_index, step=step, loss=sum(losses) / len(losses),
                          lr=scheduler.get_last_lr()[0], grad_norm=grad_norm, grad_norm_max=max(norms), **extra)
                losses, terms, norms, skipped = [], {}, [], 0
            if stop_after is not None and state["total_steps"] >= stop_after:
                raise KeyboardInterrupt(f"stopped after {stop_after} steps (test)")
            if step % cfg.eval_every == 0 or step == cfg.max_steps:
                acc, val_loss = validate(model, val, device, autocast)
                # Ties in accuracy (a stage that starts at 100%) go to the lower validation loss, so a stage
                # whose starting model is already perfect still keeps what it learns.
                improved = (acc, -val_loss) > (state["best"], -state.get("best_loss", math.inf))
                if improved:
                    state["best"], state["best_loss"] = acc, val_loss
                if improved or cfg.keep == "last":
                    state["kept_step"], state["kept_accuracy"] = step, acc
                    if procs.main:
                        _save_stage(model, tokenizer, stage_dir, cfg, stage, step, acc, origin)
                state["good"] = state["good"] + 1 if acc >= cfg.target_accuracy else 0
                state["stale"] = 0 if improved else state["stale"] + 1
                state["step"] = step
                state["elapsed"] = time.time() - started
                log.write(event="eval", stage=stage_index, step=step, segments=stage.segments,
                          segment_size=stage.segment_size, val_segments=val_segments,
                          val_accuracy=acc, val_loss=val_loss, best=state["best"],
                          elapsed_s=round(state["elapsed"], 1))
                if procs.main:
                    save_resume(resume_dir, model, optimizer, scheduler, state)
                procs.barrier()
                if cfg.time_budget_s and time.time() - started > cfg.time_budget_s:
                    out_of_time = True
                    break
                if cfg.stop_at_step is not None and step >= cfg.stop_at_step:
                    stopped_at = step
                    break
                if step >= cfg.min_steps and (state["good"] >= cfg.patience or state["stale"] >= cfg.plateau):
                    break
        if bar is not None:
            bar.close()
        # The next stage starts from the model this stage kept (its best, or with --keep last its last).
        procs.barrier()
        _load_kept(model, read_weights(stage_dir), device)
        log.write(event="stage_end", stage=stage_index, step=step, segments=stage.segments,
                  segment_size=stage.segment_size, best_val_accuracy=state["best"],
                  kept_step=state.get("kept_step"), kept_accuracy=state.get("kept_accuracy", state["best"]),
                  elapsed_s=round(time.time() - started, 1), out_of_time=out_of_time)
        trained = stage
        if state.get("kept_accuracy", state["best"]) >= cfg.target_accuracy:
            converged = stage
        if procs.main and cfg.stage_eval_segments:
            _stage_eval(model, cfg, stage_index, stage, log, progress)
        resume = False
        if out_of_time or stopped_at is not None:
            break
        if procs.main and stage_index + 1 < len(cfg.stages):
            nxt = dict(state, stage=stage_index + 1, step=0, best=-1.0, best_loss=math.inf, good=0, stale=0,
                       elapsed=time.time() - started)
            # A stage boundary is a resume point too: the next stage starts fresh from this best model.
            save_resume(resume_dir, model, *make_optimizer(model, cfg), nxt)

    wall = time.time() - started
    if procs.main:
        if out_of_time and converged is not None and converged is not trained:
            # Cut short before the last stage converged: ship the last stage that did, and say so.
            trained = converged
            index = cfg.stages.index(trained)
            _load_kept(model, read_weights(out / "stages" / f"{index + 1:02d}-{trained.name}"), device)
        model.config.segment_size, model.config.trained_segments = trained.segment_size, trained.segments
        provenance = _provenance(cfg, procs, wall, state, origin)
        provenance["trained_curriculum"] = ",".join(s.name for s in cfg.stages[: cfg.stages.index(trained) + 1])
        provenance["stopped_by_time_budget"] = out_of_time
        if stopped_at is not None:
            provenance["stopped_at_step"] = stopped_at
        save_checkpoint(model, out / "final.tmp", tokenizer=tokenizer, provenance=provenance,
                        dtype=cfg.save_dtype, max_shard_mib=cfg.max_shard_mib)
        for item in (out / "final.tmp").iterdir():
            os.replace(item, out / item.name)
        (out / "final.tmp").rmdir()
        log.write(event="end", wall_s=round(wall, 1), date=_now())
        from rmt_core.model_card import write_model_card

        write_model_card(out)
    procs.close()
    return out


def _deep_memory_pool(model, cfg: TrainConfig, data: Data, stage: Stage, stage_index: int, procs, log):
    """With --deep-memory: this stage's pool of memory states after long noise; with --far-facts, of memory that
    holds facts after long noise (rmt_core.deep_memory); filled."""
    if not (cfg.deep_memory or cfg.far_facts):
        return None
    started = time.time()
    builder = data.builder(stage.segment_size, training=True)
    size = cfg.batch_size // procs.world
    seed = cfg.seed * 1009 + stage_index * 31 + procs.rank
    if cfg.far_facts:
        pool, event = FarFactPool(model, builder, size, cfg.far_segments, seed=seed), "far_facts"
    else:
        pool, event = DeepMemoryPool(model, builder.noise, size, cfg.deep_segments, seed=seed), "deep_memory"
    pool.fill(model)
    log.write(event=event, stage=stage_index, streams=size, max_depth=pool.max_depth,
              advance_segments=pool.advance_segments, refresh_steps=REFRESH_STEPS,
              noise=portable_path(builder.noise.name), fill_s=round(time.time() - started, 1))
    return pool


def _check_sources(cfg: TrainConfig, data: Data, first_stage: int) -> None:
    """Read the bAbI and noise sources of training and of the stage evaluation now, before the run folder is
    written: a wrong path or noise name fails at once and leaves nothing behind, not a run folder (or a stage
    of training) later."""
    from rmt_core.babilong import make_builder

    data.builder(cfg.stages[first_stage].segment_size, training=True)
    if cfg.stage_eval_segments:
        make_builder(cfg.task, data.tokenizer, cfg.stages[first_stage].segment_size, babi_dir=cfg.stage_eval_babi_dir,
                     noise_file=cfg.stage_eval_noise_file, split="test" if cfg.stage_eval_babi_dir else "train")


def _stage_eval(model: RMT, cfg: TrainConfig, stage_index: int, stage: Stage, log: Log, progress: bool) -> None:
    """Accuracy of a stage's best model at several lengths: one row of the paper's Figure 5."""
    from rmt_core.evaluate import evaluate

    model.eval()
    result = evaluate(
        model, cfg.task, cfg.stage_eval_segments, cfg.stage_eval_samples, batch_size=256,
        babi_dir=cfg.stage_eval_babi_dir, noise_file=cfg.stage_eval_noise_file,
        split="test" if cfg.stage_eval_babi_dir else "train", progress=False,
    )
    model.train()
    log.write(event="stage_eval", stage=stage_index, segments=stage.segments, segment_size=stage.segment_size,
              sources=result["sources"],
              results=[{k: r[k] for k in ("segments", "tokens", "accuracy", "samples")} for r in result["results"]])


def _load_kept(model, weights: dict, device) -> None:
    """Load a stage checkpoint's weights into the training model; a training-only head (--fact-recall), which
    checkpoints leave out, keeps the weights it has."""
    state = {k: v.to(device=device, dtype=torch.float32) for k, v in fill_tied(model, weights).items()}
    heads = training_only_prefixes(model)
    state.update({k: v for k, v in model.state_dict().items() if heads and k.startswith(heads)})
    model.load_state_dict(state)


def _save_stage(model, tokenizer, stage_dir: Path, cfg: TrainConfig, stage: Stage, step: int, acc: float,
                origin: dict | None) -> None:
    provenance = {"stage": stage.name, "step": step, "val_accuracy": acc, "command": cfg.command, "init_from": origin}
    save_checkpoint(model, stage_dir, tokenizer=tokenizer, provenance=provenance, dtype="float32")


def _provenance(cfg: TrainConfig, procs: Processes, wall: float, state: dict, origin: dict | None) -> dict:
    device = procs.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {
        "command": cfg.command,
        "task": cfg.task,
        "data": {
            "babi": portable_path(cfg.babi_file or cfg.babi_dir) or "built-in generator",
            "noise": portable_path(cfg.noise_file) or "built-in noise",
        },
        "curriculum": ",".join(s.name for s in cfg.stages),
        "device": f"{device.type}: {name}" + (f" x{procs.world}" if procs.world > 1 else ""),
        "cpu_threads": torch.get_num_threads(),
        "steps": state["total_steps"],
        **({"skipped_steps": state.get("skipped", 0)} if cfg.skip_grad_norm is not None else {}),
        "wall_s": round(wall, 1),
        "date": _now(),
        "torch": torch.__version__,
        "train_config": cfg.to_json(),
        "init_from": origin,
    }


def _identity(path: str) -> dict:
    """Name, path and weights hash of the checkpoint a run starts from, with its own command and lineage."""
    from rmt_core.checkpoint import checkpoint_identity, read_config

    parent = read_config(path).get("provenance", {})
    return dict(checkpoint_identity(path), provenance_command=parent.get("command"),
                init_from=parent.get("init_from"))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _bar(enabled: bool, total: int, initial: int, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=False, file=sys.stderr)
