"""The images: the load command's templating and quoting (run for real), the references the pods
use, and what is built and saved (the commands, recorded: no image is built in the quick suite;
tests/ship/test_images.py builds them)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from . import images
from .images import BadTemplate, Built, LoadCommand
from .kube import CommandFailed, run
from .manifests import Images

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

RECORDER = ("import json, sys; from pathlib import Path; "
            "Path(sys.argv[1]).open('a').write(json.dumps(sys.argv[2:]) + '\\n')")


def test_placeholders_are_replaced_word_by_word_and_spaces_stay_inside_one_argument(tmp_path: Path) -> None:
    """The command really runs: a tarball path with spaces and quotes, and an image reference, each
    arrive as one argument; shell characters in them are not interpreted (nothing runs a shell)."""
    record = tmp_path / "argv.jsonl"
    folder = tmp_path / "my images; rm -rf $HOME"
    folder.mkdir()
    tarball = folder / "it's.tar"
    template = f"{sys.executable} -c {json.dumps(RECORDER)} {record} 'load --from={{tarball}}' {{image}} '{{{{literal}}}}'"
    command = LoadCommand.parse(template)
    images.load(command, {"localhost/speech-operator:e2e-1": tarball}, lambda argv: run(argv, log=lambda _: None))
    assert json.loads(record.read_text()) == [f"load --from={tarball}", "localhost/speech-operator:e2e-1", "{literal}"]


def test_each_image_is_loaded_with_its_own_archive() -> None:
    seen: list[list[str]] = []
    command = LoadCommand.parse("kind load image-archive --name speech-e2e {tarball}")
    images.load(command, {"a:1": Path("/t/a.tar"), "b:1": Path("/t/b.tar")}, lambda argv: seen.append(argv) or "")
    assert seen == [["kind", "load", "image-archive", "--name", "speech-e2e", "/t/a.tar"],
                    ["kind", "load", "image-archive", "--name", "speech-e2e", "/t/b.tar"]]
    assert images.kind_load("speech-e2e") == command


def test_a_failing_load_command_is_a_clear_failure(tmp_path: Path) -> None:
    command = LoadCommand.parse(f"{sys.executable} -c 'import sys; sys.exit(\"no such node: kind-worker9\")' {{tarball}}")
    with pytest.raises(CommandFailed, match="exited 1: no such node: kind-worker9"):
        images.load(command, {"a:1": tmp_path / "a.tar"}, lambda argv: run(argv, log=lambda _: None))


def test_a_missing_load_command_is_a_clear_failure(tmp_path: Path) -> None:
    with pytest.raises(CommandFailed, match="`ctr-not-installed` is not installed"):
        images.load(LoadCommand.parse("ctr-not-installed import {tarball}"), {"a:1": tmp_path / "a.tar"},
                    lambda argv: run(argv, log=lambda _: None))


@pytest.mark.parametrize("template", ["{0}", "{tarball.name}", "{tarball!r}", "{tarball:>10}", "{", "x }"])
def test_templates_with_anything_but_the_two_placeholders_are_refused(template: str) -> None:
    with pytest.raises(BadTemplate):
        LoadCommand.parse(f"load {template} {{tarball}}")


def test_cluster_references_are_named_by_the_build() -> None:
    """A node that kept an older build under another tag never serves it: the tag is the image id."""
    built = Built("podman", Images("localhost/speech-operator:ship-test", "localhost/speech-recognizer:ship-test"),
                  Images("sha256:0123456789abcdef0123", "fedcba9876543210ffff"))
    assert built.cluster_images("registry.test:5000/team/") == Images(
        operator="registry.test:5000/team/speech-operator:e2e-0123456789ab",
        recognizer="registry.test:5000/team/speech-recognizer:e2e-fedcba987654")
    assert Images.split("registry.test:5000/team/speech-operator:e2e-0123") == ("registry.test:5000/team/speech-operator", "e2e-0123")
    assert Images.split("registry.test:5000/team/speech-operator") == ("registry.test:5000/team/speech-operator", "latest")


@pytest.mark.parametrize("tool", ["podman", "docker"])
def test_saved_archives_carry_the_cluster_reference(tool: str, tmp_path: Path) -> None:
    from tests.ship.build_images import STORE_ARGS

    seen: list[list[str]] = []
    built = Built(tool, Images("l/op:x", "l/rec:x"), Images("sha256:aaaa", "sha256:bbbb"))
    refs = built.cluster_images("localhost")
    archives = images.save(built, refs, tmp_path, lambda argv: seen.append(argv) or "")
    assert archives == {refs.operator: tmp_path / "speech-operator-e2e-aaaa.tar",
                        refs.recognizer: tmp_path / "speech-recognizer-e2e-bbbb.tar"}
    store = STORE_ARGS if tool == "podman" else []
    fmt = ["--format", "docker-archive"] if tool == "podman" else []
    assert seen[:2] == [[tool, *store, "tag", "l/op:x", refs.operator],
                        [tool, *store, "save", *fmt, "-o", str(tmp_path / "speech-operator-e2e-aaaa.tar"), refs.operator]]


def test_docker_builds_both_targets_with_the_model_and_skip_build_builds_nothing() -> None:
    seen: list[list[str]] = []
    built = images.build("docker", lambda argv: seen.append(argv) or "sha256:1234\n")
    assert [a[:4] for a in seen[:2]] == [["docker", "build", "--target", "operator"], ["docker", "build", "--target", "recognizer"]]
    assert "MODEL_LOCALE=ko-KR" in seen[1]
    assert built.ids == Images("sha256:1234", "sha256:1234")
    seen.clear()
    images.build("docker", lambda argv: seen.append(argv) or "sha256:1234\n", skip=True)
    assert [a[1] for a in seen] == ["image", "image"]
