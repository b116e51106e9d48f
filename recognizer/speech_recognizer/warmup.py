"""Warming recognizers at start-up, before ``/ready`` says yes.

A new ``KaldiRecognizer`` stalls on its first decoder advance, whatever the audio,
and then spends several times the CPU of a warm one on its first utterance while
its lazily composed decoding graph fills in. The warm pool
(:class:`~speech_recognizer.pool.WarmPool`) hides both for every session after the
first ones; this module hides them for the first ones too: at start-up, each served
locale gets ``Warmup:Count`` recognizers that have decoded ``Warmup:Seconds`` of
speech-like audio and wait, finalized, in the pool.

The audio is ``Warmup:Audio`` (any file the REST route accepts: a recording
of the speech the deployment will serve warms best) or, by default, a
deterministic synthetic signal: voiced segments (a harmonic series at a
drifting pitch, shaped by vowel formants), fricative noise and pauses.
Measurements: docs/engine.md.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .audio import AudioError, decode, mono
from .resampling import resample

if TYPE_CHECKING:
    from .engine import Engine
    from .models import LoadedModel

log = logging.getLogger(__name__)

#: Vowel formants (F1, F2, F3 in Hz) the synthetic signal picks from.
_VOWELS = ((700, 1200, 2600), (300, 2300, 3000), (300, 800, 2300), (500, 1900, 2500),
           (600, 1000, 2400), (400, 1600, 2600), (250, 1700, 2200))
_FORMANT_BANDWIDTH = 90.0


def synthetic_speech(seconds: float, sample_rate: int = 16000, seed: int = 0) -> bytes:
    """``seconds`` of speech-like 16-bit mono PCM, the same for the same arguments."""
    rng = np.random.default_rng(seed)
    total = int(seconds * sample_rate)
    parts: list[np.ndarray] = []
    made = 0
    while made < total:
        n = int(rng.uniform(0.08, 0.2) * sample_rate)
        kind = rng.random()
        if kind < 0.12:  # pause
            x = np.zeros(n)
        elif kind < 0.3:  # fricative: high-passed noise
            x = np.diff(rng.normal(0.0, 1.0, n + 1))
        else:  # voiced: harmonics of a drifting pitch under a vowel's formant envelope
            t = np.arange(n) / sample_rate
            f0 = rng.uniform(90, 250) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(2, 6) * t))
            phase = 2 * np.pi * np.cumsum(f0) / sample_rate
            formants = np.array(_VOWELS[rng.integers(len(_VOWELS))]) * rng.uniform(0.9, 1.1, 3)
            x = np.zeros(n)
            top = min(4000.0, sample_rate / 2 - 200)
            for k in range(1, int(top / f0.max()) + 1):
                f = k * f0.mean()
                gain = np.sum(1.0 / (1.0 + ((f - formants) / _FORMANT_BANDWIDTH) ** 2)) / k**0.5
                x += gain * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
            x *= np.hanning(n) ** 0.25  # soft onsets and ends
        peak = float(np.max(np.abs(x))) or 1.0
        parts.append(x / peak * rng.uniform(0.2, 0.6))
        made += n
    signal = np.concatenate(parts)[:total]
    return (signal * 20000).clip(-32768, 32767).astype("<i2").tobytes()


def warmup_audio(path: Path | None, seconds: float, sample_rate: int) -> bytes:
    """The PCM to warm with: ``path`` (decoded, mono, at ``sample_rate``, up to ``seconds``) or the synthetic signal.

    Raises :class:`ValueError` with a one-line reason when the file cannot be used.
    """
    if path is None:
        return synthetic_speech(seconds, sample_rate)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"Warmup:Audio={path}: cannot read it ({exc.strerror or exc})") from None
    try:
        audio = decode(data, "", max_seconds=seconds, cut=True)
    except AudioError as exc:
        raise ValueError(f"Warmup:Audio={path}: {exc}") from None
    pcm = resample(mono(audio.pcm, audio.channels), audio.sample_rate, sample_rate)
    return pcm[: 2 * int(seconds * sample_rate)]


@dataclass
class WarmupState:
    """Progress of the start-up warm-up, per locale, for ``/ready`` and the home page."""

    wanted: dict[str, int] = field(default_factory=dict)
    warmed: dict[str, int] = field(default_factory=dict)
    done: bool = False
    error: str | None = None

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {"done": self.done, "wanted": dict(self.wanted), "warmed": dict(self.warmed)}
        if self.error:
            body["error"] = self.error
        return body


async def warm_up(engine: Engine, models: list[LoadedModel], count: int, seconds: float,
                  audio_path: Path | None, state: WarmupState, parallel: int) -> None:
    """Warm ``count`` recognizers per model (capped so that all fit the pool), ``parallel`` at a time.

    Never raises: a failure is logged and recorded in ``state``, and serving goes on
    with cold recognizers. ``state.done`` is set at the end either way.
    """
    try:
        per_model = min(count, engine.pool.capacity // max(1, len(models)))
        gate = asyncio.Semaphore(max(1, parallel))
        loop = asyncio.get_running_loop()

        async def one(model: LoadedModel, pcm: bytes) -> None:
            async with gate:
                if await loop.run_in_executor(engine.executor, engine.warm, model, pcm, model.sample_rate):
                    state.warmed[model.locale] += 1

        jobs = []
        for model in models if per_model > 0 else ():
            pcm = await loop.run_in_executor(None, warmup_audio, audio_path, seconds, model.sample_rate)
            state.wanted[model.locale] = per_model
            state.warmed[model.locale] = 0
            jobs += [one(model, pcm) for _ in range(per_model)]
        await asyncio.gather(*jobs)
        if jobs:
            log.info("warm-up done: %s", ", ".join(f"{n} {loc} recognizers" for loc, n in state.warmed.items()))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - warm-up is an optimisation; serving must start regardless
        state.error = f"{type(exc).__name__}: {exc}"
        log.error("warm-up failed, serving with cold recognizers: %s", state.error)
    finally:
        state.done = True
