"""The gateway's CORS (``SPEECH_GATEWAY_CORS_ORIGINS``): the recognizer's policy (:mod:`speech_recognizer.cors`), its
headers made by Starlette's :class:`~starlette.middleware.cors.CORSMiddleware` as the recognizer's are, on aiohttp.

The gateway answers a preflight itself (:meth:`Cors.preflight`), before any route: it carries no key and no body, so
an OpenAI one has no form to pick a locale from, and a REST one's locale may have no pod yet (it would be held for a
wake). Every other answer gets the gateway's headers as it is prepared (:meth:`Cors.prepared`), a relayed one's
``Access-Control-*`` lines dropped first: a recognizer with ``Http:CorsOrigins`` of its own would add its own, and a
browser refuses an answer whose ``Access-Control-Allow-Origin`` comes twice. WebSocket upgrades are left as they are
(no CORS request: :mod:`speech_recognizer.cors`).
"""

from __future__ import annotations

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from starlette.datastructures import Headers

from speech_recognizer import cors

_PREFIX = "access-control-"


def _headers(request: web.BaseRequest) -> Headers:
    """``request``'s header lines as Starlette reads them."""
    return Headers(raw=[(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in request.headers.items()])


def is_preflight(request: web.BaseRequest) -> bool:
    """A browser's CORS preflight (:func:`speech_recognizer.cors.is_preflight`)."""
    return cors.is_preflight(request.method, _headers(request))


class Cors:
    """The gateway's CORS for the ``allowed`` origins (:func:`speech_recognizer.cors.origins`; none: no CORS headers)."""

    def __init__(self, allowed: tuple[str, ...]) -> None:
        self.allowed = allowed
        self.policy = cors.instance(allowed)

    @web.middleware
    async def preflight(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """A preflight answered as the recognizer answers it (200 and the policy's headers; 400 ``Disallowed CORS
        origin`` for an origin not allowed, which the browser refuses); no route sees it."""
        if self.policy is None or not is_preflight(request):
            return await handler(request)
        answer = self.policy.preflight_response(_headers(request))
        return web.Response(status=answer.status_code, body=bytes(answer.body), headers={
            name: value for name, value in answer.headers.items() if name.lower() != "content-length"})

    async def prepared(self, request: web.Request, response: web.StreamResponse) -> None:
        """Give an answer about to be sent the policy's headers for its request's ``Origin`` (aiohttp
        ``on_response_prepare``), after dropping those a recognizer relayed."""
        if isinstance(response, web.WebSocketResponse) or (self.allowed and is_preflight(request)):
            return
        for name in {name for name in response.headers if name.lower().startswith(_PREFIX)}:
            del response.headers[name]
        if self.policy is None:
            return
        for name, value in cors.headers(self.policy, _headers(request), response.status):
            if name.lower() == "vary":
                said = [v.strip() for line in response.headers.getall(hdrs.VARY, ()) for v in line.split(",") if v.strip()]
                response.headers[hdrs.VARY] = ", ".join(dict.fromkeys([*said, *(v.strip() for v in value.split(","))]))
            else:
                response.headers[name] = value
