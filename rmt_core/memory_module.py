"""What every RMT in this package shares, whatever its architecture: a trainable initial memory (m, d) in front
of a Hugging Face backbone, and the switch between the fast attention kernel and the one that returns
attention probabilities. `rmt_core.model.RMT` (encoder) and `rmt_core.decoder.DecoderRMT` build on it."""

from __future__ import annotations

import torch
from torch import nn


class MemoryModule(nn.Module):
    """Base of the RMT models: subclasses set `self.config` (with num_mem_tokens), `self.backbone` and
    `self.memory` (an (m, d) parameter)."""

    config: object
    backbone: nn.Module
    memory: nn.Parameter

    @property
    def num_mem_tokens(self) -> int:
        return self.config.num_mem_tokens

    @property
    def hidden_size(self) -> int:
        return self.backbone.config.hidden_size

    @property
    def device(self) -> torch.device:
        return self.memory.device

    def initial_memory(self, batch_size: int) -> torch.Tensor:
        return self.memory.unsqueeze(0).expand(batch_size, -1, -1)  # (B, m, d)

    # ----- attention kernels -----------------------------------------------------------------------------
    def set_attention_kernel(self, name: str) -> None:
        """'sdpa' (fast, default for training and evaluation) or 'eager' (returns attention probabilities)."""
        self.backbone.set_attn_implementation(name)

    @property
    def attention_kernel(self) -> str:
        return self.backbone.config._attn_implementation

    def recording(self):
        """Context manager: the eager kernel inside (attention probabilities available), the previous one after."""
        return _AttentionKernel(self, "eager")


class _AttentionKernel:
    def __init__(self, model: MemoryModule, name: str):
        self.model, self.name, self.previous = model, name, None

    def __enter__(self):
        self.previous = self.model.attention_kernel
        if self.previous != self.name:
            self.model.set_attention_kernel(self.name)
        return self.model

    def __exit__(self, *exc):
        if self.previous != self.name:
            self.model.set_attention_kernel(self.previous)
        return False
