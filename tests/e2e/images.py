"""Both images for the suite: built, saved as archives, and loaded into the cluster.

The load command is the user's (``--load-image``): a template split like a shell line, in which
``{tarball}`` (the image archive) and ``{image}`` (the reference the cluster will use) are
replaced in each word *after* splitting. A path with spaces stays one argument, and nothing is
ever given to a shell (write ``sh -c '... "$1"' sh {tarball}`` for pipes).
"""

from __future__ import annotations

import shlex
import shutil
import string
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .manifests import Images

FIELDS = ("tarball", "image")
#: The repository names of the two images under ``--image-prefix``.
OPERATOR_NAME = "speech-operator"
RECOGNIZER_NAME = "speech-recognizer"


class BadTemplate(ValueError):
    """A ``--load-image`` template the suite cannot use (the message says why)."""


@dataclass(frozen=True)
class LoadCommand:
    """A parsed ``--load-image`` template."""

    words: tuple[str, ...]

    @classmethod
    def parse(cls, template: str) -> LoadCommand:
        try:
            words = tuple(shlex.split(template))
        except ValueError as exc:
            raise BadTemplate(f"--load-image {template!r}: {exc}") from None
        if not words:
            raise BadTemplate("--load-image is empty: give a command such as 'kind load image-archive {tarball}'")
        named: set[str] = set()
        for word in words:
            try:
                parsed = list(string.Formatter().parse(word))
            except ValueError as exc:
                raise BadTemplate(f"--load-image word {word!r}: {exc} (write {{{{ and }}}} for literal braces)") from None
            for _, field, spec, conversion in parsed:
                if field is None:
                    continue
                if field not in FIELDS or spec or conversion:
                    raise BadTemplate(f"--load-image word {word!r}: unknown placeholder {{{field}}}; "
                                      f"only {{tarball}} and {{image}} are replaced ({{{{ and }}}} for literal braces)")
                named.add(field)
        if "tarball" not in named:
            raise BadTemplate(f"--load-image {template!r} does not name {{tarball}}, the image archive to load")
        return cls(words)

    def argv(self, tarball: Path, image: str) -> list[str]:
        """The command for one image; each word stays one argument, whatever the values hold."""
        return [word.format(tarball=str(tarball), image=image) for word in self.words]


def kind_load(cluster: str) -> LoadCommand:
    """What the kind path loads images with."""
    return LoadCommand(("kind", "load", "image-archive", "--name", cluster, "{tarball}"))


@dataclass(frozen=True)
class Built:
    """Images built on this machine: the tool that holds them, and their local references."""

    tool: str  # "podman" (the project's builder) or "docker"
    local: Images
    ids: Images  # image ids, which name the tags the cluster sees

    def cluster_images(self, prefix: str) -> Images:
        """References for the cluster: ``PREFIX/speech-operator:e2e-<id>``. The tag comes from the
        image's id, so a node that kept an older build under another tag never serves it to this
        run (``IfNotPresent`` trusts the tag), and loading the same build twice is harmless."""
        def ref(name: str, image_id: str) -> str:
            return f"{prefix.rstrip('/')}/{name}:e2e-{image_id.removeprefix('sha256:')[:12]}"
        return Images(operator=ref(OPERATOR_NAME, self.ids.operator), recognizer=ref(RECOGNIZER_NAME, self.ids.recognizer))


Runner = Callable[[list[str]], str]


def podman_builder_missing() -> str | None:
    """Why the project's image builder cannot run here, or None."""
    from tests.ship import build_images
    from tests.ship.tools import ToolMissing

    try:
        build_images.require_tools()
    except ToolMissing as exc:
        return str(exc)
    return None


def build(tool: str, run: Runner, *, skip: bool = False) -> Built:
    """Both images with the project's builder (podman, tests/ship/build_images.py), or with Docker;
    ``skip``: the ones it built last time."""
    if tool == "podman":
        from tests.ship import build_images

        if not skip:
            build_images.build_all()
        local = Images(operator=build_images.OPERATOR_TAG, recognizer=build_images.RECOGNIZER_TAG)
        inspect = ["podman", *build_images.STORE_ARGS, "image", "inspect", "--format", "{{.Id}}"]
    else:
        from tests.ship.build_images import MODEL_LOCALE, ROOT

        local = Images(operator="localhost/speech-operator:e2e-build", recognizer="localhost/speech-recognizer:e2e-build")
        if not skip:
            run(["docker", "build", "--target", "operator", "-t", local.operator, str(ROOT)])
            run(["docker", "build", "--target", "recognizer", "--build-arg", f"MODEL_LOCALE={MODEL_LOCALE}",
                 "-t", local.recognizer, str(ROOT)])
        inspect = ["docker", "image", "inspect", "--format", "{{.Id}}"]
    ids = Images(operator=run([*inspect, local.operator]).strip(), recognizer=run([*inspect, local.recognizer]).strip())
    return Built(tool, local, ids)


def save(built: Built, images: Images, folder: Path, run: Runner) -> dict[str, Path]:
    """Each image as a docker-archive tarball under its cluster reference -> {reference: tarball}."""
    out: dict[str, Path] = {}
    for local, ref in ((built.local.operator, images.operator), (built.local.recognizer, images.recognizer)):
        tarball = folder / f"{ref.rsplit('/', 1)[-1].replace(':', '-')}.tar"
        if built.tool == "podman":
            from tests.ship.build_images import STORE_ARGS

            run(["podman", *STORE_ARGS, "tag", local, ref])
            run(["podman", *STORE_ARGS, "save", "--format", "docker-archive", "-o", str(tarball), ref])
        else:
            run(["docker", "tag", local, ref])
            run(["docker", "save", "-o", str(tarball), ref])
        out[ref] = tarball
    return out


def load(command: LoadCommand, archives: dict[str, Path], run: Runner) -> None:
    for ref, tarball in archives.items():
        run(command.argv(tarball, ref))


def docker_engine() -> str | None:
    """Why no Docker engine answers here, or None."""
    if not shutil.which("docker"):
        return "no `docker` command"
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if info.returncode != 0 or not info.stdout.strip():
        last = " ".join((info.stderr or info.stdout).strip().splitlines()[-1:])
        return f"no Docker engine reachable: {last}"
    return None
