"""Prometheus metrics of one recognizer process (its own registry, so apps never collide)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from . import errors, heap, inbox
from .admission import Admission
from .connection_cap import ConnectionCap
from .engine import SessionRecord
from .models import ModelRegistry
from .pool import WarmPool

#: ``speech_request_seconds{outcome}`` of each failure kind: its class in the failure table (:attr:`.errors.Kind.alert`:
#: ``capacity``, ``fault``), or ``client`` (the client's doing or normal operation: a bad request, an idle client, a drain).
OUTCOMES = {k.name: k.alert or "client" for k in errors.kinds(vars(errors))}
#: From a REST answer of a short recording to a stream's final result, a long upload decoded on a busy pod.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)


class Metrics:
    """Requests, audio seconds, active sessions and decoder CPU time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "speech_requests", "Recognition requests by route and outcome", ["route", "status"], registry=self.registry
        )
        self.audio_seconds = Counter(
            "speech_audio_seconds", "Seconds of audio recognized", ["route", "locale"], registry=self.registry
        )
        self.abandoned_audio_seconds = Counter(
            "speech_audio_abandoned_seconds",
            "Seconds of audio received from clients that left before it was decoded (dropped undecoded)",
            ["route", "locale"],
            registry=self.registry,
        )
        self.active_sessions = Gauge("speech_active_sessions", "Recognitions decoding now", registry=self.registry)
        Gauge("speech_read_ahead_spilled_bytes", "Bytes of /vosk streams' messages read ahead of their decoding and "
              "kept in temporary files now (at most 64 MiB a stream, speech_read_ahead_spill_budget_bytes all "
              "together)", registry=self.registry).set_function(inbox.spilled_bytes)
        self.decoder_cpu_seconds = Histogram(
            "speech_decoder_cpu_seconds",
            "CPU time the decoder thread spent on each recognition (thread CPU time, not wall time)",
            ["locale"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.refused = Counter(
            "speech_refused",
            "Recognitions refused or ended early, by reason (the failure kind: busy, idle_timeout, bad_audio, ...)",
            ["route", "reason"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "speech_request_seconds",
            "Seconds to a recognition's final result, by route family (rest, openai, usp: a Speech SDK turn, vosk: a "
            "/vosk or / stream) and outcome (ok, or the failure's class: client, capacity, fault). REST and OpenAI: "
            "from the request's head to its answer (its upload and decoding: it grows with the audio). Streams: from the "
            "arrival of the audio that completed the final result (the end of the audio, or the chunk whose decoding "
            "ended a recognize-once turn's utterance) to that result, the wait after speaking (a stream's own length is "
            "the speaker's); a failed stream from its last message; a refusal before any turn or audio (a key, a drain, "
            "MaxConnections, a locale) from the request's head. Its count is speech_requests_total's but for route http "
            "(the server's refusals of a connection's head or body, outside any route) and streams that ended without "
            "a final result (counted 200, not timed)",
            ["route", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_HeapCollector(heap.TRIMMER))

    def succeeded(self, route: str, since: float | None = None) -> None:
        """A request or turn that succeeded; ``since``: the :func:`time.monotonic` its latency runs from
        (``speech_request_seconds``), None when it has none (a stream that ended without a final result)."""
        self.requests.labels(route, "200").inc()
        self._took(route, "ok", since)

    def failed(self, route: str, status: int, reason: str, since: float | None = None) -> None:
        """A request refused or ended by the failure policy (:func:`speech_recognizer.errors.observe`)."""
        self.requests.labels(route, str(status)).inc()
        self.refused.labels(route, reason).inc()
        self._took(route, OUTCOMES.get(reason, "client"), since)

    def _took(self, route: str, outcome: str, since: float | None) -> None:
        """Observe the latency of a request or turn of ``route`` (``rest-dictation``, ``usp/interactive``: its family,
        ``rest``, ``usp``, a bounded label), once, where its outcome is counted."""
        if since is not None:
            family = route.split("/")[0].split("-")[0]
            self.request_seconds.labels(family, outcome).observe(time.monotonic() - since)

    def watch_pool(self, pool: WarmPool) -> None:
        """Expose the warm pool's counts (read at each scrape)."""
        self.registry.register(_PoolCollector(pool))

    def watch_connections(self, admission: Admission) -> None:
        """Expose the recognition WebSockets open and their cap (read at each scrape); refusals at the cap are
        ``speech_refused_total{reason="too_many_connections"}``."""
        Gauge("speech_connections", "Recognition WebSockets open now (/vosk, /, Speech SDK), with or without a stream",
              registry=self.registry).set_function(lambda: admission.connections)
        if admission.max_connections is not None:
            Gauge("speech_connections_max", "Most recognition WebSockets kept open at once (MaxConnections)",
                  registry=self.registry).set(admission.max_connections)

    def watch_decoders(self, admission: Admission, models: ModelRegistry) -> None:
        """Expose the decoders recognitions may hold at once, the value ``/sessions`` reports as ``decoders`` (the
        admission's limit: ``DecoderMaxCount``, or its default once lowered for the memory the loaded models take),
        and the locales this process serves from its start, before any recognition (read at each scrape)."""
        self.registry.register(_DecodersCollector(admission, models))

    def watch_spills(self, budget: inbox.SpillBudget) -> None:
        """Expose the disk the /vosk streams' read-ahead may take in temporary files, and how often a stream was held
        back at it (read at each scrape)."""
        self.registry.register(_SpillCollector(budget))

    def watch_http_connections(self, cap: ConnectionCap) -> None:
        """Expose the plain HTTP connections open within ``Http:MaxConnections``, those of them idle, the cap, and the
        connections closed for it (read at each scrape); requests refused past it are ``speech_refused_total{route="http",
        reason="too_many_connections"}``."""
        self.registry.register(_HttpConnectionsCollector(cap))

    def session_ended(self, record: SessionRecord) -> None:
        self.audio_seconds.labels(record.route, record.locale).inc(record.audio_seconds)
        self.audio_abandoned(record.route, record.locale, record.abandoned_seconds)
        self.decoder_cpu_seconds.labels(record.locale).observe(record.decoder_cpu_seconds)

    def audio_abandoned(self, route: str, locale: str, seconds: float) -> None:
        """``seconds`` of audio received from a client that left before it was decoded: a session's, or one that
        left while its model loaded, before any session (its audio read ahead meanwhile)."""
        if seconds > 0:
            self.abandoned_audio_seconds.labels(route, locale).inc(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _PoolCollector:
    """The warm recognizer pool: a recognizer built anew costs 2.5-4x the CPU on its first utterance."""

    def __init__(self, pool: WarmPool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        p = self.pool
        yield CounterMetricFamily("speech_recognizers_reused", "Recognitions that started on a warm recognizer from the pool", value=p.hits)
        yield CounterMetricFamily(
            "speech_recognizers_built", "Recognitions that found no warm recognizer idle and built one (a costlier first utterance)", value=p.misses
        )
        yield CounterMetricFamily("speech_recognizers_retired", "Recognizers let go because their clock had run long", value=p.retired)
        yield CounterMetricFamily(
            "speech_recognizer_handovers", "Long streams moved to another recognizer at an utterance end (bounded memory)", value=p.handovers
        )
        yield CounterMetricFamily(
            "speech_recognizers_replaced", "Retired recognizers replaced by one warmed in the background", value=p.replaced
        )
        yield GaugeMetricFamily("speech_recognizers_idle", "Warm recognizers idle in the pool", value=len(p))


class _DecodersCollector:
    """Decoder capacity and the locales served: what a dashboard sets ``speech_active_sessions`` against, and the
    locale of a pod's metrics that have none (a recognizer serves its SpeechToText's)."""

    def __init__(self, admission: Admission, models: ModelRegistry) -> None:
        self.admission, self.models = admission, models

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("speech_decoders_max", "Recognitions that may hold a decoder at once (DecoderMaxCount, "
                                "/sessions' decoders)", value=self.admission.limit)
        loaded = self.models.loaded
        family = GaugeMetricFamily("speech_locale_loaded", "Each locale this process serves: 1 once its model is "
                                   "loaded, 0 while it loads or when it could not be loaded", labels=["locale"])
        for locale in dict.fromkeys([*self.models.wanted, *loaded]):
            family.add_metric([locale], int(locale in loaded))
        yield family


class _SpillCollector:
    """The /vosk read-ahead's temporary files against their budget (:mod:`.scratch`: the pod's /tmp is sized by it)."""

    def __init__(self, budget: inbox.SpillBudget) -> None:
        self.budget = budget

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("speech_read_ahead_spill_budget_bytes", "Most bytes the /vosk streams' temporary files "
                                "of audio read ahead may take together (64 MiB per decoder)", value=self.budget.limit())
        yield CounterMetricFamily("speech_read_ahead_spill_held", "Times a /vosk stream was held back (not read on, "
                                  "nothing lost) because the streams' temporary files took their budget",
                                  value=self.budget.held_total)


class _HttpConnectionsCollector:
    """``Http:MaxConnections`` (:mod:`.connection_cap`): how near the cap the plain HTTP connections are."""

    def __init__(self, cap: ConnectionCap) -> None:
        self.cap = cap

    def collect(self) -> Iterator[Metric]:
        cap = self.cap
        yield GaugeMetricFamily("speech_http_connections", "Plain HTTP connections open now within the cap (Http:MaxConnections)",
                                value=cap.open)
        yield GaugeMetricFamily("speech_http_connections_max", "Most plain HTTP connections kept open at once (Http:MaxConnections)",
                                value=cap.limit)
        yield GaugeMetricFamily("speech_http_idle_connections", "Plain HTTP connections open now within the cap that wait "
                                "for a request head of which nothing came (kept alive between requests, or new): the "
                                "ones closed first to make room at the cap", value=cap.idle)
        yield CounterMetricFamily("speech_http_idle_connections_closed", "Idle plain HTTP connections closed to make room "
                                  "for new ones at the cap", value=cap.reclaimed)
        yield CounterMetricFamily("speech_http_connections_closed_past_cap", "Plain HTTP connections past the cap closed "
                                  "unanswered to make room for newer ones past it", value=cap.shed)


class _HeapCollector:
    """The process's heap trims (:mod:`.heap`): memory given back to the system after recognizers are dropped."""

    def __init__(self, trimmer: heap.HeapTrimmer) -> None:
        self.trimmer = trimmer

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("speech_heap_trims", "Heap trims (malloc_trim) after recognizers were dropped", value=self.trimmer.count)
        yield CounterMetricFamily("speech_heap_trim_seconds", "Seconds spent trimming the heap, on its own thread", value=self.trimmer.seconds)
