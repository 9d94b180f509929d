"""Plain helpers the test modules share (fixtures live in conftest.py): running the CLI in-process, checking a
refusal, fabricating source and registry folders, PEFT-saved LoRAs, hand-set ω.

Test modules import these as ``from helpers import ...`` (tests/ is on sys.path, as for conftest.py); no test
module imports from another.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from hubserver import TOKEN
from scalearn_cli import artifacts
from scalearn_cli.artifacts import METADATA_FILE, OMEGA_FILE
from scalearn_cli.artifacts.folders import record_folder
from scalearn_cli.cli.main import app
from scalearn_cli.registry.local import LocalRegistry

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, vocab_size=120)
WORDS = "the a movie film good bad great awful plot actor is was not very really boring fun and or but".split()
POSITIVE, NEGATIVE = ("good", "great", "fun"), ("bad", "awful", "boring")
# one epoch at batch 8 on 16 tokens: the CLI's quickest real training run
TRAIN = ["--epochs", "1", "--batch-size", "8", "--max-length", "16"]
# the same as TrainConfig keywords, capped at two steps
FAST = dict(epochs=1, batch_size=8, max_length=16, max_steps=2, lr=6e-3)
ADAPTERHUB_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "adapterhub"


# ---- the CLI ---------------------------------------------------------------------------------------------
def invoke(*args: Any, **kwargs: Any) -> Any:
    """Run ``scalearn ARGS`` in-process; stdout and stderr stay apart (click >= 8.2). ``kwargs``: CliRunner's
    (``env``, ``input``, ...)."""
    return CliRunner().invoke(app, [str(a) for a in args], **kwargs)


def ok(result: Any) -> Any:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


def ok_json(result: Any) -> Any:
    return json.loads(ok(result).stdout)


def assert_refused(result: Any, out: Path | None, *needles: str, code: int | None = None) -> str:
    """A handled error: non-zero exit, one 'Error:' line naming ``needles``, no traceback, nothing at ``out``."""
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if "Error" in line]
    assert len(errors) == 1 and errors[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    if out is not None:
        assert not out.exists(), f"{out} was written: {sorted(p.name for p in out.iterdir())}"
        assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name]
    return errors[0]


def one_error_line(result: Any, code: int | None = None, *words: str, prefix: str = "Error: ",
                   alone: bool = True) -> str:
    """A handled failure: non-zero exit (``code`` if given), one ``prefix`` line on stderr holding every one of
    ``words``, nothing on stdout, no traceback, no raw escape codes; returns that line.

    ``alone``: that line is all of stderr. Training commands also draw the model-loading and dataset bars that
    ``main()`` turns off and the in-process runner does not, so for them only the message lines are counted.
    """
    assert result.exit_code != 0 and (code is None or result.exit_code == code), (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.splitlines()
    if not alone:
        lines = [line for line in lines if line.startswith(("Error", "Interrupted", "Warning"))]
    assert len(lines) == 1 and lines[0].startswith(prefix), result.stderr
    assert result.stdout == "" and "Traceback" not in result.output
    assert "\x1b" not in result.output and "\x07" not in result.output  # control characters are printed escaped
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def one_line(exc: pytest.ExceptionInfo[Exception]) -> str:
    """A library error's message: one line, no surrounding blanks, never the test token."""
    message = str(exc.value)
    assert "\n" not in message and message.strip() == message
    assert TOKEN not in message
    return message


def staging_leftovers(folder: Path) -> list[str]:
    """Temporary names (``.x.tmp-...``, ``.x.old-...``) left anywhere under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name)


# ---- task data -------------------------------------------------------------------------------------------
def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    """``rows`` as a JSON-lines file (its folder made if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def sentiment_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        word = rng.choice(POSITIVE if label else NEGATIVE)
        rows.append({"sentence": f"the {rng.choice(['movie', 'film', 'plot'])} was very {word}", "label": label})
    return rows


def custom(task_file: Path) -> list[str]:
    """The options of a custom single-sentence task read from ``task_file``."""
    return ["--task", "custom", "--data-file", str(task_file), "--text-fields", "sentence"]


def transfer_args(task_file: Path, sources: list[Path], out: Path, *extra: Any) -> list[Any]:
    """``scalearn transfer`` over ``sources`` on the custom task in ``task_file``, trained briefly."""
    srcs = [a for s in sources for a in ("--source", s)]
    return ["transfer", *custom(task_file), *srcs, *TRAIN, "--out", out, *extra]


# two disjoint vocabularies: AdapterSoup tells sources trained on them apart by their texts
GROUPS = {
    "movies": ["movie", "film", "plot", "actor", "good", "bad", "great", "awful"],
    "numbers": [f"w{i}" for i in range(20)],
}


def write_task(path: Path, words: list[str], n: int = 48, seed: int = 0) -> Path:
    """``n`` rows of six words drawn from ``words``, random labels."""
    rng = random.Random(seed)
    rows = [{"sentence": " ".join(rng.choice(words) for _ in range(6)), "label": rng.randint(0, 1)} for _ in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def shared_data_dir() -> Path:
    """``../shared/data`` beside the repo (override with SCALEARN_SHARED_DATA)."""
    env = os.environ.get("SCALEARN_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


# ---- folders scalearn writes -----------------------------------------------------------------------------
def read_card_yaml(folder: Path) -> dict[str, Any]:
    import yaml

    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def fake_task_meta(name: str = "rte", labels: tuple[str, ...] = ("entailment", "not_entailment")) -> dict:
    return {
        "name": name,
        "hub_id": None,
        "hub_config": None,
        "text_fields": [["sentence1"], ["sentence2"]],
        "label_field": "label",
        "label_names": list(labels),
        "problem_type": "classification",
        "metrics": ["accuracy"],
        "main_metric": "accuracy",
        "choice_fields": [],
        "test_split": "validation",
    }


def make_source(out: Path, model_dir: Path, kind: str = "lora", seed: int = 0, task: str = "rte",
                pooling: str | None = None, **settings) -> Path:
    """Fabricate a source folder with random (non-zero) adapter weights, saved exactly as train-source saves.

    ``pooling=None`` writes the head entry without a pooling field, as scalearn wrote it before the option.
    """
    from dataclasses import asdict

    from scalearn_cli.backbone import load_backbone
    from scalearn_cli.model import TaskHead
    from scalearn_cli.sources import get_kind
    from scalearn_cli.sources.folder import save_source

    encoder, _, ref = load_backbone(str(model_dir))
    torch.manual_seed(seed)
    source_kind = get_kind(kind)
    cfg = source_kind.settings(settings)
    trained = source_kind.attach(encoder, cfg, ref.id)
    params = trained.params
    with torch.no_grad():
        for p in params:
            p.normal_(0, 0.2)
    head = TaskHead(ref.hidden_size, 2, pooling=pooling or "first")
    meta = {
        "format_version": 1,
        "kind": "source",
        "task": fake_task_meta(task),
        "base_model": ref.to_dict(),
        "adapter": {"kind": kind, "settings": asdict(cfg), "parameters": sum(p.numel() for p in params)},
        "head": {"hidden_size": ref.hidden_size, "num_outputs": 2, **({"pooling": pooling} if pooling else {})},
        "metrics": {"test": {"accuracy": 50.0 + seed}},
        "scalearn_version": "test",
    }
    save_source(out, trained, cfg, head, meta)
    return out


def two_source_workspace(root: Path, model_dir: Path, *transfer_options: str) -> dict[str, Path]:
    """Two LoRA sources (seeds 0, 1), a 24-row rte data folder and a scalearn composition of the two, made by the
    CLI with 1 epoch at batch 8: the inputs the out-safety, integrity and option-check tests damage or misuse."""
    sources = [make_source(root / f"src{i}", model_dir, seed=i) for i in range(2)]
    data = root / "rte"
    data.mkdir()
    rows = [{"sentence1": "good movie w1", "sentence2": "the plot", "label": i % 2} for i in range(24)]
    for split in ("train", "validation", "test"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    comp = root / "comp"
    args = ["transfer", "--task", "rte", "--data-dir", data, "-s", sources[0], "-s", sources[1], "--epochs", "1",
            "--batch-size", "8", *transfer_options, "--out", comp]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return {"root": root, "s0": sources[0], "s1": sources[1], "data": data, "comp": comp}


def refingerprint(folder: Path) -> None:
    """Record a folder's current files in its scalearn.json (as if scalearn had written them)."""
    meta = artifacts.Metadata.from_dict(artifacts.read_json(folder / METADATA_FILE))
    files = artifacts.folder_fingerprint(folder)
    artifacts.write_json(folder / METADATA_FILE, meta.with_files(files, artifacts.content_hash(files)).to_dict())


def write_omega(folder: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Replace a composition's ω by hand and re-fingerprint scalearn.json (as if transfer had learned it)."""
    artifacts.save_tensors(folder / OMEGA_FILE, tensors)
    refingerprint(folder)


def random_omega(folder: Path, seed: int) -> dict[str, torch.Tensor]:
    """Random ω of the stored shapes, with source 1 zeroed in the first key (a zero block must still fold)."""
    gen = torch.Generator().manual_seed(seed)
    stored = load_file(str(folder / OMEGA_FILE))
    omega = {k: torch.randn(v.shape, generator=gen) for k, v in stored.items()}
    omega[sorted(omega)[0]][1] = 0.0
    write_omega(folder, omega)
    return omega


# ---- folders other libraries write -----------------------------------------------------------------------
def peft_lora(folder: Path, model_dir: Path, seed: int, base_name: str | None = None,
              safe_serialization: bool | None = True, **config: Any) -> Path:
    """A LoRA saved by PEFT itself (save_pretrained), with random non-zero weights."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    torch.manual_seed(seed)
    model = get_peft_model(AutoModel.from_pretrained(model_dir), LoraConfig(r=4, lora_alpha=8, **config))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.3)
    model.peft_config["default"].base_model_name_or_path = base_name or str(model_dir)
    model.save_pretrained(folder, safe_serialization=bool(safe_serialization))  # False: adapter_model.bin
    return folder


def one_hot(comp, index: int, n: int) -> None:
    """Set every ω of a composition to pick source ``index`` of ``n`` alone."""
    with torch.no_grad():
        for value in comp.combiner.values:
            hot = torch.zeros(n)
            hot[index] = 1.0
            value.copy_(hot.view(-1, *([1] * (value.dim() - 1))).expand_as(value))


def alone_vs_library(source, arch: str, variant: str):  # -> Composition
    """Compose ``source`` alone (ω one-hot) on the fixture's base; its hidden states must be the ``adapters``
    library's own (recorded by tests/fixtures/adapterhub/make_fixture.py) to 1e-5."""
    from transformers import AutoModel

    from scalearn_cli.combiners import get_combiner
    from scalearn_cli.compose import inject

    expected = load_file(ADAPTERHUB_FIXTURES / arch / "expected.safetensors")
    encoder = AutoModel.from_pretrained(ADAPTERHUB_FIXTURES / arch / "base").eval()
    comp = inject(encoder, [source], get_combiner("scalearn").spec(variant))
    comp.eval()
    one_hot(comp, 0, 1)
    inputs = {k: expected[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        diff = (encoder(**inputs).last_hidden_state - expected["last_hidden_state"]).abs().max()
    assert float(diff) <= 1e-5
    return comp


# ---- registries ------------------------------------------------------------------------------------------
_counter = iter(range(10_000))


def unique(name: str) -> str:
    """Repo ids are unique per test because the hub server lives for the whole module."""
    return f"org/{name}-{os.getpid()}-{next(_counter)}"


def make_adapter(folder: Path, seed: int = 0, task: str = "rte", extra: dict[str, bytes] | None = None) -> Path:
    """A tiny source-adapter folder: PEFT-style files + scalearn.json + a model card tagged `scalearn`."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    save_file({"w": torch.randn(4, 4, generator=generator)}, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"r": 4, "seed": seed}))
    metadata = {
        "kind": "source",
        "task": task,
        "base_model": {"id": "tiny-bert", "revision": "0" * 40},
        "adapter": {"kind": "lora"},
        "metrics": {"validation": {"accuracy": 0.5 + seed / 100}},
        "format_version": 1,
    }
    (folder / "scalearn.json").write_text(json.dumps(metadata))
    (folder / "README.md").write_text("---\ntags:\n- scalearn\nlibrary_name: peft\n---\n# adapter\n")
    for name, data in (extra or {}).items():
        (folder / name).write_bytes(data)
    record_folder(folder)  # a folder without its record is never pushed
    return folder


def read_all(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if not p.name.startswith(".")}


def repo_dir(registry: LocalRegistry, repo_id: str) -> Path:
    """Where a local registry keeps ``repo_id`` (the Hub cache's layout)."""
    return registry.root / ("models--" + repo_id.replace("/", "--"))


def forge_commit(registry: LocalRegistry, repo_id: str, files: dict[str, Any], ref: str) -> str:
    """Write a self-consistent manifest (named by its own hash, as a push would) and point ``ref`` at it."""
    manifest = {"format_version": 1, "repo_id": repo_id, "parent": None, "message": "forged", "time": "now",
                "files": files}
    payload = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    commit = hashlib.sha256(payload.encode()).hexdigest()[:40]
    (repo_dir(registry, repo_id) / "commits" / f"{commit}.json").write_text(payload)
    (repo_dir(registry, repo_id) / "refs" / ref).write_text(commit)
    return commit


# ---- the quickstart ------------------------------------------------------------------------------------
QUICKSTART_METHODS = ["cr's own LoRA (shelf)", "average (ω = 1/N)", "ScaLearn++"]
#: (task, family, ω share) of a made-up shelf like the shipped one (19 sources, 8 families), largest share first
QUICKSTART_SHELF = [("sst2", "sentiment", 0.09), ("mpqa", "sentiment", 0.08), ("subj", "sentiment", 0.07),
                    ("mnli", "nli", 0.06), ("trec", "question_type", 0.055), ("qnli", "nli", 0.055),
                    ("cola", "acceptability", 0.05), ("rte", "nli", 0.05), ("boolq", "qa", 0.05),
                    ("sick_relatedness", "similarity", 0.05), ("snli", "nli", 0.045), ("mrpc", "paraphrase", 0.045),
                    ("stsb", "similarity", 0.045), ("scitail", "nli", 0.045), ("anli", "nli", 0.04),
                    ("sick_entailment", "nli", 0.04), ("tweet_eval_irony", "tweets", 0.04),
                    ("tweet_eval_emotion", "tweets", 0.04), ("wnli", "nli", 0.035)]


def fake_result(workdir: Path, plot: str | None) -> dict[str, Any]:
    """What ``run_quickstart`` returns, with made-up numbers."""
    from scalearn_cli.quickstart import family_shares, next_steps

    sources = [{"name": f"{task}-lora", "task": task, "family": fam, "ref": f"scalearn-zoo/minilm-l6-{task}-lora@"
                + "a" * 40, "zoo": f"zoo:minilm-l6/{task}-lora", "score": 80.0, "metric": "accuracy",
                "baseline": 50.0} for task, fam, _ in QUICKSTART_SHELF]
    own = {"name": "cr-lora", "task": "cr", "family": "sentiment", "ref": "scalearn-zoo/minilm-l6-cr-lora@" + "b" * 40,
           "zoo": "zoo:minilm-l6/cr-lora", "score": 88.6, "metric": "accuracy", "baseline": 66.2,
           "train_examples": 2715}
    common = {"task": "cr", "train_examples": 288, "dev_examples": 32, "test_examples": 376,
              "head_parameters": 148610, "metric": "accuracy", "epochs_run": 10}
    rows = [{**common, "method": QUICKSTART_METHODS[0], "combiner": None, "variant": None, "n_sources": 1,
             "train_examples": 2715, "dev_examples": None, "test_examples": None, "parameters": None,
             "head_parameters": None, "score": 88.6, "kept_epoch": None, "epochs_run": None},
            {**common, "method": QUICKSTART_METHODS[1], "combiner": "average", "variant": None, "n_sources": 19,
             "parameters": 0, "score": 81.1, "kept_epoch": 5},
            {**common, "method": QUICKSTART_METHODS[2], "combiner": "scalearn", "variant": "scalearn++",
             "n_sources": 19, "parameters": 7680, "score": 84.3, "kept_epoch": 7}]
    shares = [{"index": i, "ref": s["ref"], "task": s["task"], "family": s["family"], "share": share,
               "mean_omega": 2 * share} for i, (s, (_, _, share)) in enumerate(zip(sources, QUICKSTART_SHELF))]
    learned = {"start": 2 / 19, "mean_relative_change": 0.4, "largest_share": 0.09, "smallest_share": 0.035,
               "kept_epoch": 7, "epochs_run": 10, "steps": 63}
    omega = {"composition": str(workdir / "transfer" / "scalearn++"), "variant": "scalearn++", "plot": plot,
             "sources": shares, "families": family_shares(shares), "learned": learned, "warning": None,
             "weighed": None}
    export = {"out": str(workdir / "export" / "scalearn++-merged"), "format": "merged", "max_abs_diff": 4.2e-7,
              "ok": True, "samples": 64, "tolerance": 1e-5}
    return {"target": "cr", "data": "zoo/quickstart/cr", "workdir": str(workdir), "sources": sources,
            "left_out": own, "rows": rows, "omega": omega, "export": export, "next": next_steps(workdir)}

