"""Fold a trained composition of LoRA sources into one standard artefact, and check the fold by logit parity.

Over LoRA sources a composition is linear at every site: Σ_i ω_i ⊙ s_i B_i A_i x = B' A' x with
``B' = [diag(ω_1) s_1 B_1 | …]`` (D_out, Σr_i) and ``A' = [A_1; …]`` (Σr_i, D_in) — exactly ``LowRankMix.up``
with ω folded in and ``LowRankMix.down``. So a trained composition can leave scalearn as

* ``peft-lora``: one plain PEFT LoRA of rank Σr_i per site (scaling 1), loadable by vanilla ``PeftModel``;
* ``merged``: the base encoder with ``W' = W + B' A'`` in each site's weight (zero inference overhead; GPT-2's
  ``Conv1D`` stores W as (D_in, D_out), so there ``W' = W + (B' A')ᵀ``);
* ``svd``: ``ΔW = B' A'`` truncated to rank R per site (a smaller PEFT LoRA; approximate, error reported).

ω is taken in eval mode (no dropout); the ``average`` baseline folds its fixed 1/N. Bottleneck sources (ReLU)
and AdapterFusion (input-dependent attention) are not linear and are refused. Folding runs in fp32; the result
is cast to ``dtype`` at the end.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from scalearn_cli.artifacts import (
    HEAD_FILE, LORA_WEIGHTS_FILE, AdapterSpec, CompositionRecord, Metadata, check_out_dir, read_folder, read_metadata,
    save_tensors, write_folder,
)
from scalearn_cli.backbone import resolve_model_path
from scalearn_cli.cards import metrics_table
from scalearn_cli.combiners import require
from scalearn_cli.compose import load_composition, read_record
from scalearn_cli.data.batches import make_loader
from scalearn_cli.data.rows import recorded_data
from scalearn_cli.errors import ArtifactError, CompositionError, UsageError
from scalearn_cli.model import build_head, task_model_for
from scalearn_cli.scaling import Weighting
from scalearn_cli.sources import get_kind
from scalearn_cli.sources.lora import PEFT_PREFIX, is_conv1d
from scalearn_cli.stages.common import DataOptions, prepare
from scalearn_cli.tasks import task_from_dict
from scalearn_cli.train import TrainConfig

logger = logging.getLogger(__name__)

Format = Literal["peft-lora", "merged", "svd"]
FORMATS = ("peft-lora", "merged", "svd")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: max |Δlogit| an exact fp32 export may show against its composition
TOLERANCE = 1e-5
MERGED_WEIGHTS_FILE = "model.safetensors"  # transformers' own name (save_pretrained, safetensors)


def check_foldable(folder: Path) -> CompositionRecord:
    """composition.json of ``folder`` if it can be folded (linear sources, input-independent weights)."""
    kind = read_metadata(folder).get("kind")
    if kind != "composition":
        raise UsageError(f"{folder} is a {kind}, not a composition; export takes a `scalearn transfer` folder")
    record = read_record(folder)
    if get_kind(record.adapter_kind).activation != "identity":
        raise CompositionError(
            f"{folder} composes {record.adapter_kind} sources: bottleneck adapters apply a ReLU, so their "
            f"mix is not linear and cannot fold into one LoRA or the base weights; compose LoRA sources to export"
        )
    require(record.method, "fold", folder, CompositionError)  # the compatibility table, never the method's name
    return record


@torch.no_grad()
def folded_factors(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor, list[int]]]:
    """{site: (A' (R, D_in), B' (D_out, R) with ω folded in, ranks r_i per source)} of a loaded composition."""
    comp = model.composition
    comp.eval()  # ω without dropout
    modules = dict(model.encoder.named_modules())
    out = {}
    for site in comp.sites:
        mix = modules[site].mix
        if not isinstance(mix.combiner, Weighting):  # a foldable combiner's own LoRA per site: (A, B) = factors
            down, up = mix.combiner.factors(mix)
            out[site] = (down.float().clone(), up.float().clone(), [int(down.shape[0])])
            continue
        w = mix.combiner.weights(site).float()  # (N, D_out) or (N, 1)
        up = mix.up.float() * w[mix.src].transpose(0, 1)  # (D_out, R): diag(ω_i) s_i B_i, side by side
        ranks = torch.bincount(mix.src, minlength=mix.n_sources).tolist()
        out[site] = (mix.down.float().clone(), up, ranks)
    return out


def check_rank(rank: int, factors: dict[str, tuple[torch.Tensor, torch.Tensor, list[int]]]) -> None:
    """Refuse an svd ``--rank`` below 1 or above what any site's ΔW can have (min(Σ r_i, D_in, D_out))."""
    possible = max(min(down.shape[0], down.shape[1], up.shape[0]) for down, up, _ in factors.values())
    if not 1 <= rank <= possible:
        raise UsageError(f"--rank {rank} is outside 1..{possible}: no site of this composition has a ΔW of rank "
                         f"above {possible} (Σ source ranks, bounded by the layer sizes); pass --rank {possible} "
                         f"or less")


def svd_factors(
    factors: dict[str, tuple[torch.Tensor, torch.Tensor, list[int]]], rank: int
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict[str, Any]]:
    """Best rank-``rank`` approximation of each site's ΔW = B'A' (Eckart–Young), as balanced LoRA factors.

    Returns ({site: (A (k, D_in), B (D_out, k))}, errors): relative Frobenius error ||ΔW - BA|| / ||ΔW|| per
    site and overall (sqrt of summed squared errors over sqrt of summed squared norms).
    """
    if rank < 1:
        raise UsageError(f"--rank must be >= 1, got {rank}")
    result, per_site, err2, norm2 = {}, {}, 0.0, 0.0
    for site, (down, up, _) in factors.items():
        delta = up @ down  # (D_out, D_in), fp32
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        k = max(1, min(rank, down.shape[0], s.numel()))  # rank(ΔW) <= Σr_i: more would store noise
        root = s[:k].sqrt()
        result[site] = (root[:, None] * vh[:k], u[:, :k] * root)  # A = √S Vh, B = U √S
        tail, total = float(s[k:].pow(2).sum()), float(s.pow(2).sum())
        per_site[site] = math.sqrt(tail / total) if total > 0 else 0.0
        err2, norm2 = err2 + tail, norm2 + total
    return result, {"per_site": per_site, "overall": math.sqrt(err2 / norm2) if norm2 > 0 else 0.0}


def lora_config(
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]], base_model: str, fan_in_fan_out: bool = False
):  # -> peft.LoraConfig
    """A PEFT LoraConfig with scaling 1 at every site: lora_alpha = r, per-site ranks in rank/alpha_pattern.

    ``fan_in_fan_out``: the sites are GPT-2 ``Conv1D`` layers (A and B are the same; PEFT transposes on merge).
    """
    from peft import LoraConfig

    ranks = {site: int(a.shape[0]) for site, (a, _) in factors.items()}
    r = max(ranks.values())
    pattern = {site: k for site, k in ranks.items() if k != r}  # full module paths: each matches only itself
    return LoraConfig(
        r=r, lora_alpha=r, rank_pattern=dict(pattern), alpha_pattern=dict(pattern), lora_dropout=0.0,
        target_modules=sorted(ranks), bias="none", base_model_name_or_path=base_model, inference_mode=True,
        fan_in_fan_out=fan_in_fan_out,
    )


def export(
    folder: Path,
    out: Path,
    format: Format = "peft-lora",
    rank: int | None = None,
    dtype: str = "float32",
    overwrite: bool = False,
    resolver=None,
) -> dict[str, Any]:
    """Fold the composition in ``folder`` into ``out`` as ``format`` (see the module docstring); return a summary."""
    if format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got '{format}'")
    if dtype not in DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}, got '{dtype}'")
    if format == "svd" and rank is None:
        raise UsageError("--format svd needs --rank R (the rank of the exported LoRA at every site)")
    if format != "svd" and rank is not None:
        raise UsageError("--rank applies to --format svd only; drop it")
    folder = Path(folder)
    record = check_foldable(folder)
    registry = getattr(resolver, "registry", None)
    inputs = [folder, *(Path(s.id) for s in record.sources if not s.registry)]
    check_out_dir(out, overwrite, inputs, registry)
    model, tokenizer, meta = load_composition(folder, resolver=resolver)
    factors = folded_factors(model)
    errors = None
    if format == "svd":
        check_rank(rank, factors)
        lora_factors, errors = svd_factors(factors, rank)
    else:
        lora_factors = {site: (down, up) for site, (down, up, _) in factors.items()}
    summed = {site: sum(ranks) for site, (_, _, ranks) in factors.items()}
    info = {
        "format": format, "dtype": dtype, "exact": format != "svd" and dtype == "float32",
        "from": {"path": str(folder.resolve()), "content_hash": meta.get("content_hash"),
                 "method": record.method, "variant": record.variant,
                 "sources": [s.ref for s in record.sources]},
        "sites": len(factors), "source_rank": max(summed.values()),
        "rank": max(int(a.shape[0]) for a, _ in lora_factors.values()),
        "target_modules": sorted({site.rpartition(".")[2] for site in factors}),
    }
    if errors is not None:
        info["svd_error"] = errors
    with write_folder(out, overwrite, inputs, registry) as folder:
        if format == "merged":
            _write_merged(folder.path, model, lora_factors, tokenizer, DTYPES[dtype])
            info["parameters"] = 0
        else:
            conv1d = any(is_conv1d(_base_of(model, site)) for site in lora_factors)
            info["parameters"] = _write_lora(folder.path, _lora_sites(model, lora_factors), meta["base_model"]["id"],
                                             DTYPES[dtype], conv1d)
        if model.head is not None:  # generation: the LM head is the base model's own
            save_tensors(folder.path / HEAD_FILE, model.head.state_dict())
        exported = _export_meta(Metadata.from_dict(meta), info)
        folder.finish(exported, f"{info['format']} export of a {info['from']['variant'] or info['from']['method']} "
                      f"composition for {exported.task_name}", _card(exported.to_dict(), info))
    logger.info("exported %s (%s) to %s", folder, format, out)
    return {"out": str(out), **info}


def _lora_sites(model: nn.Module, factors: dict) -> dict:
    """Sites as module paths of the model PEFT will wrap: the encoder's, or (generation) the causal LM's, whose
    bare decoder sits under ``base_model_prefix`` (``model.`` for Llama, ``transformer.`` for GPT-2)."""
    lm = getattr(model, "lm", None)
    prefix = f"{lm.base_model_prefix}." if lm is not None else ""
    return {prefix + site: value for site, value in factors.items()}


def _base_of(model: nn.Module, site: str) -> nn.Module:
    """The frozen base layer under a site's ``ComposedLinear``."""
    return model.encoder.get_submodule(site).base


def _write_lora(tmp: Path, factors: dict[str, tuple[torch.Tensor, torch.Tensor]], base: str, dtype,
                fan_in_fan_out: bool = False) -> int:
    """PEFT's own two files: adapter_config.json and adapter_model.safetensors (keys without adapter name)."""
    lora_config(factors, base, fan_in_fan_out).save_pretrained(str(tmp))
    tensors = {}
    for site, (a, b) in factors.items():
        tensors[f"{PEFT_PREFIX}{site}.lora_A.weight"] = a.to(dtype)
        tensors[f"{PEFT_PREFIX}{site}.lora_B.weight"] = b.to(dtype)
    save_tensors(tmp / LORA_WEIGHTS_FILE, tensors, metadata={"format": "pt"})
    return sum(t.numel() for t in tensors.values())


@torch.no_grad()
def _write_merged(tmp: Path, model: nn.Module, factors, tokenizer, dtype) -> None:
    """W' = W + B'A' (fp32) in each site's Linear, W' = W + (B'A')ᵀ in a Conv1D (its W is (D_in, D_out)); the plain
    encoder saved with ``save_pretrained``."""
    encoder = model.encoder
    modules = dict(encoder.named_modules())
    for site, (a, b) in factors.items():
        composed = modules[site]
        base = composed.base
        delta = b @ a  # (D_out, D_in)
        base.weight.copy_((base.weight.float() + (delta.T if is_conv1d(base) else delta)).to(base.weight.dtype))
        parent, _, child = site.rpartition(".")
        setattr(modules[parent], child, base)  # back to a plain nn.Linear
    # generation: the whole causal LM (its LM head included) around the merged decoder
    getattr(model, "lm", encoder).to(dtype).save_pretrained(str(tmp), safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(tmp))
    if not (tmp / MERGED_WEIGHTS_FILE).is_file():
        raise ArtifactError(f"transformers did not write {MERGED_WEIGHTS_FILE}; upgrade transformers and retry")


def _export_meta(meta: Metadata, info: dict[str, Any]) -> Metadata:
    """scalearn.json of an export (a LoRA source, or a merged model), so `scalearn eval` scores it."""
    extra = {k: v for k, v in meta.extra.items() if k != "sources"} | {"export": info}
    if info["format"] == "merged":
        return Metadata("merged", meta.task, meta.base_model, AdapterSpec("merged", 0), meta.head, meta.metrics,
                        meta.seed, meta.data, meta.training, scalearn_version=meta.scalearn_version, extra=extra)
    settings = {"r": info["rank"], "alpha": info["rank"], "dropout": 0.0, "target_modules": info["target_modules"]}
    return Metadata("source", meta.task, meta.base_model, AdapterSpec("lora", info["parameters"], settings),
                    meta.head, meta.metrics, meta.seed, meta.data, meta.training,
                    scalearn_version=meta.scalearn_version, extra=extra)


def _card(meta: dict[str, Any], info: dict[str, Any]) -> str:
    base = meta["base_model"]["id"]
    auto = "AutoModelForCausalLM" if meta["task"].get("problem_type") == "generation" else "AutoModel"
    if info["format"] == "merged":
        usage = ("A plain transformers encoder with the composition folded into its weights:\n\n```python\n"
                 f"from transformers import {auto}\nmodel = {auto}.from_pretrained(\"<this folder>\")\n```\n")
    else:
        usage = ("A standard PEFT LoRA (scaling 1, per-site ranks in `rank_pattern`):\n\n```python\n"
                 f"from transformers import {auto}\nfrom peft import PeftModel\n"
                 f"model = PeftModel.from_pretrained({auto}.from_pretrained(\"{base}\"), \"<this folder>\")\n```\n")
    exactness = ("exact up to float rounding (fp32)" if info["exact"] else
                 f"approximate (svd overall relative error {info['svd_error']['overall']:.3g})" if "svd_error" in info
                 else f"exact fold, stored in {info['dtype']}")
    sources = "\n".join(f"- `{s}`" for s in info["from"]["sources"])
    return (
        f"Exported by scalearn {meta.get('scalearn_version')} from a {info['from']['method']} composition "
        f"({info['from']['variant'] or '-'}) of {len(info['from']['sources'])} LoRA sources; {exactness}. The task "
        f"head is in `{HEAD_FILE}`; `scalearn eval` scores this folder.\n\n{usage}\nSources:\n\n{sources}\n\n"
        f"## Results of the composition\n\n{metrics_table(meta.get('metrics', {}))}\n"
    )


def load_export(out: Path):  # -> (TaskModel, meta)
    """An export loaded without scalearn's composition code: vanilla PEFT (LoRA) or AutoModel (merged), fp32."""
    from peft import PeftModel
    from transformers import AutoModel, AutoModelForCausalLM

    found = read_folder(out, kind=("source", "merged"))
    meta = found.meta.to_dict()
    if "export" not in meta:
        raise UsageError(f"{out} was not written by `scalearn export`; pass an export folder")
    generative = found.meta.problem_type == "generation"
    auto = AutoModelForCausalLM if generative else AutoModel
    if meta["kind"] == "merged":
        encoder = auto.from_pretrained(str(out), dtype=torch.float32)
    else:
        base = auto.from_pretrained(resolve_model_path(meta["base_model"]["id"]), dtype=torch.float32)
        encoder = PeftModel.from_pretrained(base, str(out), is_trainable=False)
    model = task_model_for(encoder, None if generative else build_head(found.meta.head, out), found.meta.problem_type)
    model.float().eval()
    return model, meta


@torch.no_grad()
def verify(
    out: Path,
    against: Path,
    n: int = 64,
    data_dir: Path | None = None,
    data_file: Path | None = None,
    resolver=None,
) -> dict[str, Any]:
    """Max |logit difference| between the export ``out`` and the composition ``against`` on one batch of ``n``.

    Data: ``data_dir``/``data_file`` if given, else the composition's recorded task data, else (none found) a
    deterministic random token sample from the tokenizer's vocabulary. Exact fp32 exports pass at 1e-5.
    """
    if n < 1:
        raise UsageError(f"--samples must be >= 1, got {n}")
    exported, meta = load_export(out)
    composed, tokenizer, comp_meta = load_composition(Path(against), resolver=resolver)
    vocab_size = int(composed.encoder.config.vocab_size)  # the embedding's: valid ids for a random sample
    batch, data_note = sample_batch(comp_meta, tokenizer, n, data_dir, data_file, vocab_size)
    batch = {k: v for k, v in batch.items() if k != "labels"}
    _, want = composed(**batch)
    _, got = exported(**batch)
    diff = float((want.float() - got.float()).abs().max())
    info = meta["export"]
    same = info["from"].get("content_hash") == comp_meta.get("content_hash")
    return {
        "export": str(out), "against": str(against), "format": info["format"], "dtype": info["dtype"],
        "exact": info["exact"], "max_abs_diff": diff, "max_abs_logit": float(want.abs().max()),
        "tolerance": TOLERANCE if info["exact"] else None,
        "ok": (diff <= TOLERANCE) if info["exact"] else None, "samples": int(want.shape[0]),
        "data": data_note, "same_composition": same,
    }


def sample_batch(
    meta: dict[str, Any],
    tokenizer,
    n: int,
    data_dir: Path | None = None,
    data_file: Path | None = None,
    vocab_size: int | None = None,
) -> tuple[dict[str, torch.Tensor], str]:
    """One batch of up to ``n`` test examples of the composition's task, or random tokens when no data is found."""
    spec = task_from_dict(meta["task"])
    if data_dir is None and data_file is None:  # the recorded data where it is still there, else random tokens
        data_dir, data_file = recorded_data(meta.get("data"), spec)
    max_length = int((meta.get("training") or {}).get("max_length", 128))
    if data_dir is not None or data_file is not None:
        options = DataOptions(task=spec.name, task_spec=spec, data_dir=data_dir, data_file=data_file)
        prepared = prepare(options, tokenizer, TrainConfig(batch_size=n, max_length=max_length))
        test = prepared.splits.test
        subset = test.select(range(min(n, len(test))))
        batch = next(iter(make_loader(subset, prepared.spec, tokenizer, n, max_length)))
        return batch, f"{len(subset)} test examples from {data_file or data_dir}"
    return random_batch(tokenizer, n, min(max_length, 32), spec, vocab_size), "random tokens (no task data found)"


def random_batch(tokenizer, n: int, length: int, spec, vocab_size: int | None = None) -> dict[str, torch.Tensor]:
    """Deterministic random token ids below ``vocab_size`` (the embedding's; default the tokenizer's), special
    tokens excluded, framed as [CLS] … [SEP] when the tokenizer has them."""
    special = set(tokenizer.all_special_ids)
    vocab = torch.tensor([i for i in range(vocab_size or len(tokenizer)) if i not in special])
    if vocab.numel() == 0:
        raise UsageError("the tokenizer has only special tokens, so no random sample can be drawn; pass --data-dir")
    gen = torch.Generator().manual_seed(0)
    choices = len(spec.choice_fields) if spec.problem_type == "multiple_choice" else None  # not generation's
    shape = (n, choices, length) if choices else (n, length)
    ids = vocab[torch.randint(len(vocab), shape, generator=gen)]
    if tokenizer.cls_token_id is not None:
        ids[..., 0] = tokenizer.cls_token_id
    if tokenizer.sep_token_id is not None:
        ids[..., -1] = tokenizer.sep_token_id
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
