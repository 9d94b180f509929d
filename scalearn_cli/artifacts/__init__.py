"""Saved state: file names and I/O (``io``), typed metadata (``meta``), verified folder read/write (``folders``).

A *source adapter folder* holds:
    adapter_config.json + adapter_model.safetensors   (LoRA, PEFT's own format) or
    bottleneck_config.json + bottleneck_model.safetensors  (Pfeiffer bottleneck adapter)
    head.safetensors      the task head
    scalearn.json         metadata (kind="source", task, labels, base model, metrics, file hashes, format_version)
    README.md             model card with Hugging Face YAML metadata

A *composition folder* holds:
    omega.safetensors     ScaLearn's scaling parameters (or fusion.safetensors for AdapterFusion)
    head.safetensors      the target task head
    composition.json      the sources in order, by id and revision or content hash (never copies)
    scalearn.json         metadata (kind="composition", ...)
    README.md             model card
"""

from scalearn_cli.artifacts.folders import FolderWriter, write_folder
from scalearn_cli.artifacts.io import (
    BOTTLENECK_CONFIG_FILE, BOTTLENECK_WEIGHTS_FILE, COMPOSITION_FILE, FORMAT_VERSION, FUSION_FILE, HEAD_FILE,
    LORA_CONFIG_FILE, LORA_WEIGHTS_FILE, METADATA_FILE, MODEL_CARD_FILE, OMEGA_FILE, content_hash, folder_fingerprint,
    load_tensors, read_json, save_tensors, sha256_file, write_json,
)
from scalearn_cli.artifacts.outputs import check_out_dir, resolve_path, staged_output
from scalearn_cli.artifacts.meta import AdapterSpec, CompositionRecord, HeadSpec, Metadata, SourceRef
from scalearn_cli.artifacts.records import Folder, read_folder, read_metadata

__all__ = [
    "AdapterSpec", "BOTTLENECK_CONFIG_FILE", "BOTTLENECK_WEIGHTS_FILE", "COMPOSITION_FILE", "CompositionRecord",
    "FORMAT_VERSION", "FUSION_FILE", "Folder", "FolderWriter", "HEAD_FILE", "HeadSpec", "LORA_CONFIG_FILE",
    "LORA_WEIGHTS_FILE", "METADATA_FILE", "MODEL_CARD_FILE", "Metadata", "OMEGA_FILE", "SourceRef", "check_out_dir",
    "content_hash", "folder_fingerprint", "load_tensors", "read_folder", "read_json", "read_metadata",
    "resolve_path", "save_tensors", "sha256_file", "staged_output", "write_folder", "write_json",
]
