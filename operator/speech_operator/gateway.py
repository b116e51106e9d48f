"""``speech-operator gateway``: one endpoint for every locale.

Serves every recognition route of the recognizer, on the recognizer's port, and forwards each
request or stream to the Service of the SpeechToText whose ``spec.locale`` matches the request's
``language`` (:mod:`speech_operator.gateway_directory`, fed by a watch):

- ``POST /speech/recognition/{interactive,conversation,dictation}/cognitiveservices/v1`` (REST
  short audio) and the same paths as WebSockets (the Speech SDK: an unmodified app pointed at the
  gateway works for every locale, its language comes in the upgrade's query);
- ``/vosk`` and ``/`` as WebSockets (vosk-server clients), ``?language=``;
- ``POST /v1/audio/transcriptions`` (OpenAI's clients), routed by the form's ``language`` field,
  else ``?language=`` (:mod:`speech_operator.gateway_openai`);
- ``/demo``: the recognizer's live demo page, rendered here with every locale routed (its scripts
  are the recognizer's own files; its ``/vosk`` WebSocket is relayed like any other).

Relaying is :mod:`speech_operator.gateway_relay`; refusals are :mod:`speech_operator.gateway_failures`; what a
connection may hold, and how many are served at once, :mod:`speech_operator.gateway_http_limits` and
:mod:`speech_operator.gateway_connections`; browsers on another origin (CORS), :mod:`speech_operator.gateway_cors`.
Its own routes: ``/ready`` (200 once the SpeechToTexts have been listed), ``/status`` (liveness),
``/metrics`` (Prometheus), ``/pre-stop`` (the pod's preStop hook), ``GET /`` (the locales routed).
On SIGTERM it stops listening; streams in progress go on for up to ``shutdown_seconds``, and each
relayed WebSocket is closed with 1000 as soon as it is idle (a Speech SDK app between recognitions
then connects again, to another gateway); what is held for a wake is answered at once (503 / 1013),
so the gateway exits once nothing runs, within ``shutdown_seconds`` and a few seconds
(:mod:`speech_operator.gateway_shutdown`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger, AbstractResolver
from aiohttp.typedefs import Handler
from kubernetes_asyncio import client as k8s
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from speech_operator import gateway_failures as failures
from speech_operator import gateway_openai
from speech_operator.config import env_number
from speech_operator.gateway_connections import PROBE_ROUTES as PROBE_ROUTES_ANSWERED
from speech_operator.gateway_connections import ConnectionCap
from speech_operator.gateway_cors import Cors, is_preflight
from speech_operator.gateway_directory import Backend, Directory, SpeechToTextWatch
from speech_operator.gateway_http_limits import ROUTE as HEAD_ROUTE
from speech_operator.gateway_http_limits import (
    STALL_SECONDS,
    GuardedSite,
    HeadGuard,
    HeadLimits,
    client_failure,
    client_leaves,
    drop_the_rest,
    unreported,
)
from speech_operator.gateway_openai import FormLimits
from speech_operator.gateway_relay import (
    DEFAULT_READ_AHEAD_BYTES,
    MAX_MESSAGE_BYTES,
    SKIPPED_AUTO_HEADERS,
    Answered,
    Connected,
    Failed,
    Traffic,
    accepting,
    client_got,
    head_over,
    offered_protocols,
    read_refusals,
    refuse,
    refuse_accepted,
    relay_accepted,
    relay_http,
    relay_websocket,
)
from speech_operator.gateway_shutdown import AFTER_DRAIN_SECONDS, CLOSE_REPLY_SECONDS, STOPPED_DRAINED, Progress, Shutdown
from speech_operator.gateway_wake import Waker, hold_websocket
from speech_recognizer import contract, cors, demo, errors, logs
from speech_recognizer import serving as recognizer_serving
from speech_recognizer.addresses import Network, client, proxies
from speech_recognizer.models import UnknownLocale
from speech_recognizer.serving import KEEPALIVE_SECONDS, listening_on, listening_socket
from speech_recognizer.settings import declared
from speech_recognizer.usp import refusal as usp_refusal

log = logging.getLogger("speech_operator.gateway")

#: Routes polled by probes and scrapers: their access lines are at DEBUG.
PROBE_ROUTES = frozenset({contract.ROUTE_READY, contract.ROUTE_STATUS, contract.ROUTE_METRICS})
USP_PROTOCOL = "USP"
#: The least read buffer and WebSocket message size (a Speech SDK audio message is about 3.2 kB).
MIN_BUFFER_BYTES = 4096


ENV_PREFIX = "SPEECH_GATEWAY_"
#: The bounds of the settings the gateway shares with the recognizer (its ``Http:`` settings' own).
_HEADER_SECONDS = (declared("http_header_timeout_seconds").minimum, declared("http_header_timeout_seconds").maximum)
_HEADER_BYTES = (declared("http_max_header_bytes").minimum, declared("http_max_header_bytes").maximum)
_BODY_PAUSE_SECONDS = (FormLimits.MINIMUMS["pause_seconds"], declared("http_body_timeout_seconds").maximum)


def _setting(default: Any, help: str, minimum: float | None = None, maximum: float | Callable[[], float] | None = None) -> Any:
    """A field of :class:`GatewayConfig`: its default, its bounds and its help, said once (its variable is
    ``SPEECH_GATEWAY_`` and the field's name in capitals: :meth:`GatewayConfig.variables`). A ``maximum`` that is
    another module's setting is declared as a function reading it, read at each check (:meth:`GatewayConfig.bounds`)."""
    return field(default=default, metadata={"help": help, "minimum": minimum, "maximum": maximum})


@dataclass(frozen=True)
class GatewayConfig:
    """The gateway's settings: ``SPEECH_GATEWAY_*`` variables (:meth:`from_env`), host and port also flags of
    ``speech-operator gateway``; each declared once here (default, least value, help), which ``--help`` lists. A number out
    of its bounds is a :class:`ValueError` naming its variable however the config is made (from the environment or directly)."""

    host: str = _setting(contract.EVERY_ADDRESS, "address to listen on: * (every address, IPv6 and IPv4; IPv4 alone where "
                         "the kernel has no IPv6), :: (IPv6 and IPv4; fails without IPv6), 0.0.0.0 (IPv4 only) or one address")
    port: int = _setting(contract.PORT, "port to listen on: the recognizer's, so clients change only the host (0: any free one)",
                         0, 65535)
    connect_seconds: float = _setting(10.0, "how long a connection to a recognizer may take before the request is refused (503 / 1013)", 0.001)
    shutdown_seconds: float = _setting(
        30.0, "on SIGTERM: how long streams and recognition requests in progress may go on before they are closed (idle ones "
        f"are closed, held ones answered, at once); the whole stop takes at most this and {AFTER_DRAIN_SECONDS:g} s more", 0, 3600)
    hold_seconds: float = _setting(120.0, "how long a request for a locale with no ready pod (at zero, or starting) is held before 503 / 1013",
                                   0, 3600)
    max_held: int = _setting(100, "requests held at once, at most; the next one gets 503 / 1013 at once", 0)
    header_seconds: float = _setting(HeadLimits.header_seconds, "how long a request head may take from its first byte (a new "
                                     "connection's from its opening) before 408", *_HEADER_SECONDS)
    max_header_bytes: int = _setting(HeadLimits.max_header_bytes, "largest request head (request line and headers), in bytes, as it comes and as relayed "
                                     "(the gateway's own headers in: keep it at most the recognizers' Http:MaxHeaderBytes); larger gets 431",
                                     *_HEADER_BYTES)
    form_buffer_bytes: int = _setting(FormLimits.buffer_bytes, "an OpenAI form whose file comes before its language field is read "
                                      "ahead up to this many bytes to find it; past them, 413 (at most SPEECH_GATEWAY_FORM_BUDGET_BYTES and "
                                      "64 KiB)", FormLimits.MINIMUMS["buffer_bytes"])
    form_budget_bytes: int = _setting(FormLimits.budget_bytes, "bytes of OpenAI forms read ahead at once, all requests together (each "
                                      "one's first 64 KiB not counted); past them, 503", FormLimits.MINIMUMS["budget_bytes"])
    form_read_seconds: float = _setting(FormLimits.read_seconds, "how long an OpenAI form read ahead may take to reach the point where "
                                        "its locale is known; later, 408", FormLimits.MINIMUMS["read_seconds"])
    form_pause_seconds: float = _setting(FormLimits.pause_seconds, "longest pause between two pieces of an OpenAI form read ahead, in "
                                         "seconds; longer, 408", *_BODY_PAUSE_SECONDS)
    max_connections: int = _setting(200, "client connections served at once; past them an idle one (no request under way; one whose "
                                    "answers are not being read first, else the longest idle) "
                                    "is closed to make room, and when none is idle a probe or scrape is still answered, "
                                    "anything else gets 503 / 1013 (the default fits the pod's 256 MiB)", 1)
    read_buffer_bytes: int = _setting(DEFAULT_READ_AHEAD_BYTES, "bytes read ahead of each client connection before it is no longer read (aiohttp's "
                                      "buffer, which holds up to twice this of a body, and the socket's receive buffer); also each of "
                                      "its sockets' send buffer, and both buffers of its connection to the recognizer; of a relayed WebSocket, the "
                                      "messages held read and not yet relayed, and the bytes held unsent each way (a message always whole)",
                                      MIN_BUFFER_BYTES)
    max_message_bytes: int = _setting(64 * 1024, "largest WebSocket message taken from a client (each is held whole before it is "
                                      "relayed); larger gets close 1009", MIN_BUFFER_BYTES, MAX_MESSAGE_BYTES)
    send_stall_seconds: float = _setting(STALL_SECONDS, "a client that takes in none of what the gateway sends it for this "
                                         "long, while those sends wait (its window shut), has its connection reset "
                                         "(not_reading; a slow reader is not cut): the recognizers' AudioIdleSeconds "
                                         "default, their own bound on a client that reads nothing; at most the "
                                         "kernel's bound on such a connection (TCP_USER_TIMEOUT), when it gives it up", 1,
                                         lambda: recognizer_serving.DEAD_PEER_SECONDS)
    trusted_proxies: str = _setting("", "comma-separated addresses and CIDRs of proxies whose X-Forwarded-For names the client in "
                                    "the access log, and whose X-Forwarded-Proto and -Host the recognizers get (the ingress "
                                    "controller's pods); empty: none, the log names the peer; a client of any other address "
                                    "cannot name itself, nor the scheme and host a recognizer is told (the gateway's own are)")
    cors_origins: str = _setting("", "comma-separated origins of web pages that may call the REST and OpenAI routes from a browser "
                                 "(https://app.example.com), or * for any: the gateway answers their preflights and its answers "
                                 "are readable to them (no credentials); empty: no CORS headers, browsers refuse such calls "
                                 "(the recognizers' Http:CorsOrigins)")

    def __post_init__(self) -> None:
        for f in fields(self):  # built from the environment, a flag or directly: each number within its declared bounds
            if f.type in ("int", "float"):
                self.bounded(f.name, getattr(self, f.name), f"{ENV_PREFIX}{f.name.upper()}={getattr(self, f.name)!r}")
        try:
            self.trusted  # noqa: B018 - read once, here, and kept: a wrong value stops the gateway as it starts
        except ValueError as exc:
            raise ValueError(f"{ENV_PREFIX}TRUSTED_PROXIES={self.trusted_proxies!r}: {exc}") from None
        try:
            self.cors  # noqa: B018 - as trusted, above
        except ValueError as exc:
            raise ValueError(f"{ENV_PREFIX}CORS_ORIGINS={self.cors_origins!r}: {exc}") from None
        if not self.form_limits.buffer_fits_the_budget():
            uncounted = gateway_openai.UNCOUNTED_BYTES
            raise ValueError(
                f"{ENV_PREFIX}FORM_BUFFER_BYTES={self.form_buffer_bytes} must be at most {ENV_PREFIX}FORM_BUDGET_BYTES="
                f"{self.form_budget_bytes} and the {uncounted} bytes each form reads ahead uncounted "
                f"({self.form_budget_bytes + uncounted}): a form read ahead that far would get 503 (forms_held) every time, not 413")

    @property
    def head_limits(self) -> HeadLimits:
        return HeadLimits(max_header_bytes=self.max_header_bytes, header_seconds=self.header_seconds)

    @functools.cached_property
    def trusted(self) -> tuple[Network, ...]:
        """:attr:`trusted_proxies` read (:func:`~speech_recognizer.addresses.proxies`), once per config."""
        return proxies(self.trusted_proxies)

    @functools.cached_property
    def cors(self) -> tuple[str, ...]:
        """:attr:`cors_origins` read (:func:`~speech_recognizer.cors.origins`), once per config."""
        return cors.origins(self.cors_origins)

    @property
    def form_limits(self) -> FormLimits:
        return FormLimits(buffer_bytes=self.form_buffer_bytes, budget_bytes=self.form_budget_bytes,
                          read_seconds=self.form_read_seconds, pause_seconds=self.form_pause_seconds)

    @classmethod
    def variables(cls) -> dict[str, Field[Any]]:
        """Each setting's variable (``SPEECH_GATEWAY_CONNECT_SECONDS``) and its field."""
        return {ENV_PREFIX + f.name.upper(): f for f in fields(cls)}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewayConfig:
        """The settings from ``SPEECH_GATEWAY_*`` variables (:meth:`variables`); an empty one means the default.
        Raises :class:`ValueError` naming the variable for a value that is no number or out of its bounds."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, f in cls.variables().items():
            if f.type in ("int", "float"):
                values[f.name] = env_number(env, name, int if f.type == "int" else float, getattr(cls, f.name), f.metadata["minimum"])
                cls.bounded(f.name, values[f.name], f"{name}={env.get(name)!r}")
            else:
                values[f.name] = env.get(name) or getattr(cls, f.name)
        return cls(**values)

    @staticmethod
    def bounds(f: Field[Any]) -> tuple[float | None, float | None]:
        """The least and the most a number setting ``f`` may be (None: unbounded), as declared (:func:`_setting`), a
        maximum declared as a function read now: ``SPEECH_GATEWAY_SEND_STALL_SECONDS``' is the kernel's bound on a peer
        that takes in nothing, :data:`~speech_recognizer.serving.DEAD_PEER_SECONDS`, whatever it is when checked."""
        maximum = f.metadata["maximum"]
        return f.metadata["minimum"], maximum() if callable(maximum) else maximum

    @classmethod
    def bounded(cls, name: str, value: float, said: str) -> Any:
        """``value`` for the field ``name`` (from a variable, or a flag: ``said`` says which and as given); raises
        :class:`ValueError` naming the bound it breaks when it is out of that field's bounds (:meth:`bounds`)."""
        minimum, maximum = cls.bounds(next(f for f in fields(cls) if f.name == name))
        if minimum is not None and not value >= minimum:  # NaN too
            raise ValueError(f"{said} must be at least {minimum:g}")
        if maximum is not None and value > maximum:
            raise ValueError(f"{said} must be at most {maximum}")
        return value

    @classmethod
    def help(cls) -> str:
        """The settings as ``--help`` lists them: variable, default, least value, what it does."""
        lines = ["settings (environment variables; unset or empty: the default):"]
        for name, f in cls.variables().items():
            minimum, maximum = cls.bounds(f)
            bound = "" if minimum is None else f", at least {minimum:g}"
            bound += "" if maximum is None else f", at most {maximum}"
            default = f"{f.default:g}" if isinstance(f.default, float) else str(f.default)
            lines.append(f"  {name}  (default {default}{bound})")
            lines.append(f"      {f.metadata['help']}")
        return "\n".join(lines)


class GatewayMetrics:
    """The gateway's Prometheus metrics (a registry of its own)."""

    def __init__(self, directory: Directory, waker: Waker, connections: ConnectionCap) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "speech_gateway_requests", "Requests and streams by route, locale and outcome: the HTTP status, "
            "or for a WebSocket the close code the client got", ["route", "locale", "code"], registry=self.registry)
        self.streams = Gauge("speech_gateway_streams", "WebSocket streams being relayed, their client still there",
                             ["route"], registry=self.registry)
        self.closing = Gauge("speech_gateway_streams_closing", "WebSocket streams whose client is gone (closed, or its "
                             "connection ended) while the gateway still closes the recognizer's side: its close reply "
                             "awaited, for at most SPEECH_GATEWAY_SEND_STALL_SECONDS", ["route"], registry=self.registry)
        self.failures = Counter("speech_gateway_failures", "Requests refused or relays broken, by reason and by the "
                                "locale routed to (- for a request refused before its locale was known: an unknown one, a "
                                "mode not served, a head refused, a connection past the cap)",
                                ["reason", "locale"], registry=self.registry)
        relayed = Counter("speech_gateway_relayed_bytes", "Bytes relayed (message payloads and bodies)",
                          ["direction"], registry=self.registry)
        self.traffic = Traffic(to_recognizer=relayed.labels("to_recognizer").inc,
                               to_client=relayed.labels("to_client").inc)
        self.woken = Histogram(
            "speech_gateway_held_seconds", "Seconds requests were held for a locale with no ready pod (waking from "
            "zero, or starting) before they were forwarded", ["locale"], registry=self.registry,
            buckets=(0.5, 1, 2.5, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180))
        self.latency = Histogram(
            "speech_gateway_request_seconds", "Seconds from a request's head to its answer, by route (rest, openai: "
            "its upload, a wake, the recognizer's decoding, the answer relayed; usp, vosk: a WebSocket, to its "
            "recognizer's acceptance of the connection, after a wake, or its refusal: at the upgrade, or its close before "
            "any message) and outcome (ok, or the class of "
            "the failure: client, capacity, fault; a recognizer's refusal by the kind it names; a Speech SDK's repeat of a "
            "turn that failed, which the recognizer says, not timed), by the locale routed to "
            "(- for a request refused before its locale was known: an unknown one, a mode not served, a head refused)",
            ["route", "locale", "outcome"], registry=self.registry, buckets=LATENCY_BUCKETS)
        self.registry.register(_DirectoryCollector(directory, waker, connections))

    def timed(self, request: web.Request, route: str, locale: str | None, outcome: str, at: float | None = None) -> None:
        """Observe ``speech_gateway_request_seconds{route,locale,outcome}`` of ``request``, once (its first outcome: a
        stream whose recognizer sent a message, then lost, was ok), from its head (:meth:`Gateway.admit`) to ``at``
        (:func:`time.monotonic`; None: now); ``locale``: the SpeechToText's it was routed to (a bounded label: the
        locales routed), None before one was found (``-``, as ``speech_gateway_requests_total`` counts it)."""
        started = request.pop(STARTED, None)
        if started is not None:
            self.latency.labels(route, locale or "-", outcome).observe((time.monotonic() if at is None else at) - started)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


#: When a request's head came (:meth:`Gateway.admit`), until its time is observed (:meth:`GatewayMetrics.timed`).
STARTED = web.RequestKey("started", float)
#: When the recognizer accepted a relayed WebSocket (its 101 naming no failure): the stream's time, observed once the
#: recognizer's first message or close says its outcome (:meth:`Gateway._answered`).
ACCEPTED = web.RequestKey("accepted", float)
#: When the recognizer accepted a Speech SDK stream only to refuse it (its 101 naming the failure: a drain, its
#: ``MaxConnections``), and that refusal's outcome: observed once its turn says whether it is the SDK asking again
#: (:meth:`Gateway._answered`), timed to the 101.
REFUSING = web.RequestKey("refusing", tuple[float, str])
#: The kind of the failure counted for a request or stream (:meth:`Gateway._count`: one, the first met).
COUNTED = web.RequestKey("counted", str)
#: ``speech_gateway_request_seconds``: from a WebSocket's connection made in milliseconds, and a REST answer of a short
#: recording, to a wake from zero or a long upload decoded.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)


def outcome(kind: failures.Kind) -> str:
    """The ``outcome`` of a failure of ``kind``: its class (:attr:`~speech_recognizer.errors.Kind.alert`: ``capacity``,
    ``fault``), else ``client`` (the client's doing, or normal operation), as the recognizer's ``speech_request_seconds``."""
    return kind.alert or "client"


def answered(status: int, named: str | None = None) -> str:
    """The ``outcome`` of a recognizer's answer (relayed; a WebSocket's 101) of HTTP ``status``, its
    :data:`~speech_recognizer.errors.FAILURE_HEADER` ``named`` the kind: ``ok`` below 400, else the class of that kind
    (:func:`~speech_operator.gateway_failures.answered_kind`: a 503 ``busy`` capacity, ``draining`` the client's,
    ``model_unavailable`` a fault; a 101 naming one: a stream the recognizer accepted only to close it, a drain or
    its ``MaxConnections``), or of the kind answered with that status when none is named (503 busy, 500 internal, 4xx
    the client's), else ``capacity`` for a 429 (try later), ``fault`` for a 5xx and ``client`` for a 4xx."""
    if status == 101 and (kind := failures.BY_NAME.get(named or "")) is not None:
        return outcome(kind)  # a stream accepted only to be closed with that failure (a drain, a full recognizer)
    if status < 400:
        return "ok"
    if (kind := failures.answered_kind(status, named)) is not None:
        return outcome(kind)
    return errors.CAPACITY if status == 429 else errors.FAULT if status >= 500 else "client"


def closed(code: int, reason: bytes) -> str:
    """The ``outcome`` of a stream the recognizer closed with ``code`` and ``reason`` before it sent any message: the
    class of the kind it names, else of its code's (:func:`~speech_operator.gateway_failures.closed_kind`: a model that
    cannot be loaded a fault, every decoder busy capacity, a connection let go idle the client's); ``ok`` for a code no
    kind has."""
    kind = failures.closed_kind(code, reason.decode(errors="replace"))
    return "ok" if kind is None else outcome(kind)


class _DirectoryCollector:
    def __init__(self, directory: Directory, waker: Waker, connections: ConnectionCap) -> None:
        self.directory = directory
        self.waker = waker
        self.connections = connections

    def collect(self) -> Iterator[Metric]:
        ready = GaugeMetricFamily("speech_gateway_backend_ready_pods", "Ready pods of each SpeechToText routed to",
                                  labels=["locale", "namespace", "name"])
        for b in self.directory.backends():
            ready.add_metric([b.locale, b.namespace, b.name], b.ready_replicas)
        yield ready
        yield GaugeMetricFamily("speech_gateway_held", "Requests held now for a locale with no ready pod", value=self.waker.held)
        yield GaugeMetricFamily("speech_gateway_connections", "Client connections open now within the cap (every kind)",
                                value=self.connections.open)
        yield GaugeMetricFamily("speech_gateway_connections_max", "Client connections served at once, at most "
                                "(SPEECH_GATEWAY_MAX_CONNECTIONS)", value=self.connections.limit)
        yield GaugeMetricFamily("speech_gateway_idle_connections", "Client connections open now within the cap that wait "
                                "for a request head of which nothing came (kept alive between requests, or new): the "
                                "ones closed first to make room at the cap", value=self.connections.idle)
        yield CounterMetricFamily("speech_gateway_idle_connections_closed", "Idle client connections (waiting for a request "
                                  "head of which nothing came) closed to make room for a new one at the cap",
                                  value=self.connections.reclaimed)
        yield CounterMetricFamily("speech_gateway_connections_closed_past_cap", "Client connections past the cap (each read "
                                  "for its one answer: a probe's, or 503 / 1013) closed without an answer to make room "
                                  "for a newer one, at most as many being open past the cap as within it",
                                  value=self.connections.shed)


def language_of(request: web.Request) -> str | None:
    """The request's ``language`` (or ``locale``) query parameter, any case of the name; for a Speech SDK app with an
    ``AutoDetectSourceLanguageConfig``, the first language of its ``lidEnabled`` (the SDK then sends ``language=en-us``
    whatever the app set): the recognizer serves one such language, and refuses several naming them."""
    query = {k.lower(): v for k, v in request.query.items()}
    candidates = [c.strip() for c in query.get("lidenabled", "").split(",") if c.strip()]
    return (candidates[0] if candidates else None) or query.get("language") or query.get("locale") or None


class Gateway:
    """The handlers, over a :class:`Directory` and one HTTP client to the recognizers."""

    def __init__(self, directory: Directory, config: GatewayConfig, resolver: AbstractResolver | None = None,
                 api_client: k8s.ApiClient | None = None) -> None:
        self.directory = directory
        self.config = config
        #: The proxies whose ``X-Forwarded-For`` the access log takes (:class:`AccessLog`), and whose ``X-Forwarded-Proto``
        #: and ``-Host`` the relay passes on (:func:`~speech_operator.gateway_relay.forwarded_headers`), read once.
        self.trusted = config.trusted
        self.waker = Waker(directory, api_client, config.hold_seconds, config.max_held)
        #: Client connections open, against ``max_connections`` (counted by the listening site's guards).
        self.connections = ConnectionCap(config.max_connections)
        self.metrics = GatewayMetrics(directory, self.waker, self.connections)
        #: Bytes of OpenAI forms read ahead for their language, all requests together (bounded).
        self.forms = gateway_openai.FormBudget(config.form_budget_bytes)
        #: The Speech SDK connections this gateway refuses now, read for their request (its own places among
        #: ``MAX_WAITING``; the stop answers them at once).
        self.refusals = usp_refusal.Waiting()
        #: The stop, as the relays see it (:func:`serving` drains it before aiohttp's shutdown).
        self.shutdown = Shutdown(self.refusals)
        #: Browsers on another origin: their preflights answered, and the headers of every answer (``cors_origins``).
        self.cors = Cors(config.cors)
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "the app has not started"
        return self._session

    async def client(self, app: web.Application) -> AsyncIterator[None]:
        """The recognizers' client, for the app's lifetime (aiohttp ``cleanup_ctx``).

        Every request and WebSocket goes out on a new connection, none is kept for the next (``force_close``; a
        REST request says ``Connection: close``, so that the recognizer closes first and the TIME_WAIT is its): every
        one the gateway relays is a recognition, and a connection kept from before may be to a pod whose deletion
        began (it left the Service's endpoints, and refuses new work once it drains) or that is closing it (a POST
        sent on it then fails: aiohttp retries none). A new connection goes through the Service to a ready pod; what it
        costs is in bench/notes.md. It keeps no cookies: a recognizer's ``Set-Cookie`` is for the client that got it,
        and a client's ``Cookie`` lines go on as they came (:func:`~speech_operator.gateway_relay.forwarded_headers`).
        A refused WebSocket upgrade's body is read for its client (:func:`~speech_operator.gateway_relay.read_refusals`)."""
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=10, resolver=self._resolver, force_close=True,
                                         socket_factory=self._upstream_socket)
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, skip_auto_headers=SKIPPED_AUTO_HEADERS, middlewares=(read_refusals,),
            cookie_jar=aiohttp.DummyCookieJar(), timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.config.connect_seconds))
        try:
            yield
        finally:
            await self._session.close()

    def _upstream_socket(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """A connection to a recognizer whose send and receive buffers are ``read_buffer_bytes`` (the kernel's, which
        doubles it): what a relay holds of a body the recognizer reads slowly, and of answers its client does not read,
        not the megabytes the kernel would grow them to."""
        family, kind, proto, _, _ = addr_info
        sock = socket.socket(family=family, type=kind, proto=proto)
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, self.config.read_buffer_bytes)
        return sock

    # ---- recognition routes ---------------------------------------------------------------------
    async def recognition(self, request: web.Request) -> web.StreamResponse:
        """``/speech/recognition/{mode}/cognitiveservices/v1``: REST (POST) or the Speech SDK (WebSocket)."""
        mode = request.match_info["mode"]
        if mode not in contract.RECOGNITION_MODES:  # as a recognizer answers it: 404, or on an upgrade the close 1007
            failure = failures.Failure(f"no recognition mode {mode[:40]!r}; use one of {', '.join(contract.RECOGNITION_MODES)}",
                                       failures.NOT_FOUND)
            if _is_upgrade(request):
                protocols = (USP_PROTOCOL,) if USP_PROTOCOL in offered_protocols(request) else ()
                return await self._refused_ws(request, failure, "usp", None, protocols)
            return self._refused_http(request, failure, "rest", None)
        if _is_upgrade(request):
            return await self.stream(request, "usp")
        if request.method != "POST":
            raise web.HTTPMethodNotAllowed(request.method, ["POST"])
        with self.shutdown.requesting():  # its upload, a wake, the answer: a stop waits for it
            return await self.rest(request)

    async def vosk(self, request: web.Request) -> web.StreamResponse:
        """``/vosk`` and ``/``: the vosk-server protocol; a plain ``GET /`` is the home page."""
        if _is_upgrade(request):
            return await self.stream(request, "vosk")
        if request.path != contract.ROUTE_HOME:
            raise web.HTTPBadRequest(text="this route is a WebSocket: connect with ws://")
        return web.json_response({"service": "speech-operator gateway", "locales": self.directory.locales,
                                  "routes": {"rest": "POST /speech/recognition/{mode}/cognitiveservices/v1?language=",
                                             "speech-sdk": "ws /speech/recognition/{mode}/cognitiveservices/v1?language=",
                                             "vosk": "ws /vosk?language=",
                                             "openai": "POST /v1/audio/transcriptions (form field language)",
                                             "demo": "GET /demo"}})

    async def not_served(self, request: web.Request) -> web.StreamResponse:
        """``contract.NOT_SERVED_PATHS``: a Speech SDK service no recognizer serves (translation, conversation
        transcription, synthesis), refused as a recognizer refuses it: closed with 1007 naming the service once the
        client's request begins (a plain request: 400)."""
        failure = errors.unserved_service(contract.NOT_SERVED_PATHS[request.path])
        if not _is_upgrade(request):
            return self._refused_http(request, failure, "usp", None)
        protocols = (USP_PROTOCOL,) if USP_PROTOCOL in offered_protocols(request) else ()
        return await self._refused_ws(request, failure, "usp", None, protocols)

    async def openai(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/audio/transcriptions``: routed by the form's ``language``, else ``?language=``, else
        the only locale; refusals in OpenAI's error shape, as the recognizer gives them."""
        with self.shutdown.requesting():  # its upload, a wake, the answer: a stop waits for it
            return await self._openai(request)

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        query_language = language_of(request)
        try:
            scanned = await gateway_openai.scan(request, bool(query_language) or len(self.directory.locales) == 1, self.forms,
                                                self.config.form_limits)
        except failures.Failure as exc:  # answered before the body is all in: the rest is dropped, then the close
            drop_the_rest(request)
            return self._refused_http(request, exc, "openai", None, openai=True, closing=True)
        try:
            backend = self.directory.lookup(scanned.language or query_language,
                                            missing="add the form field language=<locale> (or ?language=<locale>)")
        except failures.Failure as exc:
            scanned.release()
            return self._refused_http(request, exc, "openai", None, openai=True)
        if (refused := self._head_refused(request, backend, "openai")) is not None:
            scanned.release()
            return refused
        try:
            backend = await self._woken_for(request, backend)
            response = await relay_http(request, backend, self.session, self.metrics.traffic, scanned.body(request), self.shutdown,
                                        trusted=self.trusted, failed=self._failed("openai", backend, request))
        except failures.Failure as failure:
            return self._refused_http(request, failure, "openai", backend, openai=True)
        finally:
            scanned.release()
        return self._relayed(request, response, "openai", backend)

    async def demo(self, request: web.Request) -> web.Response:
        """The live demo page, its picker offering every locale routed (the key asked for when one
        whose SpeechToText names a key Secret is picked)."""
        locales = self.directory.locales
        keyed = {b.locale for b in self.directory.backends() if b.keyed}
        note = "" if locales else "No SpeechToText is routed yet: create one, then reload this page."
        return web.Response(text=demo.render(locales, keyed, note, server="speech-operator gateway", reference=False),
                            content_type="text/html")

    async def demo_file(self, request: web.Request) -> web.StreamResponse:
        """The demo page's scripts: the recognizer package's own files."""
        name = request.match_info["file"]
        if name not in demo.FILES:
            failure = failures.Failure(f"no file {name!r}; the demo's files are {', '.join(demo.FILES)}", failures.NOT_FOUND)
            return failures.http_response(failure)
        return web.FileResponse(demo.STATIC / name, headers={"Content-Type": demo.FILES[name], "Cache-Control": "no-cache"})

    async def rest(self, request: web.Request) -> web.StreamResponse:
        try:
            backend = self.directory.lookup(language_of(request))
        except UnknownLocale as exc:
            return self._refused_http(request, exc, "rest", None)
        if (refused := self._head_refused(request, backend, "rest")) is not None:
            return refused
        try:
            backend = await self._woken_for(request, backend)
            response = await relay_http(request, backend, self.session, self.metrics.traffic, shutdown=self.shutdown,
                                        trusted=self.trusted, failed=self._failed("rest", backend, request))
        except failures.Failure as failure:
            return self._refused_http(request, failure, "rest", backend)
        return self._relayed(request, response, "rest", backend)

    def _head_refused(self, request: web.Request, backend: Backend, route: str,
                      protocols: tuple[str, ...] | None = None) -> web.Response | None:
        """431 if the head the relay would send the recognizer is over its bounds (:func:`head_over`; ``protocols``: a
        WebSocket's upgrade offering them), answered as a recognizer answers a head over them, before any route (an
        upgrade refused over HTTP, an OpenAI request not in OpenAI's shape) and then closing, its body dropped; None if not."""
        failure = head_over(request, backend, self.config.max_header_bytes, self.trusted, protocols)
        if failure is None:
            return None
        drop_the_rest(request)
        return self._refused_http(request, failure, route, backend, closing=True)

    def _relayed(self, request: web.Request, response: web.StreamResponse, route: str, backend: Backend) -> web.StreamResponse:
        """Count a relayed answer; a failure of the client's side once it had begun (its body refused, the
        client gone: the relay cut the connection) is reported too."""
        failure = client_failure(request)
        if failure is not None:
            self._count(failure, route, backend, request)
        self.metrics.requests.labels(route, backend.locale, str(response.status)).inc()
        self.metrics.timed(request, route, backend.locale, answered(response.status, response.headers.get(errors.FAILURE_HEADER)))
        return response

    async def stream(self, request: web.Request, route: str) -> web.StreamResponse:
        """Relay a WebSocket (``route``: ``usp`` or ``vosk``) to the recognizer of its language."""
        protocols = (USP_PROTOCOL,) if route == "usp" and USP_PROTOCOL in offered_protocols(request) else ()
        try:
            backend = self.directory.lookup(language_of(request))
        except UnknownLocale as exc:
            return await self._refused_ws(request, exc, route, None, protocols)
        if (refused := self._head_refused(request, backend, route, offered_protocols(request))) is not None:
            return refused
        if self.shutdown.drained:  # nothing waits for a stream now: aiohttp's shutdown would cut it without a close
            return await self._refused_ws(request, STOPPED_DRAINED, route, backend, protocols)
        streams, closing = self.metrics.streams.labels(route), self.metrics.closing.labels(route)
        streams.inc()
        left: list[bool] = []

        def leave() -> None:  # the client is gone: not its load any more, the recognizer's close still awaited
            left.append(True)
            streams.dec()
            closing.inc()

        try:
            with self.shutdown.relaying(route, leave) as progress:
                if backend.ready_replicas > 0:
                    response = await relay_websocket(request, backend, self.session, self.metrics.traffic, progress,
                                                     self.config.max_message_bytes, trusted=self.trusted,
                                                     read_ahead_bytes=self.config.read_buffer_bytes,
                                                     failed=self._failed(route, backend, request),
                                                     connected=self._connected(request, route, backend),
                                                     answered=self._answered(request, route, backend))
                else:
                    response = await self._held_stream(request, backend, route, protocols, progress)
        except failures.Failure as failure:
            return await self._refused_ws(request, failure, route, backend, protocols)
        finally:
            (closing if left else streams).dec()
            if (accepted := request.get(ACCEPTED)) is not None:  # ended before the recognizer said more (the client's close)
                self.metrics.timed(request, route, backend.locale, "ok", at=accepted)
            if (refusing := request.pop(REFUSING, None)) is not None:  # a refusal the client left before it was told
                self.metrics.timed(request, route, backend.locale, refusing[1], at=refusing[0])
        # A failure of the gateway's own was counted as it happened (the relay's ``failed``): a close code does not say whose
        # it is (a recognizer's or a client's 1011 is relayed as it came).
        self.metrics.requests.labels(route, backend.locale, str(client_got(response))).inc()
        return response

    async def _woken(self, backend: Backend) -> Backend:
        """``backend`` with a ready pod, after holding the request while it has none (bounded by the
        hold, and by the gateway's stop: :data:`~speech_operator.gateway_failures.STOPPED_HOLDING`)."""
        if backend.ready_replicas > 0:
            return backend
        held = time.monotonic()
        stopped = failures.Failure(f"this gateway stopped while {backend.locale} was waking up; try again "
                                   "(another gateway pod takes it)", failures.STOPPED_HOLDING)
        ready = await self.shutdown.unless_stopping(self.waker.ready(backend), stopped)
        self.metrics.woken.labels(backend.locale).observe(time.monotonic() - held)
        return ready

    async def _woken_for(self, request: web.Request, backend: Backend) -> Backend:
        """:meth:`_woken` for a REST or OpenAI request, unless the client's side fails first: its body (a bad chunk), or
        the client leaves (its body all in or not; one that half-closed has not: :func:`client_leaves`). Then that
        failure at once, not at the wake's end: the client would wait up to ``hold_seconds`` for a 503; one gone was
        held as long (its place among ``max_held`` taken, the operator asked again every few seconds), then relayed to
        the woken recognizer, a decoder spent on nobody. The wake asked for already goes on (such a client most likely
        tries again)."""
        if backend.ready_replicas > 0:
            return await self._woken(backend)
        waking = asyncio.ensure_future(self._woken(backend))
        # ends with the body, or fails with it
        body = asyncio.ensure_future(request.content.wait_eof() if request.body_exists else asyncio.sleep(0))
        leaving = asyncio.ensure_future(client_leaves(request))
        try:
            await asyncio.wait({waking, body, leaving}, return_when=asyncio.FIRST_COMPLETED)
            if not waking.done() and body.done() and body.exception() is not None and (failure := client_failure(request)) is not None:
                raise failure
            if not waking.done() and not leaving.done():  # the body is all in: the client waits for its answer, or leaves
                await asyncio.wait({waking, leaving}, return_when=asyncio.FIRST_COMPLETED)
            if not waking.done():
                raise failures.Failure("the client left while its locale woke, before it had its answer", failures.CLIENT_GONE)
            return await waking
        finally:
            for task in (waking, body, leaving):
                task.cancel()
            await asyncio.gather(waking, body, leaving, return_exceptions=True)

    async def _held_stream(self, request: web.Request, backend: Backend, route: str,
                           protocols: tuple[str, ...], progress: Progress) -> web.WebSocketResponse:
        """A WebSocket for a locale with no ready pod: accepted now (so the client does not time out
        its handshake), held while the locale wakes, then relayed with what it sent meanwhile."""
        client = accepting(protocols[0] if protocols else None, self.config.max_message_bytes, self.config.read_buffer_bytes,
                           self._failed(route, backend, request))
        await client.prepare(request)
        waiting = asyncio.ensure_future(self._woken(backend))
        sent = await hold_websocket(client, waiting, request.transport)
        if sent is None:  # the client left while it waited: client_gone, as a REST request held and left (_woken_for)
            self._count(failures.Failure("the client left while its locale woke, before its stream was relayed",
                                         failures.CLIENT_GONE), route, backend, request)
            await client.close(code=1001)
            return client
        try:
            backend = await waiting
        except failures.Failure as failure:
            self._count(failure, route, backend, request)
            await refuse_accepted(client, failure, sent, usp=route == "usp", refusals=self.refusals)
            return client
        await relay_accepted(client, request, backend, self.session, self.metrics.traffic, progress, sent, trusted=self.trusted,
                             failed=self._failed(route, backend, request), connected=self._connected(request, route, backend),
                             answered=self._answered(request, route, backend), usp=route == "usp", refusals=self.refusals)
        return client

    def _count(self, failure: failures.Failure, route: str, backend: Backend | None, request: web.Request | None = None) -> None:
        """A failure of ``route``'s ``request`` for ``backend``: its log line (the kind's level) and
        ``speech_gateway_failures_total{reason,locale}``, once; the request's time under the kind's class, unless it was
        timed already (:meth:`GatewayMetrics.timed`). A request or stream fails once: a failure met after the one
        counted for it is not counted (one DEBUG line naming both), whatever its kind: a stream the stop cut
        (``gateway_stopped``) whose close, still unsent, the stop's end resets, or the send stall bound resets first
        (``not_reading``); a recognizer lost (``backend_lost``) whose client takes in none of the close that says so."""
        if request is not None:
            if (counted := request.get(COUNTED)) is not None:
                log.debug("%s %s: %s, after %s counted for it: %s", route, backend.locale if backend else "-",
                          failure.kind.name, counted, failure.message)
                return
            request[COUNTED] = failure.kind.name
        failures.report(failure, route, backend.locale if backend else None)
        self.metrics.failures.labels(failure.kind.name, backend.locale if backend else "-").inc()
        if request is not None:
            self.metrics.timed(request, route, backend.locale if backend else None, outcome(failure.kind))

    def _failed(self, route: str, backend: Backend, request: web.Request) -> Failed:
        """What a relay of ``route``'s ``request`` to ``backend`` calls with a failure of the gateway's own that ended it
        (:meth:`_count`)."""
        return functools.partial(self._count, route=route, backend=backend, request=request)

    def _connected(self, request: web.Request, route: str, backend: Backend) -> Connected:
        """What a relay of a WebSocket to ``backend`` calls with the status the recognizer answered its upgrade with
        (101, or a refusal's) and the kind that refusal names: the stream's time, from its head to there, under its
        locale and outcome (:meth:`GatewayMetrics.timed`, :func:`answered`); a stream accepted to be served, or a Speech
        SDK stream accepted only to be refused (:data:`REFUSING`: the Python SDK's core asks again after a drain's
        refusal, and the refusal's turn says which stream is a repeat), once the recognizer says how it goes on
        (:meth:`_answered`)."""

        def connected(status: int, named: str | None) -> None:
            if status == 101 and named is None:
                request[ACCEPTED] = time.monotonic()
            elif status == 101 and route == "usp":
                request[REFUSING] = (time.monotonic(), answered(status, named))
            else:
                self.metrics.timed(request, route, backend.locale, answered(status, named))
        return connected

    def _answered(self, request: web.Request, route: str, backend: Backend) -> Answered:
        """What a relay of a WebSocket to ``backend`` calls with the recognizer's messages until one says how it answers
        the stream: on /vosk its first, on the Speech SDK's route its first result or failure it names
        (:func:`~speech_operator.gateway_failures.usp_told`: a turn that fails once begun, busy at the first audio or a
        model that cannot be loaded, is timed under that kind's class, to that message, but for the Speech SDK asking
        again for a turn that failed so, which the recognizer counted and says so: not timed, as it counts it not:
        :func:`~speech_operator.gateway_failures.usp_asked_again`); a result: ``ok``, timed to its acceptance. Its close
        before (:func:`closed`: a stream refused once accepted, timed to that close). A Speech SDK stream its 101 refused
        (:data:`REFUSING`): by the kind that 101 named, timed to it, once the refusal's turn or its close came, but for
        the SDK asking again for a refusal told it already, which the refusal's turn says: not timed."""

        def told(said: bytes | None | tuple[int, bytes]) -> bool:
            if (refusing := request.get(REFUSING)) is not None:
                telling = said if isinstance(said, bytes) else None
                if telling is not None and failures.usp_told(telling) is False:
                    return False
                request.pop(REFUSING, None)
                if telling is not None and failures.usp_asked_again(telling):  # one app recognition, timed once
                    request.pop(STARTED, None)
                else:
                    self.metrics.timed(request, route, backend.locale, refusing[1], at=refusing[0])
                return True
            if isinstance(said, tuple):
                answer, at = closed(*said), None
            else:
                kind = failures.usp_told(said) if route == "usp" and said is not None else True
                if kind is False:
                    return False
                if kind is not True and said is not None and failures.usp_asked_again(said):  # one app recognition, timed once
                    request.pop(ACCEPTED, None)
                    request.pop(STARTED, None)
                    return True
                answer, at = ("ok", request.get(ACCEPTED)) if kind is True else (outcome(kind), None)
            request.pop(ACCEPTED, None)
            self.metrics.timed(request, route, backend.locale, answer, at=at)
            return True
        return told

    def _refused_http(self, request: web.Request, failure: failures.Failure, route: str, backend: Backend | None,
                      openai: bool = False, closing: bool = False) -> web.Response:
        locale = backend.locale if backend else None
        self._count(failure, route, backend, request)
        self.metrics.requests.labels(route, locale or "-", str(failure.kind.http)).inc()
        response = failures.http_response(failure, openai=openai)
        if closing or failure.kind is failures.MALFORMED_REQUEST:  # its body was refused: the connection ends after this answer
            response.force_close()
        return response

    def refused_head(self, failure: failures.Failure) -> None:
        """A connection refused before its request head was read (:mod:`speech_operator.gateway_http_limits`)."""
        self._count(failure, HEAD_ROUTE, None)
        self.metrics.requests.labels(HEAD_ROUTE, "-", str(failure.kind.http)).inc()

    def closed_failed(self, failure: failures.Failure) -> None:
        """A connection its handler had closed that failed after (reset while closing after its last bytes: its client
        taking in none of them, ``not_reading``, or the stop ending first, ``gateway_stopped``), counted as the gateway
        counts failures (:meth:`_count`), of no locale: a refusal's (:mod:`speech_operator.gateway_http_limits`; a relayed
        WebSocket's relay counts its own, of its locale: :class:`~speech_operator.gateway_relay.Failed`)."""
        self._count(failure, HEAD_ROUTE, None)

    async def _refused_ws(self, request: web.Request, failure: failures.Failure, route: str,
                          backend: Backend | None, protocols: tuple[str, ...], close_wait: float = CLOSE_REPLY_SECONDS) -> web.StreamResponse:
        with self.shutdown.refusing() as waited_for:
            if not waited_for:  # the stop's drain has ended: no close handshake could end now
                return self._refused_http(request, failure, route, backend, closing=True)
            locale = backend.locale if backend else None
            self._count(failure, route, backend, request)
            self.metrics.requests.labels(route, locale or "-", str(failure.kind.close)).inc()
            return await refuse(request, failure, protocols, close_wait, usp=route == "usp", refusals=self.refusals)

    async def close_when_stopping(self, request: web.Request, response: web.StreamResponse) -> None:
        """Once the gateway stops, every answer but a WebSocket's says ``Connection: close`` and closes its
        connection (aiohttp ``on_response_prepare``): a client's kept-alive connection still brings its
        requests here during the drain, and a client busy on it would keep the drain from ever ending
        (its request in flight at the deadline cut); it connects again, to another gateway pod."""
        if self.shutdown.begun.is_set() and not isinstance(response, web.WebSocketResponse):
            response.force_close()
            response.headers[aiohttp.hdrs.CONNECTION] = "close"

    @web.middleware
    async def admit(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """A request on a connection past the cap (:mod:`speech_operator.gateway_connections`): a probe or scrape is
        answered, and so is a browser's CORS preflight with ``SPEECH_GATEWAY_CORS_ORIGINS`` (:mod:`speech_recognizer.cors`
        says why), anything else refused (503 / 1013, the 503 with the CORS headers of every answer); either way the
        connection is closed after this answer."""
        request[STARTED] = time.monotonic()
        transport = request.transport
        guard = transport.get_protocol() if transport is not None else None
        if not isinstance(guard, HeadGuard) or not guard.over_cap:
            return await handler(request)
        if request.path in PROBE_ROUTES_ANSWERED or (self.cors.policy is not None and is_preflight(request)):
            response = await handler(request)
            response.force_close()
            return response
        failure = self.connections.refusal()
        route = _route_of(request)
        if _is_upgrade(request):
            # What the client sends after its close frame (up to a message of MAX_MESSAGE_BYTES before it reads it) is
            # dropped, not read: the connection is closed after the close frame, lingering, not when the client answers it
            # (refuse, close_wait 0). A Speech SDK's connection is read for its request first (a failed turn tells it).
            protocols = (USP_PROTOCOL,) if route == "usp" and USP_PROTOCOL in offered_protocols(request) else ()
            return await self._refused_ws(request, failure, route, None, protocols, close_wait=0)
        drop_the_rest(request)
        return self._refused_http(request, failure, route, None, openai=route == "openai", closing=True)

    # ---- the gateway's own routes ---------------------------------------------------------------
    async def ready(self, request: web.Request) -> web.Response:
        """200 once the SpeechToTexts have been listed (before that every language would be unknown)."""
        body = {"ready": self.directory.synced, "locales": self.directory.locales}
        return web.json_response(body, status=200 if self.directory.synced else 503)

    async def status(self, request: web.Request) -> web.Response:
        """Liveness: the gateway answers."""
        return web.json_response({"status": "ok"})

    async def pre_stop(self, request: web.Request) -> web.Response:
        """The pod's preStop hook: answers after :data:`~speech_recognizer.contract.PRE_STOP_SECONDS`, the
        time the Service's endpoints take to drop the pod, while it still forwards new requests; the
        kubelet sends SIGTERM after it (the image has no shell for a ``sleep``)."""
        await asyncio.sleep(contract.PRE_STOP_SECONDS)
        return web.json_response({"stopping": True})

    async def metrics_route(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def _is_upgrade(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def _route_of(request: web.Request) -> str:
    """The route label of a request refused before its handler ran (as its handler would count it)."""
    path = request.path
    if path.startswith("/speech/recognition/"):
        return "usp" if _is_upgrade(request) else "rest"
    if path == contract.ROUTE_OPENAI_TRANSCRIPTIONS:
        return "openai"
    if path in (contract.ROUTE_VOSK_WS, contract.ROUTE_HOME) and _is_upgrade(request):
        return "vosk"
    return HEAD_ROUTE


#: The application's :class:`Gateway` (``app[GATEWAY]``: for whoever holds only the application).
GATEWAY = web.AppKey("gateway", Gateway)


def create_app(directory: Directory, config: GatewayConfig | None = None, resolver: AbstractResolver | None = None,
               api_client: k8s.ApiClient | None = None) -> web.Application:
    """The gateway's aiohttp application over ``directory`` (``resolver``: how Service names resolve;
    ``api_client``: to ask the operator to wake a locale at zero, ``status.demand``)."""
    gateway = Gateway(directory, config or GatewayConfig(), resolver, api_client)
    logs.quiet_multipart()  # its scanner's parser would log a warning for each form it cannot read: the recognizer says why
    app = web.Application(middlewares=[gateway.admit, gateway.cors.preflight])
    app[GATEWAY] = gateway
    app.cleanup_ctx.append(gateway.client)
    app.on_response_prepare.append(gateway.close_when_stopping)
    app.on_response_prepare.append(gateway.cors.prepared)
    recognition = contract.RECOGNITION_PATH_TEMPLATE
    app.router.add_route("*", recognition, gateway.recognition)
    app.router.add_get(contract.ROUTE_VOSK_WS, gateway.vosk)
    for path in contract.NOT_SERVED_PATHS:
        app.router.add_get(path, gateway.not_served)
    app.router.add_get(contract.ROUTE_HOME, gateway.vosk)
    app.router.add_post(contract.ROUTE_OPENAI_TRANSCRIPTIONS, gateway.openai)
    app.router.add_get(contract.ROUTE_DEMO, gateway.demo)
    app.router.add_get(contract.ROUTE_DEMO + "/{file}", gateway.demo_file)
    app.router.add_get(contract.ROUTE_READY, gateway.ready)
    app.router.add_get(contract.ROUTE_STATUS, gateway.status)
    app.router.add_get(contract.ROUTE_METRICS, gateway.metrics_route)
    app.router.add_get(contract.ROUTE_PRE_STOP, gateway.pre_stop)
    return app


class AccessLog(AbstractAccessLogger):
    """One line per request, as the recognizer logs them: probes and scrapes at DEBUG. The client is the one a trusted
    proxy's ``X-Forwarded-For`` names (``SPEECH_GATEWAY_TRUSTED_PROXIES``: :func:`~speech_recognizer.addresses.client`),
    else the peer."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        level = logging.DEBUG if request.path in PROBE_ROUTES else logging.INFO
        gateway = request.app.get(GATEWAY) if isinstance(request, web.Request) else None
        trusted = gateway.trusted if gateway else ()
        who = client(request.remote or "", request.headers.getall("X-Forwarded-For", ()), trusted)
        self.logger.log(level, '%s "%s %s" %s %.3fs', who, request.method, request.path_qs, response.status, time)


@contextlib.asynccontextmanager
async def serving(app: web.Application, host: str, port: int, shutdown_seconds: float = 30.0,
                  announce: bool = False) -> AsyncIterator[int]:
    """Serve ``app`` on ``host:port`` (the recognizer's kind of listening socket: ``*`` is IPv6 and IPv4), with the
    gateway's limits on request heads (:mod:`speech_operator.gateway_http_limits`); yields the port. ``announce``:
    log where it listens (the gateway's start).

    On the way out it stops listening, then a gateway's relayed WebSockets and recognition requests
    are drained for up to ``shutdown_seconds`` (requests held for a wake answered at once:
    :mod:`speech_operator.gateway_shutdown`), then the close handshakes of the relays closed at its deadline and
    aiohttp's shutdown (other routes' requests) get what is left up to
    :data:`~speech_operator.gateway_shutdown.AFTER_DRAIN_SECONDS` before it is cut: the whole stop takes at most
    ``shutdown_seconds`` and those few seconds (an application without a gateway: ``shutdown_seconds`` for aiohttp's
    shutdown alone)."""
    # aiohttp's shutdown_timeout counts twice: it waits that long for each connection's handler to end,
    # then cancels its request (its body, a WebSocket's reading) and waits as long again before it cancels
    # the handler (a handler that reads nothing, such as /pre-stop's pause, takes both).
    # The drain's last close handshakes take CLOSE_REPLY_SECONDS of AFTER_DRAIN_SECONDS.
    after = min(shutdown_seconds, AFTER_DRAIN_SECONDS - CLOSE_REPLY_SECONDS) / 2 if GATEWAY in app else shutdown_seconds
    # auto_decompress=False: a body is relayed as it came (aiohttp would decode a Content-Encoding: gzip body and the
    # recognizer get the decoded bytes under the gzip header, cut to the compressed length).
    gateway = app.get(GATEWAY)
    # read_bufsize: what aiohttp reads of a connection before it stops reading it (a body: twice this), per connection.
    buffers = {"read_bufsize": gateway.config.read_buffer_bytes} if gateway else {}
    head_limits = gateway.config.head_limits if gateway else HeadLimits()
    runner = web.AppRunner(app, access_log_class=AccessLog, access_log=logging.getLogger("speech_operator.gateway.access"),
                           shutdown_timeout=after, handle_signals=False, keepalive_timeout=KEEPALIVE_SECONDS,
                           auto_decompress=False, **buffers, **head_limits.parser_options())
    await runner.setup()
    sock = listening_socket(host, port)
    if gateway:  # each accepted connection's receive and send buffers (inherited): fixed, not grown by the kernel to megabytes
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, gateway.config.read_buffer_bytes)
    site: GuardedSite | None = None
    try:
        site = GuardedSite(runner, sock, head_limits,
                           gateway.refused_head if gateway else lambda failure: failures.report(failure, HEAD_ROUTE, None),
                           gateway.connections if gateway else None,
                           gateway.config.send_stall_seconds if gateway else STALL_SECONDS,
                           answerer=gateway.cors.policy if gateway else None, failed=gateway.closed_failed if gateway else unreported)
        await site.start()
        if gateway:
            gateway.shutdown.finishing = site.finishing  # the drain waits for connections closing after their last bytes
        if announce:
            log.info("gateway listening on %s", listening_on(sock))
        yield sock.getsockname()[1]
        await site.stop()
        if GATEWAY in app:
            await app[GATEWAY].shutdown.drain(shutdown_seconds)
    finally:
        await runner.cleanup()
        if site is not None:
            site.reset_unsent()
        sock.close()


async def run(config: GatewayConfig, api_client: k8s.ApiClient, namespaces: list[str] | None) -> None:
    """Watch SpeechToTexts in ``namespaces`` (``None``: all) and serve until SIGTERM or SIGINT."""
    directory = Directory()
    watcher = asyncio.create_task(SpeechToTextWatch(api_client, directory, namespaces).run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with serving(create_app(directory, config, api_client=api_client), config.host, config.port,
                           config.shutdown_seconds, announce=True):
            await stop.wait()
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
