"""The `rmt` entry point: help lists the subcommands of SPEC section 7, and an
RMTError inside a command becomes one line on stderr with exit 1."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from rmt_cli import main as cli
from rmt_core.errors import CheckpointError, ProbeError, ReplayError, RMTError, TaskError, TraceError, TrainError

# SPEC section 7, in its order.
SPEC_COMMANDS = ["train", "eval", "replay", "probe", "export", "sample", "flops", "app", "import"]
REPO = Path(__file__).resolve().parents[1]


def rmt_command() -> list[str]:
    """The installed console script beside this interpreter, else the module (same code path)."""
    script = Path(sys.executable).parent / "rmt"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "rmt_cli.main"]


def run_rmt(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", code, *args] if code else [*rmt_command(), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)


def fake_command(run, arguments=lambda parser: None) -> SimpleNamespace:
    return SimpleNamespace(HELP="a fake command for tests", add_arguments=arguments, run=run)


def use_fake(monkeypatch, name: str, module) -> None:
    """Make cli find `module` for subcommand `name`; every other name loads as usual."""
    real = cli._load
    monkeypatch.setattr(cli, "_load", lambda n: module if n == name else real(n))


# ----- help ------------------------------------------------------------------------------------------------
def test_rmt_help_runs_and_lists_every_subcommand_in_spec_order():
    result = run_rmt("--help")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    listed = [line.split()[0] for line in lines if line.startswith("    ") and line.split()[0] in SPEC_COMMANDS]
    assert listed == SPEC_COMMANDS, result.stdout
    assert result.stdout.startswith("usage: rmt")


def test_cli_knows_exactly_the_spec_subcommands():
    assert list(cli.COMMANDS) == SPEC_COMMANDS


def test_version_is_the_package_version(capsys):
    from rmt_core import __version__

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"rmt (RMT Lens) {__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


def test_no_subcommand_prints_help_and_exits_1(capsys):
    assert cli.main([]) == 1
    out = capsys.readouterr().out
    assert "usage: rmt" in out and all(name in out for name in SPEC_COMMANDS)


@pytest.mark.parametrize("name", SPEC_COMMANDS)
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main([name, "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: rmt {name}")


def test_unknown_subcommand_is_a_usage_error_of_one_line_exit_1(capsys):
    assert cli.main(["no-such-command"]) == 1
    err = capsys.readouterr().err
    assert "invalid choice" in err and err.count("\n") == 1 and "see rmt --help" in err


# ----- errors inside a command -----------------------------------------------------------------------------
@pytest.mark.parametrize("error_type", [CheckpointError, TaskError, TraceError, ReplayError, ProbeError, TrainError, RMTError])
def test_rmt_error_inside_a_command_is_one_line_and_exit_1(error_type, monkeypatch, capsys):
    def run(args):
        raise error_type(f"{args.checkpoint} is broken\nsecond line;\tfix it")

    use_fake(monkeypatch, "eval", fake_command(run, lambda p: p.add_argument("--checkpoint")))
    assert cli.main(["eval", "--checkpoint", "ck"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "rmt eval: error: ck is broken second line; fix it\n"
    assert captured.out == ""


def test_rmt_error_in_a_real_process_exits_1_with_one_line():
    code = textwrap.dedent(
        """
        import sys, types
        from rmt_core.errors import CheckpointError

        def run(args):
            raise CheckpointError("checkpoints/x/config.json is missing;\\nrun rmt train")

        fake = types.ModuleType("rmt_cli.commands.replay")
        fake.HELP, fake.add_arguments, fake.run = "fake", lambda parser: None, run
        sys.modules["rmt_cli.commands.replay"] = fake
        from rmt_cli.main import main
        sys.exit(main(sys.argv[1:]))
        """
    )
    result = run_rmt("replay", code=code)
    assert result.returncode == 1
    assert result.stderr == "rmt replay: error: checkpoints/x/config.json is missing; run rmt train\n"
    assert "Traceback" not in result.stderr


def test_a_command_returns_its_exit_code_and_gets_its_arguments(monkeypatch):
    seen = {}

    def run(args):
        seen.update(vars(args))
        return args.code

    use_fake(monkeypatch, "probe", fake_command(run, lambda p: p.add_argument("--code", type=int, default=0)))
    assert cli.main(["probe"]) == 0
    assert cli.main(["probe", "--code", "3"]) == 3
    assert seen["command"] == "probe" and seen["code"] == 3


def test_a_command_returning_none_exits_0(monkeypatch):
    use_fake(monkeypatch, "app", fake_command(lambda args: None))
    assert cli.main(["app"]) == 0


def test_bad_arguments_to_a_command_are_usage_errors(monkeypatch, capsys):
    use_fake(monkeypatch, "probe", fake_command(lambda a: 0, lambda p: p.add_argument("--samples", type=int)))
    assert cli.main(["probe", "--samples", "many"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rmt probe: error: argument --samples") and err.count("\n") == 1


def test_interrupt_exits_130_with_one_line(monkeypatch, capsys):
    def run(args):
        raise KeyboardInterrupt

    use_fake(monkeypatch, "train", fake_command(run))
    assert cli.main(["train"]) == 130
    assert capsys.readouterr().err == "rmt train: interrupted\n"


def test_a_bug_is_one_line_that_says_so_and_names_the_traceback_file(monkeypatch, capsys, tmp_path):
    # Only RMTError means bad input; anything else is a bug: one line that says so, its traceback in a file.
    def run(args):
        raise ZeroDivisionError("bug")

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    use_fake(monkeypatch, "sample", fake_command(run))
    assert cli.main(["sample"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("rmt sample: unexpected error (ZeroDivisionError: bug); this is a bug in RMT Lens")
    [log] = tmp_path.glob("rmt-sample-*.txt")
    assert str(log) in err and "ZeroDivisionError: bug" in log.read_text() and "Traceback" in log.read_text()


@pytest.mark.parametrize("argv", [["--debug", "sample"], ["sample", "--debug"]])
def test_debug_lets_the_traceback_through(argv, monkeypatch):
    def run(args):
        raise ZeroDivisionError("bug")

    use_fake(monkeypatch, "sample", fake_command(run))
    with pytest.raises(ZeroDivisionError):
        cli.main(argv)


def test_train_and_eval_run_where_no_plotting_package_is_installed(tmp_path):
    # A GPU machine may hold torch and transformers and none of the dashboard's packages: `rmt train` and
    # `rmt eval` must still build their parser and run (before, the export command's help imported plotly).
    code = textwrap.dedent("""
        import sys
        for name in ("plotly", "kaleido", "bertviz", "streamlit"):
            sys.modules[name] = None  # any import of them raises ImportError
        from rmt_cli.main import main
        out = sys.argv[1]
        code = main(["train", "--task", "memorize", "--out", out, "--stages", "1x32", "--hidden-size", "16",
                     "--layers", "1", "--heads", "2", "--max-steps", "2", "--eval-every", "2", "--val-samples", "4",
                     "--batch-size", "2", "--device", "cpu", "--threads", "1", "--quiet"])
        code = code or main(["eval", "--checkpoint", out, "--segments", "1", "--samples", "2", "--device", "cpu",
                             "--no-progress"])
        sys.exit(code)
    """)
    result = run_rmt(str(tmp_path / "run"), code=code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert "accuracy" in result.stdout
