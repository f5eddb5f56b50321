"""Hugging Face Hub ids as local folders, through the Hugging Face cache (`huggingface_hub`).

    local_path("checkpoints/memorize")       an existing file or folder: itself
    local_path("booydar/rmt-gpt2-babilong-qa1")   a Hub id: the folder of its snapshot in the cache

A Hub id downloads into the cache when the machine is online and reads from the cache alone when
HF_HUB_OFFLINE=1 (then nothing touches the network). The cache is HF_HUB_CACHE, else HF_HOME/hub, else
~/.cache/huggingface/hub, read when a call is made (not when the module is imported), so a test or a user can
point it elsewhere at any time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from rmt_core.errors import RMTError

# owner/name (a checkpoint, a source) or a bare name (a backbone such as gpt2): letters, digits, - _ .
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
_HUB_ID = re.compile(rf"^{_NAME}/{_NAME}$")
_BARE_ID = re.compile(rf"^{_NAME}$")
_TRUE = ("1", "true", "yes", "on")


class HubError(RMTError):
    """A Hub id that cannot be had: not cached while offline, unknown, or the network failed."""


def offline() -> bool:
    """Whether HF_HUB_OFFLINE asks for the cache alone."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def cache_dir() -> Path:
    """The Hugging Face hub cache this call uses."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def is_hub_id(text, bare: bool = False) -> bool:
    """Whether `text` can name a Hub repository (owner/name; with bare=True also a single name such as gpt2)
    and names no existing local path."""
    text = str(text)
    if Path(text).exists():
        return False
    return bool(_HUB_ID.match(text) or (bare and _BARE_ID.match(text)))


def snapshot(repo_id: str, what: str = "repository", allow_patterns=None) -> Path:
    """The local folder of the Hub repository `repo_id` (its latest snapshot), from the cache or downloaded;
    allow_patterns: only the files matching these globs (a backbone's config and tokenizer, not its weights)."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            GatedRepoError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:  # pragma: no cover - a dependency of transformers
        raise HubError(f"{what} {repo_id} is a Hub id, and huggingface_hub is missing; pip install huggingface_hub")
    cache = cache_dir()
    try:
        return Path(snapshot_download(repo_id, cache_dir=str(cache), local_files_only=offline(),
                                      allow_patterns=allow_patterns))
    except LocalEntryNotFoundError:
        if offline():
            raise HubError(f"{what} {repo_id} does not exist here, and the Hub repository {repo_id} is not in the "
                           f"Hugging Face cache {cache} (HF_HUB_OFFLINE=1); download it once online, or pass a "
                           "local path") from None
        raise HubError(f"{what} {repo_id} does not exist here, and the Hub cannot be reached to download it; "
                       "connect to the network, or pass a local path") from None
    except (RepositoryNotFoundError, GatedRepoError):
        raise HubError(f"{what} {repo_id} does not exist here, nor as a Hub repository this machine may read; "
                       "check the spelling (owner/name) or log in with huggingface-cli login") from None
    except RevisionNotFoundError:
        raise HubError(f"the Hub repository {repo_id} has no main revision; pass a local path") from None
    except (OSError, ValueError) as error:  # network failures, a broken cache
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        raise HubError(f"cannot fetch {what} {repo_id} from the Hub ({reason}); pass a local path") from None


def local_path(source, what: str = "path", bare: bool = False, allow_patterns=None) -> Path:
    """`source` as a local path: itself when it exists or is no Hub id, else the snapshot of that Hub id."""
    if is_hub_id(source, bare=bare):
        return snapshot(str(source), what, allow_patterns)
    return Path(source)
