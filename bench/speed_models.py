"""What the speed benchmarks measure: random-weight sources saved as ``train-source`` saves them, the model each
configuration builds (a single adapter, a composition, PEFT's all-active LoRAs, a fold into the base weights) and
the bytes autograd saves for backward in one step. bench/speed.py times them."""

from __future__ import annotations

from pathlib import Path


def build(config: dict):  # -> (model, trainable params, transfer parameter count)
    import torch

    from scalearn_cli.backbone import load_backbone
    from scalearn_cli.model import TaskHead, TaskModel

    encoder, _, ref = load_backbone(config["model"])
    torch.manual_seed(0)
    head = TaskHead(ref.hidden_size, 2)
    method, kind = config["method"], config["kind"]
    if method == "bare":
        return TaskModel(encoder, head, "classification"), list(head.parameters()), 0
    if method in ("single", "single-dropout"):
        from scalearn_cli.sources import get_kind

        source_kind = get_kind(kind)
        # the headline baseline has no LoRA dropout, like the compositions; "single-dropout" keeps
        # train-source's default 0.1 for reference (bottleneck adapters have no input dropout either way)
        options = {"dropout": 0.1 if method == "single-dropout" else 0.0} if kind == "lora" else {}
        attached = source_kind.attach(encoder, source_kind.settings(options), ref.id)
        params = attached.params
        return (TaskModel(attached.model, head, "classification"), params + list(head.parameters()),
                sum(p.numel() for p in params))
    if method == "peft-all-active":  # the peer: PEFT itself running the N frozen LoRAs as separate branches
        return peft_all_active(encoder, head, config["sources"])
    from scalearn_cli.combiners import get_combiner
    from scalearn_cli.compose import inject
    from scalearn_cli.resolve import Resolver

    sources = [Resolver().source(p) for p in config["sources"]]
    combiner = get_combiner("scalearn" if method == "merged" else method)
    comp = inject(encoder, sources, combiner.spec(config.get("variant") if combiner.variants else None))
    if config.get("path"):  # force the dense or the low-rank path of LoRA mixes (default: the cost model's choice)
        from scalearn_cli.scaling import set_mix_path

        set_mix_path(encoder, config["path"])
    model = TaskModel(encoder, head, "classification")
    model.composition = comp
    if method == "merged":
        return fold_into_base(model), list(head.parameters()), 0
    return model, comp.trainable() + list(head.parameters()), sum(p.numel() for p in comp.trainable())


def peft_all_active(encoder, head, folders: list[str]):  # -> (model, trainable params, 0)
    """PEFT with every source loaded and all active at once: the same N LoRAs run as N separate low-rank branches
    per site, PEFT's own way to apply several LoRAs together. Frozen LoRAs and a head alone would not backpropagate
    through the model at all, unlike ScaLearn (ω sits in every layer), so the N LoRAs train here, as PEFT trains
    several active adapters: the cost of running N LoRAs at once with gradients through them."""
    from peft import PeftModel

    from scalearn_cli.model import TaskModel

    model = PeftModel.from_pretrained(encoder, folders[0], adapter_name="s0", is_trainable=True)
    for i, folder in enumerate(folders[1:], start=1):
        model.load_adapter(folder, adapter_name=f"s{i}", is_trainable=True)
    model.base_model.set_adapter([f"s{i}" for i in range(len(folders))], inference_mode=False)
    params = [p for p in model.parameters() if p.requires_grad]
    return TaskModel(model, head, "classification"), params + list(head.parameters()), sum(p.numel() for p in params)


def fold_into_base(model):  # -> TaskModel
    """A LoRA composition folded into the base weights, W' = W + B'A' (what `scalearn export --format merged`
    saves), leaving a plain encoder of the bare architecture."""
    import torch

    from scalearn_cli.export import folded_factors
    from scalearn_cli.model import TaskModel

    modules = dict(model.encoder.named_modules())
    with torch.no_grad():
        for site, (down, up, _) in folded_factors(model).items():
            base = modules[site].base
            base.weight += up @ down
            parent, _, child = site.rpartition(".")
            setattr(modules[parent], child, base)
    return TaskModel(model.encoder, model.head, "classification")


def saved_bytes(model, batch: dict) -> int:
    """Bytes of distinct non-parameter storages saved for backward during one forward + backward."""
    import torch

    owned = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in owned:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = model(**batch)
    loss.backward()
    return sum(seen.values())


def make_sources(folder: Path, model: str, kind: str, n: int) -> list[Path]:
    """``n`` random-weight sources of ``kind`` (as tests/helpers.make_source does), saved with save_source."""
    import torch
    from dataclasses import asdict

    from scalearn_cli.backbone import load_backbone
    from scalearn_cli.model import TaskHead
    from scalearn_cli.sources import get_kind
    from scalearn_cli.sources.folder import save_source
    from scalearn_cli.tasks import get_task, task_to_dict

    paths = [folder / f"{kind}-{i}" for i in range(n)]
    todo = [i for i, out in enumerate(paths) if not out.is_dir()]
    if not todo:
        return paths
    encoder, _, ref = load_backbone(model)  # one adapter module, re-randomised and saved once per source
    source_kind = get_kind(kind)
    cfg = source_kind.settings()
    trained = source_kind.attach(encoder, cfg, ref.id)
    params = trained.params
    for i in todo:
        torch.manual_seed(i)
        with torch.no_grad():
            for p in params:
                p.normal_(0, 0.02)
        head = TaskHead(ref.hidden_size, 2)
        meta = {
            "format_version": 1, "kind": "source", "task": task_to_dict(get_task("rte")), "base_model": ref.to_dict(),
            "adapter": {"kind": kind, "settings": asdict(cfg), "parameters": sum(p.numel() for p in params)},
            "head": {"hidden_size": ref.hidden_size, "num_outputs": 2}, "metrics": {}, "scalearn_version": "bench",
        }
        save_source(paths[i], trained, cfg, head, meta)
    return paths
