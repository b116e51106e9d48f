"""``speech-recognizer transcribe``: audio files to text, JSON or subtitles.

In-process by default: the server's own engine and session type (so the same words and
times as every route) on a model found as the server finds one, no server needed. With
``--server URL`` the files go to a running recognizer's (or a gateway's) REST route
instead. Either way the output is what the REST route answers for the file: ``txt`` its
``DisplayText``, ``json`` its detailed answer with word times (100-ns ticks), ``srt`` and
``vtt`` its subtitles (:mod:`.subtitles`). Several formats (``--format srt,vtt,json``, into
``--output-dir``) come from one decoding of each file, or one request: all are rendered here
from its phrases (:func:`render`), with ``--server`` those of the route's answer (``phrases=true``).

Files are given as paths, folders (every audio file below, by suffix) or globs (``'**/*.wav'``,
for shells that do not expand them). They are transcribed ``--jobs`` at a time, the longest
first (:func:`plan`); each gets a progress bar on a terminal (none when stderr is not
one), and a file that fails is reported on one line without stopping the others; the exit
status is 1 when any failed, 130 on Ctrl-C. What a user's disk holds besides audio is met in
:func:`expand` (pipes, devices, links, unreadable folders), :class:`AudioInput` (sizes: a bound,
never a whole device), :func:`shown` (names that are not text) and :func:`_write_file` (no half
transcripts). In-process a file is read, decoded and fed to the engine a piece at a time
(:func:`_decoded`): what is held of it is a few MB, whatever its length.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import glob
import inspect
import itertools
import json
import os
import re
import stat
import sys
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Generator, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO, cast
from urllib.parse import SplitResult

from . import contract as c
from .settings import SettingsError, container_cores

if TYPE_CHECKING:
    from .audio import Decoding
    from .engine import Engine
    from .models import ModelRegistry

FORMATS = ("txt", "json", "srt", "vtt")
#: The formats made of the phrases' words and times (the others of the whole answer).
SUBTITLES = ("srt", "vtt")
#: What a folder is searched for.
AUDIO_SUFFIXES = frozenset(suffix for fmt in c.AUDIO_FORMATS for suffix in fmt.suffixes)
#: Longest file transcribed by default (3 hours; in-process it is never held whole: read as it is transcribed).
DEFAULT_MAX_SECONDS = 3 * 3600.0
#: Chunks a decoder job takes at once (one second of audio: the progress bar moves by that), and jobs
#: queued ahead on a session's decoder.
_PER_JOB = 10
_AHEAD = 8
#: The longest name in a folder, in bytes (Linux's file systems: ext4, XFS, Btrfs, tmpfs).
NAME_MAX = 255
#: How often a busy server (503) is asked again for a file before it counts as failed.
_BUSY_RETRIES = 5
#: ``--server``: the longest wait to connect, and for each write of a file's body and each read of the answer once the
#: body is sent (httpx's timeouts, the client before).
_CONNECT_SECONDS = 10.0
_WAIT_SECONDS = 600.0
#: ``--server``: the largest answer taken for a file, by the seconds of audio it may hold (``--max-seconds``), and
#: besides. What ``--server`` asks for, a detailed answer with word times and its phrases, holds each word twice: about
#: 240 bytes a word (measured: 3 h of 4 words a second, each 3 Korean syllables, 10.3 MB, 956 bytes a second). Taken:
#: 10 words a second (faster than any speech) of 512 bytes (longer words, text a proxy escapes as \uXXXX), 5 KiB a
#: second, and 1 MiB besides (a short file's answer, any error's): 56 MB at the 3 h default. A larger answer, or a
#: never-ending one, fails the file once it passes that, instead of filling memory (time alone bounded it before).
_ANSWER_BYTES_PER_SECOND = 10 * 512
_ANSWER_BYTES = 1 << 20

Progress = Callable[[float], None]


class FileError(Exception):
    """One file could not be transcribed; the message says why."""


#: What ``-`` names, as it does for cat and sox: the standard input, read as any pipe named as a file is.
STDIN = "/dev/stdin"


def expand(args: Sequence[str]) -> tuple[list[Path], list[str]]:
    """The files ``args`` name (paths, folders searched for audio, globs), in order, each once; and one
    error for each argument that names none and each audio-named entry of a folder or glob that is skipped.

    A path named as it is is read whatever it is (a pipe: ``<(sox …)``, ``/dev/stdin``, ``-``); a folder or a glob
    gives regular files only: a named pipe, device, socket or dangling link found there was not asked for by
    name, and reading it could wait for a writer forever. A folder that cannot be read is an error too,
    never a silent gap; links to folders are not followed (no loops), by a folder's search nor a glob's ``**`` (:func:`_glob`).
    """
    files: list[Path] = []
    errors: list[str] = []

    def found(path: Path) -> None:  # an entry of a folder or a glob
        if path.is_file():
            files.append(path)
        elif path.suffix.lower() in AUDIO_SUFFIXES:
            errors.append(f"{shown(path)}: {_not_regular(path)}: skipped (a folder or a glob gives regular files only)")

    def add(path: Path, named: bool) -> None:
        if path.is_dir():
            def unreadable(exc: OSError) -> None:
                errors.append(f"{shown(exc.filename)}: cannot read the folder: {exc.strerror}")

            below = [Path(top, name) for top, _, names in os.walk(path, onerror=unreadable) for name in names]
            for entry in sorted(below):
                if entry.suffix.lower() in AUDIO_SUFFIXES:
                    found(entry)
        elif named:
            files.append(path)
        else:
            found(path)

    for arg in args:
        path = Path(STDIN if arg == "-" else arg)
        if path.exists():
            add(path, named=True)
        elif glob.has_magic(arg):
            matches = _glob(arg)
            if not matches:
                errors.append(f"{shown(arg)}: no file matches")
            for match in matches:
                add(Path(match), named=False)
        elif path.is_symlink():
            errors.append(f"{shown(arg)}: {_not_regular(path)}")
        else:
            errors.append(f"{shown(arg)}: no such file or folder")
    unique: dict[str, Path] = {}
    for file in files:  # a file named twice (``a.wav ./x/../a.wav``) is transcribed once
        unique.setdefault(_absolute(file), file)
    return list(unique.values()), errors


def _glob(pattern: str) -> list[str]:
    """What ``pattern`` matches, sorted, as a shell's ``**`` (bash's globstar) finds it: ``**`` is folders at any depth
    but goes through no link to a folder, and a name that begins with a dot is matched by a pattern that does only.
    Not :func:`glob.glob`, whose ``**`` follows those links: a link to its own folder gave each file below it 40 times
    more, two such links (``loop -> .``, ``more/up -> ..``) more paths than memory holds (a hang); :meth:`Path.glob`'s
    follows none. It takes ``**`` only as a whole part: in a name (``take**.wav``) it is ``*``, as for glob."""
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    wild = [part if part == "**" else re.sub(r"\*{2,}", "*", part) for part in parts[fixed:]]
    dotted = any(part.startswith(".") for part in wild)
    found = (str(match) for match in Path(*parts[:fixed]).glob(os.path.join(*wild)))
    return sorted(match for match in found if dotted or not any(part.startswith(".") for part in Path(match).parts[fixed:]))


def _absolute(path: str | os.PathLike[str]) -> str:
    """``path`` made absolute as named (a link stays the link), ``//`` at its start as ``/``: POSIX leaves that one
    case to the system, Linux reads it as ``/``, and ``os.path`` and ``pathlib`` keep it (``//data/a.wav``, as a script's
    ``"$ROOT/$f"`` with ``ROOT=/`` makes it, was a second ``/data/a.wav`` and, with ``--output-dir``, a traceback)."""
    full = os.path.abspath(path)
    return full[1:] if full.startswith("//") else full


def _not_regular(path: Path) -> str:
    """What ``path``, which is not a regular file, is (for the line that says it is skipped)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return "a symbolic link to nothing" if path.is_symlink() and isinstance(exc, FileNotFoundError) else exc.strerror or str(exc)
    kinds = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket"))
    return next((what for test, what in kinds if test(mode)), "not a regular file")


def shown(path: str | os.PathLike[str]) -> str:
    """``path`` as one line of valid text, for stderr, ``==>`` lines and progress bars: bytes that are not
    UTF-8 (which Python keeps as surrogates) as ``\\xff``, control characters (a newline) as ``\\n``, so that
    no name breaks a line or the output's encoding."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return text if text.isprintable() else "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


class AudioInput:
    """An audio file (or a pipe named as one), opened to be read within a bound: never more than ``max_seconds`` of
    its audio can take.

    The bound: a WAV's own format (its header, read first) for ``max_seconds`` plus room for its chunks, or the
    widest audio taken (384 kB/s, for the compressed containers): a regular file over it is refused by its size before it is
    read (its audio is then decoded up to the length it had: its decoding stops at ``max_seconds`` if it grows);
    a stream (a pipe, ``/dev/zero``), as soon as it passes it. What has no audio signature is not read past its
    first 64 KiB (and is refused saying so). A named pipe is opened without waiting for a writer: one nobody
    writes to reads as empty, not as a hang.
    """

    def __init__(self, path: Path, max_seconds: float) -> None:
        from .audio import HEADER_ROOM, NOT_AUDIO, WAV, body_limit, sniff, wav_body_limit

        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: a FIFO's open waits for no writer
        self.file = open(descriptor, "rb")
        try:
            os.set_blocking(descriptor, True)
            info = os.fstat(descriptor)
            #: The file's length; None for a stream.
            self.size = info.st_size if stat.S_ISREG(info.st_mode) else None
            self.max_seconds, self.taken, self.limit = max_seconds, 0, HEADER_ROOM
            #: Its first bytes (64 KiB, or all of a shorter one).
            self.head = self.read(HEADER_ROOM)
            if not self.head:
                raise FileError("the file is empty" + (" (a named pipe nobody writes to)" if stat.S_ISFIFO(info.st_mode) else ""))
            self.format = sniff(self.head)
            if self.format is None:
                raise FileError(f"the file {NOT_AUDIO}")
            self.seekable = self.size is not None and self.format is not WAV  # all but WAV from a file: their decoder seeks
            self.limit, self.what = wav_body_limit(self.head, max_seconds) or body_limit("", max_seconds)
            if self.size is not None and self.size > self.limit:
                raise _too_long(f"is {self.size} bytes", self.limit, self.what, max_seconds)
        except BaseException:
            self.file.close()
            raise

    def __enter__(self) -> AudioInput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()

    def read(self, size: int) -> bytes:
        """Up to ``size`` more bytes, fewer only at the end; past the bound, the file is refused ("goes on")."""
        piece = self.file.read(min(size, self.limit + 1 - self.taken))
        self.taken += len(piece)
        if self.taken > self.limit:
            raise _too_long("goes on", self.limit, self.what, self.max_seconds)
        return piece

    def decoding(self) -> Decoding:
        """Its audio, decoded as it is read (:func:`~.audio.decode_stream`): a block at a time, never whole."""
        from .audio import decode_stream

        if self.seekable:
            self.file.seek(0)
        return decode_stream(self.head, self.read, size=self.size, file=self.file if self.seekable else None,
                             max_seconds=self.max_seconds)

    def drain(self) -> None:
        """Read what is left of a stream, within the bound: one that goes on past it is refused so (a file is whole)."""
        if self.size is None:
            while self.read(1 << 20):
                pass


def _too_long(size: str, limit: int, what: str, max_seconds: float) -> FileError:
    return FileError(f"the file {size}: more than {limit} bytes, {max_seconds:g} s (--max-seconds) of {what}")


def render(phrases: Sequence[Any], audio_seconds: float, fmt: str, profanity: Any) -> str:
    """What the REST route answers for these phrases, in ``fmt``: the same functions build both."""
    from .results import OutputFormat, merge, phrase_json
    from .subtitles import SubtitleFormat
    from .subtitles import render as subtitles

    if fmt in SUBTITLES:
        return subtitles(phrases, SubtitleFormat(fmt), profanity)
    detailed = fmt == "json"
    body = phrase_json(merge(phrases), OutputFormat.DETAILED if detailed else OutputFormat.SIMPLE, profanity,
                       empty_duration=audio_seconds, word_timings=detailed)
    return json.dumps(body, ensure_ascii=False) if detailed else body.get("DisplayText", "")


class InProcess:
    """Transcribes with the server's engine in this process: a model from ``models`` (a folder) or an installed
    package, or those of a registry made already (``models``: a :class:`~.models.ModelRegistry`, its models shared)."""

    def __init__(self, models: Path | ModelRegistry, language: str | None, jobs: int, max_seconds: float) -> None:
        from .models import ModelRegistry, UnknownLocale

        self.registry = models if isinstance(models, ModelRegistry) else ModelRegistry(models, (language,) if language else ())
        self.registry.check()
        if language is None and len(self.registry.wanted) > 1:
            raise UnknownLocale(f"give --language: models are installed for {', '.join(self.registry.wanted)}")
        self.locale = self.registry.wanted[0]
        self.jobs = jobs
        self.max_seconds = max_seconds

    @functools.cached_property
    def engine(self) -> Engine:
        """The decoders: made at :meth:`start` while the model loads (the engine's imports beside the load)."""
        from .engine import Engine

        return Engine(self.registry, self.jobs)

    async def start(self) -> None:
        """Load the model: its load starts first, on its thread, and the engine's imports go on beside it (the load is
        in Vosk, without the GIL): the command's start is the load, not the imports and then the load."""
        import vosk

        from . import cffi_types, heap

        vosk.SetLogLevel(-1)
        cffi_types.realize()  # before the threads that load and decode: cffi's lazy types race between threads
        heap.disable_fastbins()  # as the server does: Vosk decodes 7-8 % cheaper without them
        loading = asyncio.ensure_future(self.registry.aload(self.locale))
        await asyncio.sleep(0)  # its thread starts
        try:
            self.engine  # noqa: B018 - made now, while the model loads
        finally:
            await loading

    def plan(self, longest: float | None) -> None:
        """No file of the batch is longer than ``longest`` seconds (None: not known): the recognizers are kept as
        long as their clocks allow for such files (:func:`~.recognition.retire_clock`). A retired recognizer is
        not replaced in the background here (no start-up warm-up audio; its jobs keep every CPU busy): the next
        file would build a new one, and compose its graph again, while the other jobs wait for nothing."""
        from .recognition import retire_clock

        self.engine.pool.retire_clock = retire_clock(longest)

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.close()

    async def transcribe(self, path: Path, formats: Sequence[str], profanity: Any,
                         progress: Callable[[float | None, str], Progress]) -> dict[str, str]:
        """The file's transcript in each of ``formats``, from one decoding of it, read, decoded and fed to the engine a
        piece at a time (:func:`_decoded`): a file holds some seconds of its audio in memory, whatever its length."""
        from .audio import AudioError, Decoding
        from .errors import TOO_LARGE
        from .transcript import Phrase

        steps = _decoded(path, self.max_seconds)
        phrases: list[Phrase] = []
        done = 0.0
        try:
            decoding = cast(Decoding, await asyncio.to_thread(next, steps))
            advance = progress(decoding.seconds, "s")
            session_cm: AbstractAsyncContextManager[Any] = self.engine.session(
                self.locale, decoding.sample_rate, 1, route="transcribe", partials=False)
            async with session_cm as session:
                ahead: deque[Awaitable[Any]] = deque()

                async def take() -> None:  # the oldest job's phrases, and the bar moved to where it left the audio
                    nonlocal done
                    snapshot = await ahead.popleft()
                    phrases.extend(e for e in snapshot.events if isinstance(e, Phrase))
                    advance(snapshot.audio_seconds - done)
                    done = snapshot.audio_seconds

                # each job read and decoded on a thread while the decoder works through those ahead of it
                while job := cast("list[bytes] | None", await asyncio.to_thread(next, steps, None)):
                    ahead.append(session.feed_many_ahead(job))
                    if len(ahead) >= _AHEAD:
                        await take()
                while ahead:
                    await take()
                last = await session.finish()
                phrases.extend(e for e in last if isinstance(e, Phrase))
        except OSError as exc:
            raise FileError(exc.strerror or str(exc)) from None
        except AudioError as exc:  # its 413 speaks of the REST route's setting: here the limit is --max-seconds
            raise FileError(f"the audio is longer than {self.max_seconds:g} s (--max-seconds)" if exc.kind is TOO_LARGE
                            else str(exc)) from None
        finally:
            if inspect.getgeneratorstate(steps) != inspect.GEN_RUNNING:  # else a thread still reads (this was cancelled):
                steps.close()  # the file is closed as that read ends and the generator goes
        return {fmt: render(phrases, done, fmt, profanity) for fmt in formats}


def _decoded(path: Path, max_seconds: float) -> Generator[Decoding | list[bytes], None, None]:
    """``path``'s audio decoded as it is read (:meth:`AudioInput.decoding`), a step at a time, each run on a thread: first
    its :class:`~.audio.Decoding`, then decoder jobs of :data:`_PER_JOB` pieces, the REST route's (the same words and
    times). The file is closed at the end, or when the generator is closed. A stream refused as too long is read on to
    its bound first (:meth:`AudioInput.drain`), so that one that goes on past it is said to, as when it was read whole."""
    from .audio import AudioError, pieces
    from .errors import TOO_LARGE
    from .session import FILE_CHUNK_SECONDS

    with AudioInput(path, max_seconds) as source:
        decoding = source.decoding()
        yield decoding
        each = pieces(decoding.blocks, decoding.sample_rate, FILE_CHUNK_SECONDS)
        try:
            while job := list(itertools.islice(each, _PER_JOB)):
                yield job
        except AudioError as exc:
            if exc.kind is TOO_LARGE:
                source.drain()
            raise


class Remote:
    """Transcribes through a recognizer's (or a gateway's) REST route: a request a file, each on a connection of its own
    (:meth:`_post`), its answer read while its body is sent."""

    def __init__(self, server: str, language: str | None, key: str | None, max_seconds: float) -> None:
        import ssl

        self.max_seconds = max_seconds
        #: The largest answer taken (:data:`_ANSWER_BYTES_PER_SECOND`).
        self.answer_limit = _ANSWER_BYTES + int(max_seconds * _ANSWER_BYTES_PER_SECOND)
        where = server_url(server)
        self.host, self.port = cast(str, where.hostname), where.port or (443 if where.scheme == "https" else 80)
        self.authority = where.netloc.rpartition("@")[2]  # the Host header: no user or password
        self.path = where.path.rstrip("/") + c.RECOGNITION_PATH_TEMPLATE.format(mode="conversation")
        self.tls = ssl.create_default_context() if where.scheme == "https" else None
        #: The proxy the environment names for the server (:func:`_proxy_for`), or None: straight to it.
        self.proxy = _proxy_for(where)
        #: The URL as messages give it: without a user or password, and saying the proxy it goes through.
        self.url = f"{where.scheme}://{self.authority}{self.path}" + (f" (through the proxy {self.proxy.url})" if self.proxy else "")
        self.language = language
        #: The request's own headers: the key, and basic auth from the URL's ``user:password@`` (a gateway's, an ingress's).
        self.headers = [(c.KEY_HEADER, key)] if key else []
        if where.username is not None:
            self.headers.append(("Authorization", _basic(where)))

    async def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    async def transcribe(self, path: Path, formats: Sequence[str], profanity: Any,
                         progress: Callable[[float | None, str], Progress]) -> dict[str, str]:
        """The file's transcript in each of ``formats``, from one request: ``txt`` and ``json`` are the route's
        answer, subtitles rendered here from the phrases it gives with ``phrases=true`` (as the route renders its own)."""
        from urllib.parse import urlencode

        from .results import phrase_of

        subtitles = [fmt for fmt in formats if fmt in SUBTITLES]
        detailed = "json" in formats or bool(subtitles)
        params = {"format": "detailed" if detailed else "simple", "profanity": profanity.value}
        if detailed:
            params["wordLevelTimestamps"] = "true"
        if subtitles:
            params["phrases"] = "true"
        if self.language:
            params["language"] = self.language
        try:
            upload = await asyncio.to_thread(_Upload, path, self.max_seconds)
        except OSError as exc:
            raise FileError(exc.strerror or str(exc)) from None
        advance = progress(upload.size, "B")
        with upload:  # closed once sent
            for attempt in range(_BUSY_RETRIES + 1):
                response, sent = await self._post(f"{self.path}?{urlencode(params)}", upload, advance)
                if response.status_code == 503 and attempt < _BUSY_RETRIES:
                    advance(-sent)  # sent again from its start
                    await asyncio.sleep(_retry_after(response.headers.get("retry-after", "")))
                    continue
                break
        if response.status_code == 407 and self.proxy is not None:  # the proxy's own answer to the request it was to send on
            raise self.proxy.refused(self.url, 407, response.reason)
        if response.status_code != 200:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                raise _not_a_recognizer(self.url, response, "error") from None
            if response.status_code == 413:
                message += " (the server's limit; without --server the file is transcribed here, up to --max-seconds)"
            raise FileError(f"HTTP {response.status_code}: {message}")
        try:
            answer = response.json()
            each = answer.pop("Phrases", None)
            if not isinstance(answer.get("RecognitionStatus"), str):
                raise KeyError("RecognitionStatus")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise _not_a_recognizer(self.url, response, "JSON") from None
        if subtitles and not isinstance(each, list):
            raise FileError(f"{self.url}: the answer has no Phrases to make subtitles of (a recognizer older than this "
                            "transcriber): update it")
        texts = {"txt": str(answer.get("DisplayText", "")), "json": json.dumps(answer, ensure_ascii=False)}
        try:
            phrases = [phrase_of(p) for p in each or () if p.get("RecognitionStatus") == "Success"]
        except (KeyError, TypeError, IndexError, AttributeError):
            raise _not_a_recognizer(self.url, response, "JSON") from None
        return {fmt: texts[fmt] if fmt in texts else render(phrases, 0.0, fmt, profanity) for fmt in formats}

    async def _post(self, target: str, upload: _Upload, advance: Progress) -> tuple[_Answer, int]:
        """``upload`` POSTed to ``target`` on a connection of its own (HTTP/1.1, h11), closed after; the answer, and how
        many bytes of the body were sent. The answer is read while the body is sent: one that comes before the body's
        end (a busy server's 503, a 413, a refused key, a 400) stops the sending at once and is the answer. A client that
        sends all of its body first (httpx, before) sent the rest of a large file for nothing (the recognizer drops it),
        and on a slow link could lose the answer to the reset that ends the server's lingering close."""
        import h11

        reader, writer = await self._connect()
        http = h11.Connection(h11.CLIENT)
        sent = 0
        head = [("Host", self.authority), ("Content-Type", "application/octet-stream"), ("Content-Length", str(upload.size)),
                ("Accept", "application/json"), ("User-Agent", _AGENT), *self.headers]
        if self.proxy is not None and self.tls is None:  # to the proxy, which sends it on: it names the server (absolute-form)
            target = f"http://{self.authority}{target}"
            head += self.proxy.headers

        async def send() -> None:
            nonlocal sent
            writer.write(http.send(h11.Request(method="POST", target=target, headers=head)))
            while sent < upload.size:
                reading = asyncio.ensure_future(asyncio.to_thread(upload.read, sent))
                try:
                    piece = await asyncio.shield(reading)
                except asyncio.CancelledError:  # stopped by an answer: the file is not left being read on a thread
                    await asyncio.gather(reading, return_exceptions=True)
                    raise
                except OSError as exc:  # the file's, not the connection's (which leaves the answer to be read)
                    raise FileError(exc.strerror or str(exc)) from None
                writer.write(http.send(h11.Data(data=piece)))
                sent += len(piece)
                advance(len(piece))
                await self._drained(writer)
            writer.write(http.send(h11.EndOfMessage()))
            await self._drained(writer)

        sending = asyncio.ensure_future(send())
        try:
            return await self._answer(reader, http, sending), sent
        except OSError as exc:
            raise FileError(f"{self.url}: {_why(exc)}") from None
        finally:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
            writer.transport.abort()  # what is unsent of an answered body is dropped, not flushed

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection for a request: to the server, or to :attr:`proxy` when there is one. An http:// server's request
        then goes to the proxy, naming the server (:meth:`_post`); an https:// server's goes through a tunnel the proxy
        opens to it (CONNECT, :meth:`_tunnel`), TLS made in it with the server: its certificate is checked for the
        server's name, never the proxy's, and the proxy sees only encrypted bytes. All within :data:`_CONNECT_SECONDS`."""
        proxy = self.proxy
        step = "cannot connect to the proxy" if proxy else "cannot connect"
        try:
            async with asyncio.timeout(_CONNECT_SECONDS):
                if proxy is None:
                    return await asyncio.open_connection(self.host, self.port, ssl=self.tls)
                reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
                try:
                    if self.tls is not None:
                        step = "the proxy opened no tunnel"
                        await self._tunnel(reader, writer, proxy)
                        step = "cannot connect"
                        await writer.start_tls(self.tls, server_hostname=self.host)
                except BaseException:
                    writer.transport.abort()
                    raise
                return reader, writer
        except TimeoutError:
            raise FileError(f"{self.url}: {step}: no answer in {_CONNECT_SECONDS:g} s") from None
        except OSError as exc:
            raise FileError(f"{self.url}: {step}: {_why(exc)}") from None

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, proxy: _Proxy) -> None:
        """``proxy``, on ``reader`` and ``writer``, asked for a tunnel to the server (CONNECT, its credentials with it, not
        inside the tunnel); a refusal (407, 403, 502) fails the file on one line (:meth:`_Proxy.refused`)."""
        import h11

        http = h11.Connection(h11.CLIENT)
        host = f"[{self.host}]" if ":" in self.host else self.host
        headers = [("Host", f"{host}:{self.port}"), ("User-Agent", _AGENT), *proxy.headers]
        writer.write(http.send(h11.Request(method="CONNECT", target=f"{host}:{self.port}", headers=headers)))
        writer.write(http.send(h11.EndOfMessage()))
        try:
            while not isinstance(event := http.next_event(), h11.Response):  # a 1xx is passed over
                if event is h11.NEED_DATA:
                    data = await reader.read(1 << 16)
                    if not data:
                        raise FileError(f"{self.url}: the proxy closed the connection without an answer")
                    http.receive_data(data)
        except h11.RemoteProtocolError as exc:
            raise FileError(f"{self.url}: the proxy's answer is not HTTP ({exc})") from None
        if not 200 <= event.status_code < 300:
            raise proxy.refused(self.url, event.status_code, event.reason.decode("latin-1"))
        # A 2xx is the tunnel: what follows on the connection is the server's (which says nothing before TLS's hello).

    async def _drained(self, writer: asyncio.StreamWriter) -> None:
        """What was written handed to the system; a server that takes none of it for :data:`_WAIT_SECONDS` fails the file."""
        try:
            async with asyncio.timeout(_WAIT_SECONDS):  # not wait_for: in 3.11 it can lose a cancel (an answer's stop)
                await writer.drain()
        except TimeoutError:
            raise FileError(f"{self.url}: the server took nothing more of the file for {_WAIT_SECONDS:g} s") from None

    async def _answer(self, reader: asyncio.StreamReader, http: Any, sending: asyncio.Future[None]) -> _Answer:
        """The server's answer on ``http`` (an h11 connection), read while ``sending`` sends the body: its head stops
        the sending if it is still going. One larger than :attr:`answer_limit` (by its Content-Length, or as it comes)
        fails the file."""
        import h11

        head: Any = None
        body = bytearray()
        while True:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError as exc:
                raise FileError(f"{self.url}: {'the answer broke off' if head else 'not an HTTP answer'} ({exc}): check --server") from None
            if event is h11.NEED_DATA:
                data = await self._read(reader, sending)
                if not data and head is None:
                    raise FileError(f"{self.url}: the server closed the connection without an answer")
                http.receive_data(data)
            elif isinstance(event, h11.Response):
                head = event
                sending.cancel()  # an answer before the body's end: the rest is not sent
                if int(dict(head.headers).get(b"content-length", 0)) > self.answer_limit:
                    raise self._too_large(head.status_code)
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.answer_limit:
                    raise self._too_large(head.status_code)
            elif isinstance(event, h11.EndOfMessage):
                headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in head.headers}
                return _Answer(head.status_code, headers, bytes(body), head.reason.decode("latin-1"))

    def _too_large(self, status: int) -> FileError:
        return FileError(f"{self.url}: answered {status} with more than {self.answer_limit} bytes, more than a recognizer "
                         f"says of {self.max_seconds:g} s (--max-seconds) of audio: check --server")

    async def _read(self, reader: asyncio.StreamReader, sending: asyncio.Future[None]) -> bytes:
        """The next bytes of the answer (b"" at its end). No read is timed while the body is being sent (a server
        answers once it has it), each after for :data:`_WAIT_SECONDS`. What fails the sending fails the file, but the
        connection's end: a server that answered and closed is still read."""
        reading = asyncio.ensure_future(reader.read(1 << 16))
        either: set[asyncio.Future[Any]] = {reading, sending}
        try:
            while not sending.done():
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                if reading.done():
                    return reading.result()
            if not sending.cancelled() and (failed := sending.exception()) is not None and not isinstance(failed, OSError):
                raise failed
            try:
                async with asyncio.timeout(_WAIT_SECONDS):
                    return await reading
            except TimeoutError:
                raise FileError(f"{self.url}: no answer for {_WAIT_SECONDS:g} s") from None
        finally:
            reading.cancel()


@dataclasses.dataclass(frozen=True)
class _Answer:
    """A server's answer: its status, headers (names in lower case), body and reason phrase."""

    status_code: int
    headers: dict[str, str]
    content: bytes
    reason: str = ""

    def json(self) -> Any:
        return json.loads(self.content)


def server_url(server: str) -> SplitResult:
    """``--server``'s value, parsed: an ``http://`` or ``https://`` URL with a host (and a port that is a number)."""
    from urllib.parse import urlsplit

    try:
        where: SplitResult | None = urlsplit(server)
        _ = where.port if where else None  # a port that is not a number, or out of range, raises here
    except ValueError:
        where = None
    if where is None or where.scheme not in ("http", "https") or not where.hostname:
        raise argparse.ArgumentTypeError(f"{server!r}: give the server as http://HOST[:PORT] or https://HOST[:PORT]")
    return where


class SetupError(Exception):
    """Nothing can be sent (status 2): the message says why."""


#: The User-Agent of ``--server``'s requests (and of a tunnel's CONNECT).
_AGENT = "speech-recognizer-transcribe"


@dataclasses.dataclass(frozen=True)
class _Proxy:
    """An HTTP proxy to the server (:func:`_proxy_for`)."""

    host: str
    port: int
    #: Its URL as messages give it: without its user and password.
    url: str
    #: What is sent to it (and only to it): ``Proxy-Authorization`` when its URL has a user.
    headers: list[tuple[str, str]]

    def refused(self, url: str, status: int, reason: str) -> FileError:
        """What a file gets when the proxy answers ``status`` instead of taking the request on to the server."""
        from http import HTTPStatus

        with contextlib.suppress(ValueError):
            reason = reason or HTTPStatus(status).phrase
        hint = ""
        if status == 407:
            hint = (" (the user and password in its URL were refused)" if self.headers else
                    " (give its user and password in its URL: http://USER:PASSWORD@HOST:PORT)")
        return FileError(f"{url}: the proxy refused: {status} {reason}{hint}".rstrip())


def _proxy_for(where: SplitResult) -> _Proxy | None:
    """The proxy the environment names for the server at ``where``, or None: ``http_proxy`` for an http:// server,
    ``https_proxy`` for an https:// one, else ``all_proxy`` (lower-case names before upper-case), none when ``no_proxy``
    names the server (``*``, its host, ``HOST:PORT``, a domain it is in: ``example.com`` or ``.example.com``; no CIDR
    ranges). Loopback is no exception: it goes through the proxy unless ``no_proxy`` names it, as with httpx before (and
    curl, requests, pip), so a local debugging proxy sees it too. The rules are the standard library's
    (``urllib.request.getproxies_environment``, which httpx's ``getproxies()`` is on Linux, and
    ``proxy_bypass_environment``), not written again here: the variables then mean what they mean for the other Python
    tools on the machine, and a rule that differs from theirs would be a surprise of its own. Added: a proxy given
    without ``http://`` is taken as one (as httpx and curl take it), and the host is also matched without its port, so
    that ``no_proxy=::1`` names ``[::1]:5000``. A proxy that is not ``http://`` (socks, TLS to the proxy) is a
    :class:`SetupError`."""
    import urllib.request
    from urllib.parse import urlsplit

    proxies = urllib.request.getproxies_environment()
    which = where.scheme if proxies.get(where.scheme) else "all"
    given = proxies.get(which)
    host = cast(str, where.hostname)
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]  # on every platform, not in typeshed
    if not given or any(bypass(name, proxies) for name in (where.netloc.rpartition("@")[2], host)):
        return None
    proxy = urlsplit(given if "://" in given else f"http://{given}")
    shown = f"{proxy.scheme}://{proxy.netloc.rpartition('@')[2]}"  # never its password: stderr goes to CI logs
    try:
        port = proxy.port or 80
    except ValueError:
        port = 0
    if proxy.scheme != "http" or not proxy.hostname or not port:
        raise SetupError(f"{which}_proxy (or {which.upper()}_PROXY) is {shown!r}: give an HTTP proxy as "
                         f"http://[USER:PASSWORD@]HOST[:PORT] (socks and https:// proxies are not supported), or name "
                         f"{host} in no_proxy")
    headers = [("Proxy-Authorization", _basic(proxy))] if proxy.username is not None else []
    return _Proxy(proxy.hostname, port, shown, headers)


def _basic(where: SplitResult) -> str:
    """HTTP basic auth (RFC 7617) of the ``user:password@`` in ``where``, percent-decoded, as UTF-8."""
    import base64
    from urllib.parse import unquote

    pair = f"{unquote(where.username or '')}:{unquote(where.password or '')}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


def _why(exc: OSError) -> str:
    """What went wrong with a connection, said once ("Connection refused", not asyncio's "Connect call failed ..."); TLS's
    own words ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: ...")."""
    import ssl

    if isinstance(exc, ssl.SSLError):
        return str(exc)
    if isinstance(exc.errno, int) and exc.errno > 0:
        return os.strerror(exc.errno)
    return exc.strerror or str(exc) or type(exc).__name__  # a name not found (gaierror), several addresses refused


class _Upload:
    """A file's bytes as a request's body (:class:`Remote`), read a piece at a time as it is sent, at any offset: a
    503's retry sends it again from its start. What is held is a piece, whatever the file's length. The file is
    opened within its bound (:class:`AudioInput`: a file larger than ``--max-seconds`` allows is refused by its size,
    before a byte is sent). A stream (a pipe, ``/dev/stdin``) cannot be read twice, so it is copied as it is read, within
    the same bound, into a temporary file (:func:`_spooled`), and sent from that."""

    #: Bytes read and sent at a time (and the progress bar's step).
    PIECE = 1 << 18

    def __init__(self, path: Path, max_seconds: float) -> None:
        self.input = AudioInput(path, max_seconds)
        try:
            #: What is sent: the file, or a stream's copy.
            self.file = self.input.file if self.input.size is not None else _spooled(self.input)
        except BaseException:
            self.input.file.close()
            raise
        #: The body's length, its ``Content-Length``: the file's as it was opened (what it gains after is not sent).
        self.size = self.input.size if self.input.size is not None else self.file.tell()

    def __enter__(self) -> _Upload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()
        self.input.file.close()

    def read(self, at: int) -> bytes:
        """The piece of the body at ``at`` (not past :attr:`size`); a file cut shorter than it was is refused."""
        self.file.seek(at)
        piece = self.file.read(min(self.PIECE, self.size - at))
        if not piece:
            raise FileError(f"the file was cut short while it was sent: {at} of its {self.size} bytes")
        return piece


def _spooled(stream: AudioInput) -> BinaryIO:
    """All of ``stream`` (within its bound: one that goes on past it is refused so), copied a MiB at a time into a
    temporary file in ``$TMPDIR`` (``/tmp``) that has no name: it is gone once closed, however the run ends. It was read
    whole into memory before: up to its bound, 346 MB of a 3 h WAV's, 4.1 GB of Ogg, FLAC or MP3."""
    import tempfile

    try:
        spool = tempfile.TemporaryFile()
    except OSError as exc:
        raise FileError(f"cannot make a temporary file in {tempfile.gettempdir()} to keep the stream in for a retry: "
                        f"{exc.strerror or exc}") from None
    try:
        piece = stream.head
        while piece:
            try:
                spool.write(piece)
            except OSError as exc:
                raise FileError(f"cannot keep the stream in a temporary file in {tempfile.gettempdir()} for a retry: "
                                f"{exc.strerror or exc}") from None
            piece = stream.read(1 << 20)
        spool.flush()
    except BaseException:
        spool.close()
        raise
    return spool


def _retry_after(value: str) -> float:
    """The seconds a 503's ``Retry-After`` says (1 when it does not say it in seconds, at most a minute)."""
    try:
        seconds = float(value)
    except ValueError:
        return 1.0
    return min(seconds, 60.0) if seconds >= 0 else 1.0  # nan too


def _not_a_recognizer(url: str, response: _Answer, what: str) -> FileError:
    """What is said of an answer that is not a recognizer's ``what`` ("JSON", "error"): its status, type and first bytes."""
    from .errors import one_line

    kind = response.headers.get("content-type") or "no Content-Type"
    first = one_line(response.content[:200].decode("utf-8", "replace"), 60)
    said = f"{first!r}" if first else "an empty body"
    return FileError(f"{url}: answered {response.status_code} {kind} ({said}), not a recognizer's {what}: check --server")


class Bar:
    """One file's progress bar (tqdm) on ``stream``, drawn only when it is a terminal; called with the total to start it."""

    def __init__(self, name: str, slot: int, stream: TextIO) -> None:
        self.name, self.slot, self.stream = name, slot, stream
        self._bar: Any = None

    def __call__(self, total: float | None, unit: str) -> Progress:
        """Start the bar at 0 of ``total`` (None: not known, a stream's: the seconds done are shown without a bar)."""
        from tqdm import tqdm

        seconds = ("{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}]" if total is not None
                   else "{desc}: {n:.1f} s [{elapsed}]")
        self._bar = tqdm(total=total, unit=unit, unit_scale=unit == "B", desc=self.name, file=self.stream,
                         position=self.slot, leave=False, disable=None, dynamic_ncols=True,
                         bar_format=seconds if unit == "s" else None)
        return self._bar.update

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


#: Containers whose header gives the exact length of what their decoding yields (a compressed stream's, MP3's above
#: all, may be an estimate: :func:`plan` counts such a file's length as not known).
_EXACT_LENGTHS = frozenset({"WAV", "WAVEX", "RF64", "W64", "FLAC", "AIFF", "CAF"})


def plan(files: Sequence[Path]) -> tuple[list[Path], float | None]:
    """``files`` in the order to start them, the longest first (LPT scheduling), and the longest of them in
    seconds: None when the header of any does not give its length exactly (what the engine's recognizers may be
    kept for: :meth:`InProcess.plan`).

    A batch then ends on its shortest files, so no job sits idle while another works through
    a long one it took last. Durations come from the headers (soundfile); a file whose header
    cannot be read, or must not be opened (:func:`~.audio.check_header`: an Ogg/Vorbis whose codebooks
    libvorbis would expand to gigabytes as it reads the header), counts as 0 s and starts last (its
    decoding says why it fails), and so does
    what is not a regular file (a pipe's header is read by reading it, and nobody writes it twice).
    Ties keep the order given.
    """
    import soundfile

    from .audio import check_header

    seconds: dict[Path, float] = {}
    exact = True
    for path in files:
        try:
            info = None
            if path.is_file():
                with path.open("rb") as file:
                    check_header(file)  # what libsndfile must not open, its header neither
                info = soundfile.info(str(path))
        except Exception:  # noqa: BLE001 - any unreadable or refused header only moves the file to the end
            info = None
        seconds[path] = float(info.duration) if info is not None else 0.0
        exact = exact and info is not None and info.format in _EXACT_LENGTHS and seconds[path] > 0
    order = sorted(files, key=seconds.__getitem__, reverse=True)
    return order, max(seconds.values()) if exact and files else None


async def run(files: Sequence[Path], order: Sequence[Path], backend: InProcess | Remote, formats: Sequence[str],
              profanity: Any, jobs: int, out_dir: Path | None, stdout: TextIO, stderr: TextIO) -> int:
    """Transcribe ``files`` ``jobs`` at a time, started in ``order``, each once into all of ``formats``;
    returns how many failed.

    Each file's transcripts go to ``out_dir`` as soon as it is done (one file a format), or to stdout
    (one format) in the order of ``files``; a file that fails is one line on stderr as soon as it fails.
    """
    slots = asyncio.Queue[int]()
    for slot in range(jobs):
        slots.put_nowait(slot)

    async def one(path: Path) -> tuple[Path, dict[str, str] | None]:
        slot = await slots.get()
        bar = Bar(shown(path.name), slot, stderr)
        try:
            return path, await backend.transcribe(path, formats, profanity, bar)
        except FileError as exc:
            print(f"speech-recognizer transcribe: {shown(path)}: {exc}", file=stderr, flush=True)
        except Exception as exc:  # noqa: BLE001 - one file's failure does not stop the batch
            print(f"speech-recognizer transcribe: {shown(path)}: {type(exc).__name__}: {exc}", file=stderr, flush=True)
        finally:
            bar.close()
            slots.put_nowait(slot)
        return path, None

    names = {fmt: output_names(files, fmt) for fmt in formats}
    tasks = {path: asyncio.ensure_future(one(path)) for path in order}  # they take the slots in this order
    failed = 0
    try:
        finished = asyncio.as_completed(tasks.values()) if out_dir is not None else (tasks[path] for path in files)
        for task in finished:
            path, texts = await task
            if texts is not None and out_dir is not None:
                for fmt, text in texts.items():
                    try:
                        _write_file(out_dir / names[fmt][path], _as_output(path, text, fmt))
                    except OSError as exc:  # a read-only or full folder: this file fails, the others go on
                        print(f"speech-recognizer transcribe: {shown(path)}: cannot write {shown(out_dir / names[fmt][path])}: "
                              f"{exc.strerror or exc}", file=stderr, flush=True)
                        texts = None
                        break
            elif texts is not None:
                (fmt, text), = texts.items()  # to stdout: one format (main)
                if len(files) > 1 and fmt != "json":
                    stdout.write(f"==> {shown(path)} <==\n")
                stdout.write(_as_output(path, text, fmt))
                stdout.flush()
            failed += texts is None
    finally:
        for pending in tasks.values():
            pending.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
    return failed


def output_names(files: Sequence[Path], fmt: str) -> dict[Path, Path]:
    """Where each file's transcript goes under ``--output-dir``: its path below the files' common folder,
    with the format's suffix (``a.wav`` and ``more/b.wav`` give ``a.srt`` and ``more/b.srt``), so that two
    files of the same name in different folders never overwrite each other; files whose names differ only
    in their suffix keep it (``a.wav`` and ``a.flac`` give ``a.wav.srt`` and ``a.flac.srt``: both had been
    ``a.srt``, the one done last written over the other's)."""
    if not files:
        return {}
    full = [Path(_absolute(p)) for p in files]  # as named: a link's transcript goes where the link is
    common = Path(os.path.commonpath([p.parent for p in full]))
    below = {path: where.relative_to(common) for path, where in zip(files, full, strict=True)}
    kept: set[Path] = set()  # whose transcript's name keeps its audio's suffix; their names differ as theirs do
    while True:
        names = {path: name.with_name(f"{name.name}.{fmt}") if path in kept else name.with_suffix(f".{fmt}") for path, name in below.items()}
        taken = Counter(names.values())
        clashing = {path for path, name in names.items() if taken[name] > 1 and path not in kept}
        if not clashing:
            return names
        kept |= clashing


def _as_output(path: Path, text: str, fmt: str) -> str:
    """A transcript as written, ending in a newline: JSON one object a line with its ``File`` (a name's bytes
    that are not UTF-8 as JSON escapes of the surrogates Python reads them as, so the line stays UTF-8)."""
    if fmt == "json":
        text = json.dumps({"File": str(path), **json.loads(text)}, ensure_ascii=False).encode("utf-8", "backslashreplace").decode()
    return text if text.endswith("\n") else text + "\n"


def _write_file(target: Path, text: str) -> None:
    """``text`` into ``target``, replacing what was there only once it is whole: until then it is a hidden
    ``.NAME.*.part`` beside it, removed if the write fails or is interrupted (Ctrl-C), so that no file that
    looks done holds half a transcript. NAME is cut as far as the part's name needs to stay within a folder's
    longest name (:data:`NAME_MAX`): a transcript named 244 to 255 bytes (81 Korean syllables and ``.srt``) fitted,
    its part did not ("File name too long")."""
    target.parent.mkdir(parents=True, exist_ok=True)
    name, tail = target.name, f".{os.getpid()}.part"  # one write at a time in a process: the pid tells processes apart
    while len(os.fsencode(f".{name}{tail}")) > NAME_MAX:
        name = name[:-1]
    part = target.with_name(f".{name}{tail}")
    try:
        part.write_text(text, encoding="utf-8")
        os.replace(part, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(part)
        raise


def _formats(value: str) -> list[str]:
    """``--format``'s value: one of :data:`FORMATS` or several joined by commas."""
    asked = [fmt.strip().lower() for fmt in value.split(",")]
    if not all(fmt in FORMATS for fmt in asked):
        raise argparse.ArgumentTypeError(f"{value!r}: use {', '.join(FORMATS)}, or several joined by commas (srt,vtt,json)")
    return asked


def _server(value: str) -> str:
    """``--server``'s value, checked (:func:`server_url`)."""
    server_url(value)
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="speech-recognizer transcribe",
        description=f"Transcribe audio files ({c.AUDIO_LISTED}) to text, JSON or subtitles: in this "
        "process by default (no server needed), or through a running recognizer's REST route (--server).",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files, folders (searched for audio files), or globs; - for the standard input")
    p.add_argument("--format", "-f", type=_formats, action="extend", metavar="FORMAT[,FORMAT...]",
                   help="txt (default): the text; json: the REST route's detailed answer with word times; srt, vtt: subtitles. "
                   "Several (srt,vtt,json, or --format given again) need --output-dir: NAME.srt, NAME.vtt, NAME.json there, "
                   "from one decoding of each file")
    p.add_argument("--language", "-l", help="locale of the speech (e.g. ko-KR); default: the only one installed or served")
    p.add_argument("--server", type=_server, help="a recognizer or gateway (http://host:5000): send the files to its REST route "
                   "(at most its MaxAudioSeconds each) instead of transcribing here; through $http_proxy or $https_proxy "
                   "unless $no_proxy names it")
    p.add_argument("--key", default=os.environ.get("SPEECH_RECOGNIZER_KEY"),
                   help="the server's ApiKey (default: $SPEECH_RECOGNIZER_KEY)")
    p.add_argument("--output-dir", "-o", type=Path, help="write each transcript here instead of to stdout: <name>.<format>, "
                   "in the sub-folders the files are in below their common folder")
    p.add_argument("--jobs", "-j", type=int, default=container_cores(),
                   help=f"files at once (default: the cores this container may use, as the recognizer counts them: the "
                   f"CPUs it may run on, within its cgroup's CPU quota and ${c.env_name(c.CONTAINER_CPU_LIMIT)}; here %(default)s)")
    p.add_argument("--profanity", choices=("masked", "removed", "raw"), default="masked", help="as the REST route's profanity option")
    p.add_argument("--models", type=Path, default=Path(os.environ.get(c.env_name(c.MOUNTS_MODELS), c.DEFAULT_MODELS_MOUNT)),
                   help="in-process: folder of models, one sub-folder per locale (default: $Mounts__Models or /models; "
                   "installed vosk-model-* packages are found too)")
    p.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS, help="the longest file (default 3 h); with --server, the server's MaxAudioSeconds too")
    return p


def main(argv: Sequence[str], stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> int:
    """Exit status: 0 every file transcribed, 1 any failed, 2 nothing could start (arguments, no model)."""
    from .models import ModelError
    from .results import Profanity

    try:
        args = parser().parse_args(list(argv))
    except SettingsError as exc:  # a malformed Container__CpuLimitMillicores, which --jobs's default counts
        print(f"speech-recognizer transcribe: {exc}", file=stderr)
        return 2
    if args.jobs < 1:
        print("speech-recognizer transcribe: --jobs must be 1 or more", file=stderr)
        return 2
    if not 0 < args.max_seconds < float("inf"):  # nan too
        print(f"speech-recognizer transcribe: --max-seconds must be a number of seconds above 0 (not {args.max_seconds:g})", file=stderr)
        return 2
    formats = list(dict.fromkeys(args.format or ["txt"]))
    if len(formats) > 1 and args.output_dir is None:
        print(f"speech-recognizer transcribe: several formats ({','.join(formats)}) need --output-dir, where each file's "
              "transcripts are written one a format (NAME.srt, NAME.vtt, ...)", file=stderr)
        return 2
    files, errors = expand(args.files)
    for error in errors:
        print(f"speech-recognizer transcribe: {error}", file=stderr)
    if args.output_dir is not None:
        try:
            args.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"speech-recognizer transcribe: --output-dir {shown(args.output_dir)}: {exc.strerror or exc}", file=stderr)
            return 2
    profanity = Profanity(args.profanity)

    async def go() -> int:
        backend: InProcess | Remote
        if args.server:
            backend = Remote(args.server, args.language, args.key, args.max_seconds)
        else:
            backend = InProcess(args.models, args.language, args.jobs, args.max_seconds)
        try:
            starting = asyncio.ensure_future(backend.start())  # the model loads while the headers are read
            await asyncio.sleep(0)  # its first step (cffi's types realized) before the headers' thread reads with soundfile
            order, longest = await asyncio.to_thread(plan, files)
            await starting
            if isinstance(backend, InProcess):
                backend.plan(longest)
            return await run(files, order, backend, formats, profanity, args.jobs, args.output_dir, stdout, stderr)
        finally:
            backend.close()

    # Not asyncio.run: on Ctrl-C it would wait for every thread still reading (a pipe whose writer says
    # nothing) or decoding; closing the loop does not (the console entry then ends the process at once).
    loop = asyncio.new_event_loop()
    try:
        failed = loop.run_until_complete(go()) if files else 0
        loop.run_until_complete(loop.shutdown_default_executor())
    except KeyboardInterrupt:  # what was written is whole (_write_file); the rest is not written at all
        print("speech-recognizer transcribe: interrupted", file=stderr, flush=True)
        return 130
    except BrokenPipeError:  # the reader of stdout left (``| head``): the batch ends as ``cat`` does (cli)
        raise
    except (ModelError, OSError, SetupError) as exc:
        print(f"speech-recognizer transcribe: {exc}", file=stderr)
        return 2
    finally:
        loop.close()
    return 1 if failed or errors else 0
