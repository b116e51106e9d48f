"""``speech-recognizer`` / ``python -m speech_recognizer``: Azure-style ``Key=Value`` arguments."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from . import __version__, heap
from .addresses import host_port
from .serving import listening_on, listening_socket, server_options
from .settings import SettingsError, describe, parse, require_eula
from .warmup import warmup_audio

USAGE = f"""speech-recognizer {__version__}: open speech to text, compatible with Azure's speech-to-text container.

usage: python -m speech_recognizer Eula=accept [Billing=<endpoint>] [ApiKey=<key>] [Key=Value ...]
       python -m speech_recognizer transcribe FILE... [--format txt|json|srt|vtt] [--language LOCALE] [--server URL]
       (transcribe --help says more)

Settings (also environment variables, with __ for ':', e.g. Mounts__Output=/output):
{describe()}
"""


def ensure_home(environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Give ``HOME`` a value when the user has none: Vosk resolves ``~`` when it is imported.

    A container user without a passwd entry (an arbitrary uid) and without ``HOME`` in its
    environment made that import fail ("Could not determine home directory"). Nothing is
    written there: ``/``, as container runtimes use for such a user.
    """
    if environ.get("HOME"):
        return
    try:
        Path.home()
    except (RuntimeError, KeyError):
        environ["HOME"] = "/"


def quiet_when_stdout_closes(entry: Callable[..., int]) -> Callable[..., int]:
    """``entry`` ends quietly, as ``cat`` does, when its reader stops early (``--help | head``).

    Without this the write to the closed pipe (or Python's own flush at exit) ends in a
    BrokenPipeError traceback. The exit status is the one a shell reports for a program
    killed by SIGPIPE (141). SIGPIPE itself stays ignored, as Python sets it: restoring
    its default would kill the server on a write to a client that has gone.
    """

    @functools.wraps(entry)
    def run(*args: object, **kwargs: object) -> int:
        try:
            try:
                return entry(*args, **kwargs)
            finally:  # also after SystemExit (argparse's --help)
                sys.stdout.flush()
        except BrokenPipeError:
            # Python flushes stdout once more at exit: let that flush go nowhere.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 128 + signal.SIGPIPE

    return run


def end_now(status: int) -> NoReturn:
    """End the process with ``status`` at once, its output flushed, skipping the interpreter's teardown.

    For a program whose work is done and written (the file transcriber): the teardown would
    free the model and its recognizers allocation by allocation and join idle decoder
    threads: time spent on nothing, which the kernel does at once when the
    process ends (the transcriber's throughput, docs/benchmarks.md). A flush that finds the
    reader gone raises BrokenPipeError as any write would.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


@quiet_when_stdout_closes
def main(argv: list[str] | None = None) -> int:
    """Parse settings, then download a model, or serve."""
    ensure_home()
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["transcribe"]:
        from .transcriber import main as transcribe

        status = transcribe(args[1:])
        if argv is None:  # the program itself (console script, python -m): its work is done
            end_now(status)
        return status
    if any(a in ("-h", "--help", "help") for a in args):
        print(USAGE)
        return 0
    if any(a in ("--version", "-V") for a in args):
        print(__version__)
        return 0
    try:
        settings = parse(args)
        # Downloads serve nothing, so they need no EULA: the image build and the operator's
        # init container run ``DownloadModel=True`` without it.
        if not (settings.download_model or settings.download_license):
            require_eula(settings)
    except SettingsError as exc:
        print(f"speech-recognizer: {exc}", file=sys.stderr)
        return 2
    from .logs import configure

    configure(settings)
    log = logging.getLogger("speech_recognizer")
    for warning in settings.warnings:
        log.warning("%s", warning)
    if settings.http_proxy:
        os.environ.setdefault("HTTP_PROXY", settings.http_proxy)
        os.environ.setdefault("HTTPS_PROXY", settings.http_proxy)
    from .models import ModelError, ModelRegistry, canonical_locale, discover, download_bound, download_model

    if settings.download_license:
        print("DownloadLicense: open Vosk models need no license file; nothing to download.")
        return 0
    if settings.download_model:
        if len(settings.locales) != 1:
            print("speech-recognizer: DownloadModel=True needs exactly one Locale=<locale>", file=sys.stderr)
            return 2
        try:
            existing = None if settings.model_url else discover(settings.models_dir).get(canonical_locale(settings.locales[0]))
            if existing is not None:
                print(f"model for {settings.locales[0]} is already available at {existing}; nothing to download")
                return 0
            path = download_model(
                settings.locales[0],
                settings.models_dir,
                url=settings.model_url,
                sha256=settings.model_sha256,
                catalog_base=settings.model_catalog_url,
                bound=download_bound(settings.locales[0], settings.model_url, settings.model_max_size_mb,
                                     "model_max_size_mb" in settings.given),
                ca_file=settings.model_ca_file,
            )
        except (ModelError, OSError) as exc:  # OSError: e.g. Mounts:Models cannot be created
            print(f"speech-recognizer: {exc}", file=sys.stderr)
            return 1
        print(f"model for {settings.locales[0]} is at {path}")
        return 0
    heap.disable_fastbins()  # before the model loads: Vosk decodes 7-8 % cheaper without them (glibc's malloc only)
    try:
        registry = ModelRegistry(settings.models_dir, settings.locales)
        registry.check()
        if settings.warmup_audio is not None:  # fail now, not in the background after start-up
            warmup_audio(settings.warmup_audio, settings.warmup_seconds, 16000)
    except (ModelError, OSError, ValueError) as exc:  # a bad Locale, an unreadable models folder, no model, bad Warmup:Audio
        print(f"speech-recognizer: {exc}", file=sys.stderr)
        return 1
    import uvicorn
    import vosk

    from .app import create_app
    from .drain import DrainingServer

    vosk.SetLogLevel(0 if settings.log_level == "DEBUG" else -1)
    try:
        sock = listening_socket(settings.host, settings.port)
    except OSError as exc:  # the port is taken, or Host is not an address of this machine
        print(f"speech-recognizer: cannot listen on {host_port(settings.host, settings.port)}: {exc}", file=sys.stderr)
        return 1
    heap.report()  # which allocator serves the decoders (the image's: jemalloc), once start-up can go on: its port is held
    app = create_app(settings, registry)
    # its decoders are said once its models are loaded, with the memory they took (app.fit_decoders)
    log.info("serving %s on %s", ", ".join(registry.wanted), listening_on(sock))
    config = uvicorn.Config(app, host=sock.getsockname()[0], port=settings.port, log_level=settings.log_level.lower(), **server_options(settings, app.state.metrics, app.state.http_cap))
    server = DrainingServer(config, app.state.drain)
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run
        server.run(sockets=[sock])
    return 0 if server.started else 3  # 3: start-up failed (uvicorn's exit status for it)
