"""What the foreign-format readers share: reading ``torch.save`` files without unpickling arbitrary objects."""

from __future__ import annotations

from pathlib import Path

import torch

from scalearn_cli.errors import ArtifactError


def load_torch_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A ``torch.save``'d flat dict of tensors, read with ``weights_only=True`` (never arbitrary pickle)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # an unpickling error names the refused global; keep its first line
        lines = str(exc).strip().splitlines()
        raise ArtifactError(f"{path} is not a plain tensor file ({lines[0] if lines else type(exc).__name__}); "
                            "convert it to safetensors") from exc
    if not isinstance(data, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in data.items()):
        raise ArtifactError(f"{path} does not hold a flat dict of tensors; convert it to safetensors")
    return data
