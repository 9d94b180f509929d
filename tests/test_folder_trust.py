"""One resolver and verified folders: a pulled source keeps its repo id and commit, a stored record never chooses
where the token goes, and an edited composition or a folder scalearn did not write is refused before use."""

from __future__ import annotations

import http.server
import json
import threading
from typing import Any

from helpers import GROUPS, TRAIN, custom, invoke, make_source, ok, refingerprint, write_task


# ---- one resolver: provenance and trust ---------------------------------------------------------------------
def test_pulled_path_keeps_repo_id_and_commit(root, tiny_model_dir):
    registry = f"local:{root / 'registry'}"
    folders = [make_source(root / f"prov{i}", tiny_model_dir, "lora", seed=20 + i) for i in range(2)]
    pushed = ok(invoke("push", folders[0], "org/prov", "--registry", registry)).stdout.strip()
    path = ok(invoke("pull", "org/prov", "--registry", registry)).stdout.strip()
    task = write_task(root / "prov.jsonl", GROUPS["movies"])
    out = root / "prov-composed"
    ok(invoke("transfer", *custom(task), "--source", path, "--source", folders[1], *TRAIN, "--out", out))
    first, second = json.loads((out / "composition.json").read_text())["sources"]
    assert (first["id"], first["revision"], first["registry"]) == ("org/prov", pushed.split("@")[1], registry)
    assert second["registry"] is None and second["id"] == str(folders[1].resolve())


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        _Recorder.seen.append(self.headers.get("Authorization", ""))
        self.send_response(404)
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def log_message(self, *args: Any) -> None:
        return None


def test_a_stored_record_never_chooses_where_the_token_goes(root, tiny_model_dir):
    source = make_source(root / "trust-src", tiny_model_dir, "lora", seed=30)
    task = write_task(root / "trust.jsonl", GROUPS["movies"])
    out = root / "trust-composed"
    ok(invoke("transfer", *custom(task), "--source", source, *TRAIN, "--out", out))
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hostile = f"http://127.0.0.1:{server.server_port}"
    try:
        record = json.loads((out / "composition.json").read_text())
        record["sources"][0].update(registry=hostile, id="org/evil", revision="a" * 40)
        (out / "composition.json").write_text(json.dumps(record))
        refingerprint(out)  # a consistent, well-formed record: only the trust rule stands in the way
        result = invoke("eval", out, "--json", env={"HF_TOKEN": "hf_secret_token", "HF_HUB_OFFLINE": "0"})
        assert result.exit_code == 1 and "not your configured Hub endpoint" in result.stderr
        assert hostile in result.stderr and "hf_secret_token" not in result.output
        assert _Recorder.seen == []
    finally:
        server.shutdown()


# ---- every folder verified before use -----------------------------------------------------------------------
def test_edited_composition_files_and_metadata_are_refused(root, tiny_model_dir):
    from safetensors.torch import load_file, save_file

    source = make_source(root / "edit-src", tiny_model_dir, "lora", seed=40)
    task = write_task(root / "edit.jsonl", GROUPS["movies"])
    out = root / "edit-composed"
    ok(invoke("transfer", *custom(task), "--source", source, *TRAIN, "--out", out))
    original = (out / "omega.safetensors").read_bytes()
    omega = load_file(str(out / "omega.safetensors"))
    save_file({k: v * 2 for k, v in omega.items()}, str(out / "omega.safetensors"))
    result = invoke("eval", out)
    assert result.exit_code == 1 and "omega.safetensors changed since it was saved" in result.stderr
    (out / "omega.safetensors").write_bytes(original)
    ok(invoke("eval", out))
    meta = json.loads((out / "scalearn.json").read_text())
    meta["base_model"]["id"] = "someone/else"
    (out / "scalearn.json").write_text(json.dumps(meta))
    result = invoke("eval", out)
    assert result.exit_code == 1 and "scalearn.json was edited" in result.stderr


def test_overwrite_replaces_only_folders_scalearn_wrote(root, tiny_model_dir):
    project = root / "project"
    project.mkdir()
    (project / "notes.txt").write_text("mine")
    task = write_task(root / "ow.jsonl", GROUPS["movies"])
    result = invoke("train-source", "--model", tiny_model_dir, *custom(task), *TRAIN, "--out", project, "--overwrite")
    assert result.exit_code == 1 and "did not write" in result.stderr
    assert (project / "notes.txt").read_text() == "mine"
