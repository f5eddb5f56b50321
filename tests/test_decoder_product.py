"""One product, two architectures: rmt train, rmt eval, rmt replay and the bertviz views on a decoder RMT."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rmt_core.viz import bertviz_offline
from rmt_core.babilong import StoryTaskBuilder
from rmt_core.checkpoint import load_checkpoint, save_checkpoint
from rmt_core.decoder import DecoderConfig, decoder_from_backbone, small_gpt2_config
from rmt_core.errors import TrainError
from rmt_core.evaluate import eval_sample_seed, evaluate
from rmt_core.inputs import ModelInput, make_input
from rmt_core.replay import replay, replay_in_memory
from rmt_core.trace import Trace
from rmt_core.train import Stage, TrainConfig, train

M, S = 4, 40


@pytest.fixture(scope="module")
def decoder_dir(tokenizer, tmp_path_factory):
    torch.manual_seed(0)
    backbone = small_gpt2_config(len(tokenizer), hidden_size=32, num_layers=2, num_heads=2, max_positions=128)
    model = decoder_from_backbone(backbone, tokenizer, DecoderConfig(num_mem_tokens=M, segment_size=S,
                                                                     max_new_tokens=4))
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "qa1_tiny", dtype="float32")


@pytest.fixture(scope="module")
def decoder(decoder_dir):
    return load_checkpoint(decoder_dir, device="cpu")


def test_eval_is_the_exact_match_of_generation_by_hand(decoder, tokenizer):
    result = evaluate(decoder, segments=[1, 3], samples=6, batch_size=4, progress=False, split="train")
    assert result["architecture"] == "decoder" and "exact match" in result["metric"]
    builder = StoryTaskBuilder("qa1", tokenizer, S)
    for row in result["results"]:
        n, correct = row["segments"], 0
        for i in range(6):
            sample = builder.sample(n, eval_sample_seed(0, n, i))
            answer = sample.input_ids[sample.answer_span[0]:sample.answer_span[1]]
            generated = decoder.generate([ModelInput.from_sample(sample)], max_new_tokens=len(answer)).tokens[0]
            correct += generated.tolist() == answer
        assert row["correct"] == correct and row["accuracy"] == correct / 6
        assert row["ci_low"] - 1e-12 <= row["accuracy"] <= row["ci_high"]


def test_exact_matches_of_a_ragged_batch_are_each_rows_own(decoder, tokenizer):
    """Rows whose answers the model does generate (planted: the answer tokens replaced by its own greedy output)
    count as correct, the others not, whatever the other rows of the batch; answers of different lengths."""
    from rmt_core.decoder import exact_matches

    builder = StoryTaskBuilder("qa1", tokenizer, S)
    samples = [builder.sample(2, seed) for seed in range(4)]
    ids = torch.zeros(4, 2 * S, dtype=torch.long)
    mask = torch.zeros_like(ids)
    expected = []
    for i, sample in enumerate(samples):
        a0, a1 = sample.answer_span
        row = list(sample.input_ids)
        if i == 3:  # a shorter answer than the others: the batch's prompts are ragged
            a0 = a1 - 1
        alone = decoder.generate([ModelInput.from_segments([row[:S], row[S:a0]])], max_new_tokens=a1 - a0).tokens[0]
        if i % 2 == 0:
            row[a0:a1] = alone.tolist()  # plant the model's own answer
        ids[i], mask[i, a0:a1] = torch.tensor(row), 1
        expected.append(alone.tolist() == row[a0:a1])
    assert expected[0] and expected[2]
    assert exact_matches(decoder, ids, mask).tolist() == expected


def test_a_decoder_replay_records_both_memories(decoder, tmp_path):
    item = make_input(decoder, n_segments=3, seed=2)
    trace = replay(decoder, item, out=tmp_path / "trace", progress=False)
    assert trace.manifest["format_version"] == 2 and trace.architecture == "decoder"
    T = 2 * M + S
    assert trace.read_positions == slice(0, M) and trace.write_positions == slice(M + S, T)
    tokens = trace.tokens(2)
    assert tokens[:M] == [f"[read{k}]" for k in range(M)] and tokens[-M:] == [f"[write{k}]" for k in range(M)]
    # The maps are the attention of the segment step by hand: read = every query onto the front block, write =
    # the end block's queries onto every key; the memory is the write block's last-layer states.
    memory = torch.as_tensor(np.asarray(trace.memory_in(2))).unsqueeze(0)
    with torch.no_grad(), decoder.recording():
        step = decoder.segment_step(memory, torch.tensor([item.segments[2]]), output_attentions=True)
    attention = torch.stack([a[0] for a in step.attentions]).numpy()  # (L, H, T, T)
    assert np.allclose(trace.read_attention(2), attention[:, :, :, :M], atol=2e-3)
    assert np.allclose(trace.write_attention(2), attention[:, :, M + S:, :], atol=2e-3)
    assert np.allclose(trace.memory_out(2), step.memory_out[0].numpy(), atol=1e-5)
    # Causal: the write block never reads padding, the tokens never read the write block.
    pad = np.flatnonzero(trace.roles(2) == 5)
    assert len(pad) and np.abs(trace.write_attention(2)[..., pad]).max() == 0
    # The answer is generated from [memory, last segment], as rmt eval generates it.
    generation = decoder.generate([item])
    assert trace.generated_answer == decoder.answers(generation)[0]
    assert trace.manifest["generated_ids"][:int(generation.lengths[0])] == \
        generation.tokens[0, :int(generation.lengths[0])].tolist()
    assert trace.segment_logits is None and trace.final_logits.shape == (6,)
    again = Trace.open(tmp_path / "trace")
    assert again.architecture == "decoder" and again.tokens(0) == trace.tokens(0)


def test_an_encoder_trace_stays_version_1_and_opens(tiny_rmt, tmp_path):
    from rmt_core.tasks import TaskBuilder

    sample = TaskBuilder("memorize", tiny_rmt.tokenizer, tiny_rmt.config.segment_size).sample(2, 0)
    trace = replay(tiny_rmt, sample, out=tmp_path / "enc", progress=False)
    manifest = json.loads((tmp_path / "enc" / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    del manifest["layout"]["read_positions"], manifest["layout"]["write_positions"]  # as older version-1 traces
    (tmp_path / "enc" / "manifest.json").write_text(json.dumps(manifest))
    old = Trace.open(tmp_path / "enc")
    assert old.architecture == "encoder" and old.read_positions == old.write_positions == slice(1, 5)
    assert old.tokens(0)[1] == "[mem0]" and trace.tokens(0) == old.tokens(0)


def test_bertviz_views_show_the_read_and_write_slots(decoder):
    trace = replay_in_memory(decoder, make_input(decoder, n_segments=2, seed=4))
    roles = trace.roles(1)
    positions = bertviz_offline.window_positions(roles, "question", width=6)
    assert positions[:M] == list(range(M)) and positions[-M:] == list(range(M + S, 2 * M + S))
    labels = bertviz_offline.view_tokens(trace.tokens(1), roles)
    assert labels[0] == "[read 0]" and labels[M + S + 1] == "[write 1]"
    attention = bertviz_offline.segment_attention(decoder, trace, 1)
    assert np.allclose(attention[:, :, :, :M], trace.read_attention(1), atol=2e-3)
    html = bertviz_offline.head_view_html(attention, trace.tokens(1), roles, positions, [0], [0])
    assert "[write 0]" in html and "[read 0]" in html


def test_train_a_decoder_and_resume(tmp_path):
    def config(out):
        return TrainConfig(task="qa1", architecture="decoder", out=str(out), stages=[Stage(1, 40), Stage(2, 40)],
                           hidden_size=32, num_layers=2, num_heads=2, max_positions=128, num_mem_tokens=4,
                           batch_size=4, warmup_steps=1, max_steps=3, eval_every=3, val_samples=4,
                           target_accuracy=1.01, plateau=100, log_every=1, save_dtype="float32", threads=1, seed=1)

    whole = train(config(tmp_path / "whole"), progress=False)
    cut = config(tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        train(cut, stop_after=4, progress=False)  # inside stage 2
    train(cut, resume=True, progress=False)
    model = load_checkpoint(whole, device="cpu")
    assert model.config.architecture == "decoder" and model.config.trained_segments == 2
    losses = [[e["loss"] for e in map(json.loads, (f / "training_log.jsonl").read_text().splitlines())
               if e.get("event") == "step"] for f in (whole, tmp_path / "cut")]
    assert losses[0] == losses[1] and len(losses[0]) == 6
    assert "decoder Recurrent Memory Transformer" in (whole / "README.md").read_text()


def test_train_refuses_a_task_or_checkpoint_of_the_other_architecture(tokenizer, tmp_path, capsys):
    from conftest import make_tiny_rmt

    from rmt_cli.main import main

    assert main(["train", "--task", "memorize", "--architecture", "decoder", "--out", str(tmp_path / "x")]) == 1
    assert "task memorize is for the encoder" in capsys.readouterr().err
    encoder = save_checkpoint(make_tiny_rmt(tokenizer), tmp_path / "enc")
    config = TrainConfig(task="qa1", architecture="decoder", out=str(tmp_path / "y"), init_from=str(encoder))
    with pytest.raises(TrainError, match="is an encoder checkpoint; give --architecture encoder"):
        train(config, progress=False)


def test_answer_scores_are_the_first_generated_tokens_logits(decoder):
    from rmt_core.recurrence import run

    inputs = [make_input(decoder, n_segments=2, seed=s) for s in range(3)]  # prompts of different lengths
    generation = decoder.generate(inputs, max_new_tokens=1)
    with torch.no_grad(), decoder.answering():
        scores = run(decoder, inputs).logits  # (B, C)
    assert scores.shape == (3, 6)
    assert torch.allclose(scores, generation.scores[:, decoder.label_token_ids()], atol=1e-5)


def test_rmt_probe_on_a_decoder_reads_the_answer_from_generation(decoder):
    from probes.run import run_probes

    results = run_probes(decoder, "qa1", 2, 8, progress=False, intervention_samples=4, modes=("zeros",),
                         per_slot=False)
    prompts = [ModelInput.from_sample(StoryTaskBuilder("qa1", decoder.tokenizer, S).sample(2, seed))
               for seed in results["samples_meta"]["seeds"]]
    first = decoder.generate(prompts, max_new_tokens=1).scores[:, decoder.label_token_ids()]
    assert results["clean"]["predictions"] == first.argmax(-1).tolist()
    assert results["ablation"] and results["patching"] and results["attention"] == {}
    assert any("decoder" in note for note in results["notes"])


def test_a_task_of_the_other_architecture_is_a_clear_error(decoder, tiny_rmt):
    from rmt_core.errors import TaskError

    with pytest.raises(TaskError, match="task memorize is for the encoder and this model is the decoder"):
        evaluate(decoder, "memorize", segments=[1], samples=1, progress=False)
    with pytest.raises(TaskError, match="task qa1 is for the decoder"):
        make_input(tiny_rmt, task="qa1", n_segments=1, seed=0)


@pytest.mark.parametrize("backbone", ["small", "gpt2-small", "llama-small", "minilm"])
def test_the_decoder_backbone_names_pass_the_cli_check(backbone):
    from rmt_core.errors import TrainError
    from rmt_core.train import check_backbone

    check_backbone(backbone, "decoder")  # the names scripts/train_decoder.sh uses
    if backbone not in ("small", "minilm"):  # both architectures have these two
        with pytest.raises(TrainError, match="for the encoder"):
            check_backbone(backbone, "encoder")
