"""The decoder Recurrent Memory Transformer: separate read and write memory around any causal language model.

One segment is `[memory, token embeddings, memory]` fed to the language model through `inputs_embeds`
(`rmt_core.layout.DecoderLayout`): the same memory state sits at the front (read memory) and at the end
(write memory). Causal attention lets the tokens read the front block and the end block read the tokens; the
last layer's states at the end block are the next segment's memory. The segment's logits are the language
model's logits at the token positions (the 2m memory positions dropped). The loop over segments is
`rmt_core.recurrence.run`, the same loop the encoder runs.

    model = decoder_from_backbone(small_gpt2_config(len(tokenizer)), tokenizer, DecoderConfig(segment_size=64))
    out = model(ids, labels_mask=answer_mask)         # shifted causal-LM loss over the whole input
    answer = model.generate(prompt)                   # all but the last segment, then greedy decoding

Reading order: `DecoderConfig`, `DecoderSegmentOutput` / `DecoderOutput`, `DecoderRMT` (memory, one segment
step, loss, generation), then constructors for small GPT-2 and Llama configurations.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from rmt_core import recurrence
from rmt_core.inputs import SegmentBatch, batch_of
from rmt_core.layout import DecoderLayout
from rmt_core.memory_module import MemoryModule

PLACES = ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office")
LOSS_ON = ("answer", "all")


@dataclass
class DecoderConfig:
    """Decoder RMT settings, stored under the key `rmt` of a checkpoint's config.json."""

    task: str = "qa1"
    num_mem_tokens: int = 16
    segment_size: int = 64
    labels: list[str] = field(default_factory=lambda: list(PLACES))  # the answers a task draws from
    trained_segments: int = 0
    # Truncated backpropagation (the authors' k2): the gradient flows through the last k memory transitions only
    # (memory is detached before segment N-1-k); None: through every transition.
    bptt_depth: int | None = None
    loss_on: str = "answer"  # "answer": answer tokens only (where labels_mask is 1); "all": every next token
    max_new_tokens: int = 8  # generation stops here or at the end-of-answer token
    segmenting: str = "lens"  # how free text is cut (rmt_core.segmenting); "left" for imported authors' checkpoints
    architecture: str = "decoder"

    @property
    def input_size(self) -> int:
        """Positions one segment occupies in the backbone: read memory + tokens + write memory."""
        return self.segment_size + 2 * self.num_mem_tokens

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "DecoderConfig":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class DecoderSegmentOutput:
    """One segment step. B batch, T = input_size, n tokens, m memory, d hidden, V vocabulary, L layers, H heads."""

    memory_out: torch.Tensor  # (B, m, d) last-layer states at the write positions
    hidden: torch.Tensor  # (B, T, d) last-layer states (after the backbone's final norm) at every position
    logits: torch.Tensor | None  # (B, n, V) language-model logits at the token positions (None in lean runs)
    attentions: tuple[torch.Tensor, ...] | None = None  # L x (B, H, T, T), only when asked (eager kernel)


@dataclass
class DecoderOutput:
    loss: torch.Tensor | None
    memory_out: torch.Tensor  # (B, m, d) memory after the last segment
    answer_tokens: int = 0  # tokens the loss averaged over


@dataclass
class Generation:
    tokens: torch.Tensor  # (B, k) generated ids; after a row's end-of-answer token, pad ids
    memory: torch.Tensor  # (B, m, d) the memory the last segment read
    lengths: torch.Tensor  # (B,) generated tokens before the end-of-answer token (or k)
    scores: torch.Tensor | None = None  # (B, V) logits of the first generated token


class DecoderRMT(MemoryModule):
    """Recurrent Memory Transformer around a Hugging Face causal language model (GPT-2, Llama, ...).

    backbone: an `AutoModelForCausalLM` model whose embeddings can be fed as `inputs_embeds`. pad_id fills the
    memory and padding positions (never attended); eos_id ends a generated answer (None: generate
    `max_new_tokens`).
    """

    def __init__(self, backbone: nn.Module, config: DecoderConfig, pad_id: int, eos_id: int | None = None):
        super().__init__()
        config_of = backbone.config
        limit = getattr(config_of, "max_position_embeddings", None) or getattr(config_of, "n_positions", None)
        if limit is not None and config.input_size > limit:
            raise ValueError(
                f"segment_size {config.segment_size} + 2 x {config.num_mem_tokens} memory = {config.input_size} "
                f"positions exceeds the backbone's {limit}; use a smaller --segment-size"
            )
        if config.loss_on not in LOSS_ON:
            raise ValueError(f"loss_on {config.loss_on!r} must be one of {', '.join(LOSS_ON)}")
        self.backbone = backbone
        self.config = config
        self.pad_id = int(pad_id)
        self.eos_id = None if eos_id is None else int(eos_id)
        d = backbone.config.hidden_size
        std = backbone.get_input_embeddings().weight.detach().float().std()  # a tensor: also works on the meta device
        self.memory = nn.Parameter(torch.randn(config.num_mem_tokens, d) * std)  # (m, d) initial memory
        self.tokenizer = None  # set by load_checkpoint / constructors; not part of the weights
        self._lean = False  # segment steps skip the logits (training's loss and generation's prefix need none)
        self._collect: list | None = None  # token states of each step, for the loss
        self._answering = False  # segment steps return label scores (B, C) instead of token logits

    # ----- shapes and layout -------------------------------------------------------------------------------
    @property
    def layout(self) -> DecoderLayout:
        """Built from the config, so a curriculum stage that changes the segment size changes the layout."""
        return DecoderLayout(self.config.num_mem_tokens, self.config.segment_size, self.pad_id)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.backbone.get_input_embeddings()(ids)

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Language-model logits of final hidden states (..., d) -> (..., V): the backbone's whole output head
        (BERT's decoder mode has a transform before its output embeddings; GPT-2's and Llama's are those alone)."""
        head = getattr(self.backbone, "cls", None)
        return (head if head is not None else self.backbone.get_output_embeddings())(hidden)

    # ----- one segment -----------------------------------------------------------------------------------
    def segment_step(self, memory: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None = None,
                     output_attentions: bool = False) -> DecoderSegmentOutput:
        """Run one segment. memory: (B, m, d); tokens: (B, n) ids, n <= segment_size; mask: (B, n) or None."""
        if output_attentions and self.attention_kernel != "eager":
            with self.recording():
                return self.segment_step(memory, tokens, mask, output_attentions=True)
        layout = self.layout
        n = tokens.shape[1]
        ids, attention_mask = layout.build(tokens, mask)  # (B, T), (B, T)
        embeds = layout.insert_memory(self.embed(ids), memory)  # (B, T, d)
        out = self.backbone.base_model(
            inputs_embeds=embeds, attention_mask=attention_mask, position_ids=layout.positions(attention_mask),
            output_attentions=output_attentions, use_cache=False, return_dict=True,
        )
        hidden = out.last_hidden_state  # (B, T, d)
        states = hidden[:, layout.token_positions(n)]  # (B, n, d)
        if self._collect is not None:
            self._collect.append(states)
        if self._answering:
            logits = self.label_scores(states, mask)  # (B, C)
        else:
            logits = None if self._lean else self.token_logits(states)  # (B, n, V)
        attentions = tuple(out.attentions) if output_attentions else None
        return DecoderSegmentOutput(memory_out=hidden[:, layout.write_positions], hidden=hidden, logits=logits,
                                    attentions=attentions)

    def label_token_ids(self) -> list[int]:
        """The first token of each label (config.labels) as an answer spells it (after a space)."""
        return [int(self.tokenizer(" " + label, add_special_tokens=False)["input_ids"][0])
                for label in self.config.labels]

    def label_scores(self, states: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C) the logits of each label's first token at each row's last real token: the first generated
        token's preference among the labels (tokens never see the write memory, so these are the logits
        generation starts from). states: (B, n, d) token states of a segment; mask: (B, n) or None."""
        B, n = states.shape[:2]
        last = (mask.long().sum(dim=1) - 1) if mask is not None else torch.full((B,), n - 1, device=states.device)
        final = states[torch.arange(B, device=states.device), last]  # (B, d)
        return self.token_logits(final)[:, self.label_token_ids()]

    @contextlib.contextmanager
    def answering(self):
        """Inside: a segment step's `logits` are `label_scores` (B, C), as an encoder's answer head gives them,
        so the probes and interventions read a decoder's answer at the last segment of a prompt."""
        previous = self._answering
        self._answering = True
        try:
            yield self
        finally:
            self._answering = previous

    @contextlib.contextmanager
    def lean(self, collect: list | None = None):
        """Inside: segment steps skip the logits; with `collect`, each step appends its token states (B, n, d)."""
        previous = self._lean, self._collect
        self._lean, self._collect = True, collect
        try:
            yield self
        finally:
            self._lean, self._collect = previous

    # ----- the recurrence and the loss ---------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, labels_mask: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, memory: torch.Tensor | None = None,
                recompute: bool = False) -> DecoderOutput:
        """Shifted causal-LM loss over the whole input, cut into left-aligned segments.

        input_ids: (B, N, S) segments or (B, L) flat (cut into segments of segment_size, the last may be
        short). attention_mask: same shape, 1 for real tokens (a row's real tokens come first in each segment).
        labels_mask: same shape, 1 where a token is a target of the loss (loss_on "answer"; ignored for "all").
        The token at position i predicts token i+1, across segment boundaries. recompute: every segment
        recomputes its activations in the backward pass instead of keeping them (the loss keeps each token's
        last-layer state, nothing more; every segment runs twice; the same gradients).
        """
        ids = input_ids.reshape(input_ids.shape[0], -1)  # (B, L)
        flat_mask = None if attention_mask is None else attention_mask.reshape(ids.shape)
        batch = _left_aligned(ids, flat_mask, self.config.segment_size)
        N = batch.n_segments
        k = self.config.bptt_depth
        cut = N - 1 - k if k is not None else None  # memory detached before segment `cut`: k transitions kept
        states: list[torch.Tensor] = []
        with self.lean(collect=states):
            run = recurrence.run(self, batch, memory=memory, detach_before=cut,
                                 graph_before=N if recompute else None, recompute=recompute)
        hidden = torch.cat(states, dim=1)  # (B, L, d)
        targets = self.loss_targets(ids, flat_mask, labels_mask)  # (B, L): the next token, -100 where no loss
        if flat_mask is not None:  # real tokens first in every row, so next-token pairs are neighbours
            order = torch.sort((flat_mask == 0).long(), dim=1, stable=True).indices
            hidden = hidden.gather(1, order.unsqueeze(-1).expand_as(hidden))
        selected = targets != -100
        count = int(selected.sum())
        if count == 0:
            loss = hidden.sum() * 0.0
        else:
            logits = self.token_logits(hidden[selected])  # (count, V): only where the loss looks
            loss = F.cross_entropy(logits.float(), targets[selected])
        return DecoderOutput(loss=loss, memory_out=run.memory, answer_tokens=count)

    def loss_targets(self, ids: torch.Tensor, mask: torch.Tensor | None = None,
                     labels_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) target of each position: the next real token, -100 where the loss does not look (the last
        token, padding, and with loss_on "answer" every target outside labels_mask)."""
        valid = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.reshape(ids.shape).bool()
        wanted = valid if (self.config.loss_on == "all" or labels_mask is None) else (
            valid & labels_mask.reshape(ids.shape).bool())
        if mask is not None:  # move padding to the end of each row, keeping order
            order = torch.sort((~valid).long(), dim=1, stable=True).indices
            ids, valid, wanted = ids.gather(1, order), valid.gather(1, order), wanted.gather(1, order)
        targets = torch.full_like(ids, -100)
        keep = valid[:, :-1] & valid[:, 1:] & wanted[:, 1:]
        targets[:, :-1] = torch.where(keep, ids[:, 1:], torch.full_like(ids[:, 1:], -100))
        return targets

    # ----- generation --------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, inputs, max_new_tokens: int | None = None, memory: torch.Tensor | None = None) -> Generation:
        """Greedy answers: every segment but the last runs as usual (read and write memory), then the last
        segment is fed as `[memory, tokens]` (read memory only) and tokens are generated one at a time.

        inputs: anything `rmt_core.recurrence.run` takes (ModelInputs, a SegmentBatch, (B, N, S) ids).
        """
        batch = batch_of(self, inputs)
        N = batch.n_segments
        k = self.config.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        with self.lean():
            memory = recurrence.run(self, batch, memory=memory, stop=N - 1).memory  # (B, m, d)
        tokens, mask = batch.segment(N - 1, self.device)
        return self.generate_from(memory, tokens, mask, k)

    @torch.no_grad()
    def generate_from(self, memory: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None,
                      max_new_tokens: int) -> Generation:
        """Greedy decoding from `[memory, tokens]` with the backbone's key/value cache. memory: (B, m, d);
        tokens: (B, n); mask: (B, n) or None (a row's real tokens first; padding is masked and skipped by
        the position ids, so each row continues right after its own last token)."""
        B, n = tokens.shape
        m = self.num_mem_tokens
        mask = torch.ones_like(tokens) if mask is None else mask.long()
        body = torch.where(mask.bool(), tokens, torch.full_like(tokens, self.pad_id))
        embeds = torch.cat([memory.to(self.memory.dtype), self.embed(body)], dim=1)  # (B, m + n, d)
        attention_mask = torch.cat([torch.ones((B, m), dtype=torch.long, device=tokens.device), mask], dim=1)
        lengths = mask.sum(dim=1)  # (B,)
        rows = torch.arange(B, device=tokens.device)
        base = self.backbone.base_model
        cache_name = _cache_argument(base)  # transformers 5 renamed past_key_values to cache
        out = base(inputs_embeds=embeds, attention_mask=attention_mask,
                   position_ids=(attention_mask.cumsum(1) - 1).clamp(min=0), use_cache=True, return_dict=True)
        last = out.last_hidden_state[rows, m + lengths - 1]  # (B, d) each row's last real token
        generated = torch.full((B, max_new_tokens), self.pad_id, dtype=torch.long, device=tokens.device)
        done = torch.zeros(B, dtype=torch.bool, device=tokens.device)
        produced = torch.full((B,), max_new_tokens, dtype=torch.long, device=tokens.device)
        past = getattr(out, cache_name)
        scores = None
        for i in range(max_new_tokens):
            logits = self.token_logits(last)  # (B, V)
            scores = logits if scores is None else scores
            nxt = logits.argmax(dim=-1)  # (B,)
            generated[:, i] = torch.where(done, torch.full_like(nxt, self.pad_id), nxt)
            if self.eos_id is not None:
                ended = (nxt == self.eos_id) & ~done
                produced = torch.where(ended, torch.full_like(produced, i), produced)
                done = done | ended
                if bool(done.all()):
                    break
            if i == max_new_tokens - 1:
                break
            attention_mask = torch.cat([attention_mask, torch.ones((B, 1), dtype=torch.long, device=tokens.device)], 1)
            out = base(inputs_embeds=self.embed(nxt).unsqueeze(1), attention_mask=attention_mask,
                       position_ids=(m + lengths + i).unsqueeze(1), use_cache=True, return_dict=True,
                       **{cache_name: past})
            past = getattr(out, cache_name)
            last = out.last_hidden_state[:, -1]
        return Generation(tokens=generated, memory=memory, lengths=produced, scores=scores)

    def answers(self, generation: Generation) -> list[str]:
        """The generated answers as text (up to each row's end-of-answer token), stripped."""
        out = []
        for row, length in zip(generation.tokens.tolist(), generation.lengths.tolist()):
            ids = row[:length]
            out.append(self.tokenizer.decode(ids, skip_special_tokens=True).strip() if self.tokenizer is not None
                       else " ".join(map(str, ids)))
        return out



def prompts_of(ids: torch.Tensor, answer_mask: torch.Tensor, segment_size: int) -> tuple[SegmentBatch, list]:
    """(the prompts as a SegmentBatch, each row's answer tokens) of a batch of generative samples: ids (B, L) whose
    answer tokens (answer_mask 1) close each row; a prompt is everything before its row's answer."""
    answer_mask = answer_mask.bool()
    starts = answer_mask.int().argmax(dim=1)  # (B,) first answer token of each row
    prompt_mask = (torch.arange(ids.shape[1], device=ids.device).unsqueeze(0) < starts.unsqueeze(1)).long()
    end = int(starts.max())
    batch = _left_aligned(ids[:, :end], prompt_mask[:, :end], segment_size)
    answers = [row[m].tolist() for row, m in zip(ids, answer_mask)]
    return batch, answers


@torch.no_grad()
def exact_matches(model: "DecoderRMT", ids: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
    """(B,) bool: whether greedy generation from each row's prompt gives exactly its answer tokens (the answer,
    then the end-of-answer token when the tokenizer has one)."""
    batch, answers = prompts_of(ids, answer_mask, model.config.segment_size)
    longest = max(len(a) for a in answers)
    generated = model.generate(batch, max_new_tokens=longest).tokens.tolist()
    return torch.tensor([g[:len(a)] == a for g, a in zip(generated, answers)])


def _cache_argument(base) -> str:
    """The name under which a backbone takes and returns its key/value cache."""
    import inspect

    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _left_aligned(ids: torch.Tensor, mask: torch.Tensor | None, segment_size: int) -> SegmentBatch:
    """(B, L) ids cut into segments of segment_size from the left: every segment full but the last."""
    L = ids.shape[1]
    blocks, masks = [], []
    for start in range(0, L, segment_size):
        blocks.append(ids[:, start:start + segment_size])
        masks.append(None if mask is None else mask[:, start:start + segment_size])
    return SegmentBatch(blocks, masks)


# ----- constructors ----------------------------------------------------------------------------------------
def decoder_special_ids(tokenizer) -> tuple[int, int | None]:
    """(pad id, end-of-answer id) of any tokenizer: GPT-2's has no pad token (its end-of-text serves), a
    BERT-style one ends answers with [SEP]."""
    from rmt_core.babilong import end_of_answer_id

    eos = end_of_answer_id(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return int(pad if pad is not None else 0), eos


def decoder_from_backbone(backbone, tokenizer, config: DecoderConfig | None = None,
                          attn_implementation: str = "sdpa") -> DecoderRMT:
    """Wrap a causal LM: a folder on disk (loaded offline), a `transformers` config (fresh weights) or a model."""
    from transformers import AutoModelForCausalLM, PretrainedConfig

    config = config or DecoderConfig()
    if isinstance(backbone, (str, Path)):
        module = AutoModelForCausalLM.from_pretrained(str(backbone), attn_implementation=attn_implementation,
                                                      local_files_only=True)
    elif isinstance(backbone, PretrainedConfig):
        module = AutoModelForCausalLM.from_config(backbone, attn_implementation=attn_implementation)
    else:
        module = backbone
    model = DecoderRMT(module, config, *decoder_special_ids(tokenizer))
    model.tokenizer = tokenizer
    return model


def small_gpt2_config(vocab_size: int, hidden_size: int = 128, num_layers: int = 4, num_heads: int = 4,
                      max_positions: int = 1024, dropout: float = 0.0):
    """A GPT-2 configuration for models trained from scratch (and for tests)."""
    from transformers import GPT2Config

    return GPT2Config(vocab_size=vocab_size, n_embd=hidden_size, n_layer=num_layers, n_head=num_heads,
                      n_positions=max_positions, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
                      tie_word_embeddings=True, bos_token_id=None, eos_token_id=None)


def small_llama_config(vocab_size: int, hidden_size: int = 128, num_layers: int = 4, num_heads: int = 4,
                       max_positions: int = 2048, num_kv_heads: int | None = None):
    """A Llama configuration (rotary positions, RMSNorm, gated MLP) for models trained from scratch and tests."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=4 * hidden_size,
                       num_hidden_layers=num_layers, num_attention_heads=num_heads,
                       num_key_value_heads=num_kv_heads or num_heads, max_position_embeddings=max_positions,
                       tie_word_embeddings=False, bos_token_id=None, eos_token_id=None, pad_token_id=None)


def minilm_causal(dropout: float = 0.0):
    """The pretrained all-MiniLM-L6-v2 weights (6 layers, hidden 384) as a causal LM: BERT in decoder mode (a
    causal mask; its prediction head, absent from the sentence encoder, starts fresh with the output embeddings
    tied to the input ones). A pretrained backbone that ships with the requirements, loaded offline."""
    from transformers import BertConfig, BertLMHeadModel
    from transformers.utils import logging as hf_logging

    from rmt_core.pretrained import minilm_dir

    config = BertConfig.from_pretrained(str(minilm_dir()), is_decoder=True, hidden_dropout_prob=dropout,
                                        attention_probs_dropout_prob=dropout, local_files_only=True)
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the load report lists the new head and the unused pooler: expected
    hf_logging.disable_progress_bar()
    try:
        return BertLMHeadModel.from_pretrained(str(minilm_dir()), config=config, local_files_only=True,
                                               attn_implementation="sdpa")
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def small_bert_decoder_config(vocab_size: int, hidden_size: int = 128, num_layers: int = 4, num_heads: int = 4,
                              max_positions: int = 512):
    """BERT in decoder mode (the architecture of `minilm_causal`), small and fresh: for tests."""
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                      num_attention_heads=num_heads, intermediate_size=4 * hidden_size,
                      max_position_embeddings=max_positions, is_decoder=True, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0, pad_token_id=0)


BACKBONES = {"gpt2": small_gpt2_config, "llama": small_llama_config, "bert": small_bert_decoder_config}
