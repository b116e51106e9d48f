"""The Starlette application: shared state, start-up model loading, and every route."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from . import cffi_types, cors, demo, openai_compat, openapi, rest, service_routes, vosk_ws
from . import contract as c
from .drain import Drain, DrainMiddleware
from .engine import Engine, SessionRecord
from .errors import classify, http_response, observe
from .forwarded import ForwardedClient
from .metrics import Metrics
from .models import ModelRegistry
from .serving import connection_cap
from .settings import Settings, decoder_capacity, memory_base_mib, resident_bytes
from .usage import UsageRecords
from .usp.refusal import FailedTurns
from .usp.resume import Parking
from .usp.routes import routes as usp_routes
from .warmup import WarmupState, warm_up

log = logging.getLogger(__name__)


def fit_decoders(settings: Settings, engine: Engine, registry: ModelRegistry) -> None:
    """Once the models are loaded, before the warm-up: the default ``DecoderMaxCount`` made from the memory the
    process holds now (:func:`~.settings.memory_base_mib`: a larger model, or several locales, leave fewer decoders in
    the memory limit than the small ko-KR model), and the start-up line saying it, with a warning when the count is
    more than the memory limit holds beyond that (an explicit ``DecoderMaxCount``, or the floor of 1). The cores and
    the memory limit are the settings' (:meth:`~.settings.Settings.resources`: the cgroup's, within what the pod was
    told of its limits), the line says which."""
    resident = resident_bytes()
    base, resources = memory_base_mib(resident), settings.resources()
    given = "decoder_max_count" in settings.given
    if not given:
        engine.limit_decoders(resources.decoders(base))
    decoders, too_many = decoder_capacity(engine.decoder_max_count, resources, base, given)
    held = "" if resident is None else f" ({resident // 2**20} MiB resident)"
    log.info("%s loaded%s: serving with %s", ", ".join(registry.loaded) or "no model", held, decoders)
    if too_many:
        log.warning("%s", too_many)


def create_app(settings: Settings, registry: ModelRegistry | None = None) -> Starlette:
    """Build the app; models load and warm in the background at start-up (``/ready`` is 503 until then)."""
    registry = registry or ModelRegistry(settings.models_dir, settings.locales)
    metrics = Metrics()
    usage = UsageRecords(settings.output_dir, settings.billing)

    def on_session_end(record: SessionRecord) -> None:
        usage.add(record)
        metrics.session_ended(record)

    engine = Engine(registry, settings.decoder_max_count, on_session_end, max_connections=settings.max_connections,
                    warm_pool=None if settings.reuse_recognizers else 0)
    metrics.watch_pool(engine.pool)
    metrics.watch_connections(engine.admission)
    metrics.watch_decoders(engine.admission, registry)
    metrics.watch_spills(engine.spills)
    http_cap = connection_cap(settings)  # held by the server's HTTP protocol (serving.server_options)
    metrics.watch_http_connections(http_cap)
    warmup = WarmupState()
    drain = Drain(settings.drain_seconds, engine.admission)

    async def start() -> None:
        await registry.load_wanted()
        fit_decoders(settings, engine, registry)
        models = [registry.loaded[loc] for loc in registry.wanted if loc in registry.loaded]
        await warm_up(engine, models, settings.warmup_recognizers, settings.warmup_seconds,
                      settings.warmup_audio, warmup, parallel=settings.resources().cores)
        if registry.ready:  # once: probes of /ready are logged at DEBUG only (logs.ProbesAtDebug)
            log.info("ready to recognize %s: /ready answers 200", ", ".join(registry.wanted))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        cffi_types.realize()  # before the threads that load, warm and decode: cffi's lazy types race between threads
        if unwritable := usage.unwritable():  # a pod without an output volume: its read-only root holds /output
            given = "output_dir" in settings.given
            log.log(logging.WARNING if given else logging.INFO, "%s%s", unwritable, "" if given else
                    f"; mount a volume at {c.MOUNTS_OUTPUT} to keep them (a SpeechToText's spec.output)")
        loading = asyncio.create_task(start())
        counting = asyncio.ensure_future(usage.refreshed())  # the usage records on disk, summed off the event loop
        try:
            yield
        finally:
            loading.cancel()
            counting.cancel()
            await asyncio.to_thread(registry.settle)  # stopped mid-load (SIGTERM): let the load end and tidy up
            engine.close()

    answerer = cors.instance(settings.http_cors_origins)

    async def server_error(request: Request, exc: Exception) -> Response:
        """Starlette's outermost handler (outside the CORS middleware): the failure's answer, with the CORS headers the
        app's answers carry, so that a page reads it."""
        failure = classify(exc)
        observe(failure, request.url.path[:100], None)
        response = http_response(failure)
        response.headers.update(dict(cors.headers(answerer, request.headers, response.status_code)))
        return response

    app = Starlette(
        routes=[*service_routes.routes(), *demo.routes(), *rest.routes(), *openai_compat.routes(), *usp_routes(), *vosk_ws.routes()],
        lifespan=lifespan,
        exception_handlers={500: server_error},
        # CORS after the client is known (its preflight's access line names it), before the routes (a preflight carries no
        # key) and the drain (whose refusals a page on an allowed origin may then read)
        middleware=[Middleware(ForwardedClient, trusted=settings.http_trusted_proxies), *cors.middleware(settings.http_cors_origins),
                    Middleware(DrainMiddleware, drain=drain)],
    )
    app.state.openapi = openapi.document(app.routes)  # raises for a route without its description
    app.state.settings = settings
    app.state.registry = registry
    app.state.engine = engine
    app.state.metrics = metrics
    app.state.http_cap = http_cap
    app.state.usage = usage
    app.state.warmup = warmup
    app.state.drain = drain
    app.state.failed_turns = FailedTurns()  # the turns this server failed lately, which the Speech SDK asks again for
    app.state.parking = Parking()  # the turns of this server's connections that a continuation may take up
    return app
