"""The Hub backend's failures, through the real huggingface_hub client: tampered files, an unreachable or refusing
endpoint, bad tokens, HTML instead of JSON, each one line (library and every command), the token never printed,
even in debug mode; and a pushed LoRA source is an ordinary Hub repo vanilla PEFT loads.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Iterator

import pytest

from helpers import invoke, make_adapter, one_error_line, one_line, unique
from hubserver import HubServer
from scalearn_cli.artifacts.folders import record_folder
from scalearn_cli.errors import RegistryError
from scalearn_cli.registry.hub import HubRegistry

SECRET = "hf_test_secret_token_0123456789"
pytestmark = pytest.mark.usefixtures("hf_env")  # an isolated HF cache and token, never the real Hub


# ---- tampered files, unreachable endpoints, bad tokens, HTML answers -------------------------------------
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
    result = invoke("list", "--registry", "hub", "--endpoint", f"http://127.0.0.1:{port}")
    assert time.monotonic() - start < 5  # huggingface_hub alone would back off for ~25 s
    assert result.exit_code == 1 and "unreachable" in result.output


# ---- Hub failures are one line through every command (the library's: above) ------------------------------
class _Status(http.server.BaseHTTPRequestHandler):
    """Answers every request with the server's ``status`` and a JSON error; records the Authorization headers."""

    def _answer(self) -> None:
        self.server.seen.append(self.headers.get("Authorization"))  # type: ignore[attr-defined]
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"error": "failing on purpose"}).encode()
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


# ---- the token is never printed, even in debug mode (SCALEARN_DEBUG=1 re-raises; -v logs INFO) -----------
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
