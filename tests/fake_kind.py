"""A test-only adapter kind, to prove the kind seam: one module here, one ``register_kind`` line in the tests.

``fake``: a hand-written low-rank adapter (no PEFT) on every feed-forward ``intermediate.dense`` Linear, in its own
file format (``fake_adapter.safetensors`` + ``fake_config.json``): delta(x) = U · D · x.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scalearn_cli.artifacts import load_tensors, read_json, save_tensors, write_json
from scalearn_cli.sources import Attached, SiteWeights
from scalearn_cli.sources.lora import ComposedLinear

WEIGHTS, CONFIG = "fake_adapter.safetensors", "fake_config.json"
TARGET = "intermediate.dense"


@dataclass(frozen=True)
class FakeSettings:
    rank: int = 2


class LowRankDelta(nn.Module):
    def __init__(self, d_in: int, d_out: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Parameter(torch.randn(rank, d_in) * 0.1)  # (r, D_in)
        self.up = nn.Parameter(torch.zeros(d_out, rank))  # (D_out, r): identity at init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.down.T @ self.up.T


def _targets(encoder: nn.Module) -> dict[str, nn.Linear]:
    return {name: m for name, m in encoder.named_modules() if name.endswith(TARGET) and isinstance(m, nn.Linear)}


def _wrap(encoder: nn.Module, deltas: dict[str, nn.Module]) -> None:
    modules = dict(encoder.named_modules())
    for path, delta in deltas.items():
        parent, _, child = path.rpartition(".")
        setattr(modules[parent], child, ComposedLinear(modules[path], delta))


class FakeKind:
    name = "fake"
    activation = "identity"
    default_lr = 1e-3

    def settings(self, options: dict[str, Any] | None = None) -> FakeSettings:
        return FakeSettings(**(options or {}))

    def attach(self, encoder: nn.Module, settings: FakeSettings, base_model_id: str) -> Attached:
        deltas = {p: LowRankDelta(m.in_features, m.out_features, settings.rank) for p, m in _targets(encoder).items()}
        _wrap(encoder, deltas)
        return Attached(encoder, [p for d in deltas.values() for p in d.parameters()], deltas)

    def save(self, folder: Path, attached: Attached, settings: FakeSettings) -> None:
        tensors = {f"{p}.{k}": v for p, d in attached.handle.items() for k, v in d.state_dict().items()}
        save_tensors(Path(folder) / WEIGHTS, tensors)
        write_json(Path(folder) / CONFIG, {"rank": settings.rank, "sites": sorted(attached.handle)})

    def read_sites(self, folder: Path) -> dict[str, SiteWeights]:
        tensors = load_tensors(Path(folder) / WEIGHTS)
        return {p: SiteWeights(tensors[f"{p}.down"], tensors[f"{p}.up"]) for p in read_json(Path(folder) / CONFIG)["sites"]}

    def load(self, encoder: nn.Module, folder: Path) -> nn.Module:
        sites = self.read_sites(folder)
        deltas = {}
        for path, w in sites.items():
            delta = LowRankDelta(w.down.shape[1], w.up.shape[0], w.rank)
            delta.load_state_dict({"down": w.down, "up": w.up})
            deltas[path] = delta.requires_grad_(False)
        _wrap(encoder, deltas)
        return encoder

    def install(self, encoder: nn.Module, mixes: dict[str, nn.Module]) -> None:
        _wrap(encoder, mixes)

    def card_usage(self, meta: dict[str, Any]) -> str:
        return "A test-only adapter kind.\n"
