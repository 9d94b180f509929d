"""The LoRA sources handed to PEFT itself, for the peer methods PEFT ships (merging, Arrow routing).

Each source is read as usual (``formats.peft_lora``: ours, plain PEFT or pulled, any key prefix; everything but
plain LoRA refused), written back as a PEFT folder keyed on the base model's site paths, and loaded by PEFT's own
``PeftModel.from_pretrained`` / ``load_adapter`` onto a *skeleton*: a module tree with, at each site path and in
the base model's module order (PEFT's DARE draws its masks in that order), a bias-free ``nn.Linear`` of the
site's shape whose weight is zero. A PEFT LoRA layer over a zero base returns exactly its LoRA delta, so the
composition adds PEFT's own output to the real frozen base layer: ``W x + b + delta_PEFT(x)``.
"""

from __future__ import annotations

import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from scalearn_cli.artifacts import LORA_WEIGHTS_FILE, save_tensors
from scalearn_cli.errors import UsageError
from scalearn_cli.formats.peft_lora import PEFT_PREFIX, read_lora

ADAPTER_PREFIX = "source_"  # PEFT adapter names: source_0, source_1, ... in composition order


def refuse_non_lora(activations: list[str], method: str) -> None:
    """PEFT merges and routes LoRA adapters only: bottleneck sources get one line saying so."""
    if any(activation != "identity" for activation in activations):
        raise UsageError(f"PEFT has no {method} for bottleneck adapters (its merging and routing take LoRA "
                         "adapters only); compose LoRA sources, or choose a method that takes bottlenecks")


def skeleton(encoder: nn.Module, mixes: dict[str, nn.Module]) -> nn.Module:
    """Zero, bias-free Linear layers at the sites' paths, in ``encoder``'s module order (see the module docstring)."""
    root = nn.Module()
    order = [name for name, _ in encoder.named_modules() if name in mixes]
    for site in order:
        parent = root
        *path, leaf = site.split(".")
        for part in path:
            if not hasattr(parent, part):
                parent.add_module(part, nn.Module())
            parent = getattr(parent, part)
        mix = mixes[site]
        linear = nn.Linear(mix.down.shape[1], mix.up.shape[0], bias=False)
        nn.init.zeros_(linear.weight)
        linear.weight.requires_grad_(False)
        parent.add_module(leaf, linear)
    return root


def write_sources(sources: list[Any], sites: set[str], encoder: nn.Module, into: Path) -> list[str]:
    """Each source as a PEFT LoRA folder keyed on the sites' paths (its own A, B and scaling); their paths."""
    from peft import LoraConfig

    names = {name for name, _ in encoder.named_modules()}
    folders = []
    for i, source in enumerate(sources):
        read = read_lora(Path(source.folder), module_names=names).sites
        ranks = {site: int(lora.a.shape[0]) for site, lora in read.items()}
        r = max(ranks.values())
        # PEFT's scaling is alpha / r: an alpha per site gives each site the source's own scaling (rsLoRA included)
        alphas = {site: lora.scaling * ranks[site] for site, lora in read.items()}
        config = LoraConfig(r=r, lora_alpha=alphas[next(iter(alphas))], lora_dropout=0.0, bias="none",
                            target_modules=sorted(read), rank_pattern={_exact(s): k for s, k in ranks.items()},
                            alpha_pattern={_exact(s): a for s, a in alphas.items()})
        folder = into / f"{ADAPTER_PREFIX}{i}"
        config.save_pretrained(str(folder))
        tensors = {}
        for site, lora in read.items():
            tensors[f"{PEFT_PREFIX}{site}.lora_A.weight"] = lora.a.float().contiguous()
            tensors[f"{PEFT_PREFIX}{site}.lora_B.weight"] = lora.b.float().contiguous()
        save_tensors(folder / LORA_WEIGHTS_FILE, tensors, metadata={"format": "pt"})
        folders.append(str(folder))
    return folders


def _exact(site: str) -> str:
    """A rank/alpha pattern key that matches only this module path (PEFT matches keys as regular expressions)."""
    return re.escape(site)


def load_sources(skeleton_model: nn.Module, folders: list[str]):  # -> peft.PeftModel
    """PEFT's own loading: the first folder with ``PeftModel.from_pretrained``, the others with ``load_adapter``."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(skeleton_model, folders[0], adapter_name=f"{ADAPTER_PREFIX}0")
    for i, folder in enumerate(folders[1:], start=1):
        model.load_adapter(folder, adapter_name=f"{ADAPTER_PREFIX}{i}")
    return model


def in_temp_folder():
    """A temporary folder for the normalised sources (PEFT reads them once, then they go)."""
    return tempfile.TemporaryDirectory(prefix="scalearn-peft-")


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """{site path: PEFT LoRA layer} of a PeftModel over a skeleton."""
    from peft.tuners.lora import LoraLayer

    return {name: module for name, module in model.base_model.model.named_modules() if isinstance(module, LoraLayer)}


def freeze(model: nn.Module) -> nn.Module:
    """Nothing PEFT built trains here (only the head does): its router's unused LoRA included."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def peft_error(what: str, exc: Exception, hint: str) -> UsageError:
    """PEFT's refusal as our one line: what PEFT said (its first line), then what to do."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return UsageError(f"PEFT's {what} refused these sources ({first}); {hint}")


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """A forked global RNG seeded with ``seed``: PEFT's DARE draws from it (it takes no generator); the caller's
    RNG state is restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
