"""Bad input to every command (issue 18): each case ends with exit code 1 and one line on stderr that names the
problem, no traceback, no file the user did not ask to change, and, for huge counts, no allocation first.

Commands run in this process through `rmt_cli.main.main` on a tiny checkpoint, except where a fresh process is
the point (a machine without Chromium, SIGTERM, a memory limit). Property tests of the readers are in
test_bad_input_readers.py.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import make_tiny_rmt
from rmt_cli.main import main

SEGMENT = 24
HUGE = str(10**12)
REPO = Path(__file__).resolve().parents[1]


# ----- helpers ---------------------------------------------------------------------------------------------
@dataclass
class Result:
    code: int
    out: str
    err: str
    seconds: float


def rmt(capsys, *argv) -> Result:
    """`rmt ARGV` in this process: exit code, stdout, stderr and wall time."""
    capsys.readouterr()
    started = time.perf_counter()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:  # usage errors and --help leave through argparse
        code = exit_.code
    out, err = capsys.readouterr()
    return Result(code, out, err, time.perf_counter() - started)


def refused(result: Result, *words: str) -> None:
    """Exit 1 with exactly one line on stderr, naming the problem (`words`), and no traceback."""
    assert result.code == 1, result
    assert result.err.endswith("\n") and result.err.count("\n") == 1, result.err
    assert "Traceback" not in result.err and "error" in result.err, result.err
    for word in words:
        assert word in result.err, (word, result.err)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` with the sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def rmt_process(*argv, env=None, timeout=60) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "rmt_cli.main", *map(str, argv)], capture_output=True, text=True,
                            timeout=timeout, cwd=REPO, env={**os.environ, **(env or {})})
    return result, time.perf_counter() - started


def no_work(monkeypatch) -> None:
    """Fail the test if a command loads a model: its bad input must be refused before any work."""
    import rmt_core.checkpoint

    monkeypatch.setattr(rmt_core.checkpoint, "load_checkpoint",
                        lambda *a, **k: pytest.fail("the model was loaded before the bad input was refused"))


@pytest.fixture(scope="module")
def ck(tokenizer, tmp_path_factory) -> Path:
    from rmt_core.checkpoint import save_checkpoint

    model = make_tiny_rmt(tokenizer, segment_size=SEGMENT, num_mem_tokens=4, task="memorize", trained_segments=2)
    return save_checkpoint(model, tmp_path_factory.mktemp("ck") / "tiny")


@pytest.fixture(scope="module")
def trace(ck, tmp_path_factory) -> Path:
    from rmt_core.checkpoint import load_checkpoint
    from rmt_core.replay import replay
    from rmt_core.tasks import TaskBuilder

    model = load_checkpoint(ck, device="cpu")
    sample = TaskBuilder("memorize", model.tokenizer, SEGMENT).sample(3, seed=1)
    out = tmp_path_factory.mktemp("traces") / "trace"
    replay(model, sample, out=out, progress=False, checkpoint_dir=ck)
    return out


TRAIN = ["train", "--task", "memorize", "--stages", "1x24", "--max-steps", "2", "--eval-every", "1",
         "--val-samples", "4", "--batch-size", "2", "--hidden-size", "32", "--layers", "1", "--heads", "2",
         "--quiet", "--threads", "1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished two-step training run (with resume/ state), the way `rmt train` writes it."""
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main([*TRAIN, "--out", str(out)]) == 0
    return out


# ----- 1. no Chromium: PNG/SVG/PDF export ends in seconds, probe writes HTML, the dashboard says so --------------
def test_png_export_without_chromium_is_one_line_within_seconds_and_keeps_the_old_file(trace, tmp_path):
    old = tmp_path / "x.png"
    old.write_bytes(b"the user's picture")
    # BROWSER_PATH is where kaleido (choreographer) looks first: pointing it nowhere hides every browser.
    result, seconds = rmt_process("export", "--trace", trace, "--figure", "memory_norms", "--format", "png",
                                  "--out", old, env={"BROWSER_PATH": str(tmp_path / "no-chromium")}, timeout=30)
    assert result.returncode == 1 and seconds < 30
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert "needs Chromium" in result.stderr and "BROWSER_PATH" in result.stderr
    assert "apt-get install chromium" in result.stderr and "HTML" in result.stderr
    assert old.read_bytes() == b"the user's picture"


def test_a_browser_that_hangs_is_given_up_on_after_the_timeout(tmp_path, monkeypatch):
    import plotly.graph_objects as go

    from rmt_core.viz import export

    hanging = tmp_path / "chromium"
    hanging.write_text("#!/bin/sh\nexec sleep 60\n")
    hanging.chmod(0o755)
    monkeypatch.setenv("BROWSER_PATH", str(hanging))
    monkeypatch.setenv("RMT_IMAGE_TIMEOUT_S", "2")
    monkeypatch.setattr(export, "_renderer", None)
    fig = go.Figure(go.Bar(x=[1, 2], y=[2, 1]))
    started = time.perf_counter()
    with pytest.raises(export.ExportError, match="did not start within 2 s"):
        export.figure_bytes(fig, "png")
    assert time.perf_counter() - started < 10
    started = time.perf_counter()  # the next image does not wait again
    with pytest.raises(export.ExportError, match="did not start"):
        export.figure_bytes(fig, "svg")
    assert time.perf_counter() - started < 1
    assert b"<html>" in export.figure_bytes(fig, "html")  # HTML needs no browser


def test_probe_without_chromium_writes_html_figures(ck, tmp_path, monkeypatch, capsys):
    from rmt_core.viz import export

    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-chromium"))
    monkeypatch.setattr(export, "_renderer", None)
    out = tmp_path / "probe"
    result = rmt(capsys, "probe", "--checkpoint", ck, "--segments", "2", "--samples", "8", "--intervention-samples",
                 "4", "--no-slots", "--no-attention", "--no-ablation", "--no-patching", "--no-progress",
                 "--device", "cpu", "--out", out)
    assert result.code == 0, result.err
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert figures and all(name.endswith((".html", ".js")) for name in figures), figures
    assert any("figures written as HTML" in note for note in json.loads((out / "results.json").read_text())["notes"])


def test_the_dashboard_says_why_images_are_off_and_keeps_html(monkeypatch, tmp_path):
    from app import downloads
    from rmt_core.viz import export

    monkeypatch.setattr(export, "_renderer", None)
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-chromium"))
    problem = downloads.image_problem()
    assert problem and "BROWSER_PATH" in problem and "HTML export needs none" in problem
    if shutil.which("chromium") or shutil.which("chromium-browser"):
        monkeypatch.delenv("BROWSER_PATH")
        assert downloads.image_problem() is None


# ----- 2. nothing the user has is replaced or destroyed ---------------------------------------------------------
def test_train_never_writes_into_a_folder_holding_a_checkpoint(ck, tmp_path, capsys, monkeypatch):
    target = tmp_path / "memorize"
    shutil.copytree(ck, target)
    before = snapshot(target)
    refused(rmt(capsys, *TRAIN, "--out", target), "already holds a checkpoint", "rmt train did not write")
    assert snapshot(target) == before


def test_train_never_writes_into_a_folder_holding_other_files(tmp_path, capsys):
    target = tmp_path / "notes"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    refused(rmt(capsys, *TRAIN, "--out", target), "already holds files", "new or empty folder")
    assert snapshot(target) == {"thesis.tex": hashlib.sha256(b"years of work").hexdigest()}


@pytest.mark.parametrize("flags, words", [
    (["--noise-file", "{tmp}/no-such-noise.txt"], "does not exist"),
    (["--noise-file", "builtin:decoys:2"], "between 0 and 1"),
    (["--noise-file", "{tmp}/no-such-noise.txt+questions:0.01"], "does not exist"),
    (["--stage-eval-segments", "1", "--stage-eval-noise-file", "{tmp}/no-such-noise.txt"], "does not exist"),
])
def test_train_with_a_wrong_source_leaves_no_run_folder(tmp_path, capsys, flags, words):
    out = tmp_path / "run"
    refused(rmt(capsys, *TRAIN, *[f.format(tmp=tmp_path) for f in flags], "--out", out), words)
    assert not out.exists()  # refused before anything was written, not after a stage of training


@pytest.mark.parametrize("size", [["--width", "17000", "--height", "17000"], ["--width", "16000", "--height", "16000"],
                                  ["--width", "4000", "--height", "4000", "--scale", "8"]])
def test_export_of_an_absurd_size_fails_and_leaves_the_old_picture(trace, tmp_path, capsys, size):
    good = tmp_path / "good.png"
    good.write_bytes(b"\x89PNG a good picture")
    refused(rmt(capsys, "export", "--trace", trace, "--figure", "answer", *size, "--out", good))
    assert good.read_bytes() == b"\x89PNG a good picture"


def test_export_never_replaces_a_picture_with_what_is_not_one(trace, tmp_path, capsys, monkeypatch):
    from rmt_core.viz import export

    class Junk:
        failure = None

        def render(self, fig, opts, timeout):
            return b"ok\n"  # what Chromium returned for a canvas it could not draw

    monkeypatch.setattr(export, "_image_renderer", lambda fmt: Junk())
    monkeypatch.setattr(export, "no_browser_reason", lambda: None)
    good = tmp_path / "good.png"
    good.write_bytes(b"\x89PNG a good picture")
    refused(rmt(capsys, "export", "--trace", trace, "--figure", "answer", "--out", good), "not a PNG image")
    assert good.read_bytes() == b"\x89PNG a good picture"
    assert [p.name for p in tmp_path.iterdir()] == ["good.png"]  # no temp file left either


# ----- 3. huge counts are refused before anything is allocated -------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["replay", "--segments", HUGE, "--out", "{tmp}/t"],
    ["sample", "--task", "memorize", "--segments", HUGE],
    ["probe", "--segments", HUGE, "--samples", "10", "--out", "{tmp}/p"],
    ["eval", "--segments", "1", "--samples", HUGE],
    ["eval", "--segments", "1", "--first-sample", HUGE],
    ["eval", "--segments", HUGE],
    ["replay", "--segments", "1000000", "--out", "{tmp}/t"],  # within the argument's range, beyond the sample's
    ["eval", "--segments", "1,2,1000000"],
    ["probe", "--segments", "2", "--samples", "1000000", "--out", "{tmp}/p"],
])
def test_huge_counts_are_refused_at_once(ck, tmp_path, capsys, monkeypatch, argv):
    no_work(monkeypatch)
    argv = [a.format(tmp=tmp_path) for a in argv]
    if argv[0] != "sample":
        argv += ["--checkpoint", str(ck)]
    result = rmt(capsys, *argv)
    refused(result)
    assert any(word in result.err for word in ("may hold", "holds in memory", "out of range")), result.err
    assert result.seconds < 2
    assert list(tmp_path.iterdir()) == []


def test_huge_counts_fail_under_a_memory_limit_without_allocating(ck, tmp_path):
    # Each case in a process whose address space is capped: a command that built the input first would die of
    # MemoryError (or run for hours); these end with their own message at once.
    code = textwrap.dedent(f"""
        import resource, sys, time
        resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))
        from rmt_cli.main import main
        for argv in (["replay", "--segments", "1000000", "--out", "{tmp_path}/t", "--checkpoint", "{ck}"],
                     ["sample", "--task", "memorize", "--segments", "1000000", "--segment-size", "64"],
                     ["probe", "--segments", "100000", "--samples", "1000", "--out", "{tmp_path}/p",
                      "--checkpoint", "{ck}"],
                     ["eval", "--segments", "1,700000", "--samples", "2", "--checkpoint", "{ck}"]):
            started = time.perf_counter()
            code = main(argv)
            print(argv[0], code, round(time.perf_counter() - started, 2), file=sys.stderr)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    lines = result.stderr.splitlines()
    assert result.returncode == 0 and len(lines) == 8, result.stderr
    for message, summary in zip(lines[::2], lines[1::2]):
        command, exit_code, seconds = summary.split()
        assert message.startswith(f"rmt {command}: error:") and ("may hold" in message or "in memory" in message)
        assert exit_code == "1" and float(seconds) < 2, summary


# ----- 4. output paths are checked before the work starts ------------------------------------------------------
@pytest.mark.parametrize("argv, words", [
    (["eval", "--segments", "1", "--samples", "4", "--json", "{folder}"], "is a folder"),
    (["eval", "--segments", "1", "--samples", "4", "--json", "/proc/rmt-lens-test.json"], "cannot write in /proc"),
    (["eval", "--segments", "1", "--samples", "4", "--json", "{file}/eval.json"], "is a file, not a folder"),
    (["flops", "--out", "{folder}"], "is a folder"),
    (["flops", "--figure", "{folder}", "--models", "125M"], "is a folder"),
    (["probe", "--segments", "2", "--samples", "8", "--out", "{file}"], "is a file, not a folder"),
    (["probe", "--segments", "2", "--samples", "8", "--out", "/proc/rmt-lens-test"], "cannot write in /proc"),
    (["train", "--out", "{file}"], "is a file, not a folder"),
    (["train", "--out", "/proc/rmt-lens-test"], "cannot write in /proc"),
    (["replay", "--segments", "2", "--out", "{file}/t"], "is a file, not a folder"),
    (["export", "--trace", "{trace}", "--figure", "answer", "--out", "{folder}"], "is a folder"),
    (["export", "--trace", "{trace}", "--table", "tokens", "--out", "/proc/rmt-lens-test.csv"], "cannot write"),
])
def test_unusable_output_paths_are_refused_before_any_work(ck, trace, tmp_path, capsys, monkeypatch, argv, words):
    if "/proc" in " ".join(argv) and not Path("/proc/self").exists():
        pytest.skip("no /proc here: a folder nobody may write in")
    folder, file = tmp_path / "folder", tmp_path / "file.txt"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep")
    file.write_text("the user's file")
    before = snapshot(tmp_path)
    no_work(monkeypatch)
    argv = [a.format(folder=folder, file=file, trace=trace) for a in argv]
    if argv[0] in ("eval", "probe", "replay"):
        argv += ["--checkpoint", str(ck)]
    if argv[0] == "train":
        argv = [*TRAIN, *argv[1:]]
    refused(rmt(capsys, *argv), words)
    assert snapshot(tmp_path) == before


# ----- 4 and 5. numbers that cannot work are usage errors that say what is allowed --------------------------------
@pytest.mark.parametrize("argv, words", [
    (["eval", "--segments", HUGE], "--segments"),
    (["eval", "--samples", "0"], "from 1 to 1,000,000"),
    (["eval", "--samples", "many"], "expected a whole number"),
    (["replay", "--segments", "2", "--attention-budget-mib", "nan", "--out", "x"], "finite number"),
    (["replay", "--segments", "-2", "--out", "x"], "from 1 to"),
    (["train", "--lr", "nan", "--out", "x"], "above 0"),
    (["train", "--lr", "inf", "--out", "x"], "at most 10"),
    (["train", "--dropout", "1.5", "--out", "x"], "below 1"),
    (["train", "--mem", "-3", "--out", "x"], "from 1 to 4,096"),
    (["train", "--mem", "0", "--out", "x"], "--mem"),
    (["train", "--layers", "0", "--out", "x"], "--layers"),
    (["train", "--threads", "-1", "--out", "x"], "--threads"),
    (["train", "--val-samples", "0", "--out", "x"], "--val-samples"),
    (["train", "--batch-size", "0", "--out", "x"], "--batch-size"),
    (["train", "--grad-clip", "-1", "--out", "x"], "--grad-clip"),
    (["train", "--target-accuracy", "1.5", "--out", "x"], "--target-accuracy"),
    (["train", "--time-budget-s", "nan", "--out", "x"], "--time-budget-s"),
    (["train", "--seed", "-1", "--out", "x"], "--seed"),
    (["train", "--val-multiples", "0", "--out", "x"], "--val-multiples"),
    (["export", "--scale", "nan"], "--scale"),
    (["export", "--width", "-100"], "--width"),
    (["export", "--height", "0"], "--height"),
    (["export", "--window", "-3"], "--window"),
    (["export", "--layer", "-1"], "--layer"),
    (["sample", "--task", "memorize", "--segments", "0"], "--segments"),
    (["sample", "--task", "memorize", "--segments", "2", "--segment-size", "-64"], "--segment-size"),
    (["probe", "--samples", "2", "--out", "x"], "from 4 to"),
    (["flops", "--tokens", "0"], "--tokens"),
    (["flops", "--segment", "0"], "--segment"),
    (["app", "--port", "70000"], "from 1 to 65,535"),
])
def test_numbers_that_cannot_work_are_one_line_usage_errors(tmp_path, capsys, monkeypatch, argv, words):
    monkeypatch.chdir(tmp_path)
    no_work(monkeypatch)
    result = rmt(capsys, *argv)
    refused(result, words, f"rmt {argv[0]}: error: argument")
    assert list(tmp_path.iterdir()) == []


def test_a_segment_size_the_backbone_cannot_hold_is_refused_with_the_limit(tmp_path, capsys):
    result = rmt(capsys, *TRAIN[:3], "--stages", "1x600", *TRAIN[5:], "--out", tmp_path / "run")
    refused(result, "exceeds the backbone's 512", "--segment-size")
    assert not (tmp_path / "run").exists()


def test_a_loss_that_turns_nan_stops_training_with_one_line(tmp_path, capsys, monkeypatch):
    import rmt_core.model as model_module

    real = model_module.F.cross_entropy
    monkeypatch.setattr(model_module.F, "cross_entropy", lambda *a, **k: real(*a, **k) * math.nan)
    result = rmt(capsys, *TRAIN, "--out", tmp_path / "run")
    refused(result, "loss became nan", "lower --lr")
    assert "trained checkpoint written" not in result.out
    assert not (tmp_path / "run" / "config.json").exists()


# ----- 4. a damaged resume state ------------------------------------------------------------------------------
@pytest.mark.parametrize("damage, words", [
    (lambda r: (r / "resume" / "state.json").write_text('{"stage": 0, "step":'), "state.json is damaged"),
    (lambda r: (r / "resume" / "state.json").write_text('{"stage": "x", "step": 2, "version": 1}'), "records stage"),
    (lambda r: (r / "resume" / "model.safetensors").write_bytes(b"\x00" * 100), "resume state"),
    (lambda r: (r / "resume" / "optimizer.safetensors").unlink(), "resume state"),
    (lambda r: (r / "resume" / "state.json").write_text('{"stage": 7, "step": 0, "version": 1}'), "stage 8"),
])
def test_a_damaged_resume_state_is_one_line(run, tmp_path, capsys, damage, words):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    damage(copy)
    before = snapshot(copy)
    refused(rmt(capsys, *TRAIN, "--out", copy, "--resume"), words)
    assert snapshot(copy) == before


def test_resume_without_a_run_and_a_second_run_in_the_same_folder_are_refused(run, tmp_path, capsys):
    refused(rmt(capsys, *TRAIN, "--out", tmp_path / "nothing", "--resume"), "nothing to resume")
    refused(rmt(capsys, *TRAIN, "--out", run), "already holds a run", "--resume")


# ----- 4 and 5. checkpoint config.json, weights and tokenizer -------------------------------------------------
def _json_edit(name: str, change):
    """A damage that rewrites the JSON file `name` of a folder after `change(parsed)`."""
    def damage(folder: Path) -> None:
        file = folder / name
        parsed = json.loads(file.read_text())
        change(parsed)
        file.write_text(json.dumps(parsed))

    return damage


def _config(change):
    return _json_edit("config.json", change)


def _nan_weights(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    state["memory"][0, 0] = math.nan
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


CONFIG_FAULTS = {
    "num_mem_tokens -3": (_config(lambda c: c["rmt"].update(num_mem_tokens=-3)), "rmt.num_mem_tokens is -3"),
    "num_mem_tokens string": (_config(lambda c: c["rmt"].update(num_mem_tokens="ten")), "rmt.num_mem_tokens"),
    "segment_size float": (_config(lambda c: c["rmt"].update(segment_size=24.5)), "rmt.segment_size"),
    "trained_segments -4": (_config(lambda c: c["rmt"].update(trained_segments=-4)), "rmt.trained_segments"),
    "labels empty": (_config(lambda c: c["rmt"].update(labels=[])), "rmt.labels"),
    "vocab 1e12": (_config(lambda c: c["backbone"].update(vocab_size=10**12)), "backbone.vocab_size"),
    "vocab larger than the weights": (_config(lambda c: c["backbone"].update(vocab_size=2**21)), "shape"),
    "layers 1000": (_config(lambda c: c["backbone"].update(num_hidden_layers=1000)), "says 1000 layers"),
    "hidden string": (_config(lambda c: c["backbone"].update(hidden_size="128")), "backbone.hidden_size"),
    "dtype int8": (_config(lambda c: c.update(dtype="int8")), "dtype is 'int8'"),
    "dtype not the weights'": (_config(lambda c: c.update(dtype="bfloat16")), "config.json says dtype bfloat16"),
    "NaN weights": (_nan_weights, "NaN or infinite"),
    "no tokenizer.json": (lambda f: (f / "tokenizer.json").unlink(), "tokenizer.json is missing"),
}


@pytest.mark.parametrize("name", CONFIG_FAULTS)
def test_a_bad_checkpoint_is_one_line(ck, tmp_path, capsys, name):
    damage, words = CONFIG_FAULTS[name]
    folder = tmp_path / "ck"
    shutil.copytree(ck, folder)
    damage(folder)
    result = rmt(capsys, "eval", "--checkpoint", folder, "--segments", "1", "--samples", "2", "--no-progress",
                 "--device", "cpu")
    refused(result, "rmt eval: error:", words)
    assert result.seconds < 20


# ----- 4 and 6. damaged traces ---------------------------------------------------------------------------------
def _manifest(change):
    return _json_edit("manifest.json", change)


def _array(name, make):
    return lambda folder: np.save(folder / f"{name}.npy", make(np.load(folder / f"{name}.npy")), allow_pickle=True)


def _nan_memory(memory):
    memory = memory.copy()
    memory[2] = np.nan
    return memory


TRACE_FAULTS = {
    "object memory": (_array("memory", lambda a: np.array([[1, "a"]], dtype=object)), "memory_norms", "memory.npy"),
    "roles out of range": (_array("roles", lambda a: np.full_like(a, 9)), "tokens", "outside the roles"),
    "memory of another shape": (_array("memory", lambda a: a[:2]), "memory_norms", "the manifest says"),
    "n_segments a word": (_manifest(lambda m: m.update(n_segments="three")), "answer", "n_segments is 'three'"),
    "n_segments huge": (_manifest(lambda m: m.update(n_segments=10**12)), "answer", "n_segments"),
    "answer 99": (_manifest(lambda m: m.update(answer=99)), "answer", "answer is 99"),
    "answer a word": (_manifest(lambda m: m.update(answer="garden")), "answer", "answer is 'garden'"),
    "file outside": (_manifest(lambda m: m["arrays"]["memory"].update(file="../../secret.npy")), "memory_norms",
                     "plain name inside the trace folder"),
    "link outside": (lambda f: ((f / "memory.npy").unlink(), (f / "memory.npy").symlink_to(f.parent / "secret.npy")),
                     "memory_norms", "outside the trace folder"),
    "recorded not an object": (_manifest(lambda m: m.update(recorded="all")), "read_attention", "must be JSON objects"),
    "recorded segments unsorted": (_manifest(lambda m: m["recorded"].update(attention_segments=[2, 0])),
                                   "read_attention", "recorded.attention_segments"),
    "labels a string": (_manifest(lambda m: m["model"].update(labels="abc")), "answer", "model.labels"),
    "dtype object": (_manifest(lambda m: m["arrays"]["memory"].update(dtype="object")), "memory_norms",
                     "arrays.memory.dtype"),
    "shape negative": (_manifest(lambda m: m["arrays"]["roles"].update(shape=[-3, 5])), "tokens", "arrays.roles.shape"),
    "NaN memory in the projection": (_array("memory", _nan_memory), "memory_projection",
                                     "memory after segment 1 holds NaN"),
}


@pytest.mark.parametrize("name", TRACE_FAULTS)
def test_a_damaged_trace_is_one_line(trace, tmp_path, capsys, name):
    damage, figure, words = TRACE_FAULTS[name]
    folder = tmp_path / "trace"
    shutil.copytree(trace, folder)
    np.save(tmp_path / "secret.npy", np.zeros((4, 4, 32), dtype=np.float32))
    damage(folder)
    table = figure in ("tokens",)
    out = tmp_path / ("out.csv" if table else "out.html")
    result = rmt(capsys, "export", "--trace", folder, "--table" if table else "--figure", figure, "--out", out)
    refused(result, "rmt export: error:", words)
    assert not out.exists()


# ----- 6. other -----------------------------------------------------------------------------------------------
def test_sigterm_during_a_replay_leaves_no_partial_folder(ck, tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "rmt_cli.main", "replay", "--checkpoint", str(ck), "--segments",
                                "20000", "--out", str(tmp_path / "t"), "--quiet", "--device", "cpu"],
                               stderr=subprocess.PIPE, text=True, cwd=REPO)
    deadline = time.monotonic() + 240  # start-up and loading only; generous for a loaded machine
    while not list(tmp_path.glob("t.partial-*")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert list(tmp_path.glob("t.partial-*")), "the replay never started writing"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143 and err == "rmt replay: terminated\n"
    assert list(tmp_path.iterdir()) == []


def test_app_with_an_unknown_host_is_one_line_before_serving(capsys):
    result = rmt(capsys, "app", "--host", "bogus.invalid", "--no-warm-up")
    refused(result, "--host bogus.invalid is not an address")
    assert "serving on" not in result.err


def test_app_on_a_port_in_use_is_one_line_before_serving(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = rmt(capsys, "app", "--port", port, "--no-warm-up")
    refused(result, f"port {port} on 127.0.0.1 is in use")
    assert "serving on" not in result.err


def test_train_with_an_unknown_backbone_never_reaches_the_network(tmp_path, capsys, monkeypatch):
    def offline(*args, **kwargs):
        raise AssertionError("rmt train reached for the network")

    monkeypatch.setattr(socket.socket, "connect", offline)
    monkeypatch.setattr(socket, "getaddrinfo", offline)
    result = rmt(capsys, *TRAIN, "--backbone", "bogus", "--out", tmp_path / "run")
    refused(result, "--backbone bogus is neither", "never downloaded")
    assert not (tmp_path / "run").exists()


def test_eval_json_and_model_cards_record_no_absolute_paths(ck, run, tmp_path, capsys):
    out = tmp_path / "eval.json"
    result = rmt(capsys, "eval", "--checkpoint", ck.resolve(), "--segments", "1", "--samples", "2", "--no-progress",
                 "--device", "cpu", "--json", out.resolve())
    assert result.code == 0, result.err
    written = out.read_text()
    assert str(ck.parent) not in written and str(tmp_path) not in written
    assert json.loads(written)["checkpoint"]["path"] == f".../{ck.parent.name}/{ck.name}"
    for name in ("README.md", "config.json", "stages/01-1x24/config.json"):
        text = (run / name).read_text()
        assert str(run.parent) not in text, name


def test_probe_results_record_no_absolute_paths(ck, tmp_path, capsys):
    noise = tmp_path / "noise.txt"
    noise.write_text("".join(f"Sentence number {i} says the weather was mild and the shops stayed open late.\n"
                             for i in range(40)))
    out = tmp_path / "probe"
    result = rmt(capsys, "probe", "--checkpoint", ck.resolve(), "--noise-file", noise.resolve(), "--segments", "2",
                 "--samples", "16", "--no-slots", "--no-ablation", "--no-patching", "--no-attention", "--figures",
                 "none", "--no-progress", "--out", out.resolve())
    assert result.code == 0, result.err
    for name in ("results.json", "summary.md"):
        if (out / name).exists():
            assert str(tmp_path) not in (out / name).read_text(), name
    settings = json.loads((out / "results.json").read_text())["settings"]
    assert settings["noise_file"] == f".../{tmp_path.name}/noise.txt"


def test_an_unexpected_error_is_one_line_naming_its_traceback_file(ck, tmp_path, capsys, monkeypatch):
    import rmt_core.evaluate

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    monkeypatch.setattr(rmt_core.evaluate, "evaluate", lambda *a, **k: {}["a key that is not there"])
    result = rmt(capsys, "eval", "--checkpoint", ck, "--segments", "1", "--samples", "2", "--device", "cpu")
    refused(result, "unexpected error (KeyError", "this is a bug", "--debug")
    [log] = tmp_path.glob("rmt-eval-*.txt")
    assert str(log) in result.err and "Traceback" in log.read_text()
