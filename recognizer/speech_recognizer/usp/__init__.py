"""The Speech SDK WebSocket protocol (USP) on the three recognition paths.

An unmodified Azure Speech SDK app transcribes against this server by pointing
``SpeechConfig(host=...)`` (or ``endpoint=``) at it. The app must provide
``app.state.engine`` (:class:`~speech_recognizer.engine.Engine`) and
``app.state.settings`` (for ``api_key``).
"""

from __future__ import annotations

import logging

from starlette.responses import PlainTextResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from .. import contract as c
from ..auth import AuthError, check_key
from .connection import Connection
from .options import Options

log = logging.getLogger(__name__)

SUBPROTOCOL = "USP"


async def _deny(websocket: WebSocket, status: int, reason: str) -> None:
    """Refuse the upgrade with an HTTP status (a plain 403 where the server cannot send one)."""
    try:
        await websocket.send_denial_response(PlainTextResponse(reason, status_code=status))
    except RuntimeError:
        await websocket.close(1008, reason)


def endpoint(mode: str):
    """The WebSocket handler for one recognition mode."""

    async def serve(websocket: WebSocket) -> None:
        state = websocket.app.state
        try:
            check_key(getattr(state.settings, "api_key", None), websocket.headers, websocket.query_params)
        except AuthError as exc:
            log.info("USP upgrade refused: %s", exc.reason)
            await _deny(websocket, exc.status, exc.reason)
            return
        options = Options.from_query(mode, websocket.query_params)
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        await Connection(websocket, state.engine, options).run()

    serve.__name__ = f"usp_{mode}"
    return serve


def routes() -> list[WebSocketRoute]:
    """WebSocket routes for ``interactive``, ``conversation`` and ``dictation``."""
    return [
        WebSocketRoute(c.RECOGNITION_PATH_TEMPLATE.format(mode=mode), endpoint(mode), name=f"usp-{mode}")
        for mode in c.RECOGNITION_MODES
    ]
