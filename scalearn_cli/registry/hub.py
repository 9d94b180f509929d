"""The Hugging Face Hub (or any Hub-compatible endpoint) as a registry, through huggingface_hub's public API.

Pushed repos are ordinary model repos: a PEFT LoRA source loads with vanilla
``PeftModel.from_pretrained(base, "org/name", revision=...)``. The token comes from huggingface_hub's usual
sources (``HF_TOKEN``, ``hf auth login``) and is never printed or logged; errors show the endpoint without
credentials.

Integrity: the Hub records a sha256 for every LFS file (safetensors) and a git blob sha1 for every small
file. Pull checks each downloaded file against that record before handing the folder back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit, urlunsplit

from scalearn_cli import __version__
from scalearn_cli.artifacts import METADATA_FILE, read_json, sha256_file
from scalearn_cli.artifacts.outputs import check_pull_dir
from scalearn_cli.errors import RegistryError, ScaLearnError, UsageError
from scalearn_cli.registry.base import (
    ALLOW_PATTERNS,
    PULL_ONLY_FILES,
    DEFAULT_BRANCH,
    PushResult,
    Registry,
    RepoEntry,
    collect_push_files,
    is_pullable_file,
    matches,
    validate_filename,
    validate_ref_name,
    validate_repo_id,
    validate_revision,
)
from scalearn_cli.registry.files import pull_into

logger = logging.getLogger(__name__)

#: repos are found on the Hub by this tag (set in the model card's YAML ``tags:``)
HUB_TAG = "scalearn"
_LIST_LIMIT = 500


@dataclass(frozen=True)
class RemoteFile:
    """What the Hub records about one file of a commit: LFS files carry a sha256, small files a git sha1."""

    name: str
    size: int
    blob_id: str
    sha256: str | None


def resolve_endpoint(endpoint: str | None) -> str:
    """``endpoint``, else ``$HF_ENDPOINT`` (read now, not at import), else huggingface_hub's default."""
    from huggingface_hub import constants

    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def display_endpoint(endpoint: str) -> str:
    """The endpoint without any ``user:password@`` part, for messages."""
    parts = urlsplit(endpoint)
    if not (parts.username or parts.password):
        return endpoint
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=host))


class HubRegistry(Registry):
    """Registry backed by a Hub endpoint through ``huggingface_hub.HfApi``."""

    def __init__(self, endpoint: str | None = None, token: str | bool | None = None) -> None:
        self.endpoint = resolve_endpoint(endpoint)
        self.location = display_endpoint(self.endpoint)
        self._token = token

    @property
    def api(self) -> Any:
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint, token=self._token, library_name="scalearn", library_version=__version__)

    # ---- write -------------------------------------------------------------------------------------------
    def push(
        self,
        folder: Path,
        repo_id: str,
        revision: str | None = None,
        tag: str | None = None,
        private: bool = False,
        commit_message: str | None = None,
    ) -> PushResult:
        """Create the repo (and branch) if needed, upload the allowed files as one commit, tag it."""
        validate_repo_id(repo_id)
        branch = validate_ref_name(revision or DEFAULT_BRANCH, "branch")
        if tag is not None:
            validate_ref_name(tag, "tag")
        files = collect_push_files(folder)
        api = self.api
        with self._errors(repo_id, branch):
            api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
            refs = api.list_repo_refs(repo_id, repo_type="model")
            tags = {ref.name: ref.target_commit for ref in refs.tags}
            heads = {ref.name: ref.target_commit for ref in refs.branches}
            if branch in tags:
                raise RegistryError(f"{repo_id}: {branch!r} is a tag, and tags never move; push to a branch")
            if tag in tags and tags[tag] != heads.get(branch, heads.get(DEFAULT_BRANCH)):
                # refuse before uploading (a push onto the tagged commit itself may still be a no-op)
                raise RegistryError(
                    f"{repo_id}: tag {tag!r} already points at {tags[tag][:12]} and tags never move; choose a new tag"
                )
            if branch not in heads:
                api.create_branch(repo_id, branch=branch, repo_type="model", exist_ok=True)
            info = api.upload_folder(
                folder_path=str(folder),
                repo_id=repo_id,
                repo_type="model",
                revision=branch,
                commit_message=commit_message or f"Push {Path(folder).name} with scalearn",
                allow_patterns=sorted(files),
                # the revision mirrors the folder: files of an earlier push that are gone now are deleted
                delete_patterns=list(ALLOW_PATTERNS),
            )
            commit = info.oid
        if tag is not None:
            self._tag(repo_id, tag, commit)
        return PushResult(repo_id=repo_id, commit=commit)

    def _tag(self, repo_id: str, tag: str, commit: str) -> None:
        api = self.api
        with self._errors(repo_id, tag):
            refs = api.list_repo_refs(repo_id, repo_type="model")
            existing = {ref.name: ref.target_commit for ref in refs.tags}
            if tag in {ref.name for ref in refs.branches}:
                raise RegistryError(f"{repo_id}: {tag!r} is already a branch; choose another tag name")
            if tag in existing and existing[tag] != commit:
                raise RegistryError(
                    f"{repo_id}: tag {tag!r} already points at {existing[tag][:12]} and tags never move; "
                    "choose a new tag"
                )
            if tag not in existing:
                api.create_tag(repo_id, tag=tag, revision=commit, repo_type="model")

    # ---- read --------------------------------------------------------------------------------------------
    def resolve(self, repo_id: str, revision: str | None = None) -> str:
        """The commit hash a branch, tag or commit points at (one ``model_info`` call)."""
        validate_repo_id(repo_id)
        revision = validate_revision(revision or DEFAULT_BRANCH)
        with self._errors(repo_id, revision):
            sha = self.api.model_info(repo_id, revision=revision).sha
        if not sha:
            raise RegistryError(f"{self.location} gave no commit for {repo_id}@{revision}; is it a Hub endpoint?")
        return sha

    def _remote_files(self, repo_id: str, commit: str) -> dict[str, RemoteFile]:
        """The registry's record of every allowed file of ``commit`` (others, like .gitattributes, are ignored)."""
        from huggingface_hub.hf_api import RepoFile

        with self._errors(repo_id, commit):
            tree = list(self.api.list_repo_tree(repo_id, revision=commit, recursive=True, repo_type="model"))
        records: dict[str, RemoteFile] = {}
        for item in tree:
            if not isinstance(item, RepoFile) or "/" in item.path or item.path.startswith("."):
                continue  # folders, .gitattributes and macOS' ._* leftovers (AdapterHub repos hold one) are not ours
            if not is_pullable_file(item.path):
                continue
            name = validate_filename(item.path)
            sha256 = item.lfs.sha256 if item.lfs is not None else None
            records[name] = RemoteFile(name=name, size=item.size, blob_id=item.blob_id, sha256=sha256)
        return records

    def file_hashes(self, repo_id: str, commit: str) -> dict[str, str]:
        """sha256 by file name; small (non-LFS) files are fetched and checked against their git sha1 first."""
        commit = self.resolve(repo_id, commit)
        records = self._remote_files(repo_id, commit)
        if all(record.sha256 is not None for record in records.values()):
            return {name: record.sha256 for name, record in records.items()}  # type: ignore[misc]
        folder = self._download(repo_id, commit, None)
        _verify(folder, records, repo_id, commit, drop_bad=True)
        return {name: r.sha256 or sha256_file(folder / name) for name, r in records.items()}

    def pull(self, repo_id: str, revision: str | None = None, local_dir: Path | None = None) -> Path:
        """Download a revision (safetensors/JSON/README, and PEFT/AdapterHub weights), verify every file, return it.

        Without ``local_dir`` the folder is huggingface_hub's cache snapshot; with it, files are downloaded
        to a temporary folder beside ``local_dir`` and renamed into place only once verified.
        """
        commit = self.resolve(repo_id, revision)
        records = self._remote_files(repo_id, commit)
        if local_dir is None:
            folder = self._download(repo_id, commit, None)
            _verify(folder, records, repo_id, commit, drop_bad=True)
            return folder

        def fill(tmp: Path) -> None:
            self._download(repo_id, commit, tmp)
            shutil.rmtree(tmp / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping for local_dir

        return pull_into(check_pull_dir(local_dir), records, fill,
                         lambda folder: _verify(folder, records, repo_id, commit))

    def _download(self, repo_id: str, commit: str, local_dir: Path | None) -> Path:
        from huggingface_hub import snapshot_download

        with self._errors(repo_id, commit):
            path = snapshot_download(
                repo_id,
                repo_type="model",
                revision=commit,
                local_dir=str(local_dir) if local_dir is not None else None,
                allow_patterns=[*ALLOW_PATTERNS, *PULL_ONLY_FILES],
                endpoint=self.endpoint,
                token=self._token,
                library_name="scalearn",
                library_version=__version__,
            )
        return Path(path)

    def list(self, filter: str | None = None) -> list[RepoEntry]:  # noqa: A002
        """Repos tagged ``scalearn`` that hold scalearn.json, filtered on id/task/base model/adapter kind."""
        from huggingface_hub import hf_hub_download

        api = self.api
        entries: list[RepoEntry] = []
        self._check_reachable()
        with self._errors(None, None):
            models = list(api.list_models(filter=HUB_TAG, full=True, limit=_LIST_LIMIT))
            for model in models:
                names = {sibling.rfilename for sibling in model.siblings or []}
                if METADATA_FILE not in names or not model.sha:
                    continue
                path = hf_hub_download(
                    model.id, METADATA_FILE, revision=model.sha, endpoint=self.endpoint, token=self._token
                )
                try:
                    metadata = read_json(Path(path))
                except ScaLearnError as exc:
                    logger.warning("skipping %s: %s", model.id, exc)
                    continue
                entry = RepoEntry(repo_id=model.id, commit=model.sha, metadata=metadata)
                if matches(entry, filter):
                    entries.append(entry)
        return sorted(entries, key=lambda entry: entry.repo_id)

    def _check_reachable(self) -> None:
        """One request without retries, so a refused connection or unknown host fails at once.

        huggingface_hub's listing retries network errors as well as 429/5xx answers (about 25 s of backoff);
        a server that answers at all passes here, so the retries for overloaded servers are kept.
        """
        from huggingface_hub import constants
        from huggingface_hub.utils import get_session

        with self._errors(None, None):
            get_session().head(self.endpoint, timeout=constants.HF_HUB_ETAG_TIMEOUT)

    # ---- errors ------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _errors(self, repo_id: str | None, revision: str | None) -> Iterator[None]:
        """Turn huggingface_hub / network exceptions into one-line RegistryErrors with a hint."""
        try:
            yield
        except ScaLearnError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified below, re-raised when unknown
            error = hub_error(exc, self.location, repo_id, revision)
            if error is None:
                raise
            raise error from exc


def hub_error(exc: Exception, where: str, repo_id: str | None, revision: str | None) -> RegistryError | None:
    """The one-line RegistryError for a huggingface_hub/httpx exception, or None when it is not one of those."""
    from huggingface_hub import errors as hf

    repo = repo_id or "the repo"
    if isinstance(exc, hf.OfflineModeIsEnabled):
        return RegistryError(f"HF_HUB_OFFLINE is set, so {where} cannot be reached: unset it or use --registry local")
    if isinstance(exc, (hf.LocalEntryNotFoundError, ConnectionError, TimeoutError, *_transport_errors())):
        return RegistryError(
            f"registry {where} unreachable: check HF_ENDPOINT / --endpoint and your network, or use --registry "
            "local (or pass a local folder as --source)"
        )
    if isinstance(exc, json.JSONDecodeError):
        return RegistryError(
            f"{where} answered with something other than Hub JSON (an HTML page?): check that HF_ENDPOINT / "
            "--endpoint is a Hub API, or log in to your network's portal first"
        )
    if isinstance(exc, hf.RevisionNotFoundError):
        return RegistryError(
            f"revision {revision!r} not found in {repo} on {where}: check the branch, tag or commit "
            "(`scalearn list --registry hub` shows the latest commits)"
        )
    if isinstance(exc, hf.GatedRepoError):
        return RegistryError(f"{repo} on {where} is gated: request access on its page, then `hf auth login`")
    if isinstance(exc, hf.RepositoryNotFoundError):
        return RegistryError(
            f"repo {repo} not found on {where} (or it is private and your token cannot see it): "
            "check the id, or log in with `hf auth login` / set HF_TOKEN"
        )
    if isinstance(exc, getattr(hf, "RemoteEntryNotFoundError", hf.EntryNotFoundError)):
        return RegistryError(f"a file of {repo}@{revision} is missing on {where}: re-push the adapter")
    if isinstance(exc, hf.HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status == 401:
            return RegistryError(f"{where} refused the credentials (401): run `hf auth login` or set a valid HF_TOKEN")
        if status == 403:
            return RegistryError(
                f"{where} denied access to {repo} (403): use a token with write access to its namespace"
            )
        about = f" for {repo_id}" if repo_id else ""  # `list` names no repo
        return RegistryError(f"{where} answered HTTP {status}{about}: retry later, or check --endpoint")
    if isinstance(exc, OSError) and "Consistency check failed" in str(exc):
        return RegistryError(f"a download from {where} for {repo} came back with the wrong size: pull again")
    return None


def _transport_errors() -> tuple[type[Exception], ...]:
    """Network-level exception types of whichever HTTP client this huggingface_hub uses (httpx2, httpx, requests)."""
    found: list[type[Exception]] = []
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests", "ConnectionError")):
        try:
            found.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _verify(folder: Path, records: dict[str, RemoteFile], repo_id: str, commit: str, drop_bad: bool = False) -> None:
    """Check each file: sha256 for LFS files, git blob sha1 for small ones; raise on the first mismatch.

    With ``drop_bad`` (huggingface_hub's cache) a bad file and its blob are deleted, so pulling again
    downloads it afresh instead of finding the same bad copy.
    """
    from huggingface_hub.utils.sha import git_hash

    for name, record in sorted(records.items()):
        path = Path(folder) / name
        if not path.is_file():
            raise RegistryError(f"{repo_id}@{commit[:12]}: {name} is missing from the download; pull again")
        if record.sha256 is not None:
            ok, recorded = sha256_file(path) == record.sha256, f"sha256 {record.sha256[:12]}..."
        else:
            ok, recorded = git_hash(path.read_bytes()) == record.blob_id, f"git sha1 {record.blob_id[:12]}..."
        if not ok:
            if drop_bad:
                blob = path.resolve()
                path.unlink()
                blob.unlink(missing_ok=True)
            raise RegistryError(
                f"{repo_id}@{commit[:12]}: the downloaded {name} does not match the registry's {recorded}; it was "
                "corrupted or tampered with, and was not kept: pull again, and re-push the adapter if this persists"
            )


def open_hub(spec: str, endpoint: str | None) -> HubRegistry:
    """The ``hub`` / URL backend's opener (``registry.base.BACKENDS``)."""
    if spec != "hub" and endpoint is not None and endpoint.rstrip("/") != spec.rstrip("/"):
        raise UsageError(f"--registry {spec} and --endpoint {endpoint} disagree; pass only one of them")
    return HubRegistry(endpoint=endpoint if spec == "hub" else spec)
