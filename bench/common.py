"""What every benchmark shares: speech audio, a recognizer server in a subprocess (both from :mod:`harness`), a
CPU/RSS sampler, the in-process worker, the machine's description."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT))
sys.path.insert(0, str(_ROOT / "recognizer"))

# What the tests use too lives in harness; the bench's modules take it from here.
from harness.clients import percentile  # noqa: E402,F401
from harness.loopback import free_port  # noqa: E402,F401
from harness.server import ROOT, Server, cpu_seconds, server  # noqa: E402,F401
from harness.speech import CHUNK, CHUNK_S, LOCALE, Audio, concat, make_audio, read_wav, speak  # noqa: E402,F401

#: Other sentences than the bench audio's, for streams that each speak their own recording.
OTHER_SENTENCES = (
    "지금 몇 시예요", "커피 한 잔 주세요", "회의는 세 시에 시작합니다", "감사합니다 안녕히 가세요",
    "지하철역이 어디에 있어요", "주말에 영화를 봤어요", "오늘 저녁에 뭐 먹을까요", "비가 와서 우산을 가져왔어요",
    "다음 주에 여행을 갑니다", "이 책은 아주 재미있어요", "전화 번호를 알려 주세요", "버스가 곧 도착합니다",
    "학교까지 걸어서 십 분 걸려요", "내일 아침 일찍 일어나야 해요", "음악을 들으면서 공부해요", "병원은 몇 시에 문을 닫아요",
)
#: espeak-ng voice variants and speaking rates (words per minute) the recordings cycle through.
VOICES = (("ko", "160"), ("ko+f2", "150"), ("ko+m3", "175"), ("ko+f4", "140"), ("ko+m1", "185"), ("ko+f1", "165"),
          ("ko+m2", "155"), ("ko+f3", "170"))
#: Input sample rates the recordings cycle through: wideband, telephone, CD.
RATES = (16000, 8000, 44100)


def make_voices(workdir: Path, n: int, rates: tuple[int, ...] = (16000,)) -> list[Audio]:
    """``n`` different recordings, each four of :data:`OTHER_SENTENCES` (none of the bench audio's) in a voice
    and at a speed of its own, at the sample rates of ``rates`` in turn, with 1.5 s of silence around each
    sentence (about 12-19 s each). Made with espeak-ng and ``sox -R``: the same every run.

    Voices and sentence picks repeat every 16 recordings; each further 16 speak 12 words a minute
    faster, so that recording ``i + 16`` is not recording ``i`` again."""
    workdir.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        voice, base_wpm = VOICES[i % len(VOICES)]
        wpm = str(int(base_wpm) + 12 * (i // 16))
        rate = rates[i % len(rates)]
        picks = [OTHER_SENTENCES[(3 * i + k) % len(OTHER_SENTENCES)] for k in range(4)]
        parts = [speak(s, workdir / f"v{i}s{k}.wav", voice=voice, wpm=wpm, rate=rate) for k, s in enumerate(picks)]
        wav = concat(parts, workdir / f"voice{i}.wav", gap=1.5)
        pcm, got_rate, channels = read_wav(wav)
        assert channels == 1 and got_rate == rate
        out.append(Audio(pcm, rate, wav))
    return out


def make_recordings(workdir: Path, n: int = 16) -> list[Audio]:
    """The streams' recordings: ``n`` (at least 8) different ones, in voices, speeds and input rates (8, 16,
    44.1 kHz) of their own; stream ``i`` of a row speaks one of its own."""
    return make_voices(workdir, max(8, n), RATES)


class Sampler:
    """Samples a process's CPU (% of one core) and RSS (MiB) every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, float, float]] = []  # (t, cpu%, rss MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.proc.cpu_percent(None)
        while not self._stop.wait(self.interval):
            try:
                self.samples.append((time.monotonic(), self.proc.cpu_percent(None), self.proc.memory_info().rss / 2**20))
            except psutil.Error:
                return

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)

    def summary(self) -> dict[str, float]:
        cpu = [c for _, c, _ in self.samples] or [0.0]
        rss = [r for _, _, r in self.samples] or [0.0]
        return {"cpu_mean_pct": round(sum(cpu) / len(cpu), 1), "cpu_max_pct": round(max(cpu), 1), "rss_max_mib": round(max(rss), 1)}


POOL_COUNTERS = ("speech_recognizers_built_total", "speech_recognizers_retired_total", "speech_recognizer_handovers_total")


def pool_counts(srv: Server) -> dict[str, float]:
    """The server's warm-pool counters (``built``, ``retired``, ``handovers``) from its /metrics."""
    with urllib.request.urlopen(f"{srv.http}/metrics", timeout=10) as r:
        lines = r.read().decode().splitlines()
    values = {line.split()[0]: float(line.split()[1]) for line in lines if line.startswith(POOL_COUNTERS)}
    return {name.split("_")[2]: values.get(name, float("nan")) for name in POOL_COUNTERS}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, object]:
    """What the numbers were measured on, including how busy the machine was with other work."""
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
    }


def code_version() -> str:
    """The commit the benchmarked code is at, with ``+changes`` when tracked code differs from it (Markdown and results in docs/ do not count)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!*.md", ":!docs"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+changes" if dirty else "")


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds so far of each thread of ``pid`` (the main thread's id is ``pid``)."""
    return {t.id: t.user_time + t.system_time for t in psutil.Process(pid).threads()}


def speed(run: dict[str, float]) -> float:
    """Audio seconds per wall second of one worker run."""
    return run["audio"] / run["wall"]


def cost(run: dict[str, float]) -> float:
    """CPU seconds per audio second of one worker run."""
    return run["cpu"] / run["audio"]


def ab_runs(worker: InProcessWorker, n: int, pairs: int, before_a: Callable[[], None],
            before_b: Callable[[], None]) -> list[tuple[dict[str, float], dict[str, float]]]:
    """``pairs`` pairs of runs of ``n`` streams on one worker, ``before_a`` / ``before_b`` called before each side; A first."""
    got = []
    for _ in range(pairs):
        before_a()
        a = worker.run(n)
        before_b()
        got.append((a, worker.run(n)))
    return got


def ab_row(got: list[tuple[dict[str, float], dict[str, float]]], a: str, b: str, ratio: str) -> dict[str, object]:
    """Medians of one A/B: each side's CPU per audio second (``<a>_...``, ``<b>_...``), and of the pairs'
    ratios ``<ratio>_cpu_ratio`` (A's CPU / B's: above 1, B is cheaper) and ``<ratio>_ratio`` (B's throughput / A's)."""
    return {"pairs": len(got),
            f"{a}_cpu_s_per_audio_s": round(statistics.median(cost(x) for x, _ in got), 4),
            f"{b}_cpu_s_per_audio_s": round(statistics.median(cost(y) for _, y in got), 4),
            f"{ratio}_cpu_ratio": round(statistics.median(cost(x) / cost(y) for x, y in got), 3),
            f"{ratio}_ratio": round(statistics.median(speed(y) / speed(x) for x, y in got), 3),
            f"pairs_{b}_cheaper": sum(cost(y) < cost(x) for x, y in got)}


class InProcessWorker:
    """``python -m bench.inprocess`` in a subprocess: warm in-process Vosk recognizers, run on command."""

    def __init__(self, audio: Audio | list[Audio], warm: int, passes: int = 1, *, partials: bool = True) -> None:
        """``audio``: one recording, or one per stream (stream ``i`` of a run speaks ``audio[i]``, cycling)."""
        env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'recognizer'}:{os.environ.get('PYTHONPATH', '')}"}
        paths = ",".join(str(a.path) for a in (audio if isinstance(audio, list) else [audio]))
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.inprocess", paths, str(warm), str(passes),
                                      "partials" if partials else "no-partials"], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._read()  # {"ready": true}

    def _read(self) -> dict:
        import json

        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"the in-process worker exited ({self.proc.wait()})")
        return json.loads(line)

    def _ask(self, command: str) -> dict[str, float]:
        self.proc.stdin.write(f"{command}\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return self._read()

    def run(self, n: int) -> dict[str, float]:
        """``n`` unpaced streams at once: wall and CPU seconds, audio seconds decoded."""
        return self._ask(str(n))

    def fastbins(self, on: bool) -> None:
        self._ask(f"fastbins {'on' if on else 'off'}")

    def files(self, n: int, count: int) -> dict[str, float]:
        """``count`` files on ``n`` threads without intermediate results: wall and CPU seconds, audio seconds."""
        return self._ask(f"files {n} {count}")

    def __enter__(self) -> InProcessWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.proc.stdin.write("quit\n")  # type: ignore[union-attr]
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


@contextmanager
def child_on_a_port(module_args: list[str], env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen[str], dict]]:
    """``python -m MODULE ARGS`` run from the checkout (its packages on the path), whose first line on stdout is a
    JSON object (the port it listens on, at least); yields the process and that object, and stops it by closing
    its stdin (10 s, then killed)."""
    import json
    path = f"{ROOT / 'recognizer'}:{ROOT / 'operator'}:{ROOT}:{os.environ.get('PYTHONPATH', '')}"
    proc = subprocess.Popen([sys.executable, "-m", *module_args], cwd=ROOT, env={**os.environ, **(env or {}), "PYTHONPATH": path},
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"{module_args[0]} exited ({proc.wait()})")
        yield proc, json.loads(line)
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
