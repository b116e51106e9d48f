"""The suite's arguments: both forms (kind, an existing cluster) and every refusal, with its reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from .images import LoadCommand
from .manifests import Images
from .suite import KIND_CLUSTER, parse_args

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "staging.yaml"
    path.write_text("apiVersion: v1\nkind: Config\n")
    return path


def refusal(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_no_arguments_is_the_kind_path() -> None:
    opts = parse_args([])
    assert opts.kubeconfig is None and opts.kind_cluster == KIND_CLUSTER and opts.load_image is None
    assert opts.given_images is None and opts.image_prefix == "localhost" and opts.timeouts.stay_up == 120


def test_an_existing_cluster_with_a_load_command(kubeconfig: Path) -> None:
    opts = parse_args(["--kubeconfig", str(kubeconfig), "--context", "staging",
                       "--load-image", "ctr -n k8s.io images import {tarball}", "--stay-up", "30"])
    assert opts.kubeconfig == kubeconfig and opts.context == "staging"
    assert opts.load_image == LoadCommand(("ctr", "-n", "k8s.io", "images", "import", "{tarball}"))
    assert opts.timeouts.stay_up == 30


def test_an_existing_cluster_with_images_it_already_has(kubeconfig: Path) -> None:
    opts = parse_args(["--kubeconfig", str(kubeconfig), "--operator-image", "reg.test:5000/so/operator:1.0",
                       "--recognizer-image", "reg.test:5000/so/recognizer:1.0"])
    assert opts.given_images == Images(operator="reg.test:5000/so/operator:1.0", recognizer="reg.test:5000/so/recognizer:1.0")
    assert opts.load_image is None


@pytest.mark.parametrize(("argv", "says"), [
    (["--kubeconfig", "{kc}"], "--kubeconfig needs --load-image 'CMD {tarball}'"),
    (["--kubeconfig", "/nonexistent/kubeconfig", "--load-image", "x {tarball}"], "no such file"),
    (["--operator-image", "a:1"], "--operator-image and --recognizer-image go together"),
    (["--kubeconfig", "{kc}", "--operator-image", "a:1", "--recognizer-image", "b:1", "--load-image", "x {tarball}"],
     "nothing is built or loaded"),
    (["--operator-image", "a@sha256:00", "--recognizer-image", "b:1"], "not a digest"),
    (["--context", "prod"], "--context needs --kubeconfig"),
    (["--kubeconfig", "{kc}", "--load-image", "kind load image-archive"], "does not name {tarball}"),
    (["--kubeconfig", "{kc}", "--load-image", "load {tarbal}"], "unknown placeholder {tarbal}"),
    (["--kubeconfig", "{kc}", "--load-image", "sh -c 'unclosed {tarball}"], "No closing quotation"),
    (["--image-prefix", "registry.test/team:v1"], "without a tag"),
    (["--stay-up", "-1"], "--stay-up must be 0 or more"),
])
def test_refusals_name_what_is_wrong(argv: list[str], says: str, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    message = refusal([a.replace("{kc}", str(kubeconfig)) for a in argv], capsys)
    assert says in message, message
