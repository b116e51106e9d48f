"""The chart's pre-delete hook: rendered objects, and its script against a fake API server."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from pathlib import Path

from .conftest import CHART, by_kind, helm_template, one, validate_manifests

SCRIPT = CHART / "files" / "cleanup.py"
FULL_VALUES = CHART / "ci" / "full-values.yaml"


def test_hook_renders_only_with_recognizers(helm: Path) -> None:
    assert not by_kind(helm_template(helm), "Job")
    assert not by_kind(helm_template(helm, "--values", str(FULL_VALUES), "--set", "cleanupOnUninstall.enabled=false",
                                     namespace="speech"), "Job")
    docs = helm_template(helm, "--values", str(FULL_VALUES), namespace="speech")
    validate_manifests(docs)
    job = one(docs, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:2] == ["python", "-c"]
    assert container["command"][2] == SCRIPT.read_text()
    assert container["command"][3:] == ["stt-en-us", "korean", "stt-de-de"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    cleanup_roles = [r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-cleanup")]
    (role,) = cleanup_roles
    assert role["rules"] == [{"apiGroups": ["speech-operator.io"], "resources": ["speechtotexts"],
                              "resourceNames": ["stt-en-us", "korean", "stt-de-de"], "verbs": ["get", "delete"]}]
    for doc in docs:
        if doc["metadata"]["name"].endswith("-cleanup"):
            assert doc["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete", doc["kind"]


class FakeAPI(http.server.BaseHTTPRequestHandler):
    """Deletes take two GETs to finish (the operator releasing its finalizer)."""

    objects: dict[str, int] = {}
    calls: list[tuple[str, str, str]] = []

    def _reply(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_DELETE(self) -> None:  # noqa: N802
        self.calls.append(("DELETE", self.path, self.headers.get("Authorization", "")))
        name = self.path.rsplit("/", 1)[1]
        if name not in self.objects:
            return self._reply(404)
        self.objects[name] = max(self.objects[name], 2)
        self._reply(200)

    def do_GET(self) -> None:  # noqa: N802
        self.calls.append(("GET", self.path, self.headers.get("Authorization", "")))
        name = self.path.rsplit("/", 1)[1]
        if name not in self.objects:
            return self._reply(404)
        self.objects[name] -= 1
        if self.objects[name] <= 0:
            del self.objects[name]
        self._reply(200)

    def log_message(self, *args: object) -> None:
        pass


def run_script(tmp_path: Path, names: list[str], objects: dict[str, int], timeout: str = "20") -> subprocess.CompletedProcess:
    FakeAPI.objects = dict(objects)
    FakeAPI.calls = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token = tmp_path / "token"
    token.write_text("secret-token\n")
    try:
        env = {"CLEANUP_API": f"http://127.0.0.1:{server.server_address[1]}", "CLEANUP_NAMESPACE": "speech",
               "CLEANUP_TOKEN_FILE": str(token), "CLEANUP_TIMEOUT": timeout}
        return subprocess.run([sys.executable, "-c", SCRIPT.read_text(), *names], env=env,
                              capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()


def test_script_deletes_and_waits(tmp_path: Path) -> None:
    proc = run_script(tmp_path, ["stt-en-us", "korean"], {"stt-en-us": 0, "korean": 0})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    deletes = [c for c in FakeAPI.calls if c[0] == "DELETE"]
    assert [c[1] for c in deletes] == ["/apis/speech-operator.io/v1alpha1/namespaces/speech/speechtotexts/stt-en-us",
                                       "/apis/speech-operator.io/v1alpha1/namespaces/speech/speechtotexts/korean"]
    assert all(c[2] == "Bearer secret-token" for c in FakeAPI.calls)
    assert "speechtotext/korean is gone" in proc.stdout
    assert not FakeAPI.objects


def test_script_accepts_already_deleted(tmp_path: Path) -> None:
    proc = run_script(tmp_path, ["gone"], {})
    assert proc.returncode == 0, proc.stdout


def test_script_fails_when_a_finalizer_never_goes(tmp_path: Path) -> None:
    proc = run_script(tmp_path, ["stuck"], {"stuck": 10_000}, timeout="3")
    assert proc.returncode == 1 and "still there" in proc.stdout


def test_hook_yaml_is_not_operator_rbac() -> None:
    """The hook's Role is its own; the operator's rules still come only from deploy/base/rbac.yaml."""
    text = (CHART / "templates" / "cleanup-hook.yaml").read_text()
    assert text.count("verbs:") == 1 and 'verbs: ["get", "delete"]' in text
