"""PEFT's own peer methods as combiners: ``merge`` (``add_weighted_adapter``) and ``arrow`` (``create_arrow_model``).

Parity is against PEFT run as a user runs it: the sources loaded with ``PeftModel.from_pretrained`` /
``load_adapter`` onto the real encoder, merged or routed by PEFT, and read through the same head."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from helpers import TRAIN, WORDS, custom, invoke, make_source, ok, one_error_line

MERGE_TYPES = {"linear": {}, "cat": {}, "svd": {}, "ties": {"density": 0.5}, "ties_svd": {"density": 0.5},
               "dare_linear": {"density": 0.6}, "dare_ties": {"density": 0.6}, "dare_linear_svd": {"density": 0.6},
               "dare_ties_svd": {"density": 0.6}, "magnitude_prune": {"density": 0.5},
               "magnitude_prune_svd": {"density": 0.5}}
WEIGHTS = [0.5, 0.3, 0.2]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A bare scratch folder: the refusal tests check that their --out, ``root/bad``, is never made."""
    return tmp_path_factory.mktemp("peft-methods")


@pytest.fixture(scope="module")
def loras(root, tiny_model_dir) -> list[Path]:
    return [make_source(root / f"lora{i}", tiny_model_dir, "lora", seed=i) for i in range(3)]


@pytest.fixture(scope="module")
def task_file(root) -> Path:
    rng = random.Random(0)
    rows = [{"sentence": " ".join(rng.choice(WORDS) for _ in range(6)), "label": i % 2} for i in range(40)]
    path = root / "task.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def logits(encoder: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """A fixed random head on the first token: the same head reads both models."""
    head = torch.nn.Linear(encoder.config.hidden_size, 3)
    torch.nn.init.normal_(head.weight, generator=torch.Generator().manual_seed(5))
    torch.nn.init.zeros_(head.bias)
    with torch.no_grad():
        return head(encoder(**batch).last_hidden_state[:, 0])


def ours(model_dir: Path, sources: list[Path], method: str, options: dict[str, Any]) -> torch.nn.Module:
    from scalearn_cli.backbone import load_backbone
    from scalearn_cli.combiners import CombinerSpec, get_combiner
    from scalearn_cli.compose import inject
    from scalearn_cli.resolve import Resolver

    encoder, _, _ = load_backbone(str(model_dir))
    spec = get_combiner(method).spec(None, options)
    inject(encoder, [Resolver().source(str(s)) for s in sources], CombinerSpec(method, None, spec.options | options))
    return encoder.eval()


def peft_sources(model_dir: Path, sources: list[Path]):
    from peft import PeftModel

    from scalearn_cli.backbone import load_backbone

    base, _, _ = load_backbone(str(model_dir))
    model = PeftModel.from_pretrained(base, str(sources[0]), adapter_name="a0")
    for i, source in enumerate(sources[1:], start=1):
        model.load_adapter(str(source), adapter_name=f"a{i}")
    return model


@pytest.mark.parametrize("merge_type", list(MERGE_TYPES))
def test_merge_equals_peft_add_weighted_adapter(merge_type, loras, tiny_model_dir, batch):
    options = {"merge_type": merge_type, "weights": WEIGHTS, "seed": 11, **MERGE_TYPES[merge_type]}
    composed = ours(tiny_model_dir, loras, "merge", options)
    reference = peft_sources(tiny_model_dir, loras)
    torch.manual_seed(11)  # DARE draws its masks from the global RNG
    reference.add_weighted_adapter(["a0", "a1", "a2"], WEIGHTS, "m", combination_type=merge_type,
                                   density=MERGE_TYPES[merge_type].get("density"))
    reference.set_adapter("m")
    reference.eval()
    want, got = logits(reference, batch), logits(composed, batch)
    assert (got - want).abs().max() <= 1e-5
    with reference.disable_adapter():
        bare = logits(reference, batch)
    assert (got - bare).abs().max() > 1e-3  # the merge does something


def test_dare_masks_follow_the_recorded_seed(loras, tiny_model_dir, batch):
    options = {"merge_type": "dare_linear", "density": 0.5, "weights": WEIGHTS}
    runs = [logits(ours(tiny_model_dir, loras, "merge", options | {"seed": s}), batch) for s in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1]) and not torch.allclose(runs[0], runs[2])


def test_cat_merge_with_uniform_weights_is_the_average(loras, tiny_model_dir, batch):
    """cat keeps every source's rank, so weights 1/N give exactly the ``average`` baseline."""
    merged = logits(ours(tiny_model_dir, loras, "merge", {"merge_type": "cat", "weights": [1 / 3] * 3}), batch)
    average = logits(ours(tiny_model_dir, loras, "average", {}), batch)
    assert torch.allclose(merged, average, atol=1e-5)


@pytest.mark.parametrize("gks", [None, [2]])
def test_arrow_equals_peft_create_arrow_model(gks, loras, tiny_model_dir, batch):
    from peft import ArrowConfig, create_arrow_model

    from scalearn_cli.backbone import load_backbone

    composed = ours(tiny_model_dir, loras, "arrow", {"top_k": 2, "router_temperature": 0.5, "seed": 3,
                                                     "gks_sources": gks or []})
    base, _, _ = load_backbone(str(tiny_model_dir))
    experts = [str(s) for i, s in enumerate(loras) if i not in (gks or [])]
    config = ArrowConfig(top_k=2, router_temperature=0.5, use_gks=bool(gks), rng_seed=3)
    reference = create_arrow_model(base, experts, config,
                                   general_adapter_paths=[str(loras[i]) for i in gks] if gks else None).eval()
    want, got = logits(reference, batch), logits(composed, batch)
    assert (got - want).abs().max() <= 1e-5
    assert sum(p.requires_grad for p in composed.parameters()) == 0  # nothing of Arrow trains


@pytest.fixture(scope="module")
def bottlenecks(root, tiny_model_dir) -> list[Path]:
    return [make_source(root / f"bn{i}", tiny_model_dir, "bottleneck", seed=i) for i in range(2)]


@pytest.mark.parametrize("method, peft_name", [("merge", "add_weighted_adapter"), ("arrow", "create_arrow_model")])
def test_bottleneck_sources_are_refused_in_one_line(method, peft_name, root, bottlenecks, task_file):
    result = invoke("transfer", *custom(task_file), "--method", method, "--source", bottlenecks[0],
                    "--source", bottlenecks[1], *TRAIN, "--out", root / f"bn-{method}")
    line = one_error_line(result, alone=False)
    assert "PEFT has no" in line and "bottleneck" in line and peft_name in line
    assert not (root / f"bn-{method}").exists()


def test_merge_runs_from_the_cli_and_exports_one_peft_folder(loras, root, task_file, tiny_model_dir, batch):
    from peft import PeftModel

    from scalearn_cli.backbone import load_backbone
    from scalearn_cli.compose import load_composition

    out = root / "merge-ties"
    sources = [arg for s in loras for arg in ("--source", s)]
    ok(invoke("transfer", *custom(task_file), "--method", "merge", "--merge-type", "ties", "--density", "0.5",
              "--merge-weights", "0.5,0.3,0.2", *sources, *TRAIN, "--out", out))
    record = json.loads((out / "composition.json").read_text())
    assert record["method"] == "merge" and record["transfer_parameters"] == 0
    assert record["options"] | {"seed": 0} == {"merge_type": "ties", "density": 0.5, "majority_sign_method": "total",
                                               "weights": WEIGHTS, "seed": 0}
    ok(invoke("eval", out, "--json"))
    exported = root / "merge-ties-export"
    ok(invoke("export", out, "--format", "peft-lora", "--out", exported))
    assert json.loads(ok(invoke("verify", exported, "--against", out, "--json")).stdout)["ok"] is True
    base, _, _ = load_backbone(str(tiny_model_dir))  # one plain PEFT folder: vanilla PEFT loads it
    peft_model = PeftModel.from_pretrained(base, str(exported)).eval()
    composed, _, _ = load_composition(out)
    with torch.no_grad():
        want = composed.encoder(**batch).last_hidden_state
        assert (peft_model(**batch).last_hidden_state - want).abs().max() <= 1e-5


def test_arrow_runs_from_the_cli_and_refuses_export_and_inspect(loras, root, task_file):
    out = root / "arrow"
    sources = [arg for s in loras for arg in ("--source", s)]
    ok(invoke("transfer", *custom(task_file), "--method", "arrow", "--top-k", "2", *sources, *TRAIN, "--out", out))
    assert json.loads((out / "composition.json").read_text())["options"]["top_k"] == 2
    first = json.loads(ok(invoke("eval", out, "--json")).stdout)["metrics"]
    assert json.loads(ok(invoke("eval", out, "--json")).stdout)["metrics"] == first  # the router rebuilds alike
    assert "does not allow export" in one_error_line(invoke("export", out, "--out", root / "arrow-x"), alone=False)
    assert "does not allow inspect" in one_error_line(invoke("inspect", out), alone=False)


@pytest.mark.parametrize("args, needle", [
    (["--method", "merge", "--merge-type", "ties"], "--merge-type ties needs --density"),
    (["--method", "merge", "--density", "0.5"], "--density applies to --merge-type"),
    (["--method", "merge", "--merge-type", "mean"], "--merge-type must be one of linear, cat"),
    (["--method", "merge", "--density", "1.5", "--merge-type", "ties"], "--density must be a number in (0, 1]"),
    (["--method", "merge", "--merge-weights", "1,x"], "--merge-weights must be comma-separated numbers"),
    (["--method", "merge", "--merge-weights", "1,1"], "gives 2 weights for 3 sources"),
    (["--method", "merge", "--soup-k", "2"], "--soup-k applies to --method adaptersoup, not merge"),
    (["--top-k", "2"], "--top-k applies to --method arrow, not scalearn"),
    (["--method", "arrow", "--variant", "scalearn++"], "--variant applies to --method scalearn, not arrow"),
    (["--method", "arrow", "--top-k", "4"], "more than the 3 expert sources"),
    (["--method", "arrow", "--gks-sources", "5"], "--gks-sources names source 5"),
])
def test_bad_method_options_are_one_line_errors(args, needle, loras, root, task_file):
    sources = [arg for s in loras for arg in ("--source", s)]
    result = invoke("transfer", *custom(task_file), *args, *sources, *TRAIN, "--out", root / "bad")
    assert needle in one_error_line(result, alone=False)
    assert not (root / "bad").exists()


def test_a_linear_merge_of_different_ranks_says_what_to_do(root, tiny_model_dir, task_file):
    mixed = [make_source(root / f"rank{r}", tiny_model_dir, "lora", seed=r, r=r) for r in (2, 4)]
    result = invoke("transfer", *custom(task_file), "--method", "merge", "--source", mixed[0], "--source", mixed[1],
                    *TRAIN, "--out", root / "ranks")
    line = one_error_line(result, alone=False)
    assert "add_weighted_adapter (linear) refused" in line and "--merge-type cat or svd" in line


@pytest.fixture(scope="module")
def decoder_loras(tmp_path_factory) -> dict[str, tuple[Path, list[Path]]]:
    """arch -> (a tiny bare decoder, two LoRA sources of rank 4 on PEFT's default targets)."""
    from tiny_decoders import save_tiny_decoders

    root = tmp_path_factory.mktemp("peft-decoders")
    models = save_tiny_decoders(root, ("llama", "gpt2"))
    return {arch: (path, [make_source(root / f"{arch}-lora{i}", path, seed=i, pooling="last", r=4)
                          for i in range(2)]) for arch, path in models.items()}


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_decoders_merge_and_route_as_peft_does(arch, decoder_loras):
    """GPT-2's Conv1D sites (fan_in_fan_out) and Llama's q/v projections: both methods equal PEFT's models."""
    from peft import ArrowConfig, create_arrow_model

    from scalearn_cli.backbone import load_backbone

    model_dir, loras = decoder_loras[arch]
    batch = {"input_ids": torch.randint(3, 60, (2, 6), generator=torch.Generator().manual_seed(0))}
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    merged = ours(model_dir, loras, "merge", {"merge_type": "svd", "weights": [0.7, 0.3]})
    reference = peft_sources(model_dir, loras)
    reference.add_weighted_adapter(["a0", "a1"], [0.7, 0.3], "m", combination_type="svd")
    reference.set_adapter("m")
    assert (logits(merged, batch) - logits(reference.eval(), batch)).abs().max() <= 1e-5
    routed = ours(model_dir, loras, "arrow", {"top_k": 1, "seed": 4})
    base, _, _ = load_backbone(str(model_dir))
    arrow = create_arrow_model(base, [str(s) for s in loras], ArrowConfig(top_k=1, rng_seed=4)).eval()
    assert (logits(routed, batch) - logits(arrow, batch)).abs().max() <= 1e-5
