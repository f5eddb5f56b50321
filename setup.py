"""The one build step pyproject.toml cannot declare: the shipped checkpoints go into the wheel.

The repository keeps them at checkpoints/<name>/ (their one copy in git, beside the packages); a built wheel
holds them as rmt_core/checkpoints/<name>/, where rmt_core.checkpoint looks first. An editable install gets
no copy: there rmt_core.checkpoint finds checkpoints/ beside the package. Everything else is in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SOURCE = Path(__file__).resolve().parent / "checkpoints"
TARGET = Path("rmt_core") / "checkpoints"  # inside the wheel


def checkpoint_files() -> list[Path]:
    """Every file of every checkpoint folder (one with a config.json) under checkpoints/, dot files aside."""
    if not SOURCE.is_dir():
        return []
    folders = [f for f in sorted(SOURCE.iterdir()) if (f / "config.json").is_file()]
    return [p for f in folders for p in sorted(f.iterdir()) if p.is_file() and not p.name.startswith(".")]


class BuildWithCheckpoints(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / TARGET
        shutil.rmtree(target, ignore_errors=True)  # a build folder left by an earlier build keeps no stale files
        for file in checkpoint_files():
            self.mkpath(str(target / file.parent.name))
            self.copy_file(str(file), str(target / file.parent.name / file.name))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        copied = [] if self.editable_mode else [
            str(Path(self.build_lib) / TARGET / f.parent.name / f.name) for f in checkpoint_files()]
        return super().get_outputs(include_bytecode) + copied


setup(cmdclass={"build_py": BuildWithCheckpoints})
