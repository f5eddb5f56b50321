"""Attention read-outs of a segment: where the memory writes from, and how much [CLS] reads from memory.

Positions of a segment are grouped by role (rmt_core.model ROLE_*: noise, fact, question, special, memory,
pad). For one layer's attention probabilities (B, H, T, T):

    write read-out  the memory queries (positions 1..m) onto each role group of keys, averaged over the m
                    queries: mass (summed probability) and mass per key token of the group. Taken in the
                    segment where a fact lands; 'memory' here is the retain part (memory onto memory).
    read read-out   the [CLS] query (position 0) onto each role group; taken in the last segment, where the
                    answer head reads [CLS].

`enrichment` = fact mass per token / noise mass per token: above 1 the memory writes more from an average
fact token than from an average noise token.
"""

from __future__ import annotations

import numpy as np
import torch

from rmt_core.layout import ROLE_NAMES

N_ROLES = len(ROLE_NAMES)


def role_masses(attention: torch.Tensor, roles: torch.Tensor) -> torch.Tensor:
    """Attention mass onto each role group, averaged over the queries given.

    attention: (B, H, Q, T) probabilities of Q query rows; roles: (B, T). Returns (B, H, R), R = len(ROLE_NAMES).
    """
    groups = torch.nn.functional.one_hot(roles, N_ROLES).to(attention.dtype)  # (B, T, R)
    return torch.einsum("bhqk,bkr->bhr", attention, groups) / attention.shape[2]


class ReadoutSum:
    """Running sums of one read-out over events (a sample's segment): mass and per-token mass, (L, H, R)."""

    def __init__(self):
        self.mass = None  # (L, H, R) summed over events
        self.per_token = None  # (L, H, R) summed over events where the group is present
        self.present = np.zeros(N_ROLES)  # (R,) events where each group is present
        self.events = 0

    def add(self, masses: np.ndarray, counts: np.ndarray) -> None:
        """masses: (E, L, H, R) of E events; counts: (E, R) positions of each group in each event."""
        if len(masses) == 0:
            return
        if self.mass is None:
            self.mass = np.zeros(masses.shape[1:])
            self.per_token = np.zeros(masses.shape[1:])
        self.mass += masses.sum(axis=0)
        safe = np.where(counts > 0, counts, 1)[:, None, None, :]  # (E, 1, 1, R)
        self.per_token += np.where(counts[:, None, None, :] > 0, masses / safe, 0.0).sum(axis=0)
        self.present += (counts > 0).sum(axis=0)
        self.events += len(masses)

    def rows(self) -> list[dict]:
        """One record per (layer, head): '<role>_mass' and '<role>_per_token' means, and enrichment."""
        if self.mass is None:
            return []
        L, H, _ = self.mass.shape
        mass = self.mass / self.events
        per_token = np.where(self.present > 0, self.per_token / np.maximum(self.present, 1), np.nan)
        out = []
        for layer in range(L):
            for head in range(H):
                row = {"layer": layer, "head": head}
                for r, name in enumerate(ROLE_NAMES):
                    if name == "pad":
                        continue
                    row[f"{name}_mass"] = float(mass[layer, head, r])
                    value = per_token[layer, head, r]
                    row[f"{name}_per_token"] = None if np.isnan(value) else float(value)
                fact, noise = row["fact_per_token"], row["noise_per_token"]
                row["enrichment"] = fact / noise if fact is not None and noise else None
                out.append(row)
        return out


def segment_readouts(attentions, token_roles: torch.Tensor, layout):
    """Write and read read-outs of one segment step. attentions: L x (B, H, T, T); token_roles: (B, n);
    layout: the model's segment layout (rmt_core.layout), which says where memory is written and read.

    Returns (write (B, L, H, R), read (B, L, H, R), counts (B, R)) as numpy arrays.
    """
    roles = layout.position_roles(token_roles.to(attentions[0].device))  # (B, T)
    write_rows, answer = layout.write_positions, layout.answer_position
    write = torch.stack([role_masses(a[:, :, write_rows].float(), roles) for a in attentions], dim=1)
    read = torch.stack([role_masses(a[:, :, answer:answer + 1].float(), roles) for a in attentions], dim=1)
    counts = torch.nn.functional.one_hot(roles, N_ROLES).sum(dim=1)  # (B, R)
    return write.cpu().numpy(), read.cpu().numpy(), counts.cpu().numpy()


def summary(write: ReadoutSum, read: ReadoutSum) -> dict:
    """The `attention` section of results.json, with layer-averaged headline numbers."""

    def mean_of(rows, key):
        values = [r[key] for r in rows if r.get(key) is not None]
        return float(np.mean(values)) if values else None

    write_rows, read_rows = write.rows(), read.rows()
    return {
        "write": write_rows,
        "read": read_rows,
        "write_events": write.events,
        "read_events": read.events,
        "headline": {
            "write_fact_mass": mean_of(write_rows, "fact_mass"),
            "write_noise_mass": mean_of(write_rows, "noise_mass"),
            "write_fact_per_token": mean_of(write_rows, "fact_per_token"),
            "write_noise_per_token": mean_of(write_rows, "noise_per_token"),
            "write_enrichment": mean_of(write_rows, "enrichment"),
            "read_cls_memory_mass": mean_of(read_rows, "memory_mass"),
            "read_cls_memory_per_token": mean_of(read_rows, "memory_per_token"),
            "read_cls_noise_per_token": mean_of(read_rows, "noise_per_token"),
        },
    }
