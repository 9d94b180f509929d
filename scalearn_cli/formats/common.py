"""What the foreign-format readers share: reading ``torch.save`` files without unpickling arbitrary objects."""

from __future__ import annotations

from pathlib import Path

import torch

from scalearn_cli.errors import ArtifactError, printable, strip_ansi


def refusal_reason(exc: BaseException) -> str:
    """What torch's weights-only unpickler refused (e.g. ``unsupported GLOBAL posix.system``), without its ANSI
    codes or its advice to reload with ``weights_only=False`` (which would run the file's code)."""
    lines = [line.strip() for line in strip_ansi(str(exc)).splitlines() if line.strip()]
    advice = ("weights_only", "documentation", "trusted source", "torch.serialization", "trust the source")
    kept = [line for line in lines if not any(word in line for word in advice)]
    reason = kept[0].removeprefix("WeightsUnpickler error: ") if kept else "it holds objects other than tensors"
    return printable(reason.split(" Please ")[0].rstrip(". ") or type(exc).__name__)


def load_torch_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A ``torch.save``'d flat dict of tensors, read with ``weights_only=True`` (never arbitrary pickle)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # an unpickling error names the refused global: keep that, never torch's advice
        raise ArtifactError(f"{path} is not a plain tensor file ({refusal_reason(exc)}); convert it to "
                            "safetensors") from exc
    if not isinstance(data, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in data.items()):
        raise ArtifactError(f"{path} does not hold a flat dict of tensors; convert it to safetensors")
    return data
