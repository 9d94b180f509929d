"""A local registry under attack: traversing repo ids, revisions and manifest file names, tampered blobs, manifests
and refs, and links leading outside its root are refused by the library and by ``scalearn push/pull/list``, in one
line, and nothing outside the registry is read or written."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest

from helpers import forge_commit, invoke, make_adapter, ok, one_error_line, one_line, read_all, repo_dir, unique
from scalearn_cli.errors import RegistryError, UsageError
from scalearn_cli.registry.local import LocalRegistry

pytestmark = pytest.mark.usefixtures("hf_env")  # an isolated HF cache and token, never the real Hub


# ---- tampered blobs and manifests (the library) ----------------------------------------------------------
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


# ---- refs, links and manifests leading outside the root (the library) ------------------------------------
def test_local_ref_leading_outside_the_root_is_never_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = LocalRegistry(tmp_path / "registry")
    repo_id = unique("escape")
    registry.push(make_adapter(tmp_path / "a"), repo_id)
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "scalearn.json").write_text(json.dumps({"kind": "source", "task": "SECRET-OUTSIDE"}))
    repo = repo_dir(registry, repo_id)
    (repo / "refs" / "main").write_text("../../../outside")  # snapshots/../../../outside == tmp/outside

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
    return invoke("list", "--registry", f"local:{registry.root}", "--json")


def test_local_symlinks_leading_outside_the_root_are_refused(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path / "registry")
    repo_id = unique("symlink")
    commit = registry.push(make_adapter(tmp_path / "a"), repo_id).commit
    repo = repo_dir(registry, repo_id)
    # a ref that is a link to a file elsewhere (even one holding a valid hash)
    (tmp_path / "ref").write_text(commit)
    (repo / "refs" / "dev").symlink_to(tmp_path / "ref")
    with pytest.raises(RegistryError) as exc:
        registry.resolve(repo_id, "dev")
    assert "outside the registry" in one_line(exc)
    # a snapshot entry relinked to an outside file with the very same bytes: still not handed out
    readme = repo / "snapshots" / commit / "README.md"
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
    repo = repo_dir(registry, repo_id)
    (tmp_path / "secret").write_text("secret")
    manifest = {"format_version": 1, "repo_id": repo_id, "parent": None, "message": "x", "time": "now",
                "files": {"README.md": {"sha256": "../../../secret", "size": 6}}}
    payload = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    forged = hashlib.sha256(payload.encode()).hexdigest()[:40]
    (repo / "commits" / f"{forged}.json").write_text(payload)
    (repo / "refs" / "evil").write_text(forged)
    for call in (lambda: registry.pull(repo_id, "evil", local_dir=tmp_path / "out"),
                 lambda: registry.file_hashes(repo_id, forged)):
        with pytest.raises(RegistryError) as exc:
            call()
        assert "no valid sha256" in one_line(exc)
    assert not (tmp_path / "out").exists()


# ---- traversal through repo ids, revisions and manifest file names (the CLI) -----------------------------
TRAVERSING_IDS = ["../x", "a/../../b", "/etc/passwd", "/tmp/x", "org\\name", "..\\..\\x", "../name", "org/..",
                  "org/../x"]


@pytest.mark.parametrize("repo_id", TRAVERSING_IDS)
def test_traversing_repo_ids_are_refused_by_push_and_pull(repo_id: str, tmp_path: Path) -> None:
    """push and pull refuse a repo id that could leave the registry, before touching the disk (exit 2)."""
    spec = f"local:{tmp_path / 'deep' / 'registry'}"
    folder = make_adapter(tmp_path / "adapter")
    assert "invalid repo id" in one_error_line(invoke("push", folder, repo_id, "--registry", spec), code=2)
    for ref in (repo_id, f"{repo_id}@main"):
        result = invoke("pull", ref, "--local-dir", tmp_path / "out", "--registry", spec)
        assert "invalid repo id" in one_error_line(result, code=2)
    assert not (tmp_path / "deep").exists() and not (tmp_path / "out").exists() and not (tmp_path / "b").exists()


def test_list_skips_repo_folders_whose_names_would_traverse(pushed, caplog: pytest.LogCaptureFixture) -> None:
    """A folder ``models--..--x`` (id ``../x``) copied into the registry is skipped by list, never read."""
    registry, repo_id, commit, _ = pushed
    for hostile in ("models--..--x", "models--org--..", "models--..--..--etc"):
        shutil.copytree(repo_dir(registry, repo_id), registry.root / hostile, symlinks=True)
    with caplog.at_level("WARNING"):
        assert [(e.repo_id, e.commit) for e in registry.list()] == [(repo_id, commit)]
    assert caplog.text.count("invalid repo id") == 3
    listed = ok(invoke("list", "--registry", f"local:{registry.root}", "--json"))
    assert [row["repo_id"] for row in json.loads(listed.stdout)] == [repo_id]


@pytest.mark.parametrize("revision", ["../../x", "main/../..", "..", "/etc/passwd", "main\\..\\..", "refs/../main"])
def test_traversing_revisions_are_refused(revision: str, pushed, tmp_path: Path) -> None:
    """A revision is one plain name or a commit hash: pull, push --revision and push --tag refuse the rest."""
    registry, repo_id, commit, folder = pushed
    spec = f"local:{registry.root}"
    pulled = invoke("pull", f"{repo_id}@{revision}", "--local-dir", tmp_path / "out", "--registry", spec)
    assert "invalid revision" in one_error_line(pulled, code=2)
    for option in ("--revision", "--tag"):
        assert "invalid" in one_error_line(invoke("push", folder, repo_id, option, revision, "--registry", spec), 2)
    for call in (lambda: registry.resolve(repo_id, revision), lambda: registry.pull(repo_id, revision),
                 lambda: registry.file_hashes(repo_id, revision)):
        with pytest.raises(UsageError, match="invalid revision"):
            call()
    assert not (tmp_path / "out").exists() and not (tmp_path / "x").exists()
    assert sorted(p.name for p in (repo_dir(registry, repo_id) / "refs").iterdir()) == ["main"]
    assert [p.name for p in (repo_dir(registry, repo_id) / "commits").iterdir()] == [f"{commit}.json"]


@pytest.mark.parametrize("name", ["../../escaped.json", "{abs}", "..", "sub/scalearn.json", "../outside.json"])
def test_manifest_file_names_escaping_the_snapshot_are_refused(name: str, pushed, tmp_path: Path) -> None:
    """A forged, self-consistent manifest naming ``../../x`` or an absolute path: pull and list refuse it."""
    registry, repo_id, commit, _ = pushed
    name = name.format(abs=tmp_path / "absolute.json")
    record = json.loads((repo_dir(registry, repo_id) / "commits" / f"{commit}.json").read_text())["files"]
    forge_commit(registry, repo_id, {**record, name: record["scalearn.json"]}, "evil")
    spec, out = f"local:{registry.root}", tmp_path / "deep" / "out"
    for extra in (["--local-dir", out], []):
        assert "refusing file name" in one_error_line(invoke("pull", f"{repo_id}@evil", *extra, "--registry", spec))
    assert not out.exists() and not (tmp_path / "deep").exists()
    assert not list(tmp_path.rglob("escaped.json")) and not (tmp_path / "absolute.json").exists()
    assert not list(tmp_path.rglob("outside.json"))
    forge_commit(registry, repo_id, {**record, name: record["scalearn.json"]}, "main")
    listed = ok(invoke("list", "--registry", spec, "--json"))
    assert json.loads(listed.stdout) == [] and "skipping" in listed.stderr


# ---- tampered registry state refused by `scalearn pull` --------------------------------------------------
def _flip_blob(registry: LocalRegistry, repo_id: str, commit: str, tmp_path: Path) -> None:
    blob = repo_dir(registry, repo_id) / "blobs" / registry.file_hashes(repo_id, commit)["adapter_model.safetensors"]
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0x01  # same size, other bytes
    blob.write_bytes(bytes(data))


def _edit_manifest(field: str) -> Callable[..., None]:
    def edit(registry: LocalRegistry, repo_id: str, commit: str, tmp_path: Path) -> None:
        path = repo_dir(registry, repo_id) / "commits" / f"{commit}.json"
        manifest = json.loads(path.read_text())
        record = manifest["files"]["adapter_model.safetensors"]
        record[field] = "0" * 64 if field == "sha256" else record[field] + 1
        path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    return edit


def _ref_to_blob(registry: LocalRegistry, repo_id: str, commit: str, tmp_path: Path) -> None:
    digest = registry.file_hashes(repo_id, commit)["scalearn.json"]
    (repo_dir(registry, repo_id) / "refs" / "main").write_text(digest)  # a blob's sha256, not a commit


def _ref_to_outside_path(registry: LocalRegistry, repo_id: str, commit: str, tmp_path: Path) -> None:
    shutil.copytree(repo_dir(registry, repo_id) / "snapshots" / commit, tmp_path / "elsewhere")
    (repo_dir(registry, repo_id) / "refs" / "main").write_text("../../../elsewhere")


def _ref_linked_outside(registry: LocalRegistry, repo_id: str, commit: str, tmp_path: Path) -> None:
    (tmp_path / "ref").write_text(commit)  # even a link to a file holding the right hash
    ref = repo_dir(registry, repo_id) / "refs" / "main"
    ref.unlink()
    ref.symlink_to(tmp_path / "ref")


def _blob_linked_outside(registry: LocalRegistry, repo_id: str, commit: str, tmp_path: Path) -> None:
    blob = repo_dir(registry, repo_id) / "blobs" / registry.file_hashes(repo_id, commit)["adapter_model.safetensors"]
    (tmp_path / "copy").write_bytes(blob.read_bytes())  # the very same bytes, outside the registry
    blob.chmod(0o644)
    blob.unlink()
    blob.symlink_to(tmp_path / "copy")


TAMPERS = {"blob-bytes": _flip_blob, "manifest-sha256": _edit_manifest("sha256"),
           "manifest-size": _edit_manifest("size"), "ref-to-a-blob": _ref_to_blob,
           "ref-to-an-outside-path": _ref_to_outside_path, "ref-linked-outside": _ref_linked_outside,
           "blob-linked-outside": _blob_linked_outside}


@pytest.mark.parametrize("tamper", list(TAMPERS))
def test_pull_refuses_tampered_registry_state(tamper: str, pushed, tmp_path: Path) -> None:
    """Each tamper: one Error line, exit 1, nothing (not even a staging folder) in or beside --local-dir."""
    registry, repo_id, commit, _ = pushed
    TAMPERS[tamper](registry, repo_id, commit, tmp_path)
    spec, parent = f"local:{registry.root}", tmp_path / "pulls"
    parent.mkdir()
    for ref in (repo_id, f"{repo_id}@{commit}") if tamper.startswith(("blob", "manifest")) else (repo_id,):
        one_error_line(invoke("pull", ref, "--local-dir", parent / "out", "--registry", spec), code=1)
        one_error_line(invoke("pull", ref, "--registry", spec), code=1)  # the registry's own snapshot
    assert list(parent.iterdir()) == []


def test_snapshot_link_repointed_to_another_blob(pushed, tmp_path: Path) -> None:
    """A snapshot entry relinked to another (valid) blob: refused in place; --local-dir copies the recorded blob."""
    registry, repo_id, commit, folder = pushed
    hashes = registry.file_hashes(repo_id, commit)
    link = repo_dir(registry, repo_id) / "snapshots" / commit / "adapter_model.safetensors"
    link.unlink()
    link.symlink_to(os.path.join("..", "..", "blobs", hashes["adapter_config.json"]))
    assert "tampered" in one_error_line(invoke("pull", repo_id, "--registry", f"local:{registry.root}"), code=1)
    out = ok(invoke("pull", repo_id, "--local-dir", tmp_path / "out", "--registry", f"local:{registry.root}"))
    assert read_all(Path(out.stdout.strip())) == read_all(folder)
