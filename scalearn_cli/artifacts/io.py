"""File names, JSON/safetensors I/O and hashing. File names are constants here only (folder writes: ``outputs``)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from scalearn_cli.artifacts.digests import sha256_file
from scalearn_cli.errors import ArtifactError

FORMAT_VERSION = 1

METADATA_FILE = "scalearn.json"
HEAD_FILE = "head.safetensors"
MODEL_CARD_FILE = "README.md"
LORA_CONFIG_FILE = "adapter_config.json"  # PEFT's names: vanilla PeftModel.from_pretrained reads them
LORA_WEIGHTS_FILE = "adapter_model.safetensors"
BOTTLENECK_CONFIG_FILE = "bottleneck_config.json"
BOTTLENECK_WEIGHTS_FILE = "bottleneck_model.safetensors"
OMEGA_FILE = "omega.safetensors"
FUSION_FILE = "fusion.safetensors"
COMPOSITION_FILE = "composition.json"



def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON with sorted keys and a trailing newline (atomic: temp file, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, turning a missing or malformed file into a one-line ArtifactError."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} is missing: is {path.parent} an adapter folder written by scalearn?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc}); re-create or re-pull the folder") from exc
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} must hold a JSON object; re-create or re-pull the folder")
    return data


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save contiguous CPU copies of ``tensors`` as safetensors (atomic)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file; a missing or corrupted file becomes a one-line ArtifactError."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} is missing: the folder {path.parent} is incomplete; re-create or re-pull it")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own SafetensorError / OSError
        raise ArtifactError(f"{path} is corrupted ({exc}); re-create or re-pull the folder") from exc


def folder_fingerprint(folder: Path) -> dict[str, str]:
    """sha256 of every file of an adapter folder that defines its behaviour, by file name.

    That is every plain file except ``scalearn.json`` (which records this fingerprint and is covered by its own
    ``metadata_sha256``), the model card and hidden files: adapter weights and configs in any format, the head,
    ω, ``composition.json``, a merged model's weights and tokenizer.
    """
    skip = {METADATA_FILE, MODEL_CARD_FILE}
    with os.scandir(folder) as entries:  # the directory's own file types: no stat per entry
        files = sorted(e.path for e in entries if e.is_file() and e.name not in skip and not e.name.startswith("."))
    return {os.path.basename(path): sha256_file(Path(path)) for path in files}


def content_hash(fingerprint: dict[str, str]) -> str:
    """One hash for a folder's fingerprint (stable: sorted by file name)."""
    joined = "\n".join(f"{name}:{digest}" for name, digest in sorted(fingerprint.items()))
    return hashlib.sha256(joined.encode()).hexdigest()
