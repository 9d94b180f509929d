"""Registry backends (local directory, Hub through the real huggingface_hub client) and the push/pull/list CLI:
round trips, revisions and tags, what a push refuses, errors, listing, pulling into a folder.

The Hub tests run huggingface_hub unmodified against tests/hubserver.py on 127.0.0.1; nothing is mocked except
huggingface_hub's module-level settings (cache dirs, token, Xet switch, endpoint), see ``hf_env`` in conftest.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers import invoke, make_adapter, one_line, read_all, repo_dir, unique
from scalearn_cli.artifacts.folders import record_folder
from scalearn_cli.errors import ArtifactError, RegistryError, UsageError
from scalearn_cli.registry import get_registry, parse_ref, validate_repo_id
from scalearn_cli.registry.base import Registry
from scalearn_cli.registry.local import LocalRegistry

ADAPTER_FILES = ["README.md", "adapter_config.json", "adapter_model.safetensors", "scalearn.json"]
pytestmark = pytest.mark.usefixtures("hf_env")  # an isolated HF cache and token, never the real Hub


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


def test_cli_push_pull_list(registry: Registry, tmp_path: Path) -> None:
    spec = f"local:{registry.location}" if isinstance(registry, LocalRegistry) else registry.location
    repo_id = unique("cli")
    folder = make_adapter(tmp_path / "a")

    pushed = invoke("push", str(folder), repo_id, "--tag", "v1", "--registry", spec)
    assert pushed.exit_code == 0, pushed.output
    ref = pushed.stdout.strip()
    assert ref.startswith(f"{repo_id}@") and len(ref.split("@")[1]) == 40

    pulled = invoke("pull", f"{repo_id}@v1", "--local-dir", str(tmp_path / "o"), "--registry", spec)
    assert pulled.exit_code == 0, pulled.output
    assert Path(pulled.stdout.strip()) == (tmp_path / "o").absolute()
    assert read_all(tmp_path / "o") == read_all(folder)

    listed = invoke("list", "--registry", spec, "--filter", repo_id, "--json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [(r["repo_id"], r["commit"], r["metadata"]["task"]) for r in rows] == [(repo_id, ref[-40:], "rte")]
    table = invoke("list", "--registry", spec, "--filter", repo_id, env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "accuracy=0.5000" in table.stdout and "lora" in table.stdout

    missing = invoke("pull", f"{repo_id}@nope", "--registry", spec)
    assert missing.exit_code == 1 and "not found" in missing.output
    bad = invoke("pull", "../etc", "--registry", spec)
    assert bad.exit_code == 2 and "invalid repo id" in bad.output


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


def test_pull_local_dir_copies_so_edits_never_reach_the_registry(tmp_path: Path) -> None:
    from scalearn_cli.artifacts import sha256_file

    registry = LocalRegistry(tmp_path / "registry")
    repo_id = unique("copy")
    commit = registry.push(make_adapter(tmp_path / "a"), repo_id).commit
    digest = registry.file_hashes(repo_id, commit)["README.md"]
    blob = repo_dir(registry, repo_id) / "blobs" / digest

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
    result = invoke("list", "--registry", f"local:{missing}")
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
