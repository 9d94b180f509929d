"""Readers for adapters written by other tools (PEFT LoRA, AdapterHub bottleneck) into the tensors we compose.

Pure functions over folders: no model is built here. See docs/sources.md for what is accepted and refused.
"""

from pathlib import Path

from scalearn_cli.artifacts import AdapterSpec, Metadata
from scalearn_cli.errors import ArtifactError
from scalearn_cli.formats import adapterhub, peft_lora

#: folder formats the resolver accepts besides scalearn's own: format name -> the kind it composes as
FOREIGN_FORMATS = {"peft": "lora", "adapterhub": "bottleneck"}


def detect_format(folder: Path) -> str | None:
    """``peft`` or ``adapterhub`` for a folder another library wrote, else None."""
    if peft_lora.detect(folder):
        return "peft"
    if adapterhub.detect(folder):
        return "adapterhub"
    return None


def foreign_metadata(folder: Path, fmt: str):  # -> artifacts.Metadata
    """What scalearn needs to know of a foreign source, read from its own config (it has no head, task or metrics).

    The base model is the one the adapter names (PEFT's ``base_model_name_or_path``, AdapterHub's ``model_name``);
    its shape is unknown until that model is loaded, so ``transfer --model`` may supply or replace it.
    """
    import logging

    folder = Path(folder)
    if fmt not in FOREIGN_FORMATS:  # never read some other format as an AdapterHub folder
        raise ArtifactError(f"{folder}: unknown adapter format '{fmt}'; scalearn reads {', '.join(FOREIGN_FORMATS)} "
                            "folders besides its own")
    if fmt == "peft":
        read = peft_lora.read_lora(folder)
        base, name, notes = read.base_model_name_or_path, folder.name, read.notes
        ranks = sorted({site.a.shape[0] for site in read.sites.values()})
        params = sum(s.a.numel() + s.b.numel() for s in read.sites.values())
        settings = {"r": ranks[-1], "target_modules": sorted({p.rpartition(".")[2] for p in read.sites})}
    else:
        read = adapterhub.read_adapterhub(folder)
        base, name, notes = read.base_model_name, read.name or folder.name, read.notes
        params = sum(t.numel() for layer in read.layers if layer for t in layer.values())
        settings = {"reduction_factor": read.reduction_factor}
    for note in notes:
        logging.getLogger(__name__).info("%s: %s", folder, note)
    return Metadata(
        kind="source", task={"name": name}, base_model={"id": base, "revision": None, "model_type": None,
                                                        "hidden_size": None, "num_layers": None},
        adapter=AdapterSpec(FOREIGN_FORMATS[fmt], params, settings), head=None, extra={"format": fmt},
    )
