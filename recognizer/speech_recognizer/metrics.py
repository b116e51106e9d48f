"""Prometheus metrics of one recognizer process (its own registry, so apps never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .engine import SessionRecord


class Metrics:
    """Requests, audio seconds, active sessions and decode time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "speech_requests", "Recognition requests by route and outcome", ["route", "status"], registry=self.registry
        )
        self.audio_seconds = Counter(
            "speech_audio_seconds", "Seconds of audio recognized", ["route", "locale"], registry=self.registry
        )
        self.active_sessions = Gauge("speech_active_sessions", "Recognitions decoding now", registry=self.registry)
        self.decode_seconds = Histogram(
            "speech_decode_seconds",
            "Decoder CPU time per recognition",
            ["locale"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.refused = Counter(
            "speech_refused", "Recognitions refused because every decoder was busy", ["route"], registry=self.registry
        )

    def session_ended(self, record: SessionRecord) -> None:
        self.audio_seconds.labels(record.route, record.locale).inc(record.audio_seconds)
        self.decode_seconds.labels(record.locale).observe(record.decode_seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
