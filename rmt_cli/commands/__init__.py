"""Subcommands of `rmt`, one module each (see rmt_cli/main.py), and what several of them share."""

from __future__ import annotations


def parse_device(name: str | None, error: type[Exception]):
    """--device as a torch.device (None: the default, CUDA when present); `error` for an unusable name."""
    import torch

    if not name:
        return None
    try:
        device = torch.device(name)
    except RuntimeError:
        raise error(f"unknown --device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise error(f"--device {name}: CUDA is not available here; use --device cpu")
    return device
