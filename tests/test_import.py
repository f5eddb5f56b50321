"""`rmt import`: checkpoints trained with the authors' code open as RMT Lens checkpoints and compute the same.

The reference below is a small implementation of the paper's encoder wrapper written from the description in
AUTHORS_CHECKPOINTS.md section 2 (not the authors' code): BertForSequenceClassification whose vocabulary is
resized by m memory rows, memory written into inputs_embeds at positions 1..m, the flat input stripped of
special tokens, truncated to segment_size * max_n_segments and split right-aligned. It is saved as the authors'
trainer saves (torch.save of {"model_state_dict": ..., "optimizer_state_dict": ..., ...}), imported, and
compared segment by segment.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from rmt_cli import main as cli
from rmt_core.checkpoint import load_checkpoint, read_config
from rmt_core.errors import CheckpointError
from rmt_core.importers import import_checkpoint
from rmt_core.inputs import make_input
from rmt_core.recurrence import run_with_cache

SEGMENT, MEM, LABELS = 16, 4, 6
TEXT = ("Mary went back to the kitchen after lunch. The weather stayed grey all afternoon and nobody went out. "
        "Later John travelled to the office, where a meeting about the new museum wing ran late into the evening. "
        "Sandra picked up the football and moved to the garden.")
QUESTION = "Where is Sandra?"


class AuthorsEncoderReference(nn.Module):
    """The paper's encoder RMT as section 2 of AUTHORS_CHECKPOINTS.md describes it, for one sample at a time."""

    def __init__(self, config, num_labels: int, num_mem_tokens: int, tokenizer, max_n_segments: int):
        super().__init__()
        from transformers import BertForSequenceClassification

        config = config.__class__(**{**config.to_dict(), "num_labels": num_labels})
        self.model = BertForSequenceClassification(config)
        vocab = config.vocab_size
        self.model.resize_token_embeddings(vocab + num_mem_tokens)
        self.register_buffer("mem_token_ids", torch.arange(vocab, vocab + num_mem_tokens))
        self.register_buffer("cls_token", torch.tensor([tokenizer.cls_token_id]))
        self.register_buffer("sep_token", torch.tensor([tokenizer.sep_token_id]))
        self.model.embeddings = self.model.bert.embeddings.word_embeddings  # the alias: saved a second time
        self.m, self.pad = num_mem_tokens, tokenizer.pad_token_id
        self.segment_size, self.max_n_segments = SEGMENT, max_n_segments
        self.input_size = SEGMENT + num_mem_tokens + 3
        self.special = {tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id}

    def pieces(self, ids: list[int]) -> list[list[int]]:
        kept = [i for i in ids if i not in self.special][: self.segment_size * self.max_n_segments]
        ends = list(range(len(kept), 0, -self.segment_size))[::-1]
        return [kept[max(0, e - self.segment_size):e] for e in ends]

    @torch.no_grad()
    def forward(self, ids: list[int]):
        memory = self.model.embeddings(self.mem_token_ids).unsqueeze(0)  # (1, m, d)
        memories, logits = [], []
        for piece in self.pieces(ids):
            row = [int(self.cls_token), *self.mem_token_ids.tolist(), int(self.sep_token), *piece, int(self.sep_token)]
            row += [self.pad] * (self.input_size - len(row))
            tokens = torch.tensor([row])
            embeds = self.model.embeddings(tokens).clone()
            embeds[:, 1:self.m + 1] = memory
            out = self.model(inputs_embeds=embeds, attention_mask=(tokens != self.pad).long(), output_hidden_states=True)
            memory = out.hidden_states[-1][:, 1:self.m + 1]
            memories.append(memory[0])
            logits.append(out.logits[0])
        return memories, logits


def tiny_bert_config(tokenizer):
    from transformers import BertConfig

    return BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory, tokenizer):
    """A backbone folder: the tiny BERT's config.json and the tokenizer (what --backbone points at)."""
    folder = tmp_path_factory.mktemp("backbone") / "tiny-bert"
    tiny_bert_config(tokenizer).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def make_reference(tokenizer, max_n_segments=32, seed=0):
    torch.manual_seed(seed)
    return AuthorsEncoderReference(tiny_bert_config(tokenizer), LABELS, MEM, tokenizer, max_n_segments).eval()


def save_authors(reference, path: Path, **extra) -> Path:
    """As the authors' trainer saves: the weights beside the optimizer's state and the counters."""
    optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-4)
    torch.save({"model_state_dict": reference.state_dict(), "optimizer_state_dict": optimizer.state_dict(),
                "iteration": 1200, "epoch": 3, **extra}, path)
    return path


@pytest.fixture(scope="module")
def authors(tmp_path_factory, tokenizer):
    reference = make_reference(tokenizer)
    return reference, save_authors(reference, tmp_path_factory.mktemp("authors") / "model_best.pth")


def run_rmt(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(list(map(str, argv)))
    out = capsys.readouterr()
    return code, out.out, out.err


def compare(model, reference, tokenizer):
    """Memory after every segment, the logits and the predicted class of both, on TEXT + QUESTION."""
    item = make_input(model, text=TEXT, question=QUESTION)
    flat = tokenizer(TEXT + " " + QUESTION)["input_ids"]  # with [CLS] ... [SEP]: the reference strips them
    assert item.segments == reference.pieces(flat)
    memories, logits = reference(flat)
    out = run_with_cache(model, item, names=["seg.*.mem_out", "seg.*.logits"])
    assert len(memories) == item.n_segments
    for t, memory in enumerate(memories):
        torch.testing.assert_close(out.cache[f"seg.{t}.mem_out"][0], memory, atol=1e-5, rtol=0)
        torch.testing.assert_close(out.cache[f"seg.{t}.logits"][0], logits[t], atol=1e-5, rtol=0)
    assert int(out.logits[0].argmax()) == int(logits[-1].argmax())
    return item


# ----- faithfulness --------------------------------------------------------------------------------------------
def test_imported_encoder_computes_what_the_authors_wrapper_computes(authors, backbone, tokenizer, tmp_path, capsys):
    reference, source = authors
    out = tmp_path / "paper"
    code, stdout, err = run_rmt(capsys, "import", source, "--backbone", backbone, "--segment-size", SEGMENT,
                                "--out", out)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) >= ["README.md", "config.json", "model.safetensors"]
    model = load_checkpoint(out, device="cpu")
    assert model.num_mem_tokens == MEM and len(model.config.labels) == LABELS
    assert model.backbone.get_input_embeddings().num_embeddings == len(tokenizer)  # the vocabulary goes back
    assert model.config.segmenting == "right"
    item = compare(model, reference, tokenizer)
    assert item.n_segments >= 3 and len(item.segments[0]) < SEGMENT  # right-aligned: the first one is short
    assert all(len(s) == SEGMENT for s in item.segments[1:])


def test_truncation_to_max_segments_matches_the_reference(tokenizer, backbone, tmp_path):
    reference = make_reference(tokenizer, max_n_segments=2, seed=1)
    source = save_authors(reference, tmp_path / "model_best.pth")
    model = load_checkpoint(import_checkpoint(source, backbone, SEGMENT, tmp_path / "cut", max_segments=2), device="cpu")
    item = compare(model, reference, tokenizer)
    assert item.n_segments == 2 and all(len(s) == SEGMENT for s in item.segments)  # the first 32 tokens only
    assert sample_segments(model, 5) == 2  # task samples are cut the same way
    from rmt_core.evaluate import predict_batch
    from rmt_core.tasks import TaskBuilder

    ids = torch.tensor([TaskBuilder("memorize", tokenizer, SEGMENT).sample(5, seed).input_ids for seed in range(3)])
    torch.testing.assert_close(predict_batch(model, ids.numpy(), 5, SEGMENT),  # so are evaluation batches
                               predict_batch(model, ids[:, :2 * SEGMENT].numpy(), 2, SEGMENT), atol=0, rtol=0)
    model.config.max_segments = None
    assert not torch.allclose(predict_batch(model, ids.numpy(), 5, SEGMENT),
                              predict_batch(model, ids[:, :2 * SEGMENT].numpy(), 2, SEGMENT))


def sample_segments(model, n: int) -> int:
    return make_input(model, task="memorize", n_segments=n, seed=0).n_segments


def test_model_card_and_config_name_the_source_and_its_hash(authors, backbone, tmp_path):
    import hashlib

    _, source = authors
    out = import_checkpoint(source, backbone, SEGMENT, tmp_path / "card", labels=list("abcdef"))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    card = (out / "README.md").read_text()
    assert digest in card and str(source) in card and "(an alias)" in card
    imported = read_config(out)["provenance"]["imported"]
    assert imported["format"] == "encoder" and imported["files"][0]["sha256"] == digest
    assert imported["trainer_entries"] == {"iteration": 1200, "epoch": 3}
    assert read_config(out)["rmt"]["labels"] == list("abcdef")


def test_imported_checkpoint_evaluates_and_replays(authors, backbone, tmp_path, capsys):
    _, source = authors
    out = import_checkpoint(source, backbone, SEGMENT, tmp_path / "ev")
    code, stdout, err = run_rmt(capsys, "eval", "--checkpoint", out, "--segments", "1,3", "--samples", 4,
                                "--no-progress", "--device", "cpu")
    assert code == 0, err
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    code, stdout, err = run_rmt(capsys, "replay", "--checkpoint", out, "--text-file", text, "--question", QUESTION,
                                "--out", tmp_path / "trace", "--quiet", "--device", "cpu")
    assert code == 0, err
    manifest = json.loads((tmp_path / "trace" / "manifest.json").read_text())
    assert manifest["n_segments"] >= 3 and manifest["checkpoint"]["name"] == "ev"


# ----- safety and bad input ---------------------------------------------------------------------------------------
class _CreatesAFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(authors, backbone, tmp_path, capsys):
    reference, _ = authors
    created = tmp_path / "created-by-the-pickle"
    source = tmp_path / "evil.pth"
    torch.save({"model_state_dict": reference.state_dict(), "trap": _CreatesAFile(created)}, source)
    code, stdout, err = run_rmt(capsys, "import", source, "--backbone", backbone, "--segment-size", SEGMENT,
                                "--out", tmp_path / "out")
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "weights-only" in err and "GLOBAL" in err
    assert not created.exists() and not (tmp_path / "out").exists()


def _edited(reference, path: Path, edit) -> Path:
    state = dict(reference.state_dict())
    edit(state)
    torch.save({"model_state_dict": state}, path)
    return path


@pytest.mark.parametrize("edit, words", [
    (lambda s: s.pop("model.bert.encoder.layer.1.output.dense.weight"), ["lacks", "encoder.layer.1.output.dense.weight"]),
    (lambda s: s.__setitem__("model.bert.extra.weight", torch.zeros(3)), ["unexpected", "backbone.extra.weight"]),
    (lambda s: s.__setitem__("model.bert.pooler.dense.weight", torch.zeros(32, 31)), ["pooler.dense.weight", "(32, 31)"]),
    (lambda s: s.__setitem__("mystery", torch.zeros(2)), ["unexpected mystery"]),
])
def test_missing_unexpected_or_misshapen_keys_are_named(authors, backbone, tmp_path, capsys, edit, words):
    reference, _ = authors
    source = _edited(reference, tmp_path / "edited.pth", edit)
    code, stdout, err = run_rmt(capsys, "import", source, "--backbone", backbone, "--segment-size", SEGMENT,
                                "--out", tmp_path / "out")
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert all(w in err for w in words), err
    assert not (tmp_path / "out").exists()


def test_never_writes_over_an_existing_folder(authors, backbone, tmp_path):
    _, source = authors
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(CheckpointError, match="already exists"):
        import_checkpoint(source, backbone, SEGMENT, out)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_a_backbone_of_another_vocabulary_is_named(authors, tmp_path, tokenizer):
    from transformers import BertConfig

    _, source = authors
    other = tmp_path / "other"
    BertConfig(vocab_size=len(tokenizer) - 10, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64, max_position_embeddings=64).save_pretrained(str(other))
    tokenizer.save_pretrained(str(other))
    with pytest.raises(CheckpointError, match="memory tokens at ids .* vocabulary has"):
        import_checkpoint(source, other, SEGMENT, tmp_path / "out")


def test_a_task_of_the_other_architecture_is_refused(authors, backbone, tmp_path):
    from rmt_core.errors import TaskError

    _, source = authors
    with pytest.raises(TaskError, match="task qa1 is for the decoder"):
        import_checkpoint(source, backbone, SEGMENT, tmp_path / "out", task="qa1")
    assert not (tmp_path / "out").exists()


def test_labels_must_match_the_head(authors, backbone, tmp_path):
    _, source = authors
    with pytest.raises(CheckpointError, match="--labels names 2 classes, the checkpoint's head has 6"):
        import_checkpoint(source, backbone, SEGMENT, tmp_path / "out", labels=["a", "b"])


def test_decoder_state_dicts_are_detected(tmp_path):
    from rmt_core.importers import detect_format

    assert detect_format(["memory_cell.memory", "memory_cell.model.transformer.wte.weight"]) == "decoder"
    assert detect_format(["model.bert.embeddings.word_embeddings.weight", "mem_token_ids"]) == "encoder"
    with pytest.raises(CheckpointError, match="cannot tell the format"):
        detect_format(["transformer.wte.weight"])


# ----- Hub ids through a local Hugging Face cache -------------------------------------------------------------------
def put_in_hub_cache(cache: Path, repo_id: str, folder: Path, commit: str = "0" * 40) -> None:
    """Lay `folder`'s files out as the Hugging Face cache holds a downloaded repository."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in Path(folder).iterdir():
        if file.is_file():
            shutil.copy(file, snapshot / file.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_hub_ids_import_and_open_offline(authors, backbone, tmp_path, hub_cache, capsys):
    reference, source = authors
    put_in_hub_cache(hub_cache, "someone/rmt-paper-memorize", source.parent)
    put_in_hub_cache(hub_cache, "someone/tiny-bert", backbone)
    out = tmp_path / "from-hub"
    code, stdout, err = run_rmt(capsys, "import", "someone/rmt-paper-memorize", "--backbone", "someone/tiny-bert",
                                "--segment-size", SEGMENT, "--out", out)
    assert code == 0, err
    assert "someone/rmt-paper-memorize" in (out / "README.md").read_text()
    put_in_hub_cache(hub_cache, "someone/rmt-lens-memorize", out)  # an RMT Lens folder on the Hub
    model = load_checkpoint("someone/rmt-lens-memorize", device="cpu")
    assert model.checkpoint_dir.is_relative_to(hub_cache)
    compare(model, reference, tokenizer=model.tokenizer)
    code, stdout, err = run_rmt(capsys, "eval", "--checkpoint", "someone/rmt-lens-memorize", "--segments", "2",
                                "--samples", 2, "--no-progress", "--device", "cpu")
    assert code == 0, err


def test_a_hub_id_missing_from_the_cache_is_one_line_offline(backbone, tmp_path, hub_cache, capsys):
    code, stdout, err = run_rmt(capsys, "import", "someone/not-downloaded", "--backbone", backbone,
                                "--segment-size", SEGMENT, "--out", tmp_path / "out")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "not in the Hugging Face cache" in err and "HF_HUB_OFFLINE=1" in err
    with pytest.raises(CheckpointError, match="not in the Hugging Face cache"):
        load_checkpoint("someone/not-downloaded")


def test_dashboard_opens_a_hub_id(authors, backbone, tmp_path, hub_cache, monkeypatch):
    pytest.importorskip("streamlit.testing.v1")
    from streamlit.testing.v1 import AppTest

    _, source = authors
    out = import_checkpoint(source, backbone, SEGMENT, tmp_path / "lens")
    put_in_hub_cache(hub_cache, "someone/rmt-lens-memorize", out)
    monkeypatch.setenv("RMT_CHECKPOINT", str(tmp_path / "no-default"))  # the app starts with no checkpoint
    monkeypatch.setattr("rmt_core.checkpoint.CHECKPOINTS_DIR", tmp_path / "no-shipped")
    main = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
    at = AppTest.from_file(main, default_timeout=120).run()
    at.sidebar.selectbox(key="checkpoint_choice").set_value("Other folder…").run()
    at.sidebar.text_input(key="checkpoint_folder").set_value("someone/rmt-lens-memorize").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert any(t.startswith("Read:") for t in titles)


# ----- decoder checkpoints: RecurrentWrapper(MemoryCell(LM)) ------------------------------------------------------
class MemoryCellReference(nn.Module):
    """The authors' MemoryCell as section 3 of AUTHORS_CHECKPOINTS.md describes it: the LM as `model`, an (m, d)
    parameter `memory` scaled by the word embeddings' standard deviation."""

    def __init__(self, lm, num_mem_tokens: int):
        super().__init__()
        self.model = lm
        scale = lm.get_input_embeddings().weight.detach().std()
        self.memory = nn.Parameter(torch.randn(num_mem_tokens, lm.config.hidden_size) * scale)


class RecurrentWrapperReference(nn.Module):
    """The authors' RecurrentWrapper (section 3): left-aligned segments, `[memory, tokens, memory]` each, the next
    memory from the last layer at the last m positions; generation feeds the last segment as `[memory, tokens]`."""

    def __init__(self, cell: MemoryCellReference, segment_size: int):
        super().__init__()
        self.memory_cell = cell
        self.segment_size = segment_size

    def pieces(self, ids: list[int]) -> list[list[int]]:
        return [ids[i:i + self.segment_size] for i in range(0, len(ids), self.segment_size)]

    def _step(self, memory, piece):
        lm, m = self.memory_cell.model, memory.shape[1]
        tokens = lm.get_input_embeddings()(torch.tensor([piece]))
        out = lm(inputs_embeds=torch.cat([memory, tokens, memory], dim=1), output_hidden_states=True)
        return out.hidden_states[-1][:, -m:], out.logits[0, m:-m]

    @torch.no_grad()
    def forward(self, ids: list[int]):
        memory, memories, logits = self.memory_cell.memory.unsqueeze(0), [], []
        for piece in self.pieces(ids):
            memory, segment_logits = self._step(memory, piece)
            memories.append(memory[0])
            logits.append(segment_logits)
        return memories, logits

    @torch.no_grad()
    def generate(self, ids: list[int], max_new_tokens: int, eos: int) -> list[int]:
        memory = self.memory_cell.memory.unsqueeze(0)
        pieces = self.pieces(ids)
        for piece in pieces[:-1]:
            memory, _ = self._step(memory, piece)
        lm = self.memory_cell.model
        embeds = torch.cat([memory, lm.get_input_embeddings()(torch.tensor([pieces[-1]]))], dim=1)
        out = lm.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                          max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=eos)
        return out[0].tolist()


DEC_SEGMENT, DEC_MEM = 16, 3
DEC_TEXT = "Mary went back to the kitchen after lunch. The weather stayed grey all afternoon. Sandra moved to the garden."


def tiny_lm_config(kind: str, vocab: int):
    from rmt_core.decoder import BACKBONES

    return BACKBONES[kind](vocab, hidden_size=32, num_layers=2, num_heads=2, max_positions=64)


def make_decoder_reference(kind: str, tokenizer, lora: bool = False, seed: int = 0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    lm = AutoModelForCausalLM.from_config(tiny_lm_config(kind, len(tokenizer)))
    if lora:
        from peft import LoraConfig, get_peft_model

        lm = get_peft_model(lm, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
        for name, param in lm.named_parameters():
            if "lora_B" in name:  # peft starts B at zero: give the adapters something to add
                nn.init.normal_(param, std=0.2)
    return RecurrentWrapperReference(MemoryCellReference(lm, DEC_MEM), DEC_SEGMENT).eval()


def save_decoder(reference, folder: Path, layout: str) -> Path:
    """The reference's state dict as the authors' runs leave it: `bin` (torch.save, bf16), `safetensors`, `shards`
    (two safetensors files and an index, without the tied LM head, as accelerate saves)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    state = {k: v.detach().clone().contiguous() for k, v in reference.state_dict().items()}
    if layout == "bin":
        state = {k: v.to(torch.bfloat16) for k, v in state.items()}
        if "memory_cell.model.transformer.h.0.attn.c_attn.weight" in state:  # older transformers saved GPT-2's mask
            for layer in range(2):
                state[f"memory_cell.model.transformer.h.{layer}.attn.bias"] = torch.ones(1, 1, 64, 64).tril().bool()
                state[f"memory_cell.model.transformer.h.{layer}.attn.masked_bias"] = torch.tensor(-1e4)
        torch.save(state, folder / "pytorch_model.bin")
    elif layout == "safetensors":
        save_file(state, str(folder / "model.safetensors"))
    else:
        state.pop("memory_cell.model.lm_head.weight")
        names = sorted(state)
        halves = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
                  "model-00002-of-00002.safetensors": names[len(names) // 2:]}
        for file, keys in halves.items():
            save_file({k: state[k] for k in keys}, str(folder / file))
        index = {"metadata": {}, "weight_map": {k: f for f, keys in halves.items() for k in keys}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


def round_to_bf16(reference) -> None:
    with torch.no_grad():
        for param in reference.parameters():
            param.copy_(param.to(torch.bfloat16).float())


@pytest.fixture(scope="module")
def decoder_backbones(tmp_path_factory, gpt2_tokenizer):
    folders = {}
    for kind in ("gpt2", "llama"):
        folder = tmp_path_factory.mktemp("backbone") / kind
        tiny_lm_config(kind, len(gpt2_tokenizer)).save_pretrained(str(folder))
        gpt2_tokenizer.save_pretrained(str(folder))
        folders[kind] = folder
    return folders


def compare_decoder(model, reference, tokenizer):
    item = make_input(model, text=DEC_TEXT, question=QUESTION)
    flat = tokenizer(DEC_TEXT + " " + QUESTION, add_special_tokens=False)["input_ids"]
    assert item.segments == reference.pieces(flat)
    assert item.n_segments >= 3 and 0 < len(item.segments[-1]) < DEC_SEGMENT  # a short last segment
    memories, logits = reference(flat)
    out = run_with_cache(model, item, names=["seg.*.mem_out", "seg.*.logits"])
    for t, memory in enumerate(memories):
        torch.testing.assert_close(out.cache[f"seg.{t}.mem_out"][0], memory, atol=1e-5, rtol=0)
        torch.testing.assert_close(out.cache[f"seg.{t}.logits"][0], logits[t], atol=1e-5, rtol=0)
    eos = tokenizer.eos_token_id
    expected = reference.generate(flat, 6, eos)
    generated = model.generate([item], max_new_tokens=6).tokens[0].tolist()
    assert generated[:len(expected)] == expected


@pytest.mark.parametrize("kind, layout", [("gpt2", "bin"), ("llama", "safetensors"), ("gpt2", "shards")])
def test_imported_decoder_computes_what_the_authors_wrapper_computes(kind, layout, gpt2_tokenizer, decoder_backbones,
                                                                    tmp_path, capsys):
    reference = make_decoder_reference(kind, gpt2_tokenizer)
    if layout == "bin":
        round_to_bf16(reference)  # the file holds bf16: compare with the weights it holds
    source = save_decoder(reference, tmp_path / "authors", layout)
    out = tmp_path / "lens"
    code, stdout, err = run_rmt(capsys, "import", source, "--backbone", decoder_backbones[kind], "--segment-size",
                                DEC_SEGMENT, "--out", out)
    assert code == 0, err
    model = load_checkpoint(out, device="cpu")
    assert model.num_mem_tokens == DEC_MEM and model.config.segmenting == "left"
    assert read_config(out)["dtype"] == ("bfloat16" if layout == "bin" else "float32")
    compare_decoder(model, reference, gpt2_tokenizer)
    if layout == "bin":  # an imported decoder replays and evaluates like one trained here
        text = tmp_path / "story.txt"
        text.write_text(TEXT)
        code, stdout, err = run_rmt(capsys, "replay", "--checkpoint", out, "--text-file", text, "--question",
                                    QUESTION, "--out", tmp_path / "trace", "--quiet", "--device", "cpu")
        assert code == 0, err
        manifest = json.loads((tmp_path / "trace" / "manifest.json").read_text())
        assert manifest["n_segments"] == make_input(model, text=TEXT, question=QUESTION).n_segments
        code, stdout, err = run_rmt(capsys, "eval", "--checkpoint", out, "--segments", "2", "--samples", 2,
                                    "--no-progress", "--device", "cpu")
        assert code == 0, err


def test_lora_adapters_are_merged_to_the_same_outputs(gpt2_tokenizer, decoder_backbones, tmp_path, capsys):
    pytest.importorskip("peft")
    reference = make_decoder_reference("llama", gpt2_tokenizer, lora=True, seed=2)
    assert any(".lora_A." in k for k in reference.state_dict())
    assert all(k.startswith("memory_cell.model.base_model.model.") or k == "memory_cell.memory"
               for k in reference.state_dict())
    source = save_decoder(reference, tmp_path / "authors", "safetensors")
    args = ["import", source, "--backbone", decoder_backbones["llama"], "--segment-size", DEC_SEGMENT]
    code, stdout, err = run_rmt(capsys, *args, "--out", tmp_path / "no-alpha")
    assert code == 1 and "--lora-alpha" in err and not (tmp_path / "no-alpha").exists()
    code, stdout, err = run_rmt(capsys, *args, "--lora-alpha", 8, "--out", tmp_path / "lens")
    assert code == 0, err
    model = load_checkpoint(tmp_path / "lens", device="cpu")
    assert not any("lora" in k for k in model.state_dict())
    assert "merged into the base weights with peft" in (tmp_path / "lens" / "README.md").read_text()
    compare_decoder(model, reference, gpt2_tokenizer)
    (source / "config.json").write_text(json.dumps({"peft": {"r": 4, "lora_alpha": 8}}))  # a config beside the weights
    code, stdout, err = run_rmt(capsys, *args, "--out", tmp_path / "alpha-from-config")
    assert code == 0, err
    assert "alpha 8.0" in (tmp_path / "alpha-from-config" / "README.md").read_text()


def test_decoder_keys_of_another_backbone_are_named(gpt2_tokenizer, decoder_backbones, tmp_path, capsys):
    reference = make_decoder_reference("gpt2", gpt2_tokenizer)
    source = save_decoder(reference, tmp_path / "authors", "safetensors")
    code, stdout, err = run_rmt(capsys, "import", source, "--backbone", decoder_backbones["llama"], "--segment-size",
                                DEC_SEGMENT, "--out", tmp_path / "out")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "lacks backbone.model." in err and not (tmp_path / "out").exists()


def test_what_counts_as_a_hub_id(tmp_path, monkeypatch):
    from rmt_core.hub import is_hub_id

    assert is_hub_id("booydar/rmt-gpt2-babilong-qa1") and is_hub_id("gpt2", bare=True)
    assert not is_hub_id("gpt2") and not is_hub_id("a/b/c") and not is_hub_id(str(tmp_path / "x"))
    assert not is_hub_id("./owner/name") and not is_hub_id("owner/") and not is_hub_id("owner/name?x")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "owner" / "name").mkdir(parents=True)
    assert not is_hub_id("owner/name")  # a local folder wins
