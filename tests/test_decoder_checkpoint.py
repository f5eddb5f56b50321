"""Decoder checkpoints: rmt.architecture in config.json, safetensors + JSON round trips on GPT-2 (tied embeddings,
a GPT-2 tokenizer without pad) and Llama, and encoder folders written before the key existed."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_tiny_rmt

from rmt_core.checkpoint import load_checkpoint, read_config, read_weights, save_checkpoint, tied_names
from rmt_core.decoder import BACKBONES, DecoderConfig, DecoderRMT, decoder_from_backbone
from rmt_core.errors import CheckpointError
from rmt_core.model import RMT


def _decoder(kind, tokenizer):
    torch.manual_seed(0)
    backbone = BACKBONES[kind](len(tokenizer), hidden_size=32, num_layers=2, num_heads=2)
    return decoder_from_backbone(backbone, tokenizer, DecoderConfig(num_mem_tokens=4, segment_size=12)).eval()


@pytest.mark.parametrize("kind", ["gpt2", "llama", "bert"])
def test_a_decoder_round_trips_through_safetensors(kind, gpt2_tokenizer, tmp_path):
    model = _decoder(kind, gpt2_tokenizer)
    folder = save_checkpoint(model, tmp_path / "dec", dtype="float32")
    config = read_config(folder)
    assert config["rmt"]["architecture"] == "decoder"
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors"}
    assert not any(p.suffix in (".bin", ".pt", ".pth") for p in folder.iterdir())
    loaded = load_checkpoint(folder, device="cpu")
    assert isinstance(loaded, DecoderRMT)
    assert loaded.pad_id == gpt2_tokenizer.eos_token_id and loaded.eos_id == gpt2_tokenizer.eos_token_id
    ids = torch.randint(1, len(gpt2_tokenizer), (2, 3, 12))
    assert torch.equal(loaded.memory, model.memory)
    assert torch.equal(loaded.generate(ids, max_new_tokens=4).tokens, model.generate(ids, max_new_tokens=4).tokens)
    with torch.no_grad():
        assert torch.allclose(loaded(ids).loss, model(ids).loss, atol=1e-6)


def test_the_minilm_decoder_backbone_is_the_pretrained_encoder_in_decoder_mode(tokenizer):
    from safetensors.torch import load_file

    from rmt_core.decoder import minilm_causal
    from rmt_core.pretrained import minilm_dir
    from rmt_core.train import check_backbone

    check_backbone("minilm", "decoder")  # a built-in name for both architectures
    backbone = minilm_causal()
    assert backbone.config.is_decoder and type(backbone).__name__ == "BertLMHeadModel"
    pretrained = load_file(str(minilm_dir() / "model.safetensors"))
    key = next(k for k in pretrained if k.endswith("encoder.layer.5.attention.self.query.weight"))
    assert torch.equal(backbone.bert.encoder.layer[5].attention.self.query.weight, pretrained[key])
    model = decoder_from_backbone(backbone, tokenizer, DecoderConfig(num_mem_tokens=2, segment_size=8)).eval()
    ids = torch.tensor([tokenizer(" mary went to the kitchen. where is", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():  # the logits are the whole prediction head's (its transform, then the tied embeddings)
        step = model.segment_step(model.memory.expand(1, -1, -1), ids[:, :8])
        full = backbone(inputs_embeds=torch.cat([model.memory[None], model.embed(ids[:, :8]), model.memory[None]], 1))
    assert torch.allclose(step.logits, full.logits[:, 2:10], atol=1e-4)
    assert backbone.cls.predictions.decoder.weight.data_ptr() == backbone.get_input_embeddings().weight.data_ptr()


def test_tied_embeddings_stay_tied_after_a_half_precision_save(gpt2_tokenizer, tmp_path):
    model = _decoder("gpt2", gpt2_tokenizer)
    folder = save_checkpoint(model, tmp_path / "dec", dtype="float16")
    # The LM head is the embeddings: the file stores the matrix once, and loading ties the head to it again.
    ties = tied_names(model)
    assert ties and all(source in model.state_dict() for source in ties.values())
    stored = read_weights(folder)
    assert not set(ties) & set(stored) and set(ties.values()) <= set(stored)
    loaded = load_checkpoint(folder, device="cpu")
    head, embeddings = loaded.backbone.get_output_embeddings().weight, loaded.backbone.get_input_embeddings().weight
    assert head.data_ptr() == embeddings.data_ptr()
    assert torch.allclose(embeddings, model.backbone.get_input_embeddings().weight, atol=1e-3)


def test_a_file_that_stores_the_tied_head_twice_still_loads(gpt2_tokenizer, tmp_path):
    """Decoder checkpoints written before ties were stored once hold the head and the embeddings both."""
    from safetensors.torch import save_file

    model = _decoder("gpt2", gpt2_tokenizer)
    folder = save_checkpoint(model, tmp_path / "dec", dtype="float16")
    state = read_weights(folder)
    for name, source in tied_names(model).items():
        state[name] = state[source].clone()
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    loaded = load_checkpoint(folder, device="cpu")
    assert loaded.backbone.get_output_embeddings().weight.data_ptr() == \
        loaded.backbone.get_input_embeddings().weight.data_ptr()


def test_an_encoder_folder_without_the_key_loads_as_the_encoder(tokenizer, tmp_path):
    folder = save_checkpoint(make_tiny_rmt(tokenizer), tmp_path / "enc")
    config = json.loads((folder / "config.json").read_text())
    assert config["rmt"]["architecture"] == "encoder"
    del config["rmt"]["architecture"]  # as every folder written before the decoder
    (folder / "config.json").write_text(json.dumps(config))
    assert isinstance(load_checkpoint(folder, device="cpu"), RMT)


def test_an_unknown_architecture_is_a_one_line_error(tokenizer, tmp_path):
    folder = save_checkpoint(make_tiny_rmt(tokenizer), tmp_path / "enc")
    config = json.loads((folder / "config.json").read_text())
    config["rmt"]["architecture"] = "mamba"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="architecture 'mamba'.*encoder or decoder"):
        load_checkpoint(folder, device="cpu")
