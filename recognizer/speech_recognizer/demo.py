"""The live demo page: speak into the browser's microphone and read the text as it is recognized.

``GET /demo`` is a page with a locale picker (the models loaded), the key field when the
server has a key, and a Record button. Its script (``static/demo.js``) captures the
microphone through an AudioWorklet (``static/pcm16-worklet.js``) that sends 16-bit PCM to
the ``/vosk`` WebSocket, asking in its config for the text written for people (``"written": 1``:
the model's ``[9]`` as ``9``, as every other form a person reads shows it); partial text
shows as it comes and each utterance's final text stays. Every file is served from this
package (no CDN). A browser cannot set headers on a WebSocket, so the key goes in the
query, where the server accepts a key on WebSocket upgrades and never logs it
(:mod:`.auth`, :mod:`.logs`).
"""

from __future__ import annotations

import html
from collections.abc import Collection
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from . import __version__
from . import contract as c
from . import openapi as oa
from .errors import error_response
from .openapi import describe

STATIC = Path(__file__).parent / "static"
#: The page's own files, served at ``/demo/<name>``.
FILES = {"demo.js": "text/javascript", "pcm16-worklet.js": "text/javascript"}


async def page(request: Request) -> HTMLResponse:
    """The demo page, with this server's locales and whether it needs a key."""
    state = request.app.state
    loaded = sorted(state.registry.loaded)
    note = "" if loaded else "No model is loaded yet: the first recording waits for it."
    return HTMLResponse(render(loaded or sorted(state.registry.sources), bool(state.settings.api_key), note))


def render(locales: list[str], key_required: bool | Collection[str], note: str = "", server: str = "speech-recognizer",
           reference: bool = True) -> str:
    """The page's HTML: a picker of ``locales``, the key field when ``key_required`` (every locale, or
    those of the collection: the page asks for the key only when one of them is picked), ``note`` (an
    error line) when given, a link to the API reference when this ``server`` has one. The gateway
    renders it too, with every locale it routes."""
    keyed = set(locales) if key_required is True else set(key_required or ())
    key_required = bool(keyed)
    options = "".join(f'<option value="{html.escape(loc)}" data-key-required="{str(loc in keyed).lower()}">{html.escape(loc)}</option>'
                      for loc in locales)
    key_field = ('<label>Key <input id="key" type="password" autocomplete="off" placeholder="this server\'s ApiKey"></label>'
                 if key_required else "")
    note = f'<p class="error">{html.escape(note)}</p>' if note else ""
    link = f' · <a href="{c.ROUTE_SWAGGER}">API reference</a>' if reference else ""
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Live speech to text · {html.escape(server)}</title><link rel="icon" href="data:,">
<style>
body{{font-family:system-ui,sans-serif;max-width:48em;margin:2em auto;padding:0 1em;color:#222}}
#controls{{display:flex;gap:1em;align-items:center;flex-wrap:wrap}}
select,input,button{{font-size:1em;padding:.4em .6em}}
button{{min-width:7em;border-radius:.4em;border:1px solid #888;background:#f4f4f4;cursor:pointer}}
button.recording{{background:#c62828;color:#fff;border-color:#c62828}}
#status{{color:#555;min-height:1.4em}} #status.error,.error{{color:#c62828}}
#transcript{{border:1px solid #ddd;border-radius:.4em;padding:.5em 1em;min-height:8em;font-size:1.25em}}
.final{{margin:.4em 0}} #partial{{color:#888;font-style:italic;margin:.4em 0;min-height:1.4em}}
</style></head>
<body data-vosk="{c.ROUTE_VOSK_WS}" data-worklet="{c.ROUTE_DEMO}/pcm16-worklet.js" data-key-required="{str(key_required).lower()}">
<h1>Live speech to text</h1>
<p>Press <b>Record</b> and speak: the text appears as you talk and is settled at the end of each utterance.
The audio goes from this page to this server's <code>{c.ROUTE_VOSK_WS}</code> WebSocket, and nowhere else.</p>
<div id="controls"><label>Language <select id="locale">{options}</select></label>{key_field}
<button id="record" type="button">Record</button></div>
{note}<p id="status" role="status">Ready.</p>
<div id="transcript" aria-live="polite"><div id="finals"></div><p id="partial"></p></div>
<p><a href="{c.ROUTE_HOME}">{html.escape(server)} {__version__}</a>{link}</p>
<script src="{c.ROUTE_DEMO}/demo.js"></script>
</body></html>"""


async def static_file(request: Request) -> Response:
    """One of :data:`FILES`."""
    name = request.path_params["file"]
    if name not in FILES:
        return error_response(404, f"no file {name!r}; the demo's files are {', '.join(FILES)}")
    return FileResponse(STATIC / name, media_type=FILES[name], headers={"Cache-Control": "no-cache"})


def routes() -> list[BaseRoute]:
    """``/demo`` and its files, described for the API reference."""
    return [
        describe(Route(c.ROUTE_DEMO, page), get={
            "tags": [oa.REFERENCE],
            "summary": "Live demo: speak into the browser's microphone",
            "description": "Records from the microphone (an AudioWorklet sends 16-bit PCM) over the `/vosk` WebSocket, "
            "showing partial text as it comes and a final line per utterance, written for people (its config's `written`); "
            "a picker of the loaded locales, and the key asked for when the server has one (sent in the WebSocket URL's query). The microphone needs a "
            "secure page: https, or http://localhost.",
            "responses": {"200": {"description": "HTML", "content": oa.HTML}},
        }),
        describe(Route(c.ROUTE_DEMO + "/{file}", static_file), get={
            "tags": [oa.REFERENCE],
            "summary": "The files of the live demo",
            "parameters": [{"name": "file", "in": "path", "required": True, "schema": {"type": "string", "enum": list(FILES)}}],
            "responses": {"200": {"description": "the script", "content": {"text/javascript": {"schema": {"type": "string"}}}},
                          "404": oa.error(404, "not one of the demo's files", "no file 'x.js'; the demo's files are " + ", ".join(FILES))},
        }),
    ]
