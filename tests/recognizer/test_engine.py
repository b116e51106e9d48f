"""Engine speed work: warm (reused) recognizers decode exactly as fresh ones, at a lower cost."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from speech_recognizer.engine import Engine
from speech_recognizer.pool import WarmPool
from speech_recognizer.recognition import Recognition, Release
from speech_recognizer.session import Session
from speech_recognizer.transcript import Event, Phrase

from ..support import CONFIDENCE_TOLERANCE, Reference, read_wav

CHUNK = 3200  # 100 ms at 16 kHz mono


async def feed(session: Session, pcm: bytes) -> list[Event]:
    """Decode a chunk of PCM and wait for what it produced."""
    return (await session.feed_ahead(pcm)).events


def run(rec: Recognition, pcm: bytes, *, finish: bool = True) -> list[tuple[str, tuple[tuple[str, float, float, float], ...]]]:
    """Each phrase's text and its words' times (to 0.1 us: a warm clock's float32 rounding) and confidences."""
    phrases = []
    for i in range(0, len(pcm), CHUNK):
        phrases += [e for e in rec.accept(pcm[i : i + CHUNK]) if isinstance(e, Phrase)]
    if finish:
        phrases += [e for e in rec.finish() if isinstance(e, Phrase)]
    return [(p.text, tuple((w.text, round(w.start, 7), round(w.end, 7), w.confidence) for w in p.words)) for p in phrases]


def as_run(ref: Reference) -> list[tuple[str, tuple[tuple[str, float, float, float], ...]]]:
    """In-process Vosk's phrases (a new recognizer's: tests/conftest.py's references) as :func:`run` gives them."""
    return [(p.text, tuple((w.word, round(w.start, 7), round(w.end, 7), w.confidence) for w in p.words)) for p in ref.phrases]


@pytest.fixture(scope="module")
def fresh_utterances(utterances_ref: Reference) -> list[tuple[str, tuple[tuple[str, float, float, float], ...]]]:
    """What a new recognizer gives on the three utterances: in-process Vosk's on a new KaldiRecognizer fed as Recognition
    feeds it (100 ms chunks, digital silence patterned), decoded once for the run (conftest's utterances_ref)."""
    return as_run(utterances_ref)


@dataclass
class ColdThenWarm:
    """A new recognizer from an empty pool decoded the three utterances and went back to the pool; the next recognition
    took it and decoded them again. Done once for the tests that look at it: the first decoding composes a new
    recognizer's graph (4-5 CPU s)."""

    pool: WarmPool
    first: Recognition
    first_was_warm: bool
    first_phrases: list
    first_release: Release
    pooled_after_first: int
    second: Recognition
    second_was_warm: bool
    pooled_while_second_ran: int
    second_phrases: list


@pytest.fixture(scope="module")
def cold_then_warm(model, utterances_wav: Path) -> ColdThenWarm:
    pcm, rate, _ = read_wav(utterances_wav)
    pool = WarmPool(2)
    first = Recognition(model, rate, pool=pool)
    first_was_warm = first.warm
    first_phrases = run(first, pcm)
    first_release = first.release()
    pooled_after_first = len(pool)
    second = Recognition(model, rate, pool=pool)
    pooled_while_second_ran = len(pool)
    return ColdThenWarm(pool, first, first_was_warm, first_phrases, first_release, pooled_after_first,
                        second, second.warm, pooled_while_second_ran, run(second, pcm))


def test_reused_recognizer_decodes_as_a_fresh_one(model, speech_wav: Path, fresh_utterances, cold_then_warm: ColdThenWarm) -> None:
    expected = fresh_utterances
    assert expected, "the fixture holds speech"
    done = cold_then_warm
    assert not done.first_was_warm
    assert done.first_phrases == expected
    assert done.first_release is Release.KEPT and done.pooled_after_first == 1
    assert done.second_was_warm and done.pooled_while_second_ran == 0
    assert done.second_phrases == expected
    # and the offset of a resumed stream still applies on top of the recognizer's own clock (now 25 s on):
    # the one-utterance recording shows it, at a quarter of the decoding
    pool, second = done.pool, done.second
    assert second.release() is Release.KEPT
    one, rate, _ = read_wav(speech_wav)
    third = Recognition(model, rate, offset=7.5, pool=pool)
    assert third.warm
    # (a new recognizer's, not in-process Vosk's from the start shifted: the stream's digital silence is patterned by its position)
    assert run(third, one) == run(Recognition(model, rate, offset=7.5), one)


def test_recognizer_released_mid_utterance_or_at_an_endpoint_is_reset(model, utterances_wav: Path, fresh_utterances) -> None:
    pcm, rate, _ = read_wav(utterances_wav)
    expected = fresh_utterances
    pool = WarmPool(1)
    # stopped at an endpoint: the first utterance ended (Vosk would otherwise carry its features on)
    at_endpoint = Recognition(model, rate, pool=pool)
    for i in range(0, len(pcm), CHUNK):
        at_endpoint.accept(pcm[i : i + CHUNK])
        if at_endpoint.endpoint:
            break
    assert at_endpoint.endpoint
    assert at_endpoint.release() is Release.KEPT
    assert run(Recognition(model, rate, pool=pool), pcm) == expected
    # left mid-utterance without finish (a client that went away)
    mid = Recognition(model, rate, pool=pool)
    for i in range(0, len(pcm) // 3, CHUNK):
        mid.accept(pcm[i : i + CHUNK])
    assert not mid.endpoint
    assert mid.release() is Release.KEPT
    assert run(Recognition(model, rate, pool=pool), pcm) == expected


def test_pool_keeps_only_plain_recognizers_up_to_capacity(model, speech_wav: Path) -> None:
    pcm, rate, _ = read_wav(speech_wav)
    pcm = pcm[:rate]  # half a second (silence, then speech): a clock to finalize; a new recognizer's whole utterance is 2.7 CPU s
    pool = WarmPool(1)
    grammar = Recognition(model, rate, phrase_list=["오늘", "날씨"], pool=pool)
    run(grammar, pcm)
    assert grammar.release() is Release.DROPPED and len(pool) == 0, "a phrase-list recognizer has its own graph"
    a, b = Recognition(model, rate, pool=pool), Recognition(model, rate, pool=pool)
    run(a, pcm)
    run(b, pcm)
    assert a.release() is Release.KEPT and b.release() is Release.DROPPED and len(pool) == 1
    other_rate = Recognition(model, 8000, pool=pool)
    assert other_rate.warm is True, "one pool for every input rate (streams are resampled to the model's)"
    assert other_rate.release() is Release.KEPT and len(pool) == 1
    assert Recognition(model, rate, pool=WarmPool(0)).release() is Release.DROPPED
    warm = Recognition(model, rate, max_alternatives=0, pool=pool)
    assert warm.warm
    assert warm.release() is Release.KEPT
    assert warm.release() is Release.DROPPED, "released once"


def test_warm_recognizer_costs_less_cpu(cold_then_warm: ColdThenWarm) -> None:
    """Vosk expands the lookahead graph lazily per recognizer: a cold first utterance is several times dearer."""
    cold, warm = cold_then_warm.first, cold_then_warm.second
    assert not cold_then_warm.first_was_warm and cold_then_warm.second_was_warm
    assert warm.decoder_cpu_seconds < cold.decoder_cpu_seconds * 0.8, (warm.decoder_cpu_seconds, cold.decoder_cpu_seconds)


def test_engine_sessions_return_recognizers_to_the_pool(registry, utterances_wav: Path) -> None:
    pcm, rate, _ = read_wav(utterances_wav)

    async def stream(engine: Engine) -> tuple[bool, list[str]]:
        async with engine.session("ko-KR", rate, route="test") as session:
            texts = []
            for i in range(0, len(pcm), CHUNK):
                texts += [e.text for e in await feed(session, pcm[i : i + CHUNK]) if isinstance(e, Phrase)]
            texts += [e.text for e in await session.finish() if isinstance(e, Phrase)]
            return session.recognition.warm, texts

    async def main() -> None:
        engine = Engine(registry, 2)
        try:
            warm1, texts1 = await stream(engine)
            for _ in range(200):
                if len(engine.pool):
                    break
                await asyncio.sleep(0.05)
            assert len(engine.pool) == 1
            warm2, texts2 = await stream(engine)
            assert (warm1, warm2) == (False, True)
            assert texts1 == texts2 and texts1
        finally:
            engine.close()

    asyncio.run(main())


def test_a_whole_recording_in_one_hand_off_decodes_as_piece_by_piece(registry, utterances_wav: Path) -> None:
    """Session.decode (files) gives the same phrases and times as feed()+finish(); cancelled, it stops early."""
    pcm, rate, _ = read_wav(utterances_wav)
    pieces = [pcm[i : i + CHUNK] for i in range(0, len(pcm), CHUNK)]

    def phrases(events: list) -> list[tuple[str, float, float]]:
        return [(e.text, e.start, e.end) for e in events if isinstance(e, Phrase)]

    async def main() -> None:
        engine = Engine(registry, 2, warm_pool=0)
        try:
            async with engine.session("ko-KR", rate, route="test", partials=False) as session:
                one_by_one = [e for piece in pieces for e in await feed(session, piece)] + await session.finish()
            async with engine.session("ko-KR", rate, route="test", partials=False) as session:
                whole = await session.decode(pieces)
                assert session.phrases == len(phrases(whole))
            assert phrases(whole) == phrases(one_by_one) and phrases(whole)

            long = pieces * 20
            async with engine.session("ko-KR", rate, route="test", partials=False) as session:
                task = asyncio.create_task(session.decode(long))
                await asyncio.sleep(0.5)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                await asyncio.sleep(0.5)  # the decoder thread stops at the next piece
                fed = session.recognition.audio_seconds
                await asyncio.sleep(0.5)
                assert session.recognition.audio_seconds == fed < len(long) * CHUNK / 2 / rate / 4
        finally:
            engine.close()

    asyncio.run(main())


def test_a_session_runs_queued_chunks_back_to_back_in_order(registry, utterances_wav: Path) -> None:
    """Chunks fed ahead run in order on one decoder thread without returning to the event loop in
    between; each reply sees the state its own chunk left; closing drops what has not started."""
    pcm, rate, _ = read_wav(utterances_wav)
    pieces = [pcm[i : i + CHUNK] for i in range(0, len(pcm), CHUNK)]

    async def main() -> None:
        engine = Engine(registry, 2, warm_pool=0)
        try:
            async with engine.session("ko-KR", rate, route="test") as session:
                sequential = [(await feed(session, p), session.recognition.partial_text) for p in pieces[:40]]
            async with engine.session("ko-KR", rate, route="test") as session:
                # a thread probe queued after each chunk: it runs where, and right after, that chunk ran
                queued = [(session.feed_ahead(p), session.submit(lambda i=i: (i, threading.get_ident())))
                          for i, p in enumerate(pieces[:40])]
                snapshots = [(await f, await probe) for f, probe in queued]
            seen = [probe for _, probe in snapshots]
            assert [i for i, _ in seen] == list(range(40))
            assert len({t for _, t in seen}) == 1, "queued chunks run back to back on one thread"
            ahead = [(s.events, s.partial_text) for s, _ in snapshots]
            assert ahead == sequential
            assert [s.audio_seconds for s, _ in snapshots] == [(i + 1) * CHUNK / 2 / rate for i in range(40)], "each as its chunk left it"

            async with engine.session("ko-KR", rate, route="test") as session:  # a file's chunks, ten to a job
                groups = [await f for f in [session.feed_many_ahead(pieces[i : i + 10]) for i in range(0, 40, 10)]]
            assert [g.events for g in groups] == [sum((e for e, _ in sequential[i : i + 10]), []) for i in range(0, 40, 10)]
            assert [g.partial_text for g in groups] == [sequential[i + 9][1] for i in range(0, 40, 10)], "as the last chunk left it"
            assert [g.audio_seconds for g in groups] == [(i + 10) * CHUNK / 2 / rate for i in range(0, 40, 10)]

            async with engine.session("ko-KR", rate, route="test") as session:
                futures = [session.feed_ahead(p) for p in pieces]
                await futures[0]
            await asyncio.sleep(0)
            assert any(f.cancelled() for f in futures), "the session's end drops chunks not started"
        finally:
            engine.close()

    asyncio.run(main())


def test_each_session_decodes_on_a_thread_of_its_own(registry, utterances_wav: Path) -> None:
    """A session's jobs, one round trip after another, all run on one thread (its lane), another
    session's at the same time on another; the next session reuses a lane. (On a shared pool each
    chunk ran on whichever thread was idle, and a recognizer's memory spread over every thread's
    malloc arena: bench/notes.md.)"""
    pcm, rate, _ = read_wav(utterances_wav)
    # 30 round trips of 10 ms each: what is looked at is the threads the jobs run on, not the words (30 chunks of 100 ms
    # cost each new recognizer some 2.5 CPU s of decoding)
    pieces = [pcm[i : i + CHUNK // 10] for i in range(0, 30 * CHUNK // 10, CHUNK // 10)]

    async def main() -> None:
        engine = Engine(registry, 2, warm_pool=0)
        threads: dict[str, set[int]] = {}

        async def stream(name: str) -> None:
            async with engine.session("ko-KR", rate, route="test") as session:
                seen = set()
                for piece in pieces:
                    await feed(session, piece)
                    seen.add(await session.submit(threading.get_ident))
                    await asyncio.sleep(0)  # the other session's jobs go in between
                threads[name] = seen

        try:
            await asyncio.gather(stream("a"), stream("b"))
            await stream("c")
        finally:
            engine.close()
        assert [len(threads[n]) for n in "abc"] == [1, 1, 1]
        assert threads["a"] != threads["b"]
        assert threads["c"] <= threads["a"] | threads["b"]

    asyncio.run(main())


def test_a_recognizer_with_a_long_clock_retires(model, speech_wav: Path, monkeypatch) -> None:
    """Vosk's times are 32-bit floats on the recognizer's clock: pooled ones retire before it loses precision."""
    import speech_recognizer.recognition as recognition

    pcm, rate, _ = read_wav(speech_wav)
    monkeypatch.setattr(recognition, "MAX_WARM_CLOCK_SECONDS", len(pcm) / 2 / rate / 2)
    pool = WarmPool(2)
    rec = Recognition(model, rate, pool=pool)
    run(rec, pcm)
    assert rec.release() is Release.RETIRED and len(pool) == 0


def test_clock_unit_is_a_whole_number_of_samples_exact_in_float32() -> None:
    from speech_recognizer.recognition import clock_unit

    assert clock_unit(16000) == 1000 and clock_unit(8000) == 500 and clock_unit(48000) == 3000
    assert clock_unit(44100) == 11025, "1/4 s: 44100/16 and 44100/8 are not whole samples"
    assert clock_unit(22051) == 22051
    for rate in (8000, 11025, 16000, 22050, 44100, 48000):
        seconds = 37 * clock_unit(rate) / rate
        assert float(__import__("numpy").float32(seconds)) == seconds


def test_pool_hands_out_the_most_experienced_recognizer(model, speech_wav: Path) -> None:
    """Start-up warm-up recognizers are used only when no recognizer that decoded a session is idle."""
    pcm, rate, _ = read_wav(speech_wav)
    pool = WarmPool(3)
    for _ in range(2):
        warmup = Recognition(model, rate, pool=pool, warmup=True)
        assert not warmup.warm, "a warm-up never takes a pooled recognizer"
        run(warmup, pcm[: rate // 2 * 2])
        assert warmup.release() is Release.KEPT
    session = Recognition(model, rate, pool=pool)
    assert session.warm and session._experience == 0.0
    run(session, pcm)
    assert session.release() is Release.KEPT
    again = Recognition(model, rate, pool=pool)
    assert again._experience == session.audio_seconds, "the recognizer that decoded a session, not a warm-up one"
    assert again.release() is Release.KEPT
    # a release in flight of the only experienced recognizer is waited for
    taken = pool.take(model)
    assert taken is not None and taken.experience > 0
    pool.expect()

    def give_back() -> None:
        pool.give(model, taken.rec, taken.samples, taken.experience)
        pool.done()

    import threading

    threading.Timer(0.2, give_back).start()
    waited = pool.take(model)
    assert waited is not None and waited.rec is taken.rec


def test_long_stream_moves_to_another_recognizer_at_utterance_ends(model, utterances_wav: Path, monkeypatch) -> None:
    """A recognizer whose clock passed the recycle limit is swapped at the next utterance end.

    Before the swap the stream decodes as one recognizer does; after it, as a new
    recognizer started at that point of the stream, with times on the stream's clock.
    """
    import speech_recognizer.recognition as recognition
    from speech_recognizer import heap

    pcm, rate, _ = read_wav(utterances_wav)
    monkeypatch.setattr(recognition, "RECYCLE_AUDIO_SECONDS", 0.5)
    trims: list[int] = []
    monkeypatch.setattr(heap, "TRIMMER", heap.HeapTrimmer(0.0, trim=lambda: bool(trims.append(1)) or True))

    # expected: a new Recognition (offset = stream position) after each utterance end. Each is new: none is
    # released before the last has decoded (the pool stays empty); then they are the warm ones of the pool below.
    warmed = WarmPool(4)
    expected: list[Phrase] = []
    current = Recognition(model, rate, pool=warmed)
    used = [current]
    for i in range(0, len(pcm), CHUNK):
        expected += [e for e in current.accept(pcm[i : i + CHUNK]) if isinstance(e, Phrase)]
        if current.endpoint:
            current = Recognition(model, rate, offset=(i + CHUNK) / 2 / rate, pool=warmed)
            used.append(current)
    expected += [e for e in current.finish() if isinstance(e, Phrase)]
    assert not any(r.warm for r in used)
    as_tuples = [(p.text, tuple((w.text, round(w.start, 7), round(w.end, 7), w.confidence) for w in p.words)) for p in expected]
    assert len(as_tuples) >= 3, "the fixture holds three utterances"
    assert [r.release() for r in used][:3] == [Release.KEPT] * 3 and len(warmed) >= 3

    # without a pool: new recognizers; with one: warm ones (each decoded an utterance above), which decode as new ones do
    for pool in (None, warmed):
        stream = Recognition(model, rate, pool=pool)
        assert run(stream, pcm) == as_tuples
        assert stream.recycled >= 2
        assert stream.audio_seconds == len(pcm) / 2 / rate
    deadline = __import__("time").monotonic() + 5
    while not trims and __import__("time").monotonic() < deadline:
        __import__("time").sleep(0.01)
    assert trims, "dropping a grown recognizer asks for its memory to be given back"


def test_a_warm_recognizer_decodes_the_words_a_new_one_does_its_confidences_and_times_near(model, utterances_wav: Path) -> None:
    """The bound the tests' parity checks rely on (support.CONFIDENCE_TOLERANCE): on the three utterances twice (25 s,
    one stream), a pooled recognizer that decoded other audio before gives a new one's words, each word's times within
    a decoder frame (30 ms) and its confidence within the tolerance. They are not always equal: Vosk's times and
    confidences come from minimum Bayes risk over the lattice, and a warm recognizer's lattice is not always a new
    one's (here, measured: the fifth phrase's '씀' 0.617 against 0.640, and '니다' 5 ms earlier; 15 of 17 warm
    recognizers with random histories moved word times on this audio)."""
    pcm, rate, _ = read_wav(utterances_wav)
    new = run(Recognition(model, rate), pcm + pcm)
    pool = WarmPool(1)
    earlier = Recognition(model, rate, pool=pool)
    run(earlier, pcm[CHUNK * 30 : CHUNK * 90])  # six seconds from the middle of the recording: another history
    assert earlier.release() is Release.KEPT
    stream = Recognition(model, rate, pool=pool)
    assert stream.warm
    warm = run(stream, pcm + pcm)
    assert [(text, [w[0] for w in words]) for text, words in warm] == [(text, [w[0] for w in words]) for text, words in new]
    pairs = [(w, n) for (_, warm_words), (_, new_words) in zip(warm, new, strict=True) for w, n in zip(warm_words, new_words, strict=True)]
    assert all(abs(w[1] - n[1]) < 0.03 and abs(w[2] - n[2]) < 0.03 for w, n in pairs), pairs
    assert all(abs(w[3] - n[3]) <= CONFIDENCE_TOLERANCE for w, n in pairs), pairs


def test_a_stream_moves_after_its_own_audio_whatever_its_pooled_recognizer_decoded_before(model, speech_wav: Path,
                                                                                         utterances_wav: Path, fresh_utterances,
                                                                                         monkeypatch) -> None:
    """A stream moves to another recognizer after the limit of ITS OWN audio, whatever clock a recognizer from the pool
    brought from earlier sessions (other clients' audio), and decodes as it would on a new one. The limit counted the
    recognizer's whole clock: a stream that got one near it moved at its first utterance end, and a move is not seamless
    (the next recognizer starts a new feature pipeline). Measured in-process, 2 other streams decoding beside: a stream
    whose pooled recognizer had 599.8 s of clock gave the recording's low-confidence last phrase '바위 가 즉 이다'
    against '바위 가 굿 이다' (59 streams on recognizers further from the limit gave the latter), as two fresh-clone
    trials had failed on the session's server ('더 이고 집 이다' for the same phrase)."""
    import speech_recognizer.recognition as recognition

    earlier, rate, _ = read_wav(speech_wav)
    pcm, _, _ = read_wav(utterances_wav)
    # the limit: more than this stream's audio, less than it and the earlier session's together
    limit = len(pcm) / 2 / rate + 0.5
    assert len(earlier) / 2 / rate > 1.0
    monkeypatch.setattr(recognition, "RECYCLE_AUDIO_SECONDS", limit)
    pool = WarmPool(1)
    before = Recognition(model, rate, pool=pool)
    run(before, earlier)
    assert before.release() is Release.KEPT
    stream = Recognition(model, rate, pool=pool)
    assert stream.warm, "the stream took the recognizer that decoded the earlier session"
    assert run(stream, pcm) == fresh_utterances
    assert stream.recycled == 0, "the stream moved to another recognizer before the limit of its own audio"


def test_a_recognizer_handed_over_is_freed_while_the_session_that_pooled_it_lives(model, utterances_wav: Path,
                                                                                   monkeypatch) -> None:
    """The recognizer a stream drops at a handover is freed at once, though the finished session that gave it
    to the pool has not been collected yet (its objects wait in a reference cycle for Python's collector, for
    minutes on a busy server: until then the dropped recognizer's memory stayed allocated)."""
    import weakref

    import speech_recognizer.recognition as recognition
    from speech_recognizer import heap

    pcm, rate, _ = read_wav(utterances_wav)
    monkeypatch.setattr(recognition, "RECYCLE_AUDIO_SECONDS", 0.5)
    monkeypatch.setattr(heap, "TRIMMER", heap.HeapTrimmer(0.0, trim=lambda: True))
    pool = WarmPool(2)
    finished = Recognition(model, rate, pool=pool)  # a finished session, still referenced
    run(finished, pcm[: rate * 2])
    assert finished.release() is Release.KEPT
    stream = Recognition(model, rate, pool=pool)
    assert stream.warm, "the stream took the finished session's recognizer"
    handed_over = weakref.ref(stream._rec)
    for i in range(0, len(pcm), CHUNK):
        stream.accept(pcm[i : i + CHUNK])
        if stream.recycled:
            break
    assert stream.recycled == 1
    assert handed_over() is None, "the recognizer dropped at the handover is still alive"


def test_heap_trimmer_coalesces_requests_and_rate_limits() -> None:
    import threading
    import time

    from speech_recognizer import heap

    calls: list[float] = []
    done = threading.Event()

    def trim() -> bool:
        calls.append(time.monotonic())
        done.set()
        return True

    trimmer = heap.HeapTrimmer(0.3, trim=trim)
    for _ in range(50):
        trimmer.request()
    assert done.wait(5)
    done.clear()
    trimmer.request()
    assert done.wait(5)
    time.sleep(0.4)
    assert len(calls) == 2, "fifty requests at once are one trim, the next waits out the interval"
    assert calls[1] - calls[0] >= 0.29
    # the real one: glibc here (without malloc_trim, trim_now would count nothing)
    real = heap.HeapTrimmer()
    assert real.trim_now() in (True, False) and real.count == 1 and real.seconds > 0


#: Frees 200 small blocks (more than glibc's per-thread cache keeps) and prints how many sit in fastbins.
_FASTBIN_PROBE = """
import ctypes, sys
from speech_recognizer import heap
if sys.argv[1] == "off":
    assert heap.disable_fastbins()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = Info
blocks = [libc.malloc(40) for _ in range(200)]
for b in blocks:
    libc.free(b)
print(libc.mallinfo2().smblks)
"""


def test_fastbins_off_keeps_small_freed_blocks_out_of_fastbins() -> None:
    import subprocess
    import sys

    def fastbin_blocks(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", _FASTBIN_PROBE, mode], capture_output=True, text=True, check=True)
        return int(out.stdout.strip())

    assert fastbin_blocks("on") > 100, "glibc's default: small frees beyond the thread cache go to fastbins"
    assert fastbin_blocks("off") == 0


#: What heap.py sees and does in a fresh process: the allocator, the fastbins setting, a trim, the start-up line.
_ALLOCATOR_PROBE = """
import logging, sys
from speech_recognizer import heap
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
print(heap.allocator())
print(heap.disable_fastbins())
trimmer = heap.HeapTrimmer()
trimmer.trim_now()
print(trimmer.count)
heap.report()
"""


def _allocator_probe(**env: str) -> list[str]:
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")}
    out = subprocess.run([sys.executable, "-c", _ALLOCATOR_PROBE], capture_output=True, text=True, check=True,
                         env={**clean, **env})
    assert not out.stderr, out.stderr  # ld.so complains there about a library it cannot preload
    return out.stdout.splitlines()


def test_heap_tunes_and_trims_glibc_malloc_when_it_serves_the_process() -> None:
    which, fastbins_off, trims, line = _allocator_probe()
    assert (which, fastbins_off, trims) == ("glibc", "True", "1")
    assert line.startswith("native heap: glibc malloc"), line


def test_heap_leaves_glibc_alone_when_jemalloc_serves_malloc() -> None:
    """The recognizer image preloads jemalloc (Dockerfile): glibc's malloc then serves nothing, so heap.py neither
    turns its fastbins off nor counts trims of it, and says once which allocator runs."""
    import ctypes.util

    if ctypes.util.find_library("jemalloc") is None:
        pytest.fail("libjemalloc.so.2 is missing: apt-get install -y libjemalloc2 (the recognizer image's allocator)")
    which, fastbins_off, trims, line = _allocator_probe(LD_PRELOAD="libjemalloc.so.2", MALLOC_CONF="background_thread:true")
    assert (which, fastbins_off, trims) == ("libjemalloc.so.2", "False", "0")
    assert line == "native heap: libjemalloc.so.2 serves malloc (no glibc tuning, no malloc_trim; MALLOC_CONF=background_thread:true)"


def test_server_start_turns_fastbins_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from speech_recognizer import cli, heap

    calls: list[int] = []
    monkeypatch.setattr(heap, "disable_fastbins", lambda: bool(calls.append(1)) or True)
    for key in ("Eula", "EULA", "Locale", "LOCALE"):
        monkeypatch.delenv(key, raising=False)
    # a warm-up file that does not exist: start-up stops before serving, after the allocator setting
    args = ["Eula=accept", "Locale=ko-KR", f"Mounts:Models={tmp_path}", f"Mounts:Output={tmp_path / 'out'}",
            f"Warmup:Audio={tmp_path / 'missing.wav'}"]
    assert cli.main(args) == 1
    assert calls == [1]


def test_a_retired_recognizer_is_replaced_by_one_warmed_in_the_background(registry, speech_wav: Path, monkeypatch) -> None:
    """The pool keeps its strength: a recognizer that retires is replaced by a new one warmed with the start-up
    warm-up audio, on a thread at a lower CPU priority, so that the next session does not build a cold one.
    A model that was not warmed at start-up gets no replacement."""
    import speech_recognizer.recognition as recognition

    pcm, rate, _ = read_wav(speech_wav)
    warmup_pcm = pcm[: rate * 2 // 2]  # 0.5 s: the warm recognizer's clock stays under the limit
    monkeypatch.setattr(recognition, "MAX_WARM_CLOCK_SECONDS", len(pcm) / 2 / rate / 2)

    async def session(engine: Engine) -> bool:
        async with engine.session("ko-KR", rate, route="test") as s:
            await feed(s, pcm)
            await s.finish()
            return s.recognition.warm

    async def settle(engine: Engine, size: int) -> None:
        """The release done (it submits the replacement), then the replenisher's one thread past it: a warm-up at the
        lower priority takes minutes beside busy processes, so it is waited for, not timed."""
        for _ in range(400):
            if not engine.pool._pending:
                break
            await asyncio.sleep(0.05)
        await asyncio.wait_for(asyncio.wrap_future(engine.replenisher.submit(lambda: None)), 600)
        assert len(engine.pool) == size, f"pool of {len(engine.pool)}, not {size}"

    async def main() -> None:
        engine = Engine(registry, 2)
        try:
            model = await registry.aload("ko-KR")
            assert engine.warm(model, warmup_pcm, rate) and len(engine.pool) == 1
            assert await session(engine), "the session took the warm recognizer"
            await settle(engine, 1)  # it retired at its release; a replacement took its place
            assert (engine.pool.retired, engine.pool.replaced, engine.pool.misses) == (1, 1, 0)
            [thread] = [t for t in threading.enumerate() if t.name.startswith("replenish")]
            assert os.getpriority(os.PRIO_PROCESS, thread.native_id) == 10
            assert await session(engine), "the next session found the replacement"
            await settle(engine, 1)
            assert (engine.pool.retired, engine.pool.replaced, engine.pool.misses) == (2, 2, 0)
            # a warm-up longer than the clock limit is not kept, and not replaced (that would loop)
            assert not engine.warm(model, pcm, rate)
            await asyncio.sleep(0.5)
            assert (engine.pool.retired, engine.pool.replaced, len(engine.pool)) == (2, 2, 1)
        finally:
            engine.close()
        cold = Engine(registry, 2)  # never warmed: nothing to replace with
        try:
            assert not await session(cold)
            await asyncio.sleep(0.5)
            assert (cold.pool.retired, cold.pool.replaced, len(cold.pool)) == (1, 0, 0)
        finally:
            cold.close()

    asyncio.run(main())


def test_decoder_cpu_seconds_are_cpu_not_wall_time(model, speech_wav: Path) -> None:
    """Twice as many recognitions as CPUs decode at once, so each thread waits for a CPU about as long as it
    runs: wall times would add up to about twice the process's CPU time; decoder CPU seconds stay within it."""
    pcm, rate, _ = read_wav(speech_wav)
    pcm = pcm[: len(pcm) // 2]  # 1.5 s, a new recognizer each: long enough that the threads share the CPUs throughout
    recognitions = [Recognition(model, rate) for _ in range(2 * (os.cpu_count() or 1))]
    started = time.process_time()
    threads = [threading.Thread(target=run, args=(r, pcm)) for r in recognitions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    process_cpu = time.process_time() - started
    decoder_cpu = sum(r.decoder_cpu_seconds for r in recognitions)
    assert 0.5 * process_cpu < decoder_cpu <= process_cpu, (decoder_cpu, process_cpu)
