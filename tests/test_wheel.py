"""rmt-lens installed the way a user installs it: a wheel built from this tree (through its source distribution),
installed without -e into a fresh virtual environment in a temporary folder, and run from a working folder
outside the repository with every network route closed.

The fresh environment gets the installed wheel and nothing else of ours. The dependencies (torch, transformers,
streamlit, ...) come from the environment running this test through a .pth line naming its site-packages: a plain
path line, so the .pth files inside that folder (the editable install's import hook among them) are not run and
the repository stays off sys.path. The first test checks exactly that.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import urllib.request
from pathlib import Path

import pytest

from conftest import serve_app

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("rmt_core", "rmt_cli", "probes", "app")
CLOSED = "http://127.0.0.1:9"  # a proxy nobody listens on: any attempt to reach the network fails at once


def repo_version() -> str:
    text = (REPO / "rmt_core" / "__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE).group(1)


def shipped_names() -> set[str]:
    return {p.name for p in (REPO / "checkpoints").iterdir() if (p / "config.json").is_file()}


def offline_env(venv: Path | None = None) -> dict[str, str]:
    """This process's environment with no network, none of our settings, and `venv` (when given) first on PATH."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "RMT_CHECKPOINT", "RMT_JS_DIR")}
    if venv is not None:
        env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv))
    env.update(PYTHONNOUSERSITE="1", PYTHONUNBUFFERED="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", NO_PROXY="127.0.0.1,localhost",
               no_proxy="127.0.0.1,localhost")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env[name] = CLOSED
    return env


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, command))} failed ({done.returncode}):\n" \
                                 f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def dependency_dirs() -> list[str]:
    """The site-packages of the environment running this test: where the installed wheel finds its dependencies."""
    return sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})


def source_copy(target: Path) -> Path:
    """The files a clone of this tree holds (tracked, plus new files git does not ignore), copied to `target`."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        pytest.skip("the wheel is built from the files of a git checkout; this tree is not one (or git is missing)")
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the work tree is not part of the build
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv folder, its site-packages, a working folder outside the repository, the environment to run in)."""
    pytest.importorskip("build", reason="the wheel test builds with `python -m build`: pip install -e '.[test]'")
    root = tmp_path_factory.mktemp("wheel")
    assert REPO not in root.resolve().parents
    source = source_copy(root / "src")
    dist = root / "dist"
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(source)], root,
        offline_env())
    wheels = list(dist.glob("rmt_lens-*.whl"))
    assert len(wheels) == 1, sorted(p.name for p in dist.iterdir())

    venv = root / "venv"
    run([sys.executable, "-m", "venv", str(venv)], root, offline_env())
    python = venv / "bin" / "python"
    env = offline_env(venv)
    run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheels[0])], root, env)
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root,
                    env).stdout.strip()).resolve()
    (site / "rmt_lens_test_dependencies.pth").write_text("".join(f"{d}\n" for d in dependency_dirs()))
    shutil.rmtree(source)  # pytest keeps its last temporary folders: keep only the environment
    shutil.rmtree(dist)
    work = root / "work"
    work.mkdir()
    return venv, site, work, env


def test_the_installed_packages_come_from_the_wheel(installed):
    venv, site, work, env = installed
    report = run([str(venv / "bin" / "python"), "-c", textwrap.dedent("""
        import importlib, importlib.metadata, json, sys
        modules = {name: importlib.import_module(name).__file__ for name in ("rmt_core", "rmt_cli", "probes", "app")}
        from rmt_core import checkpoint
        from rmt_core.viz import bertviz_offline
        print(json.dumps({
            "modules": modules, "sys_path": sys.path,
            "version": importlib.metadata.version("rmt-lens"),
            "default": str(checkpoint.default_checkpoint()),
            "shipped": {k: str(v) for k, v in checkpoint.shipped_checkpoints().items()},
            "js": {k: str(v) for k, v in bertviz_offline.js_library_paths().items()},
        }))
    """)], work, env).stdout
    found = json.loads(report)
    for name in PACKAGES:
        assert Path(found["modules"][name]).resolve().is_relative_to(site.resolve()), (name, found["modules"][name])
    dependencies = {Path(d).resolve() for d in dependency_dirs()}
    for entry in found["sys_path"]:
        resolved = Path(entry).resolve() if entry else work.resolve()  # "" stands for the working folder
        if resolved in dependencies:  # this environment's site-packages (inside the repository when .venv is)
            continue
        assert resolved != REPO and REPO not in resolved.parents, f"the repository is on sys.path: {entry}"
        if resolved != site:
            assert not any((resolved / name).exists() for name in PACKAGES), f"a copy of ours on sys.path: {entry}"
    assert found["version"] == repo_version()
    packaged = site / "rmt_core" / "checkpoints"
    assert Path(found["default"]) == packaged / "memorize"
    assert found["shipped"] == {name: str(packaged / name) for name in sorted(shipped_names())}
    assert all(Path(p).parent == site / "rmt_core" / "vendor" for p in found["js"].values())
    for name in ("LICENSE", "rmt_core/vendor/LICENSE.d3.txt", "rmt_core/vendor/LICENSE.jquery.txt"):
        assert (site / f"rmt_lens-{repo_version()}.dist-info" / "licenses" / name).is_file(), name

    version = run(["rmt", "--version"], work, env).stdout
    assert version.strip() == f"rmt (RMT Lens) {repo_version()}"
    chosen = run([str(venv / "bin" / "python"), "-c", "from rmt_core import checkpoint; "
                  "print(checkpoint.default_checkpoint())"], work, {**env, "RMT_CHECKPOINT": str(work / "mine")})
    assert chosen.stdout.strip() == str(work / "mine")  # RMT_CHECKPOINT still overrides the packaged default


def test_replay_export_and_probe_run_on_the_packaged_default_checkpoint(installed):
    venv, site, work, env = installed
    run(["rmt", "replay", "--segments", "2", "--full-attention", "1", "--out", "trace", "--quiet"], work, env)
    manifest = json.loads((work / "trace" / "manifest.json").read_text())
    packaged = site / "rmt_core" / "checkpoints"
    assert Path(manifest["checkpoint"]["path"]).parts[-3:] == ("rmt_core", "checkpoints", "memorize")  # portable
    from rmt_core.checkpoint import checkpoint_identity  # the repository's copy: the wheel ships the same weights

    assert manifest["checkpoint"]["sha256"] == checkpoint_identity(REPO / "checkpoints" / "memorize")["sha256"]

    run(["rmt", "export", "--trace", "trace", "--figure", "head_view", "--segment", "1", "--out", "head.html"],
        work, env)
    html = (work / "head.html").read_text()
    assert "[mem 0]" in html and "d3js.org v5" in html  # d3 inlined from the wheel
    assert 'src="http' not in html and "cdnjs" not in html

    run(["rmt", "probe", "--segments", "2", "--samples", "24", "--no-slots", "--no-ablation", "--no-patching",
         "--no-attention", "--figures", "none", "--no-progress", "--out", "probe"], work, env)
    results = json.loads((work / "probe" / "results.json").read_text())
    assert results["complete"] and Path(results["checkpoint"]["path"]).parts[-3:] == ("rmt_core", "checkpoints",
                                                                                       "memorize")
    assert {row["target"] for row in results["probes"]} >= {"answer"}

    # --checkpoint still chooses another checkpoint than the packaged default
    run(["rmt", "replay", "--checkpoint", str(packaged / "detect"), "--segments", "2", "--out", "trace_detect",
         "--quiet"], work, env)
    assert json.loads((work / "trace_detect" / "manifest.json").read_text())["checkpoint"]["name"] == "detect"


def test_rmt_app_serves_and_its_replay_page_renders(installed):
    venv, site, work, env = installed
    with serve_app(["rmt", "app"], work / "app.log", env, cwd=work, wait_s=120) as url:
        with urllib.request.urlopen(url, timeout=10) as reply:
            assert b"<html" in reply.read().lower()  # the dashboard's page, served by the installed `rmt app`

    # The Replay page, the dashboard's first, run by Streamlit's AppTest from the installed app/main.py.
    report = run([str(venv / "bin" / "python"), "-c", textwrap.dedent("""
        import json, pathlib
        import app
        from streamlit.testing.v1 import AppTest

        at = AppTest.from_file(str(pathlib.Path(app.__file__).parent / "main.py"), default_timeout=240).run()
        print(json.dumps({
            "exceptions": [e.value for e in at.exception], "errors": [e.value for e in at.error],
            "checkpoint": at.sidebar.selectbox(key="checkpoint_choice").value,
            "choices": at.sidebar.selectbox(key="checkpoint_choice").options,
            "titles": [json.loads(c.proto.spec)["layout"].get("title", {}).get("text", "")
                       for c in at.get("plotly_chart")],
            "views": [v.proto.srcdoc for v in at.get("iframe")],
        }))
    """)], work, env).stdout
    page = json.loads(report.strip().splitlines()[-1])
    assert not page["exceptions"] and not page["errors"], (page["exceptions"], page["errors"])
    assert page["checkpoint"] == "memorize" and set(page["choices"]) >= shipped_names()  # the packaged ones
    assert any(t.startswith("Read:") for t in page["titles"]), page["titles"]
    assert any(t.startswith("Read: tokens attending to memory") for t in page["titles"]), page["titles"]
    assert len(page["views"]) >= 1 and all("[mem 0]" in v and "cdnjs" not in v for v in page["views"])  # one view at a time
