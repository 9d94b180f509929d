"""A small Hub-protocol server for tests: the part of the Hugging Face Hub HTTP API that huggingface_hub 2.4's
client uses to create repos, push (preupload + LFS batch/upload + ndjson commit), list, resolve and download.

Routes and payloads follow the installed client (hf_api.py, _commit_api.py, lfs.py, file_download.py,
_snapshot_download.py, utils/_http.py), not guesses. The repos, commits and blobs the routes read and write are
:class:`hubstate.HubState`'s (git objects modelled, not stored; contents on disk so a test can tamper with them).

Xet is never advertised (no ``X-Xet-*`` headers, LFS batch answers ``transfer: basic``). Note that the
*upload* side of the client picks Xet only because ``hf_xet`` is installed: tests disable it with
``HF_HUB_DISABLE_XET`` (see ``hf_env`` in conftest.py).

Auth: writes need ``Authorization: Bearer <TOKEN>``; private repos answer 401 (``X-Error-Code: RepoNotFound``)
to readers without it, like the Hub. Left out: pagination, PRs, spaces/datasets, multipart LFS, gitignore.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from hubstate import FileEntry, HubError, HubState, Repo, git_sha1, is_lfs, lfs_pointer, now

TOKEN = "hf_scalearn_test_token"
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"


def create_app(state: HubState, html: bool = False) -> FastAPI:
    """The FastAPI app; every route reads ``state`` under its lock.

    ``html=True`` answers every request with a 200 HTML page instead, like a captive portal, a proxy's login
    page or a website mistaken for a Hub endpoint.
    """
    app = FastAPI()

    if html:
        @app.middleware("http")
        async def _html_page(request: Request, call_next: Any) -> Response:
            return HTMLResponse("<!doctype html><html><body><h1>Welcome</h1></body></html>")

    @app.exception_handler(HubError)
    async def _hub_error(request: Request, exc: HubError) -> Response:
        headers = {"X-Error-Message": exc.message}
        if exc.code:
            headers["X-Error-Code"] = exc.code
        return JSONResponse({"error": exc.message, **exc.extra}, status_code=exc.status, headers=headers)

    def authed(request: Request, required: bool = False) -> bool:
        header = request.headers.get("authorization")
        if header is not None and header != f"Bearer {TOKEN}":
            raise HubError(401, "Invalid credentials in Authorization header")
        if header is None and required:
            raise HubError(401, "You must be authenticated to do that")
        return header is not None

    # ---- repos -------------------------------------------------------------------------------------------
    @app.post("/api/repos/create")
    async def create_repo(request: Request) -> Response:
        authed(request, required=True)
        body = await request.json()
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        with state.lock:
            if repo_id in state.repos:
                # the client reads "url" even from this 409 when exist_ok=True
                raise HubError(409, "You already created this model repo", url=f"{state.base_url}/{repo_id}")
            repo = Repo(repo_id, private=body.get("visibility") == "private", created=now())
            state.repos[repo_id] = repo
            state.new_commit(repo, "main", {".gitattributes": state.entry(GITATTRIBUTES, ".gitattributes")}, "initial")
        return JSONResponse({"url": f"{state.base_url}/{repo_id}", "name": repo_id, "id": repo_id})

    @app.delete("/api/repos/delete")
    async def delete_repo(request: Request) -> Response:
        authed(request, required=True)
        body = await request.json()
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        with state.lock:
            state.repo(repo_id, True)
            del state.repos[repo_id]
        return Response()

    @app.get("/api/models")
    async def list_models(request: Request) -> Response:
        auth = authed(request)
        params = request.query_params
        wanted_tags = params.getlist("filter")
        search, author = params.get("search"), params.get("author")
        full = params.get("full") in ("True", "true", "1")
        out = []
        with state.lock:
            for repo in sorted(state.repos.values(), key=lambda r: r.repo_id):
                info = state.model_json(repo, repo.branches["main"], blobs=False)
                if (repo.private and not auth) or (search and search.lower() not in repo.repo_id.lower()):
                    continue
                if (author and info["author"] != author) or not set(wanted_tags) <= set(info["tags"]):
                    continue
                if not full:
                    info.pop("siblings")
                out.append(info)
        return JSONResponse(out[: int(params.get("limit", len(out) or 1))])

    @app.get("/api/models/{repo_id:path}/revision/{revision}")
    @app.get("/api/models/{repo_id:path}/refs")
    @app.get("/api/models/{repo_id:path}/tree/{revision}")
    @app.get("/api/models/{repo_id:path}/tree/{revision}/{path:path}")
    async def read_api(request: Request, repo_id: str, revision: str | None = None, path: str = "") -> Response:
        with state.lock:
            repo = state.repo(repo_id, authed(request))
            if request.url.path.endswith("/refs") and revision is None:
                return JSONResponse(refs_json(repo))
            commit = state.commit_of(repo, revision)
            if "/revision/" in request.url.path:
                blobs = request.query_params.get("blobs") in ("True", "true", "1")
                return JSONResponse(state.model_json(repo, commit, blobs=blobs))
            prefix = path.strip("/") + "/" if path.strip("/") else ""
            files = state.files(repo, commit)
            return JSONResponse([state.file_json(p, e) for p, e in sorted(files.items()) if p.startswith(prefix)])

    @app.get("/api/models/{repo_id:path}")
    async def model_info(request: Request, repo_id: str) -> Response:
        return await read_api(request, repo_id, "main")

    @app.post("/api/models/{repo_id:path}/paths-info/{revision}")
    async def paths_info(request: Request, repo_id: str, revision: str) -> Response:
        form = parse_qs((await request.body()).decode())
        with state.lock:
            repo = state.repo(repo_id, authed(request))
            files = state.files(repo, state.commit_of(repo, revision))
            return JSONResponse([state.file_json(p, files[p]) for p in form.get("paths", []) if p in files])

    def refs_json(repo: Repo) -> dict[str, Any]:
        def ref(kind: str, name: str, oid: str) -> dict[str, str]:
            return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": oid}

        return {
            "branches": [ref("heads", n, c) for n, c in sorted(repo.branches.items())],
            "tags": [ref("tags", n, c) for n, c in sorted(repo.tags.items())],
            "converts": [],
            "pullRequests": [],
        }

    @app.post("/api/models/{repo_id:path}/branch/{branch}")
    async def create_branch(request: Request, repo_id: str, branch: str) -> Response:
        authed(request, required=True)
        body = await request.json() if await request.body() else {}
        with state.lock:
            repo = state.repo(repo_id, True)
            if branch in repo.branches:
                raise HubError(409, f"Branch {branch} already exists")
            repo.branches[branch] = state.commit_of(repo, body.get("startingPoint") or "main")
        return JSONResponse({})

    @app.post("/api/models/{repo_id:path}/tag/{revision}")
    async def create_tag(request: Request, repo_id: str, revision: str) -> Response:
        authed(request, required=True)
        body = await request.json()
        with state.lock:
            repo = state.repo(repo_id, True)
            if body["tag"] in repo.tags:
                raise HubError(409, f"Tag {body['tag']} already exists")
            repo.tags[body["tag"]] = state.commit_of(repo, revision)
        return JSONResponse({})

    @app.post("/api/validate-yaml")
    async def validate_yaml() -> Response:
        return JSONResponse({"errors": [], "warnings": []})

    # ---- upload: preupload -> LFS batch -> PUT/verify -> ndjson commit ------------------------------------
    @app.post("/api/models/{repo_id:path}/preupload/{revision}")
    async def preupload(request: Request, repo_id: str, revision: str) -> Response:
        authed(request, required=True)
        body = await request.json()
        with state.lock:
            repo = state.repo(repo_id, True)
            current = state.files(repo, state.commit_of(repo, revision)) if revision in repo.branches else {}
            out = []
            for item in body["files"]:
                lfs = is_lfs(item["path"], item["size"], base64.b64decode(item["sample"]))
                old = current.get(item["path"])
                oid = None if old is None else (old.sha256 if old.lfs else old.oid)
                out.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                            "oid": oid})
        return JSONResponse({"files": out})

    @app.post("/{repo_id:path}.git/info/lfs/objects/batch")
    async def lfs_batch(request: Request, repo_id: str) -> Response:
        authed(request, required=True)
        body = await request.json()
        with state.lock:
            state.repo(repo_id, True)
            objects = []
            for obj in body["objects"]:
                item = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
                if not state.has_blob(obj["oid"]):
                    item["actions"] = {
                        "upload": {"href": f"{state.base_url}/__lfs/{obj['oid']}"},
                        "verify": {"href": f"{state.base_url}/__lfs/verify"},
                    }
                objects.append(item)
        return JSONResponse({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                            media_type="application/vnd.git-lfs+json")

    @app.put("/__lfs/{oid}")
    async def lfs_upload(request: Request, oid: str) -> Response:
        data = await request.body()  # like a pre-signed S3 URL: no auth, but the content must match its name
        if hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, "sha256 mismatch")
        with state.lock:
            state.put_blob(data)
        return Response(headers={"ETag": f'"{oid}"'})

    @app.post("/__lfs/verify")
    async def lfs_verify(request: Request) -> Response:
        authed(request, required=True)
        body = await request.json()
        if not state.has_blob(body["oid"]):
            raise HubError(404, "object not uploaded")
        return JSONResponse({})

    @app.post("/api/models/{repo_id:path}/commit/{revision}")
    async def commit(request: Request, repo_id: str, revision: str) -> Response:
        authed(request, required=True)
        lines = [json.loads(line) for line in (await request.body()).splitlines() if line.strip()]
        with state.lock:
            repo = state.repo(repo_id, True)
            if revision not in repo.branches:
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            files = dict(state.files(repo, repo.branches[revision]))
            header = lines[0]["value"]
            if header.get("parentCommit") and header["parentCommit"] != repo.branches[revision]:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                if key == "file":
                    files[value["path"]] = state.entry(base64.b64decode(value["content"]), value["path"])
                elif key == "lfsFile":
                    if not state.has_blob(value["oid"]):
                        raise HubError(400, f"LFS object {value['oid']} was not uploaded")
                    pointer = lfs_pointer(value["oid"], value["size"])
                    files[value["path"]] = FileEntry(value["size"], value["oid"], True, git_sha1(pointer))
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key == "deletedFolder":
                    files = {p: e for p, e in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            oid = state.new_commit(repo, revision, files, header["summary"])
        return JSONResponse({"success": True, "commitOid": oid, "commitUrl": f"{state.base_url}/{repo_id}/commit/{oid}",
                             "pullRequestUrl": None})

    # ---- download ----------------------------------------------------------------------------------------
    @app.api_route("/{repo_id:path}/resolve/{revision}/{filename:path}", methods=["GET", "HEAD"])
    async def resolve(request: Request, repo_id: str, revision: str, filename: str) -> Response:
        with state.lock:
            repo = state.repo(repo_id, authed(request))
            commit = state.commit_of(repo, revision)
            entry = state.files(repo, commit).get(filename)
            if entry is None:
                raise HubError(404, "Entry not found", "EntryNotFound")
            data = (state.root / "blobs" / entry.sha256).read_bytes()  # served as stored (tamper tests)
        headers = {"X-Repo-Commit": commit, "Content-Length": str(len(data)), "Accept-Ranges": "bytes"}
        if entry.lfs:
            headers.update({"ETag": f'"{entry.oid}"', "X-Linked-Etag": f'"{entry.sha256}"',
                            "X-Linked-Size": str(entry.size)})
        else:
            headers["ETag"] = f'"{entry.oid}"'
        body = b"" if request.method == "HEAD" else data
        return Response(content=body, headers=headers, media_type="application/octet-stream")

    return app


class HubServer:
    """Run :func:`create_app` with uvicorn on 127.0.0.1 and a free port, in a background thread."""

    def __init__(self, root: Path, html: bool = False) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.state = HubState(root, base_url=self.url)
        config = uvicorn.Config(create_app(self.state, html=html), host="127.0.0.1", port=port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> HubServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("test hub server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
