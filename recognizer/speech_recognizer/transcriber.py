"""``speech-recognizer transcribe``: audio files to text, JSON or subtitles.

In-process by default: the server's own engine and session type (so the same words and
times as every route) on a model found as the server finds one, no server needed. With
``--server URL`` the files go to a running recognizer's (or a gateway's) REST route
instead. Either way the output is what the REST route answers for the file: ``txt`` its
``DisplayText``, ``json`` its detailed answer with word times (100-ns ticks), ``srt`` and
``vtt`` its subtitles (:mod:`.subtitles`).

Files are given as paths, folders (every audio file below, by suffix) or globs (``'**/*.wav'``,
for shells that do not expand them). They are transcribed ``--jobs`` at a time, the longest
first (:func:`start_order`); each gets a progress bar on a terminal (none when stderr is not
one), and a file that fails is reported on one line without stopping the others; the exit
status is 1 when any failed.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TextIO

from . import contract as c
from .settings import cpu_count

FORMATS = ("txt", "json", "srt", "vtt")
#: What a folder is searched for.
AUDIO_SUFFIXES = frozenset({".wav", ".wave", ".ogg", ".oga", ".opus", ".flac"})
#: Longest file transcribed in-process by default (3 hours: 346 MB of 16 kHz PCM in memory).
DEFAULT_MAX_SECONDS = 3 * 3600.0
#: Chunks a decoder job takes at once (one second of audio: the progress bar moves by that), and jobs
#: queued ahead on a session's decoder.
_PER_JOB = 10
_AHEAD = 8
#: How often a busy server (503) is asked again for a file before it counts as failed.
_BUSY_RETRIES = 5

Progress = Callable[[float], None]


class FileError(Exception):
    """One file could not be transcribed; the message says why."""


def expand(args: Sequence[str]) -> tuple[list[Path], list[str]]:
    """The files ``args`` name (paths, folders searched for audio, globs), in order, each once; and errors for those that name none."""
    files: list[Path] = []
    errors: list[str] = []

    def add(path: Path) -> None:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES))
        else:
            files.append(path)

    for arg in args:
        path = Path(arg)
        if path.exists():
            add(path)
        elif glob.has_magic(arg):
            matches = sorted(glob.glob(arg, recursive=True))
            if not matches:
                errors.append(f"{arg}: no file matches")
            for match in matches:
                add(Path(match))
        else:
            errors.append(f"{arg}: no such file or folder")
    return list(dict.fromkeys(files)), errors


def render(phrases: Sequence[Any], audio_seconds: float, fmt: str, profanity: Any) -> str:
    """What the REST route answers for these phrases, in ``fmt``: the same functions build both."""
    from .results import OutputFormat, merge, phrase_json
    from .subtitles import SubtitleFormat
    from .subtitles import render as subtitles

    if fmt in ("srt", "vtt"):
        return subtitles(phrases, SubtitleFormat(fmt), profanity)
    detailed = fmt == "json"
    body = phrase_json(merge(phrases), OutputFormat.DETAILED if detailed else OutputFormat.SIMPLE, profanity,
                       empty_duration=audio_seconds, word_timings=detailed)
    return json.dumps(body, ensure_ascii=False) if detailed else body.get("DisplayText", "")


class InProcess:
    """Transcribes with the server's engine in this process: a model from ``models_dir`` or an installed package."""

    def __init__(self, models_dir: Path, language: str | None, jobs: int, max_seconds: float) -> None:
        from .engine import Engine
        from .models import ModelRegistry, UnknownLocale

        self.registry = ModelRegistry(models_dir, (language,) if language else ())
        self.registry.check()
        if language is None and len(self.registry.wanted) > 1:
            raise UnknownLocale(f"give --language: models are installed for {', '.join(self.registry.wanted)}")
        self.locale = self.registry.wanted[0]
        self.engine = Engine(self.registry, jobs)
        self.max_seconds = max_seconds

    async def start(self) -> None:
        import vosk

        from . import cffi_types, heap

        vosk.SetLogLevel(-1)
        cffi_types.realize()  # before the threads that load and decode: cffi's lazy types race between threads
        heap.disable_fastbins()  # as the server does: Vosk decodes 7-8 % cheaper without them
        await self.registry.aload(self.locale)

    def close(self) -> None:
        self.engine.close()

    async def transcribe(self, path: Path, fmt: str, profanity: Any, progress: Callable[[float, str], Progress]) -> str:
        from .audio import AudioError, chunks, decode
        from .session import FILE_CHUNK_SECONDS
        from .transcript import Phrase

        try:
            data = await asyncio.to_thread(path.read_bytes)
            audio = await asyncio.to_thread(decode, data, "", max_seconds=self.max_seconds)
        except (OSError, AudioError) as exc:
            raise FileError(str(exc)) from None
        del data
        advance = progress(audio.seconds, "s")
        events: list[Any] = []
        session_cm: AbstractAsyncContextManager[Any] = self.engine.session(
            self.locale, audio.sample_rate, audio.channels, route="transcribe", partials=False)
        async with session_cm as session:
            ahead: deque[Awaitable[Any]] = deque()
            done = 0.0

            async def take() -> None:  # the oldest job's events, and the bar moved to where it left the audio
                nonlocal done
                snapshot = await ahead.popleft()
                events.extend(snapshot.events)
                advance(snapshot.audio_seconds - done)
                done = snapshot.audio_seconds

            pieces = chunks(audio, FILE_CHUNK_SECONDS)  # the REST route's pieces: the same words and times
            for first in range(0, len(pieces), _PER_JOB):
                ahead.append(session.feed_many_ahead(pieces[first : first + _PER_JOB]))
                if len(ahead) >= _AHEAD:
                    await take()
            while ahead:
                await take()
            events += await session.finish()
        phrases = [e for e in events if isinstance(e, Phrase)]
        return render(phrases, audio.seconds, fmt, profanity)


class Remote:
    """Transcribes through a recognizer's (or a gateway's) REST route."""

    def __init__(self, server: str, language: str | None, key: str | None, jobs: int) -> None:
        import httpx

        self.url = server.rstrip("/") + c.RECOGNITION_PATH_TEMPLATE.format(mode="conversation")
        self.language = language
        headers = {c.KEY_HEADER: key} if key else {}
        self.client = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(600.0, connect=10.0),
                                        limits=httpx.Limits(max_connections=jobs))

    async def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        await self.client.aclose()

    async def transcribe(self, path: Path, fmt: str, profanity: Any, progress: Callable[[float, str], Progress]) -> str:
        import httpx

        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise FileError(str(exc)) from None
        params = {"format": "detailed" if fmt == "json" else "simple" if fmt == "txt" else fmt, "profanity": profanity.value}
        if fmt == "json":
            params["wordLevelTimestamps"] = "true"
        if self.language:
            params["language"] = self.language
        advance = progress(len(data), "B")
        piece = 1 << 16

        async def body() -> Any:
            for i in range(0, len(data), piece):
                yield data[i : i + piece]
                advance(min(piece, len(data) - i))

        for attempt in range(_BUSY_RETRIES + 1):
            try:
                response = await self.client.post(self.url, params=params, content=body(),
                                                  headers={"Content-Type": "application/octet-stream",
                                                           "Content-Length": str(len(data))})
            except httpx.HTTPError as exc:
                raise FileError(f"{self.url}: {exc or type(exc).__name__}") from None
            if response.status_code == 503 and attempt < _BUSY_RETRIES:
                await asyncio.sleep(float(response.headers.get("Retry-After", "1") or 1))
                advance(-len(data))
                continue
            break
        if response.status_code != 200:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text.strip()[:200]
            raise FileError(f"HTTP {response.status_code}: {message}")
        if fmt == "json":
            return json.dumps(response.json(), ensure_ascii=False)
        if fmt == "txt":
            return str(response.json().get("DisplayText", ""))
        return response.text


class Bar:
    """One file's progress bar (tqdm) on ``stream``, drawn only when it is a terminal; called with the total to start it."""

    def __init__(self, name: str, slot: int, stream: TextIO) -> None:
        self.name, self.slot, self.stream = name, slot, stream
        self._bar: Any = None

    def __call__(self, total: float, unit: str) -> Progress:
        from tqdm import tqdm

        seconds = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}]"
        self._bar = tqdm(total=total, unit=unit, unit_scale=unit == "B", desc=self.name, file=self.stream,
                         position=self.slot, leave=False, disable=None, dynamic_ncols=True,
                         bar_format=seconds if unit == "s" else None)
        return self._bar.update

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def start_order(files: Sequence[Path]) -> list[Path]:
    """``files`` in the order to start them: the longest first (LPT scheduling).

    A batch then ends on its shortest files, so no job sits idle while another works through
    a long one it took last. Durations come from the headers (soundfile); a file whose header
    cannot be read counts as 0 s and starts last (its decoding says why it fails). Ties keep
    the order given.
    """
    import soundfile

    def seconds(path: Path) -> float:
        try:
            return float(soundfile.info(str(path)).duration)
        except Exception:  # noqa: BLE001 - any unreadable header only moves the file to the end
            return 0.0

    return sorted(files, key=seconds, reverse=True)


async def run(files: Sequence[Path], order: Sequence[Path], backend: InProcess | Remote, fmt: str, profanity: Any,
              jobs: int, out_dir: Path | None, stdout: TextIO, stderr: TextIO) -> int:
    """Transcribe ``files`` ``jobs`` at a time, started in ``order``; returns how many failed.

    Each transcript goes to ``out_dir`` as soon as it is done, or to stdout in the order of
    ``files``; a file that fails is one line on stderr as soon as it fails.
    """
    slots = asyncio.Queue[int]()
    for slot in range(jobs):
        slots.put_nowait(slot)

    async def one(path: Path) -> tuple[Path, str | None]:
        slot = await slots.get()
        bar = Bar(path.name, slot, stderr)
        try:
            return path, await backend.transcribe(path, fmt, profanity, bar)
        except FileError as exc:
            print(f"speech-recognizer transcribe: {path}: {exc}", file=stderr, flush=True)
        except Exception as exc:  # noqa: BLE001 - one file's failure does not stop the batch
            print(f"speech-recognizer transcribe: {path}: {type(exc).__name__}: {exc}", file=stderr, flush=True)
        finally:
            bar.close()
            slots.put_nowait(slot)
        return path, None

    names = output_names(files, fmt)
    tasks = {path: asyncio.ensure_future(one(path)) for path in order}  # they take the slots in this order
    failed = 0
    try:
        finished = asyncio.as_completed(tasks.values()) if out_dir is not None else (tasks[path] for path in files)
        for task in finished:
            path, text = await task
            if text is None:
                failed += 1
                continue
            _write(path, text, fmt, out_dir / names[path] if out_dir is not None else None, stdout, several=len(files) > 1)
    finally:
        for pending in tasks.values():
            pending.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
    return failed


def output_names(files: Sequence[Path], fmt: str) -> dict[Path, Path]:
    """Where each file's transcript goes under ``--output-dir``: its path below the files' common folder,
    with the format's suffix (``a.wav`` and ``more/b.wav`` give ``a.srt`` and ``more/b.srt``), so that two
    files of the same name in different folders never overwrite each other."""
    if not files:
        return {}
    absolute = [p.resolve() for p in files]
    common = Path(os.path.commonpath([p.parent for p in absolute]))
    return {path: full.relative_to(common).with_suffix(f".{fmt}") for path, full in zip(files, absolute, strict=True)}


def _write(path: Path, text: str, fmt: str, target: Path | None, stdout: TextIO, *, several: bool) -> None:
    """A transcript into ``target``, or on stdout: JSON one object a line with its ``File``;
    other formats under a ``==> file <==`` line when there are several."""
    if fmt == "json":
        text = json.dumps({"File": str(path), **json.loads(text)}, ensure_ascii=False)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        return
    if several and fmt != "json":
        stdout.write(f"==> {path} <==\n")
    stdout.write(text if text.endswith("\n") else text + "\n")
    stdout.flush()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="speech-recognizer transcribe",
        description="Transcribe audio files (WAV, Ogg/Opus, Ogg/Vorbis, FLAC) to text, JSON or subtitles: in this "
        "process by default (no server needed), or through a running recognizer's REST route (--server).",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files, folders (searched for audio files), or globs")
    p.add_argument("--format", "-f", choices=FORMATS, default="txt",
                   help="txt: the text; json: the REST route's detailed answer with word times; srt, vtt: subtitles")
    p.add_argument("--language", "-l", help="locale of the speech (e.g. ko-KR); default: the only one installed or served")
    p.add_argument("--server", help="a recognizer or gateway (http://host:5000): send the files to its REST route "
                   "(at most its MaxAudioSeconds each) instead of transcribing here")
    p.add_argument("--key", default=os.environ.get("SPEECH_RECOGNIZER_KEY"),
                   help="the server's ApiKey (default: $SPEECH_RECOGNIZER_KEY)")
    p.add_argument("--output-dir", "-o", type=Path, help="write each transcript here instead of to stdout: <name>.<format>, "
                   "in the sub-folders the files are in below their common folder")
    p.add_argument("--jobs", "-j", type=int, default=cpu_count(), help="files at once (default: the CPUs this process may use)")
    p.add_argument("--profanity", choices=("masked", "removed", "raw"), default="masked", help="as the REST route's profanity option")
    p.add_argument("--models", type=Path, default=Path(os.environ.get(c.env_name(c.MOUNTS_MODELS), c.DEFAULT_MODELS_MOUNT)),
                   help="in-process: folder of models, one sub-folder per locale (default: $Mounts__Models or /models; "
                   "installed vosk-model-* packages are found too)")
    p.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS, help="in-process: the longest file (default 3 h)")
    return p


def main(argv: Sequence[str], stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> int:
    """Exit status: 0 every file transcribed, 1 any failed, 2 nothing could start (arguments, no model)."""
    from .models import ModelError
    from .results import Profanity

    args = parser().parse_args(list(argv))
    if args.jobs < 1:
        print("speech-recognizer transcribe: --jobs must be 1 or more", file=stderr)
        return 2
    files, errors = expand(args.files)
    for error in errors:
        print(f"speech-recognizer transcribe: {error}", file=stderr)
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    profanity = Profanity(args.profanity)

    async def go() -> int:
        backend: InProcess | Remote
        if args.server:
            backend = Remote(args.server, args.language, args.key, args.jobs)
        else:
            backend = InProcess(args.models, args.language, args.jobs, args.max_seconds)
        try:
            starting = asyncio.ensure_future(backend.start())  # the model loads while the headers are read
            order = await asyncio.to_thread(start_order, files)
            await starting
            return await run(files, order, backend, args.format, profanity, args.jobs, args.output_dir, stdout, stderr)
        finally:
            backend.close()
            if isinstance(backend, Remote):
                await backend.aclose()

    try:
        failed = asyncio.run(go()) if files else 0
    except BrokenPipeError:  # the reader of stdout left (``| head``): the batch ends as ``cat`` does (cli)
        raise
    except (ModelError, OSError) as exc:
        print(f"speech-recognizer transcribe: {exc}", file=stderr)
        return 2
    return 1 if failed or errors else 0
