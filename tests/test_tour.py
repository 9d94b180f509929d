"""The regression cases of the 207-case bad-input/tamper/attack tour that held, kept as cheap tests.

Only what the other test files did not already pin down is here (see each section): traversal through repo ids,
revisions and manifest file names; tampered registry state refused by ``scalearn pull``; eight concurrent local
pushes; Ctrl-C during push, train-source, transfer and ``--overwrite``; one-line Hub errors; the token never
printed, even with ``SCALEARN_DEBUG=1``. Offline and CPU-only: tiny BERT (conftest.py), a local registry, and Hub
failures served on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from conftest import make_source
from typer.testing import CliRunner

from scalearn_cli.cli.main import app
from scalearn_cli.errors import RegistryError, UsageError
from scalearn_cli.registry.local import LocalRegistry
from test_registry import hf_env, make_adapter, read_all  # noqa: F401 - hf_env: an isolated HF cache, never the Hub

TRAIN = ["--epochs", "1", "--batch-size", "8", "--max-length", "16"]
SECRET = "hf_tour_secret_token_0123456789"


# ---- helpers ---------------------------------------------------------------------------------------------
def invoke(*args: Any, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def ok(result: Any) -> Any:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


def one_error_line(result: Any, code: int | None = None, prefix: str = "Error: ", alone: bool = True) -> str:
    """A handled failure: non-zero exit, one ``prefix`` line on stderr, nothing on stdout, no traceback.

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
    return lines[0]


def repo_dir(registry: LocalRegistry, repo_id: str) -> Path:
    return registry.root / ("models--" + repo_id.replace("/", "--"))


def staging_leftovers(folder: Path) -> list[str]:
    """Temporary names (``.x.tmp-...``, ``.x.old-...``) left anywhere under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name)


def forge_commit(registry: LocalRegistry, repo_id: str, files: dict[str, Any], ref: str) -> str:
    """Write a self-consistent manifest (named by its own hash, as a push would) and point ``ref`` at it."""
    manifest = {"format_version": 1, "repo_id": repo_id, "parent": None, "message": "forged", "time": "now",
                "files": files}
    payload = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    commit = hashlib.sha256(payload.encode()).hexdigest()[:40]
    (repo_dir(registry, repo_id) / "commits" / f"{commit}.json").write_text(payload)
    (repo_dir(registry, repo_id) / "refs" / ref).write_text(commit)
    return commit


@pytest.fixture
def pushed(tmp_path: Path) -> tuple[LocalRegistry, str, str, Path]:
    """A local registry holding one adapter: (registry, repo id, commit, the pushed folder)."""
    registry = LocalRegistry(tmp_path / "registry")
    folder = make_adapter(tmp_path / "adapter")
    return registry, "org/tour", registry.push(folder, "org/tour").commit, folder


# ---- 1: traversal (test_registry.py covers the library: test_bad_repo_ids_are_rejected, test_parse_ref,
# test_bad_tag_and_branch_names_say_tag_and_branch, test_local_manifest_naming_a_blob_outside_is_refused) --------
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


# ---- 2: tamper through `scalearn pull` (test_registry.py covers the library: test_local_tampered_blob_is_refused,
# test_local_edited_manifest_is_refused, test_local_ref_leading_outside_the_root_is_never_followed,
# test_local_symlinks_leading_outside_the_root_are_refused) ---------------------------------------------------
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


# ---- 3: concurrency (test_registry.py's test_concurrent_local_pushes_stay_consistent: 2 processes x 12 pushes
# to one branch); here 8 pushes at once in each shape, through separate LocalRegistry objects and file locks ---
@pytest.mark.parametrize("shape", ["one-branch", "eight-branches", "eight-repos"])
def test_eight_concurrent_local_pushes_stay_consistent(shape: str, tmp_path: Path) -> None:
    """8 pushes released together: 8 commits, each tag and branch where it should be, each pull verified."""
    folders = [make_adapter(tmp_path / f"src{i}", seed=i) for i in range(8)]
    repo_ids = [f"org/race-{i}" if shape == "eight-repos" else "org/race" for i in range(8)]
    branches = [f"dev{i}" if shape == "eight-branches" else "main" for i in range(8)]
    root, start = tmp_path / "registry", threading.Barrier(8)

    def push(i: int) -> str:
        start.wait()
        return LocalRegistry(root).push(folders[i], repo_ids[i], revision=branches[i], tag=f"v{i}").commit

    with ThreadPoolExecutor(8) as pool:
        commits = list(pool.map(push, range(8)))
    assert len(set(commits)) == 8
    registry = LocalRegistry(root)
    for i, commit in enumerate(commits):
        assert registry.resolve(repo_ids[i], f"v{i}") == commit
        if shape != "one-branch":
            assert registry.resolve(repo_ids[i], branches[i]) == commit
        assert read_all(registry.pull(repo_ids[i], f"v{i}", local_dir=tmp_path / f"out{i}")) == read_all(folders[i])
        assert read_all(registry.pull(repo_ids[i], commit)) == read_all(folders[i])
    if shape == "one-branch":  # one linear history through all 8 commits
        history, commit = [], registry.resolve("org/race")
        while commit is not None:
            history.append(commit)
            commit = json.loads((repo_dir(registry, "org/race") / "commits" / f"{commit}.json").read_text())["parent"]
        assert sorted(history) == sorted(commits)
    assert [p for p in root.rglob(".*") if p.name != ".locks" and p.parent.name != ".locks"] == []


# ---- 4: Ctrl-C (test_registry.py's test_interrupted_push_leaves_no_revision: the library, at the manifest;
# test_cli.py's test_ctrl_c_mid_training_leaves_nothing: a real SIGINT to train-source, without a re-run) -------
def _interrupt(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, at_call: int = 1) -> list[int]:
    """Make ``owner.name`` raise KeyboardInterrupt on its ``at_call``-th call, as Ctrl-C would at that point."""
    real, calls = getattr(owner, name), []

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == at_call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, interrupted)
    return calls


@pytest.mark.parametrize("where", ["blob", "snapshot", "manifest"])
def test_ctrl_c_during_push_leaves_no_revision_and_a_rerun_succeeds(
    where: str, pushed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted while copying a blob, linking the snapshot or writing the manifest: main and the store unchanged."""
    from scalearn_cli.registry import local

    registry, repo_id, before, _ = pushed
    spec, folder = f"local:{registry.root}", make_adapter(tmp_path / "next", seed=7)
    owner, name = {"blob": (local.os, "fsync"), "snapshot": (local.os, "symlink"),
                   "manifest": (local, "_atomic_write")}[where]
    calls = _interrupt(monkeypatch, owner, name)
    line = one_error_line(invoke("push", folder, repo_id, "--registry", spec), code=130, prefix="Interrupted: ")
    monkeypatch.undo()
    assert calls and "nothing was written" in line
    assert registry.resolve(repo_id) == before and staging_leftovers(registry.root) == []
    assert [p.name for p in (repo_dir(registry, repo_id) / "commits").iterdir()] == [f"{before}.json"]
    after = ok(invoke("push", folder, repo_id, "--registry", spec)).stdout.strip().split("@")[1]
    assert after != before and read_all(registry.pull(repo_id)) == read_all(folder)


@pytest.fixture(scope="module")
def task_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(0)
    rows = [{"sentence": f"the movie was {rng.choice(['good', 'great', 'bad', 'awful'])}", "label": i % 2}
            for i in range(48)]
    path = tmp_path_factory.mktemp("tour-task") / "task.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _custom(task_file: Path) -> list[Any]:
    return ["--task", "custom", "--data-file", task_file, "--text-fields", "sentence"]


@pytest.fixture
def interrupt_training(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Ctrl-C at the second training step (the progress callback the CLI renders runs after each step)."""
    from scalearn_cli.cli.progress import RichProgress

    yield _interrupt(monkeypatch, RichProgress, "step", at_call=2)


def test_ctrl_c_mid_train_source_leaves_nothing_and_a_rerun_succeeds(
    interrupt_training: list[int], tiny_model_dir: Path, task_file: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """exit 130 and one 'Interrupted:' line; no --out, no staging folder; the same command then succeeds."""
    out = tmp_path / "outs" / "source"
    args = ["train-source", "--model", tiny_model_dir, *_custom(task_file), *TRAIN, "--out", out]
    one_error_line(invoke(*args), code=130, prefix="Interrupted: ", alone=False)
    assert len(interrupt_training) == 2 and not out.exists() and staging_leftovers(tmp_path) == []
    monkeypatch.undo()
    ok(invoke(*args))
    assert (out / "scalearn.json").is_file() and staging_leftovers(tmp_path) == []


def test_ctrl_c_mid_transfer_leaves_nothing_and_a_rerun_succeeds(
    interrupt_training: list[int], tiny_model_dir: Path, task_file: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for transfer: nothing at --out after Ctrl-C mid-training, then a clean re-run."""
    sources = [make_source(tmp_path / f"src{i}", tiny_model_dir, seed=i) for i in range(2)]
    out = tmp_path / "outs" / "composed"
    args = ["transfer", *_custom(task_file), "--source", sources[0], "--source", sources[1], *TRAIN, "--out", out]
    one_error_line(invoke(*args), code=130, prefix="Interrupted: ", alone=False)
    assert len(interrupt_training) == 2 and not out.exists() and staging_leftovers(tmp_path) == []
    monkeypatch.undo()
    ok(invoke(*args))
    assert (out / "composition.json").is_file() and staging_leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["training", "saving", "swapping"])
def test_ctrl_c_during_overwrite_keeps_the_old_folder(
    where: str, tiny_model_dir: Path, task_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--overwrite interrupted mid-training, mid-save or between the two renames: the old adapter stays whole."""
    from scalearn_cli.artifacts import io
    from scalearn_cli.cli.progress import RichProgress
    from scalearn_cli.stages import source

    out = tmp_path / "outs" / "source"
    args = ["train-source", "--model", tiny_model_dir, *_custom(task_file), *TRAIN, "--out", out, "--overwrite"]
    ok(invoke(*args, "--seed", "1"))
    before = read_all(out)
    if where == "swapping":  # Ctrl-C right after the old folder was renamed aside, before the new one moves in
        calls, replace = [], os.replace

        def replace_then_interrupt(src: Any, dst: Any) -> None:
            replace(src, dst)
            if ".old-" in Path(dst).name:
                calls.append(1)
                raise KeyboardInterrupt

        monkeypatch.setattr(io.os, "replace", replace_then_interrupt)
    else:
        owner, name = {"training": (RichProgress, "step"), "saving": (source, "save_tensors")}[where]
        calls = _interrupt(monkeypatch, owner, name, at_call=2 if where == "training" else 1)
    one_error_line(invoke(*args, "--seed", "2"), code=130, prefix="Interrupted: ", alone=False)
    monkeypatch.undo()
    assert calls and read_all(out) == before and staging_leftovers(out.parent) == []
    ok(invoke(*args, "--seed", "2"))
    assert read_all(out)["adapter_model.safetensors"] != before["adapter_model.safetensors"]


# ---- 5: Hub failures are one line (test_registry.py: test_unreachable_endpoint and test_auth_errors for the
# library, test_hub_list_fails_fast_on_a_refused_connection for `list`); here every command, through the CLI ---
class _Status(http.server.BaseHTTPRequestHandler):
    """Answers every request with the server's ``status`` and a JSON error; records the Authorization headers."""

    def _answer(self) -> None:
        self.server.seen.append(self.headers.get("Authorization"))  # type: ignore[attr-defined]
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"error": "tour"}).encode()
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = _answer  # noqa: N815 - http.server's names

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def failing_hub(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a Hub endpoint that fails as ``request.param`` says: 401, 500 or unreachable (nothing listens)."""
    if request.param == "unreachable":
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        yield f"http://127.0.0.1:{port}"
        return
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    server.status, server.seen = request.param, []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
        assert server.seen and set(server.seen) <= {None, f"Bearer {SECRET}"}  # the token was in play
    finally:
        server.shutdown()
        server.server_close()


def _hub_command(command: str, url: str, tmp_path: Path) -> list[Any]:
    return {"pull": ["pull", "org/x", "--local-dir", tmp_path / "out"],
            "push": ["push", make_adapter(tmp_path / "a"), "org/x"],
            "list": ["list"]}[command] + ["--registry", url]


@pytest.mark.parametrize("command", ["pull", "push", "list"])
@pytest.mark.parametrize("failing_hub", ["unreachable", 401, 500], indirect=True)
def test_hub_failures_are_one_line(failing_hub: str, command: str, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Exit 1 and exactly one 'Error:' line naming the endpoint; list's retries on 5xx stay silent."""
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setattr("huggingface_hub.utils._http.time.sleep", lambda seconds: None)  # list backs off ~23 s
    line = one_error_line(invoke(*_hub_command(command, failing_hub, tmp_path)), code=1)
    assert failing_hub in line and SECRET not in line
    assert not (tmp_path / "out").exists()


def _cli_process(args: list[Any], env: dict[str, str]) -> subprocess.CompletedProcess:
    """``scalearn ARGS`` in a fresh interpreter (libraries imported in the CLI's own order), with no backoff sleeps."""
    code = "import sys, time; time.sleep = lambda s: None; from scalearn_cli.cli.main import main; main()"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "COLUMNS": "200", **env})


@pytest.mark.parametrize("failing_hub", [500], indirect=True)
def test_list_against_a_failing_hub_is_one_line_in_a_fresh_process(failing_hub: str, tmp_path: Path) -> None:
    """huggingface_hub's retry warnings used to print 12 lines before the error: its logger level is set at import,
    which comes after the CLI set it to ERROR."""
    done = _cli_process(["list", "--registry", failing_hub], {"HF_TOKEN": SECRET})
    assert done.returncode == 1 and done.stdout == "", done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {failing_hub} answered HTTP 500:"), done.stderr


# ---- 6: the token is never printed, even in debug mode (SCALEARN_DEBUG=1 re-raises; -v logs INFO) --------------
def _full_traceback(exc: BaseException | None) -> str:
    return "".join(traceback.format_exception(exc)) if exc is not None else ""


@pytest.mark.parametrize("command", ["pull", "push", "list"])
@pytest.mark.parametrize("failing_hub", [401], indirect=True)
def test_token_is_never_printed_in_debug_mode(failing_hub: str, command: str, tmp_path: Path) -> None:
    """The 401 server received the token; neither the output nor the re-raised error's traceback holds it."""
    env = {"HF_TOKEN": SECRET, "SCALEARN_DEBUG": "1"}
    result = invoke("-v", *_hub_command(command, failing_hub, tmp_path), env=env)
    assert isinstance(result.exception, RegistryError) and "401" in str(result.exception)  # debug: re-raised
    assert SECRET not in result.output and SECRET not in _full_traceback(result.exception)
    assert SECRET not in repr(result.exception.__cause__)


@pytest.mark.parametrize("failing_hub", [401], indirect=True)
def test_token_is_never_printed_in_a_debug_traceback(failing_hub: str, tmp_path: Path) -> None:
    """The traceback the real CLI prints with SCALEARN_DEBUG=1 (and huggingface_hub's HF_DEBUG) names no token."""
    done = _cli_process(["-v", "pull", "org/x", "--registry", failing_hub],
                        {"HF_TOKEN": SECRET, "SCALEARN_DEBUG": "1", "HF_DEBUG": "1"})
    assert done.returncode == 1 and "Traceback" in done.stderr and "RegistryError" in done.stderr, done.stderr
    assert SECRET not in done.stdout + done.stderr
