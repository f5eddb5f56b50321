"""`rmt app`: serve the Streamlit dashboard (app/main.py), on localhost unless --host says otherwise.

It runs `streamlit run` in this process and, meanwhile, fills the dashboard's caches with what the first page
asks for (the default checkpoint and its ready sample, or with --trace the trace's statistics), so the first
page a browser opens draws without waiting for them. `--trace DIR` opens a trace folder written by
`rmt replay`, of any length.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from pathlib import Path

from rmt_cli.commands import whole
from rmt_core.errors import CheckpointError, RMTError

HELP = "open the dashboard in a browser (Streamlit, localhost only by default)"


def app_script() -> Path:
    """The dashboard's entry script, app/main.py, beside rmt_core (editable install or source tree)."""
    import app

    for folder in list(getattr(app, "__path__", [])):
        script = Path(folder) / "main.py"
        if script.is_file():
            return script
    raise RMTError("the dashboard (app/main.py) is not installed; reinstall rmt-lens (pip install -e .)")


def streamlit_arguments(host: str = "127.0.0.1", port: int = 8501, browser: bool = False) -> list[str]:
    """Arguments of `streamlit` that serve the dashboard."""
    return [
        "run", str(app_script()),
        "--server.address", host, "--server.port", str(port), "--server.headless", "false" if browser else "true",
        "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer",
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="checkpoint folder to open (default: the shipped default, "
                        "checkpoints/memorize, or $RMT_CHECKPOINT)")
    parser.add_argument("--trace", help="a trace folder written by rmt replay to open (any length; the sidebar "
                        "can open others)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                        "only; 0.0.0.0 serves every network interface)")
    parser.add_argument("--port", type=whole(1, 65535), default=8501, help="port (default 8501)")
    parser.add_argument("--browser", action="store_true", help="also open a browser tab")
    parser.add_argument("--no-warm-up", action="store_true",
                        help="do not load the default checkpoint and sample before the first page asks for them")


def check_address(host: str, port: int) -> None:
    """RMTError unless this machine can listen on host:port now (a known address, a free port)."""
    import errno
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise RMTError(f"--host {host} is not an address of this machine ({reason}); use 127.0.0.1 (this "
                       "machine only) or 0.0.0.0 (every interface)") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            probe.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise RMTError(f"port {port} on {host} is in use by another program; pass --port with a free "
                               "one, such as --port 8502") from None
            raise RMTError(f"cannot listen on {host}:{port} ({error.strerror}); use --host 127.0.0.1 or another "
                           "--port") from None


def _warm_up() -> None:
    """Fill the dashboard's caches once the Streamlit runtime exists (caches live in it)."""
    import logging

    quiet = logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context")
    level = quiet.level
    try:
        from streamlit.runtime import Runtime

        deadline = time.monotonic() + 60
        while not Runtime.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        level = quiet.level  # Streamlit sets its loggers' levels as it starts
        quiet.setLevel(logging.ERROR)  # "missing ScriptRunContext": expected outside a page run
        started = time.perf_counter()
        from app import state

        if state.warm_up():
            what = "trace" if os.environ.get(state.TRACE_ENV) else "default checkpoint and sample"
            print(f"rmt app: {what} ready ({time.perf_counter() - started:.1f} s)", file=sys.stderr, flush=True)
        else:
            print("rmt app: no default checkpoint yet (checkpoints/memorize or $RMT_CHECKPOINT); the dashboard "
                  "asks for a checkpoint folder", file=sys.stderr, flush=True)
    except Exception as error:  # the page shows the same problem, in one line, when it asks
        print(f"rmt app: warm-up skipped ({error})", file=sys.stderr, flush=True)
    finally:
        quiet.setLevel(level)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def served(arguments=(), env: dict | None = None, log: str | Path | None = None, port: int | None = None,
           seconds: float = 120, cwd: str | Path | None = None, command: list[str] | None = None,
           replace_env: bool = False):
    """Run `COMMAND --port PORT ARGUMENTS` (COMMAND: this Python's `rmt app` unless given, e.g. an installed
    `rmt app`) in a child process of its own process group until its health check answers; yield (url,
    process); stop the group on the way out. For tests and benchmarks that drive the dashboard. `env` adds to
    this process's environment (replaces it with replace_env); `port`: a free one when None. RMTError, with the
    end of its output, when it does not serve within `seconds`."""
    import subprocess
    import urllib.request

    command = list(command or [sys.executable, "-m", "rmt_cli.main", "app"])
    port = port or free_port()
    output = open(log, "wb") if log else subprocess.DEVNULL
    environment = dict(env or {}) if replace_env else {**os.environ, **(env or {})}
    process = subprocess.Popen([*command, "--port", str(port), *arguments],
                               env={**environment, "PYTHONUNBUFFERED": "1"}, cwd=cwd, stdout=output,
                               stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + seconds
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                    if reply.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                said = Path(log).read_text(errors="replace")[-2000:] if log else ""
                raise RMTError(f"rmt app did not serve {url} within {seconds:.0f} s: {said}")
            time.sleep(0.05)
        yield url, process
    finally:
        import signal

        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if log:
            output.close()


def run(args) -> int:
    if args.checkpoint:
        folder = Path(args.checkpoint)
        if not (folder / "config.json").is_file():
            raise CheckpointError(f"{folder} is not a checkpoint folder (no config.json); pass --checkpoint with one")
        os.environ["RMT_CHECKPOINT"] = str(folder.resolve())
    if args.trace:
        from rmt_core.trace import Trace

        Trace.open(args.trace)  # a missing, partial or damaged trace fails here, in one line
        os.environ["RMT_TRACE"] = str(Path(args.trace).resolve())
    check_address(args.host, args.port)
    arguments = streamlit_arguments(args.host, args.port, args.browser)
    print(f"rmt app: serving on http://{args.host}:{args.port} (Ctrl+C stops it)", file=sys.stderr, flush=True)
    if not args.no_warm_up:
        threading.Thread(target=_warm_up, name="rmt-app-warm-up", daemon=True).start()
    from streamlit.web import cli as streamlit_cli

    try:
        streamlit_cli.main(arguments, prog_name="streamlit", standalone_mode=False)
    except KeyboardInterrupt:
        return 130
    except SystemExit as exit_:
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 1
    return 0
