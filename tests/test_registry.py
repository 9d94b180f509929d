"""Registry backends (local directory, Hub through the real huggingface_hub client) and the push/pull/list CLI.

The Hub tests run huggingface_hub 2.4 unmodified against tests/hubserver.py on 127.0.0.1; nothing is mocked
except huggingface_hub's module-level settings (cache dirs, token, Xet switch, endpoint), see ``hf_env``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hubserver import TOKEN, HubServer
from scalearn_cli.artifacts.folders import record_folder
from scalearn_cli.errors import ArtifactError, RegistryError, UsageError
from scalearn_cli.registry import get_registry, parse_ref, validate_repo_id
from scalearn_cli.registry.base import Registry
from scalearn_cli.registry.hub import HubRegistry
from scalearn_cli.registry.local import LocalRegistry

ADAPTER_FILES = ["README.md", "adapter_config.json", "adapter_model.safetensors", "scalearn.json"]


# ---- fixtures --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hub_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with HubServer(tmp_path_factory.mktemp("hub")) as server:
        yield server


@pytest.fixture(autouse=True)
def hf_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Isolate huggingface_hub: caches in tmp, the test token, no Xet, never the real Hub.

    huggingface_hub reads its environment once, at import, into ``huggingface_hub.constants``; setting
    env vars now would not be seen, so the constants themselves are patched (env vars too, for subprocesses).
    ``HF_HUB_DISABLE_XET`` matters because the client uploads through Xet whenever ``hf_xet`` is installed,
    whatever the server advertises; the test server speaks the classic LFS protocol only.
    """
    from huggingface_hub import constants

    home = tmp_path / "hf_home"
    for name, value in {
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_TOKEN_PATH": str(home / "token"),
    }.items():
        monkeypatch.setattr(constants, name, value)
        monkeypatch.setenv(name, str(int(value)) if isinstance(value, bool) else value)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # anything that escapes the fixtures fails fast
    monkeypatch.delenv("SCALEARN_REGISTRY", raising=False)


@pytest.fixture(params=["local", "hub"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Registry:
    if request.param == "local":
        return LocalRegistry(tmp_path / "registry")
    return HubRegistry(endpoint=request.getfixturevalue("hub_server").url)


_counter = iter(range(10_000))


def unique(name: str) -> str:
    """Repo ids are unique per test because the hub server lives for the whole module."""
    return f"org/{name}-{os.getpid()}-{next(_counter)}"


def make_adapter(folder: Path, seed: int = 0, task: str = "rte", extra: dict[str, bytes] | None = None) -> Path:
    """A tiny source-adapter folder: PEFT-style files + scalearn.json + a model card tagged `scalearn`."""
    import torch
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


def one_line(exc: pytest.ExceptionInfo[Exception]) -> str:
    message = str(exc.value)
    assert "\n" not in message and message.strip() == message
    assert TOKEN not in message
    return message


# ---- round trips, revisions, tags ------------------------------------------------------------------------
def test_push_pull_identical_bytes(registry: Registry, tmp_path: Path) -> None:
    folder = make_adapter(tmp_path / "a")
    repo_id = unique("roundtrip")
    result = registry.push(folder, repo_id)
    assert result.repo_id == repo_id and len(result.commit) == 40
    assert str(result) == f"{repo_id}@{result.commit}"

    snapshot = registry.pull(repo_id)
    assert read_all(snapshot) == read_all(folder)
    pulled = registry.pull(repo_id, result.commit, local_dir=tmp_path / "out")
    assert pulled == (tmp_path / "out").absolute()
    assert sorted(os.listdir(pulled)) == ADAPTER_FILES  # no .cache, no .gitattributes
    assert read_all(pulled) == read_all(folder)
    assert registry.pull(repo_id, local_dir=tmp_path / "out") == pulled  # pulling again is a no-op

    hashes = registry.file_hashes(repo_id, result.commit)
    from scalearn_cli.artifacts import sha256_file

    assert hashes == {name: sha256_file(folder / name) for name in ADAPTER_FILES}


def test_revisions_and_tags(registry: Registry, tmp_path: Path) -> None:
    repo_id = unique("revs")
    first = registry.push(make_adapter(tmp_path / "v1", seed=1), repo_id, tag="v1").commit
    second = registry.push(make_adapter(tmp_path / "v2", seed=2), repo_id, tag="v2", commit_message="v2").commit
    dev = registry.push(make_adapter(tmp_path / "dev", seed=3), repo_id, revision="dev").commit
    assert len({first, second, dev}) == 3

    assert registry.resolve(repo_id) == registry.resolve(repo_id, "main") == second
    assert registry.resolve(repo_id, "v1") == registry.resolve(repo_id, first) == first
    assert registry.resolve(repo_id, "v2") == second
    assert registry.resolve(repo_id, "dev") == dev
    # the old revision still pulls the old bytes
    assert read_all(registry.pull(repo_id, "v1", local_dir=tmp_path / "p1")) == read_all(tmp_path / "v1")
    assert read_all(registry.pull(repo_id, local_dir=tmp_path / "p2")) == read_all(tmp_path / "v2")
    assert read_all(registry.pull(repo_id, "dev", local_dir=tmp_path / "p3")) == read_all(tmp_path / "dev")

    # pushing the same files again makes no new commit; tags never move
    assert registry.push(tmp_path / "v2", repo_id).commit == second
    with pytest.raises(RegistryError) as exc:
        registry.push(make_adapter(tmp_path / "v4", seed=4), repo_id, tag="v1")
    assert "tags never move" in one_line(exc)
    assert registry.resolve(repo_id) == second  # refused before anything moved
    with pytest.raises(RegistryError, match="is a tag"):
        registry.push(tmp_path / "v2", repo_id, revision="v1")


def test_second_push_deletes_files_gone_from_the_folder(registry: Registry, tmp_path: Path) -> None:
    repo_id = unique("mirror")
    folder = make_adapter(tmp_path / "a")
    (folder / "head.safetensors").write_bytes((folder / "adapter_model.safetensors").read_bytes())
    old = registry.push(folder, repo_id).commit
    (folder / "head.safetensors").unlink()
    registry.push(folder, repo_id)
    assert sorted(os.listdir(registry.pull(repo_id, local_dir=tmp_path / "new"))) == ADAPTER_FILES
    assert "head.safetensors" in os.listdir(registry.pull(repo_id, old, local_dir=tmp_path / "old"))


# ---- integrity -------------------------------------------------------------------------------------------
def test_local_tampered_blob_is_refused(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path / "registry")
    repo_id = unique("tamper")
    commit = registry.push(make_adapter(tmp_path / "a"), repo_id).commit
    digest = registry.file_hashes(repo_id, commit)["adapter_model.safetensors"]
    blob = registry.root / ("models--" + repo_id.replace("/", "--")) / "blobs" / digest
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))

    with pytest.raises(RegistryError) as exc:
        registry.pull(repo_id)
    assert "adapter_model.safetensors" in one_line(exc) and "tampered" in str(exc.value)
    with pytest.raises(RegistryError, match="tampered"):
        registry.pull(repo_id, local_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_local_edited_manifest_is_refused(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path / "registry")
    repo_id = unique("manifest")
    commit = registry.push(make_adapter(tmp_path / "a"), repo_id).commit
    manifest = registry.root / ("models--" + repo_id.replace("/", "--")) / "commits" / f"{commit}.json"
    manifest.write_text(manifest.read_text().replace("Push", "Pwned"))
    with pytest.raises(RegistryError, match="manifest .* was modified"):
        registry.pull(repo_id)


@pytest.mark.parametrize("filename", ["adapter_model.safetensors", "adapter_config.json"])
def test_hub_tampered_file_is_refused(hub_server: Any, tmp_path: Path, filename: str) -> None:
    """LFS files are checked against their sha256, small files against their git blob sha1."""
    registry = HubRegistry(endpoint=hub_server.url)
    repo_id = unique("tamper")
    registry.push(make_adapter(tmp_path / "a", seed=1000 + len(filename)), repo_id)
    stored = hub_server.state.blob_path(repo_id, "main", filename)  # blobs are shared by content: unique seed
    original = stored.read_bytes()
    data = bytearray(original)
    data[-2] ^= 0x01  # same size: the transfer succeeds, only the hash check can tell
    stored.write_bytes(bytes(data))

    with pytest.raises(RegistryError) as exc:
        registry.pull(repo_id, local_dir=tmp_path / "out")
    assert filename in one_line(exc) and "tampered" in str(exc.value)
    assert not (tmp_path / "out").exists()
    with pytest.raises(RegistryError, match="tampered"):
        registry.pull(repo_id)  # into huggingface_hub's cache: checked too, and the bad copy dropped
    stored.write_bytes(original)
    assert (registry.pull(repo_id) / filename).read_bytes() == original


# ---- safety ----------------------------------------------------------------------------------------------
BAD_IDS = ["../x", "org/..", "/etc/passwd", "org/a/b", "org\\name", "org/na me", ".hidden/x", "-x/y", "org/a..b",
           "org--x/y", "", "org/", "org/ñ"]


@pytest.mark.parametrize("repo_id", BAD_IDS)
def test_bad_repo_ids_are_rejected(repo_id: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError) as exc:
        validate_repo_id(repo_id)
    one_line(exc)
    with pytest.raises(UsageError):
        parse_ref(f"{repo_id}@main")
    registry = LocalRegistry(tmp_path / "registry")
    with pytest.raises(UsageError):
        registry.push(make_adapter(tmp_path / "a"), repo_id)
    with pytest.raises(UsageError):
        registry.pull(repo_id)
    assert not (tmp_path / "registry").exists() or not any((tmp_path / "registry").glob("models--*"))


def test_parse_ref() -> None:
    assert parse_ref("org/name") == ("org/name", None)
    assert parse_ref("org/name@v1.0") == ("org/name", "v1.0")
    assert parse_ref("name@" + "a" * 40) == ("name", "a" * 40)
    for bad in ("org/name@", "org/name@../x", "org/name@a/b"):
        with pytest.raises(UsageError):
            parse_ref(bad)


@pytest.mark.parametrize("bad_file", ["adapter_model.bin", "model.pt", "state.pkl", "notes.txt"])
def test_push_refuses_pickle_and_unknown_files(registry: Registry, tmp_path: Path, bad_file: str) -> None:
    folder = make_adapter(tmp_path / "a", extra={bad_file: b"\x80\x04K\x01."})
    repo_id = unique("pickle")
    with pytest.raises(ArtifactError) as exc:
        registry.push(folder, repo_id)
    assert bad_file in one_line(exc)
    with pytest.raises(RegistryError, match="not found"):
        registry.resolve(repo_id)  # nothing was created


def test_push_needs_an_adapter_folder(registry: Registry, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="scalearn.json is missing"):
        registry.push(tmp_path / "empty", unique("empty"))


# ---- concurrency and interruption ------------------------------------------------------------------------
def _push_many(root: str, repo_id: str, worker: int, count: int) -> list[str]:
    registry = LocalRegistry(Path(root))
    commits = []
    for i in range(count):
        folder = make_adapter(Path(root).parent / f"src-{worker}-{i}", seed=100 * worker + i)
        commits.append(registry.push(folder, repo_id, commit_message=f"w{worker} #{i}").commit)
    return commits


def test_concurrent_local_pushes_stay_consistent(tmp_path: Path) -> None:
    root, repo_id, count = tmp_path / "registry", "org/race", 12
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.starmap(_push_many, [(str(root), repo_id, w, count) for w in (1, 2)])
    pushed = {c for commits in results for c in commits}
    assert len(pushed) == 2 * count

    # one linear history through every commit, each one intact and pulling its own bytes
    registry = LocalRegistry(root)
    repo_dir = root / "models--org--race"
    history, commit = [], registry.resolve(repo_id)
    while commit is not None:
        history.append(commit)
        commit = json.loads((repo_dir / "commits" / f"{commit}.json").read_text())["parent"]
    assert set(history) == pushed and len(history) == 2 * count
    for worker, commits in zip((1, 2), results):
        for i, commit in enumerate(commits):
            assert read_all(registry.pull(repo_id, commit)) == read_all(tmp_path / f"src-{worker}-{i}")
    leftovers = [p for d in ("snapshots", "commits", "refs", "blobs") for p in (repo_dir / d).iterdir()
                 if p.name.startswith(".")]
    assert leftovers == []


def test_interrupted_push_leaves_no_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = LocalRegistry(tmp_path / "registry")
    repo_id = unique("interrupt")
    before = registry.push(make_adapter(tmp_path / "a", seed=1), repo_id).commit

    def explode(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("scalearn_cli.registry.local._atomic_write", explode)  # dies before the manifest lands
    with pytest.raises(KeyboardInterrupt):
        registry.push(make_adapter(tmp_path / "b", seed=2), repo_id)
    monkeypatch.undo()
    assert registry.resolve(repo_id) == before
    assert read_all(registry.pull(repo_id)) == read_all(tmp_path / "a")
    repo_dir = registry.root / ("models--" + repo_id.replace("/", "--"))
    assert [p.name for p in (repo_dir / "commits").iterdir()] == [f"{before}.json"]


# ---- errors ----------------------------------------------------------------------------------------------
def test_not_found_errors_are_one_line(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(RegistryError) as exc:
        registry.pull(unique("missing"))
    assert "not found" in one_line(exc)
    repo_id = unique("present")
    registry.push(make_adapter(tmp_path / "a"), repo_id)
    for revision in ("nope", "f" * 40):
        with pytest.raises(RegistryError) as exc:
            registry.pull(repo_id, revision)
        assert "not found" in one_line(exc)


def test_unreachable_endpoint(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    registry = HubRegistry(endpoint=f"http://user:secret@127.0.0.1:{port}")
    for call in (lambda: registry.pull("org/x"), lambda: registry.push(make_adapter(tmp_path / "a"), "org/x")):
        with pytest.raises(RegistryError) as exc:
            call()
        message = one_line(exc)
        assert "unreachable" in message and "--registry local" in message and "secret" not in message
        assert f"http://127.0.0.1:{port}" in message


def test_auth_errors(hub_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo_id = unique("private")
    HubRegistry(endpoint=hub_server.url).push(make_adapter(tmp_path / "a"), repo_id, private=True)
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(RegistryError) as exc:
        HubRegistry(endpoint=hub_server.url).push(make_adapter(tmp_path / "a"), unique("x"))
    assert "401" in one_line(exc) and "hf_wrong" not in str(exc.value)
    with pytest.raises(RegistryError) as exc:
        HubRegistry(endpoint=hub_server.url, token=False).pull(repo_id)
    assert "private" in one_line(exc)


def test_get_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    default = get_registry(None)
    assert isinstance(default, LocalRegistry) and default.root == tmp_path / "xdg" / "scalearn" / "registry"
    monkeypatch.setenv("SCALEARN_REGISTRY", str(tmp_path / "env"))
    assert get_registry("local").root == tmp_path / "env"  # type: ignore[attr-defined]
    assert get_registry(f"local:{tmp_path}/x").root == tmp_path / "x"  # type: ignore[attr-defined]
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1234/")
    assert get_registry("hub").endpoint == "http://127.0.0.1:1234"  # type: ignore[attr-defined]
    assert get_registry("hub", endpoint="http://h:1").endpoint == "http://h:1"  # type: ignore[attr-defined]
    for bad in (("s3://x", None), ("local", "http://h:1")):
        with pytest.raises(UsageError):
            get_registry(*bad)


# ---- list and CLI ----------------------------------------------------------------------------------------
def test_list_reads_metadata(registry: Registry, tmp_path: Path) -> None:
    rte, sst = unique("list-rte"), unique("list-sst2")
    registry.push(make_adapter(tmp_path / "a", seed=1, task="rte"), rte)
    commit = registry.push(make_adapter(tmp_path / "b", seed=2, task="sst2"), sst).commit
    entries = {e.repo_id: e for e in registry.list()}
    assert {rte, sst} <= set(entries)
    assert entries[sst].commit == commit and entries[sst].metadata["task"] == "sst2"
    assert [e.repo_id for e in registry.list(filter="SST2") if e.repo_id in (rte, sst)] == [sst]
    assert rte in [e.repo_id for e in registry.list(filter="tiny-bert")]


def _cli() -> Any:
    from scalearn_cli.cli.main import app

    return app


def test_cli_push_pull_list(registry: Registry, tmp_path: Path) -> None:
    spec = f"local:{registry.location}" if isinstance(registry, LocalRegistry) else registry.location
    runner, app, repo_id = CliRunner(), _cli(), unique("cli")
    folder = make_adapter(tmp_path / "a")

    pushed = runner.invoke(app, ["push", str(folder), repo_id, "--tag", "v1", "--registry", spec])
    assert pushed.exit_code == 0, pushed.output
    ref = pushed.stdout.strip()
    assert ref.startswith(f"{repo_id}@") and len(ref.split("@")[1]) == 40

    pulled = runner.invoke(app, ["pull", f"{repo_id}@v1", "--local-dir", str(tmp_path / "o"), "--registry", spec])
    assert pulled.exit_code == 0, pulled.output
    assert Path(pulled.stdout.strip()) == (tmp_path / "o").absolute()
    assert read_all(tmp_path / "o") == read_all(folder)

    listed = runner.invoke(app, ["list", "--registry", spec, "--filter", repo_id, "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [(r["repo_id"], r["commit"], r["metadata"]["task"]) for r in rows] == [(repo_id, ref[-40:], "rte")]
    table = runner.invoke(app, ["list", "--registry", spec, "--filter", repo_id], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "accuracy=0.5000" in table.stdout and "lora" in table.stdout

    missing = runner.invoke(app, ["pull", f"{repo_id}@nope", "--registry", spec])
    assert missing.exit_code == 1 and "not found" in missing.output
    bad = runner.invoke(app, ["pull", "../etc", "--registry", spec])
    assert bad.exit_code == 2 and "invalid repo id" in bad.output


# ---- PEFT: a pushed LoRA source is an ordinary Hub repo --------------------------------------------------
def test_peft_loads_pushed_lora_with_vanilla_from_pretrained(
    hub_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub
    import torch
    from huggingface_hub import constants
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import BertConfig, BertModel

    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                        vocab_size=100)
    torch.manual_seed(0)
    model = get_peft_model(BertModel(config), LoraConfig(r=4, target_modules=["query", "value"]))
    with torch.no_grad():  # LoRA's B starts at zero: randomize so the adapter changes the outputs
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(std=0.5)
    folder = tmp_path / "lora"
    model.save_pretrained(folder)
    (folder / "scalearn.json").write_text(json.dumps({"kind": "source", "task": "rte", "adapter": {"kind": "lora"}}))
    record_folder(folder)
    repo_id = unique("peft")
    commit = HubRegistry(endpoint=hub_server.url).push(folder, repo_id, tag="v1").commit

    # PEFT calls hf_hub_download / file_exists without an endpoint: they read constants.ENDPOINT (and the URL
    # template built from it at import), and `file_exists` is bound to a module-level HfApi created at import.
    monkeypatch.setattr(constants, "ENDPOINT", hub_server.url)
    template = hub_server.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", hub_server.url)

    ids = torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=ids).last_hidden_state
        for revision in (commit, "v1"):
            torch.manual_seed(0)
            loaded = PeftModel.from_pretrained(BertModel(config), repo_id, revision=revision).eval()
            assert torch.allclose(loaded(input_ids=ids).last_hidden_state, expected, atol=1e-6)
        torch.manual_seed(0)
        assert not torch.allclose(BertModel(config).eval()(input_ids=ids).last_hidden_state, expected, atol=1e-3)


def test_local_registry_root_works_as_hf_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The local layout (refs/, snapshots/, blobs/) is huggingface_hub's cache: offline loading by tag works."""
    import torch
    from huggingface_hub import constants
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import BertConfig, BertModel

    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                        vocab_size=100)
    torch.manual_seed(0)
    model = get_peft_model(BertModel(config), LoraConfig(r=4, target_modules=["query", "value"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(std=0.5)
    model.save_pretrained(tmp_path / "lora")
    (tmp_path / "lora" / "scalearn.json").write_text(json.dumps({"kind": "source"}))
    record_folder(tmp_path / "lora")
    registry = LocalRegistry(tmp_path / "registry")
    registry.push(tmp_path / "lora", "org/offline", tag="v1")

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(registry.root))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    ids = torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.manual_seed(0)
        loaded = PeftModel.from_pretrained(BertModel(config), "org/offline", revision="v1").eval()
        expected = model.eval()(input_ids=ids).last_hidden_state
        assert torch.allclose(loaded(input_ids=ids).last_hidden_state, expected, atol=1e-6)


# ---- hostile registry state and unhelpful inputs ----------------------------------------------
def _repo_dir(registry: LocalRegistry, repo_id: str) -> Path:
    return registry.root / ("models--" + repo_id.replace("/", "--"))


def test_local_ref_leading_outside_the_root_is_never_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = LocalRegistry(tmp_path / "registry")
    repo_id = unique("escape")
    registry.push(make_adapter(tmp_path / "a"), repo_id)
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "scalearn.json").write_text(json.dumps({"kind": "source", "task": "SECRET-OUTSIDE"}))
    repo_dir = _repo_dir(registry, repo_id)
    (repo_dir / "refs" / "main").write_text("../../../outside")  # snapshots/../../../outside == tmp/outside

    with caplog.at_level("WARNING"):
        entries = registry.list()
    assert entries == [] and "commit hash" in caplog.text
    assert "SECRET" not in json.dumps([e.metadata for e in entries])
    for call in (lambda: registry.resolve(repo_id), lambda: registry.pull(repo_id),
                 lambda: registry.pull(repo_id, local_dir=tmp_path / "out"),
                 lambda: registry.file_hashes(repo_id, "main")):
        with pytest.raises(RegistryError) as exc:
            call()
        assert "not hold a commit hash" in one_line(exc)
    assert not (tmp_path / "out").exists()

    result = runner_list(registry)
    assert result.exit_code == 0 and "SECRET" not in result.output


def runner_list(registry: LocalRegistry) -> Any:
    return CliRunner().invoke(_cli(), ["list", "--registry", f"local:{registry.root}", "--json"])


def test_local_symlinks_leading_outside_the_root_are_refused(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path / "registry")
    repo_id = unique("symlink")
    commit = registry.push(make_adapter(tmp_path / "a"), repo_id).commit
    repo_dir = _repo_dir(registry, repo_id)
    # a ref that is a link to a file elsewhere (even one holding a valid hash)
    (tmp_path / "ref").write_text(commit)
    (repo_dir / "refs" / "dev").symlink_to(tmp_path / "ref")
    with pytest.raises(RegistryError) as exc:
        registry.resolve(repo_id, "dev")
    assert "outside the registry" in one_line(exc)
    # a snapshot entry relinked to an outside file with the very same bytes: still not handed out
    readme = repo_dir / "snapshots" / commit / "README.md"
    (tmp_path / "README.md").write_bytes(readme.read_bytes())
    readme.unlink()
    readme.symlink_to(tmp_path / "README.md")
    with pytest.raises(RegistryError) as exc:
        registry.pull(repo_id)
    assert "outside the registry" in one_line(exc)
    # the --local-dir copy reads blobs, named by the manifest, so it is unaffected
    assert read_all(registry.pull(repo_id, local_dir=tmp_path / "out")) == read_all(tmp_path / "a")


def test_local_manifest_naming_a_blob_outside_is_refused(tmp_path: Path) -> None:
    """A forged manifest is self-consistent (named by its own hash): its sha256 fields must still be hashes."""
    import hashlib

    registry = LocalRegistry(tmp_path / "registry")
    repo_id = unique("forged")
    registry.push(make_adapter(tmp_path / "a"), repo_id)
    repo_dir = _repo_dir(registry, repo_id)
    (tmp_path / "secret").write_text("secret")
    manifest = {"format_version": 1, "repo_id": repo_id, "parent": None, "message": "x", "time": "now",
                "files": {"README.md": {"sha256": "../../../secret", "size": 6}}}
    payload = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    forged = hashlib.sha256(payload.encode()).hexdigest()[:40]
    (repo_dir / "commits" / f"{forged}.json").write_text(payload)
    (repo_dir / "refs" / "evil").write_text(forged)
    for call in (lambda: registry.pull(repo_id, "evil", local_dir=tmp_path / "out"),
                 lambda: registry.file_hashes(repo_id, forged)):
        with pytest.raises(RegistryError) as exc:
            call()
        assert "no valid sha256" in one_line(exc)
    assert not (tmp_path / "out").exists()


def test_pull_local_dir_copies_so_edits_never_reach_the_registry(tmp_path: Path) -> None:
    from scalearn_cli.artifacts import sha256_file

    registry = LocalRegistry(tmp_path / "registry")
    repo_id = unique("copy")
    commit = registry.push(make_adapter(tmp_path / "a"), repo_id).commit
    digest = registry.file_hashes(repo_id, commit)["README.md"]
    blob = _repo_dir(registry, repo_id) / "blobs" / digest

    pulled = registry.pull(repo_id, local_dir=tmp_path / "out") / "README.md"
    assert pulled.stat().st_ino != blob.stat().st_ino and pulled.stat().st_nlink == 1
    with open(pulled, "a", encoding="utf-8") as handle:  # writable: it is the user's own copy
        handle.write("my notes\n")

    assert sha256_file(blob) == digest
    assert read_all(registry.pull(repo_id)) == read_all(tmp_path / "a")
    assert read_all(registry.pull(repo_id, local_dir=tmp_path / "again")) == read_all(tmp_path / "a")


def test_pull_local_dir_that_is_a_file_is_refused(registry: Registry, tmp_path: Path) -> None:
    repo_id = unique("filedir")
    registry.push(make_adapter(tmp_path / "a"), repo_id)
    target = tmp_path / "a-file"
    target.write_text("keep me")
    with pytest.raises(ArtifactError) as exc:
        registry.pull(repo_id, local_dir=target)
    assert "is a file" in one_line(exc) and str(target) in str(exc.value)
    assert target.read_text() == "keep me"


def test_list_of_a_missing_local_registry_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-registry"
    with pytest.raises(RegistryError) as exc:
        LocalRegistry(missing).list()
    assert one_line(exc) == (f"no registry at {missing}; push an adapter first or pass --registry local:/path")
    result = CliRunner().invoke(_cli(), ["list", "--registry", f"local:{missing}"])
    assert result.exit_code == 1 and "no registry at" in result.output and not missing.exists()
    missing.mkdir()
    assert LocalRegistry(missing).list() == []  # created but empty: an empty listing


def test_repo_id_length_follows_the_hub(tmp_path: Path) -> None:
    assert validate_repo_id("o/" + "n" * 94) == "o/" + "n" * 94  # 96 characters: the Hub's limit
    long_id = "org/" + "a" * 296
    for call in (lambda: validate_repo_id(long_id), lambda: parse_ref(f"{long_id}@main"),
                 lambda: LocalRegistry(tmp_path / "r").push(make_adapter(tmp_path / "a"), long_id)):
        with pytest.raises(UsageError) as exc:
            call()
        message = one_line(exc)
        assert message.startswith("invalid repo id") and "at most 96 characters" in message
        assert len(message) < 300


def test_bad_tag_and_branch_names_say_tag_and_branch(registry: Registry, tmp_path: Path) -> None:
    folder = make_adapter(tmp_path / "a")
    with pytest.raises(UsageError) as exc:
        registry.push(folder, unique("tagname"), tag="v1/beta")
    assert one_line(exc).startswith("invalid tag 'v1/beta'") and "revision" not in str(exc.value)
    with pytest.raises(UsageError) as exc:
        registry.push(folder, unique("branchname"), revision="../main")
    assert one_line(exc).startswith("invalid branch '../main'")


def test_hub_answering_html_is_one_line(tmp_path: Path) -> None:
    with HubServer(tmp_path / "html-hub", html=True) as server:
        registry = HubRegistry(endpoint=server.url)
        for call in (registry.list, lambda: registry.pull("org/x"),
                     lambda: registry.push(make_adapter(tmp_path / "a"), "org/x")):
            with pytest.raises(RegistryError) as exc:
                call()
            message = one_line(exc)
            assert "HTML" in message and server.url in message and "--endpoint" in message


def test_hub_list_fails_fast_on_a_refused_connection(tmp_path: Path) -> None:
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once the block ends
    start = time.monotonic()
    result = CliRunner().invoke(_cli(), ["list", "--registry", "hub", "--endpoint", f"http://127.0.0.1:{port}"])
    assert time.monotonic() - start < 5  # huggingface_hub alone would back off for ~25 s
    assert result.exit_code == 1 and "unreachable" in result.output
