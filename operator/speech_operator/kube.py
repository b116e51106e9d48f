"""A small async Kubernetes API client on aiohttp, using kopf's login credentials.

kopf has no client of its own for arbitrary calls, so this one covers exactly what the
operator does: get, create, merge-patch, delete.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import kopf

MERGE_PATCH = "application/merge-patch+json"


class KubeError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        super().__init__(f"{method} {path} -> HTTP {status}: {body[:500]}")
        self.status = status


def path(api_version: str, plural: str, namespace: str | None = None,
         name: str | None = None, subresource: str | None = None) -> str:
    """The URL path of a resource collection or object: ``/apis/apps/v1/namespaces/ns/deployments/x``."""
    parts = ["/api/v1" if api_version == "v1" else f"/apis/{api_version}"]
    if namespace:
        parts.append(f"namespaces/{namespace}")
    parts.append(plural)
    if name:
        parts.append(name)
    if subresource:
        parts.append(subresource)
    return "/".join(parts)


class Kube:
    """One aiohttp session to the API server, (re)built from kopf's ConnectionInfo."""

    def __init__(self) -> None:
        self._info: kopf.ConnectionInfo | None = None
        self._session: aiohttp.ClientSession | None = None

    async def use(self, info: kopf.ConnectionInfo) -> None:
        """Switch to new credentials (on login and re-login)."""
        await self.close()
        self._info = info

    def _open(self) -> aiohttp.ClientSession:
        if self._info is None:
            raise RuntimeError("no credentials yet: the operator's login handler has not run")
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                base_url=self._info.server.rstrip("/") + "/",
                connector=aiohttp.TCPConnector(ssl=self._info.as_ssl_context()),
                headers={**self._info.as_http_headers(), "User-Agent": "speech-operator"},
                trust_env=self._info.trust_env,
                timeout=aiohttp.ClientTimeout(total=30),
            )
        return self._session

    async def request(self, method: str, url: str, body: Any = None,
                      content_type: str = "application/json") -> dict[str, Any] | None:
        """One call; ``None`` for 404, :class:`KubeError` for any other failure."""
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if body is not None else {}
        async with self._open().request(method, url.lstrip("/"), data=data, headers=headers) as resp:
            text = await resp.text()
            if resp.status == 404:
                return None
            if resp.status >= 300:
                raise KubeError(resp.status, method, url, text)
            return json.loads(text) if text else {}

    async def get(self, url: str) -> dict[str, Any] | None:
        return await self.request("GET", url)

    async def create(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.request("POST", url, body) or {}

    async def patch(self, url: str, body: dict[str, Any]) -> dict[str, Any] | None:
        return await self.request("PATCH", url, body, MERGE_PATCH)

    async def delete(self, url: str) -> bool:
        """Delete (pods follow in the background); ``False`` when it was already gone."""
        return await self.request("DELETE", url, {"propagationPolicy": "Background"}) is not None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
