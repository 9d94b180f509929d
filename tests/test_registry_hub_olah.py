"""A second and independent check of the download side: a real third-party Hub-compatible server.

olah (PyPI: ``olah``, a Hugging Face mirror) serves plain git repositories found under its ``mirrors-path``
(``<mirrors-path>/models/<org>/<name>``) through the Hub's HTTP API: ``/api/models/{repo}/revision/{rev}``
(model_info), ``.../tree/{rev}`` (list_repo_tree, git blob sha1 ``oid`` and, for git-LFS pointer files,
``lfs.oid`` = sha256), and ``/{repo}/resolve/{rev}/{file}`` (HEAD + GET, LFS objects read from
``.git/lfs/objects``). None of its code is ours, unlike tests/hubserver.py. It runs ``offline`` so that it never
asks the real Hub anything, bound to 127.0.0.1, and its upstream is pointed at a closed local port besides.

The repository is made here with git itself: a PEFT LoRA saved by PEFT, the safetensors file stored as git-LFS
does (pointer in the commit, object under .git/lfs/objects), an annotated tag on that commit, then ``main``
moves on so that resolving the tag (not the head) is what is checked.

Skipped where olah is not installed. It is deliberately not in the ``test`` extra: olah 0.5.4 needs
fastapi-utils>=0.8, and fastapi-utils 0.8.0 (its newest) pins psutil<6, which would downgrade the psutil 7.x that
accelerate/peft bring. Run it from a separate venv: ``pip install torch==2.13.0 -e .[test] olah==0.5.4``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import torch

pytest.importorskip("olah", reason="olah (a third-party Hub-compatible server, PyPI 'olah') is not installed")
if shutil.which("git") is None:
    pytest.skip("git is not installed (olah serves git repositories)", allow_module_level=True)

from helpers import one_hot, peft_lora  # noqa: E402
from scalearn_cli.artifacts import sha256_file  # noqa: E402

ORG, NAME, TAG = "someone", "sst2-lora", "v1.0"
LFS_SUFFIXES = (".safetensors", ".bin")
START_TIMEOUT_S = 60.0
pytestmark = pytest.mark.usefixtures("hf_env")  # an isolated HF cache and token; HF_ENDPOINT dead


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                          text=True, timeout=60).stdout.strip()


def commit_folder(repo: Path, folder: Path, message: str) -> dict[str, str]:
    """Replace the work tree by ``folder``'s files, LFS-style for weights, commit; the sha256 of each file."""
    for old in repo.iterdir():
        if old.name not in (".git", ".gitattributes"):
            old.unlink()
    hashes = {}
    for src in sorted(folder.iterdir()):
        data = src.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        hashes[src.name] = sha
        if src.suffix in LFS_SUFFIXES:  # what `git lfs` does on add: the object aside, a pointer committed
            obj = repo / ".git" / "lfs" / "objects" / sha[:2] / sha[2:4] / sha
            obj.parent.mkdir(parents=True, exist_ok=True)
            obj.write_bytes(data)
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n"
            (repo / src.name).write_text(pointer)
        else:
            (repo / src.name).write_bytes(data)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return hashes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def olah_server(mirrors: Path, work: Path) -> Iterator[tuple[str, Path]]:
    """olah on 127.0.0.1:<free port>, offline, serving ``mirrors``; yields (url, its log); always stopped."""
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    config = work / "olah.toml"
    config.write_text(
        "[basic]\n"
        f'host = "127.0.0.1"\nport = {port}\n'
        f'repos-path = "{work / "cache"}"\n'
        f'mirrors-path = ["{mirrors}"]\n'
        'mirror-scheme = "http"\n'
        f'mirror-netloc = "127.0.0.1:{port}"\nmirror-lfs-netloc = "127.0.0.1:{port}"\n'
        'hf-scheme = "http"\nhf-netloc = "127.0.0.1:9"\nhf-lfs-netloc = "127.0.0.1:9"\n'  # never the real Hub
        "[accessibility]\noffline = true\n"
    )
    log = work / "olah.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", PYTHONUNBUFFERED="1")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "olah.server", "--config", str(config), "--log-path", str(work / "logs")],
            cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"olah exited with {proc.returncode} before serving:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"olah did not listen within {START_TIMEOUT_S:.0f}s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_a_tagged_peft_repo_served_by_olah_resolves_pins_and_composes(tmp_path, tiny_model_dir, batch):
    from peft import PeftModel
    from transformers import AutoModel

    from scalearn_cli.combiners import get_combiner
    from scalearn_cli.compose import inject
    from scalearn_cli.resolve import Resolver

    mirrors = tmp_path / "mirrors"
    repo = mirrors / "models" / ORG / NAME
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
                                         "*.bin filter=lfs diff=lfs merge=lfs -text\n")
    adapter = peft_lora(tmp_path / "peft", tiny_model_dir, 11)
    local = commit_folder(repo, adapter, "add the LoRA")
    git(repo, "tag", "-a", TAG, "-m", "release")  # annotated: the server has to peel it to the commit
    tagged = git(repo, "rev-parse", f"{TAG}^{{commit}}")
    commit_folder(repo, peft_lora(tmp_path / "newer", tiny_model_dir, 12), "retrain")  # main moves on
    assert git(repo, "rev-parse", "main") != tagged

    with olah_server(mirrors, tmp_path / "olah") as (url, log):
        try:
            source = Resolver(endpoint=url).source(f"hf://{ORG}/{NAME}@{TAG}")
        except Exception as exc:  # which request failed, in olah's own access log
            pytest.fail(f"{type(exc).__name__}: {exc}\nolah log:\n{log.read_text()[-4000:]}")
        from huggingface_hub import HfApi

        tree = {f.path: f for f in HfApi(endpoint=url).list_repo_tree(f"{ORG}/{NAME}", revision=TAG)}
        requests = log.read_text()

    ref = source.ref
    assert (ref.id, ref.registry, ref.revision, ref.format) == (f"{ORG}/{NAME}", url, tagged, "peft")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(ref.files) <= set(local)
    assert ref.files == {name: local[name] for name in ref.files}  # the tagged commit's files, not main's
    assert {name: sha256_file(source.folder / name) for name in ref.files} == ref.files  # what was downloaded
    weights = tree["adapter_model.safetensors"]  # olah's own record: the LFS sha256 and the pointer's blob id
    assert weights.lfs is not None and weights.lfs.sha256 == local["adapter_model.safetensors"]
    assert weights.blob_id == git(repo, "rev-parse", f"{TAG}:adapter_model.safetensors")
    assert tree["adapter_config.json"].blob_id == git(repo, "rev-parse", f"{TAG}:adapter_config.json")
    assert f"/resolve/{tagged}/adapter_model.safetensors" in requests  # the weights came through olah

    encoder = AutoModel.from_pretrained(tiny_model_dir).eval()
    comp = inject(encoder, [source], get_combiner("scalearn").spec("scalearn-uniform"))
    comp.eval()
    one_hot(comp, 0, 1)
    reference = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_model_dir), str(adapter)).eval()
    with torch.no_grad():
        diff = (encoder(**batch).last_hidden_state - reference(**batch).last_hidden_state).abs().max()
    assert float(diff) <= 1e-5
