"""``python -m bench.gateway_host PORT RECOGNIZER_PORT ready|asleep``: the gateway, in a process of its
own, in front of one recognizer on loopback (locale ko-KR).

What the bench measures is the gateway's relay and its hold, so its directory is given here
rather than watched (the watch against an API server is tests/gateway's); a Service's name
resolves to 127.0.0.1, as cluster DNS would to the Service. ``asleep``: the SpeechToText is
autoscaled and has no ready pod, so requests are held; ``POST /_bench/ready`` then says it has one
(what the operator's status says once the woken pod passes ``/ready``). The gateway runs as
``speech-operator gateway`` does: the default asyncio loop, the same app.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys

from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from speech_operator.gateway import GatewayConfig, create_app, serving
from speech_operator.gateway_directory import Directory

LOCALE = "ko-KR"


class Loopback(AbstractResolver):
    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        return [ResolveResult(hostname=host, host="127.0.0.1", port=port, family=socket.AF_INET, proto=0,
                              flags=socket.AI_NUMERICHOST)]

    async def close(self) -> None:
        pass


def speech_to_text(port: int, ready: int, autoscaled: bool) -> dict:
    spec: dict = {"locale": LOCALE, "eula": "accept", "service": {"port": port}}
    if autoscaled:
        spec["autoscaling"] = {"minReplicas": 0, "maxReplicas": 1}
    return {"apiVersion": "speech-operator.io/v1alpha1", "kind": "SpeechToText",
            "metadata": {"name": "ko-kr", "namespace": "bench"}, "spec": spec, "status": {"readyReplicas": ready}}


async def main(port: int, recognizer_port: int, state: str) -> None:
    directory = Directory()
    asleep = state == "asleep"
    directory.upsert(speech_to_text(recognizer_port, 0 if asleep else 1, asleep))
    directory.synced = True
    app = create_app(directory, GatewayConfig(host="127.0.0.1", port=port, hold_seconds=600), resolver=Loopback())

    async def woke(request: web.Request) -> web.Response:
        directory.upsert(speech_to_text(recognizer_port, 1, asleep))
        return web.json_response({"ready": True})

    app.router.add_post("/_bench/ready", woke)
    async with serving(app, "127.0.0.1", port, 1) as bound:
        print(json.dumps({"ready": True, "port": bound}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the bench closes stdin


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``--help``; a wrong one is refused with argparse's usage and one line saying why)."""
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_host", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="bench.gateway_bench starts it; it stops when its stdin closes.")
    parser.add_argument("port", type=int, help="the gateway's port on 127.0.0.1 (0: any free one; the first line on stdout says which)")
    parser.add_argument("recognizer_port", type=int, help="the port of the recognizer on 127.0.0.1")
    parser.add_argument("state", choices=("ready", "asleep"), help="ready: the recognizer has a ready pod; asleep: requests are held "
                        "until POST /_bench/ready")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = arguments()
    asyncio.run(main(args.port, args.recognizer_port, args.state))
