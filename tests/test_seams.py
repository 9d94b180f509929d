"""The seams: a new adapter kind, a new combiner and a new registry backend are one module + one line each;
AdapterSoup as a combiner; no option or name of another kind falls through silently. (The resolver's provenance and
trust: test_folder_trust.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from helpers import GROUPS, TRAIN, custom, invoke, make_source, ok, write_task


@pytest.fixture(scope="module")
def fake_kind():
    from fake_kind import FakeKind

    from scalearn_cli.sources import SOURCE_KINDS, register_kind

    register_kind(FakeKind())  # the one registration line a new kind needs
    yield "fake"
    SOURCE_KINDS.pop("fake", None)


# ---- adapter kinds ------------------------------------------------------------------------------------------
def test_a_new_kind_trains_composes_and_reproduces_its_single_source(fake_kind, root, tiny_model_dir, batch):
    from scalearn_cli.backbone import load_backbone
    from scalearn_cli.combiners import get_combiner
    from scalearn_cli.compose import inject
    from scalearn_cli.resolve import Resolver
    from scalearn_cli.stages.source import load_source_model

    task = write_task(root / "fake-task.jsonl", GROUPS["movies"])
    trained = root / "fake-trained"
    summary = json.loads(ok(invoke("train-source", "--model", tiny_model_dir, *custom(task), "--adapter", "fake",
                                   *TRAIN, "--out", trained, "--json")).stdout)
    assert summary["adapter"]["kind"] == "fake" and summary["adapter"]["settings"] == {"rank": 2}
    assert (trained / "fake_adapter.safetensors").is_file() and (trained / "fake_config.json").is_file()
    folders = [make_source(root / f"fake{i}", tiny_model_dir, "fake", seed=i) for i in range(2)]
    composed = root / "fake-composed"
    ok(invoke("transfer", *custom(task), "--source", folders[0], "--source", folders[1], *TRAIN, "--out", composed))
    assert json.loads((composed / "composition.json").read_text())["adapter_kind"] == "fake"

    encoder, _, _ = load_backbone(str(tiny_model_dir))
    comp = inject(encoder, [Resolver().source(str(f)) for f in folders], get_combiner("scalearn").spec("scalearn"))
    comp.eval()
    with torch.no_grad():
        for value in comp.combiner.values:
            value.copy_(torch.tensor([1.0, 0.0]).view(-1, *([1] * (value.dim() - 1))).expand_as(value))
        single, _, _ = load_source_model(folders[0])
        want = single.encoder(**batch).last_hidden_state
        assert torch.allclose(encoder(**batch).last_hidden_state, want, atol=1e-6)


def test_unknown_kind_is_a_clear_error(root, tiny_model_dir):
    from scalearn_cli.errors import CompositionError
    from scalearn_cli.sources import get_kind

    with pytest.raises(CompositionError, match="unknown adapter kind 'ia3'.*lora, bottleneck"):
        get_kind("ia3")
    result = invoke("train-source", "--model", tiny_model_dir, "--task", "rte", "--adapter", "ia3",
                    "--out", root / "ia3")
    assert result.exit_code == 1 and "unknown adapter kind 'ia3'" in result.stderr


# ---- combiners: AdapterSoup ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def soup_sources(root, tiny_model_dir) -> dict[str, Path]:
    """Two trained LoRA sources whose training texts come from disjoint vocabularies."""
    out = {}
    for i, (name, words) in enumerate(GROUPS.items()):
        task = write_task(root / f"{name}.jsonl", words, seed=i)
        out[name] = root / f"soup-{name}"
        ok(invoke("train-source", "--model", tiny_model_dir, *custom(task), *TRAIN, "--seed", str(i),
                  "--out", out[name]))
    return out


def test_adaptersoup_picks_the_most_similar_source_and_averages_it(soup_sources, root):
    target = write_task(root / "numbers-target.jsonl", GROUPS["numbers"], seed=7)
    out = root / "soup-k1"
    ok(invoke("transfer", *custom(target), "--method", "adaptersoup", "--soup-k", "1",
              "--source", soup_sources["movies"], "--source", soup_sources["numbers"], *TRAIN, "--out", out))
    record = json.loads((out / "composition.json").read_text())
    assert record["method"] == "adaptersoup" and record["options"]["selected"] == [1]
    sims = record["options"]["similarity"]
    assert sims[1] > sims[0]
    assert record["transfer_parameters"] == 0 and not (out / "omega.safetensors").exists()
    table = json.loads(ok(invoke("inspect", out, "--json")).stdout)
    assert [s["share"] for s in table["sources"]] == [0.0, 1.0]
    again = json.loads(ok(invoke("eval", out, "--json")).stdout)  # re-built from the record, same selection
    assert again["kind"] == "composition"


def test_adaptersoup_over_all_sources_is_the_average_and_folds_exactly(soup_sources, root):
    target = write_task(root / "mixed-target.jsonl", GROUPS["movies"] + GROUPS["numbers"], seed=9)
    sources = ["--source", soup_sources["movies"], "--source", soup_sources["numbers"]]
    soup, avg = root / "soup-all", root / "avg-all"
    ok(invoke("transfer", *custom(target), "--method", "adaptersoup", "--soup-k", "5", *sources, *TRAIN, "--out", soup))
    ok(invoke("transfer", *custom(target), "--method", "average", *sources, *TRAIN, "--out", avg))
    assert json.loads((soup / "composition.json").read_text())["options"]["selected"] == [0, 1]
    # same frozen mix (1/2 each) and same seed: the same head is learned, so the same test scores
    scores = [json.loads(ok(invoke("eval", f, "--json")).stdout)["metrics"] for f in (soup, avg)]
    assert scores[0] == pytest.approx(scores[1], rel=1e-5)
    exported = root / "soup-export"
    ok(invoke("export", soup, "--format", "peft-lora", "--out", exported))
    check = json.loads(ok(invoke("verify", exported, "--against", soup, "--json")).stdout)
    assert check["ok"] is True


def test_adaptersoup_reads_a_demo_source_whose_data_folder_is_gone_and_says_what_to_do_for_a_custom_one(
        soup_sources, root, tiny_model_dir):
    """A quickstart's zoo source outlives the quickstart folder that held its demo data (the registry keeps it)."""
    import shutil

    from scalearn_cli.data.demo import write_demo_tasks

    demo = write_demo_tasks(root / "gone" / "demo")["demo-sentiment"]
    source = root / "soup-demo"
    ok(invoke("train-source", "--model", tiny_model_dir, "--task", "demo-sentiment", "--data-dir", demo,
              "--max-train-samples", "48", *TRAIN, "--out", source))
    shutil.rmtree(root / "gone")
    target = write_task(root / "movies-target.jsonl", GROUPS["movies"], seed=11)
    out = root / "soup-demo-gone"
    ok(invoke("transfer", *custom(target), "--method", "adaptersoup", "--soup-k", "1", "--source", source,
              "--source", soup_sources["numbers"], *TRAIN, "--out", out))
    assert len(json.loads((out / "composition.json").read_text())["options"]["similarity"]) == 2

    moved = root / "movies-moved.jsonl"  # a custom task has nothing to fall back on: one line, what to do
    own = root / "soup-custom-gone"
    ok(invoke("train-source", "--model", tiny_model_dir, *custom(write_task(moved, GROUPS["movies"])), *TRAIN,
              "--out", own))
    moved.unlink()
    result = invoke("transfer", *custom(target), "--method", "adaptersoup", "--soup-k", "1", "--source", own,
                    "--source", soup_sources["numbers"], *TRAIN, "--out", root / "soup-custom-out")
    assert result.exit_code != 0 and "--soup-k" in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "movies-moved.jsonl, which is missing; restore it" in errors[0], result.stderr

    moved.write_text("")  # there but unreadable: the same one line, with the reader's reason
    result = invoke("transfer", *custom(target), "--method", "adaptersoup", "--soup-k", "1", "--source", own,
                    "--source", soup_sources["numbers"], *TRAIN, "--out", root / "soup-custom-out")
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert result.exit_code != 0 and len(errors) == 1, result.stderr
    assert "has texts that cannot be read (data file" in errors[0] and "is empty" in errors[0], errors[0]
    assert not (root / "soup-custom-out").exists()


def test_adaptersoup_averages_bottleneck_weights(root, tiny_model_dir, batch):
    """For ReLU adapters the soup is one adapter with the k sources' weights averaged (weight space)."""
    from scalearn_cli.backbone import load_backbone
    from scalearn_cli.combiners import CombinerSpec
    from scalearn_cli.compose import inject
    from scalearn_cli.resolve import Resolver
    from scalearn_cli.sources import bottleneck

    folders = [make_source(root / f"bn-soup{i}", tiny_model_dir, "bottleneck", seed=i) for i in range(3)]
    encoder, _, _ = load_backbone(str(tiny_model_dir))
    inject(encoder, [Resolver().source(str(f)) for f in folders], CombinerSpec("adaptersoup", None, {"selected": [0, 2]}))
    encoder.eval()
    reference, _, _ = load_backbone(str(tiny_model_dir))
    layers = [bottleneck.load_weights(f)[1] for f in (folders[0], folders[2])]
    averaged = [{k: (a[k] + b[k]) / 2 for k in a} for a, b in zip(*layers)]
    adapters = bottleneck.attach(reference, bottleneck.BottleneckSettings())
    for adapter, state in zip(adapters, averaged):
        adapter.load_state_dict(state)
    reference.eval()
    with torch.no_grad():
        assert torch.allclose(encoder(**batch).last_hidden_state, reference(**batch).last_hidden_state, atol=1e-6)


@pytest.mark.parametrize("name, key, flag", [("adaptersoup", "k", "--soup-k"), ("lorahub", "budget", "--lorahub-budget")])
def test_count_options_are_whole_numbers(name, key, flag):
    from scalearn_cli.combiners import get_combiner
    from scalearn_cli.errors import UsageError

    combiner = get_combiner(name)
    assert combiner.spec(options={key: 3}).options[key] == 3
    assert combiner.spec().options[key] >= 1  # the default
    for bad in (0, -2, 1.5, True, "4"):
        with pytest.raises(UsageError, match=f"^{flag} must be a whole number >= 1, got {bad}$"):
            combiner.spec(options={key: bad})


# ---- the combiner seam: one module + one registration line -------------------------------------------------
@pytest.fixture
def first_combiner():
    from scalearn_cli.combiners import register_combiner, unregister_combiner
    from scalearn_cli.combiners.options import Option, positive

    register_combiner("first", "fake_combiner:First", allows=("fold", "inspect"), options=(  # the one line
        Option("weight", float, 1.0, "first: the weight of source 0.", "--first-weight", positive),))
    yield "first"
    unregister_combiner("first")


def test_a_new_combiner_runs_transfer_eval_inspect_and_export(first_combiner, soup_sources, root, tiny_model_dir,
                                                                batch):
    from scalearn_cli.compose import load_composition
    from scalearn_cli.stages.source import load_source_model

    assert "--first-weight" in ok(invoke("transfer", "--help")).stdout  # the CLI built its flag from the table
    target = write_task(root / "first-target.jsonl", GROUPS["movies"], seed=3)
    out = root / "first"
    ok(invoke("transfer", *custom(target), "--method", "first", "--first-weight", "1.0",
              "--source", soup_sources["movies"], "--source", soup_sources["numbers"], *TRAIN, "--out", out))
    assert json.loads((out / "composition.json").read_text())["options"] == {"weight": 1.0}
    ok(invoke("eval", out, "--json"))
    table = json.loads(ok(invoke("inspect", out, "--json")).stdout)
    assert [s["share"] for s in table["sources"]] == [1.0, 0.0]
    composed, _, _ = load_composition(out)
    single, _, _ = load_source_model(soup_sources["movies"])
    with torch.no_grad():  # weight 1 on source 0 only: exactly that source
        want = single.encoder(**batch).last_hidden_state
        assert torch.allclose(composed.encoder(**batch).last_hidden_state, want, atol=1e-5)
    exported = root / "first-export"
    ok(invoke("export", out, "--format", "peft-lora", "--out", exported))
    assert json.loads(ok(invoke("verify", exported, "--against", out, "--json")).stdout)["ok"] is True
    bad = invoke("transfer", *custom(target), "--method", "first", "--first-weight", "0", "--source",
                 soup_sources["movies"], *TRAIN, "--out", root / "first-bad")
    assert bad.exit_code == 2 and "--first-weight must be a number > 0, got 0.0" in bad.stderr


def test_a_combiner_that_does_not_fold_is_refused_by_the_table(first_combiner, soup_sources, root):
    from scalearn_cli.combiners import COMBINERS, Registration

    target = write_task(root / "first-nofold.jsonl", GROUPS["movies"], seed=4)
    out = root / "first-nofold"
    ok(invoke("transfer", *custom(target), "--method", "first", "--source", soup_sources["movies"], *TRAIN,
              "--out", out))
    COMBINERS["first"] = Registration("fake_combiner:First", COMBINERS["first"].options, frozenset({"inspect"}))
    result = invoke("export", out, "--out", root / "first-nofold-x")
    assert result.exit_code == 1 and "does not allow export" in result.stderr and "first-source" in result.stderr


def test_registering_a_combiner_name_twice_is_refused(first_combiner):
    from scalearn_cli.combiners import register_combiner
    from scalearn_cli.errors import UsageError

    with pytest.raises(UsageError, match="^a combiner named 'first' is already registered; choose another name$"):
        register_combiner("first", "fake_combiner:First")
    with pytest.raises(UsageError, match="unknown actions"):
        register_combiner("second", "fake_combiner:First", allows=("fly",))


def test_transfer_help_lists_each_option_once():
    import re

    from scalearn_cli.combiners import all_options

    help_text = ok(invoke("transfer", "--help")).stdout
    flags = re.findall(r"(--[a-z][a-z0-9-]*)", help_text)
    declared = [option.flag for option in all_options()]
    assert set(declared) <= set(flags)
    options = [line.split()[1] for line in help_text.splitlines() if line.strip().startswith("│    --")]
    assert len(options) == len(set(options)), sorted(o for o in options if options.count(o) > 1)


def test_no_combiner_name_is_checked_outside_its_module_and_the_table():
    """Outside ``combiners/``: no comparison with, or dict keyed by, a combiner's name, and no method compared with
    any constant. ("scalearn" is also the product's folder format and a variant name, so only the second rule
    catches it as a method.)"""
    import ast

    from scalearn_cli.combiners import combiner_names

    package = Path(__file__).resolve().parents[1] / "scalearn_cli"
    names = set(combiner_names()) - {"scalearn"}
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.parent.name == "combiners":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            consts = []
            if isinstance(node, ast.Compare):
                consts = [node.left, *node.comparators]
                sides = [ast.unparse(side) for side in consts]
                if any(side.endswith(("method", "combiner", "[\'method\']", '["method"]')) for side in sides) and any(
                        isinstance(side, ast.Constant) and isinstance(side.value, str) for side in consts):
                    found.append(f"{path.relative_to(package)}:{node.lineno} {ast.unparse(node)}")
                consts += [e for c in node.comparators if isinstance(c, (ast.Tuple, ast.List, ast.Set)) for e in c.elts]
            elif isinstance(node, ast.Dict):
                consts = [k for k in node.keys if k is not None]
            found += [f"{path.relative_to(package)}:{node.lineno} {c.value!r}" for c in consts
                      if isinstance(c, ast.Constant) and c.value in names]
    assert found == []


# ---- the registry seam: backends in a table ---------------------------------------------------------------
def test_a_new_registry_backend_is_one_table_entry(root, tiny_model_dir):
    from scalearn_cli.registry import base
    from scalearn_cli.registry.base import BACKENDS, Backend, Registry, register_backend

    class FakeRegistry(Registry):
        """A registry of another class (delegating to a local one): the resolver must not care which."""

        def __init__(self, spec: str) -> None:
            self.inner = base.get_registry(f"local:{spec.partition(':')[2]}")
            self.location, self.spec = self.inner.location, spec

        @property
        def reference(self) -> str:
            return self.spec

        def push(self, *args: Any, **kwargs: Any):
            return self.inner.push(*args, **kwargs)

        def pull(self, *args: Any, **kwargs: Any):
            return self.inner.pull(*args, **kwargs)

        def resolve(self, *args: Any, **kwargs: Any):
            return self.inner.resolve(*args, **kwargs)

        def list(self, *args: Any, **kwargs: Any):
            return self.inner.list(*args, **kwargs)

        def file_hashes(self, *args: Any, **kwargs: Any):
            return self.inner.file_hashes(*args, **kwargs)

    backend = register_backend(Backend((), ("fake:",), lambda spec, endpoint: FakeRegistry(spec), "'fake:/dir'"))
    try:
        spec = f"fake:{root / 'fake-registry'}"
        source = make_source(root / "fake-reg-src", tiny_model_dir, "lora", seed=50)
        ok(invoke("push", source, "org/fake-src", "--registry", spec))
        task = write_task(root / "fake-reg.jsonl", GROUPS["movies"])
        out = root / "fake-reg-composed"
        ok(invoke("transfer", *custom(task), "--source", "org/fake-src", "--registry", spec, *TRAIN, "--out", out))
        recorded = json.loads((out / "composition.json").read_text())["sources"][0]
        assert (recorded["id"], recorded["registry"]) == ("org/fake-src", spec)
        ok(invoke("eval", out))  # re-resolved through the table from the recorded reference
        with pytest.raises(Exception, match="already registered"):
            register_backend(Backend((), ("fake:",), backend.open, "again"))
        unknown = invoke("list", "--registry", "ftp://x")
        assert unknown.exit_code == 2 and "'fake:/dir'" in unknown.stderr
    finally:
        BACKENDS.remove(backend)


# ---- no silent fall-through -------------------------------------------------------------------------------
def test_an_option_of_another_kind_is_a_one_line_error(root, tiny_model_dir):
    task = write_task(root / "kind-opt.jsonl", GROUPS["movies"])
    result = invoke("train-source", "--model", tiny_model_dir, *custom(task), "--adapter", "bottleneck",
                    "--lora-r", "4", *TRAIN, "--out", root / "kind-opt")
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert result.exit_code == 2 and errors == ["Error: --lora-r applies to --adapter lora, not bottleneck; drop it"]
    assert not (root / "kind-opt").exists()


def test_unknown_activations_and_foreign_formats_are_refused(root):
    from scalearn_cli.errors import ArtifactError, CompositionError
    from scalearn_cli.formats import foreign_metadata
    from scalearn_cli.scaling import LowRankMix

    with pytest.raises(CompositionError, match="activation 'gelu'.*relu, identity"):
        LowRankMix("s", torch.zeros(2, 4), torch.zeros(4, 2), torch.zeros(2), 1, "gelu")
    with pytest.raises(ArtifactError, match="unknown adapter format 'onnx'; scalearn reads peft, adapterhub"):
        foreign_metadata(root, "onnx")
