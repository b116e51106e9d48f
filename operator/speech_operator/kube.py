"""The operator's Kubernetes API client: the official client's async flavour, ``kubernetes_asyncio``.

Why ``kubernetes_asyncio`` and not the synchronous ``kubernetes`` package in threads: kopf runs on
asyncio, and ``kubernetes_asyncio`` is the maintained async port generated from the same OpenAPI
spec, with the same kubeconfig loader (exec plugins as EKS/GKE/AKS use them, OIDC, ``tokenFile``,
client certificates) and in-cluster loader (which re-reads the rotated service-account token). It
speaks aiohttp, as kopf does; the threaded client would hold a thread per call in flight and bring
a second HTTP stack. kopf logs in from the same credentials (:func:`connection_info`, in a session
made as kopf makes its own: :func:`kopf_session`), so its watches and our calls use one identity, and
a re-login refreshes both.

Only the client's generic transport is used (``ApiClient.call_api`` on resource paths, replies as
plain dicts): the operator applies whatever kinds the builders return, so per-kind typed methods
would be one more table to keep, and their models drop fields this client version does not know.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import kopf
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from speech_operator import __version__

USER_AGENT = f"speech-operator/{__version__}"
FIELD_MANAGER = "speech-operator"
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
#: The cause the API server gives a create in a namespace being deleted (its NamespaceLifecycle admission plugin: 403
#: Forbidden, ``details.causes[].reason``): nothing can be created there any more, and nothing needs to be.
NAMESPACE_TERMINATING = "NamespaceTerminating"
#: How long one watch of :func:`list_and_watch` lasts before the API server ends it and the collection is listed again.
WATCH_SECONDS = 300
#: The least time between two lists of :func:`list_and_watch` when watches end at once (an API server or proxy that cuts them).
RELIST_SECONDS = 1.0

log = logging.getLogger(__name__)


class KubeError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        super().__init__(f"{method} {path} -> HTTP {status}: {body[:500]}")
        self.status = status
        answer = _status(body)
        message = answer.get("message")
        self.message = message if isinstance(message, str) and message else body[:500]
        """The API server's words: the whole ``message`` of its Status (an admission webhook's may run to kilobytes:
        what the status quotes is bounded there, :func:`speech_operator.conditions.condition`), else the start of the
        body."""
        details = answer.get("details")
        causes = details.get("causes") if isinstance(details, dict) else None
        self.causes = [c.get("reason") for c in causes if isinstance(c, dict)] if isinstance(causes, list) else []
        """The ``reason`` of each of its Status' ``details.causes``."""
        self.reason = str(answer.get("reason") or "")
        """The ``reason`` of its Status (``Conflict``, ``Forbidden``...), or ""."""

    @property
    def namespace_terminating(self) -> bool:
        """Whether it refused a create because the namespace is being deleted (:data:`NAMESPACE_TERMINATING`)."""
        return self.status == 403 and NAMESPACE_TERMINATING in self.causes

    @property
    def stale(self) -> bool:
        """Whether it refused a write conditional on a resourceVersion the object no longer has (409 Conflict; with
        ``force`` a server-side apply has no conflict of field managers): read it again, then write."""
        return self.status == 409 and self.reason == "Conflict"

    @property
    def refused(self) -> bool:
        """Whether the request itself was refused (an admission webhook, a quota, a value the API server does not
        take: 400, 403, 409, 422, ...), which asking again unchanged does not mend; not a timeout, a throttle (429)
        or the server's own failure (5xx), which a retry may."""
        return 400 <= self.status < 500 and self.status not in (408, 429)


class UnreadableAnswer(Exception):
    """A 2xx answer that is no JSON object: a page of a proxy or load balancer in front of the API server, a body cut
    short. Not the API server's word on the request: asking again later may mend it."""


#: What an API server that is away, busy or out of reach gives (a 5xx, a throttle, a timeout, a broken connection, an
#: answer that is no object), and one that refuses a request (a 4xx): the request failed, not the operator. Each is one
#: line and a retry (:mod:`speech_operator.handlers`), counted by its reason (:func:`speech_operator.metrics.reconcile_failed`).
#: ConnectionError: what aiohttp raises, unwrapped, when the connection is lost while it sends a request's body.
UNANSWERED = (KubeError, UnreadableAnswer, TimeoutError, aiohttp.ClientError, ConnectionError)


def _json_object(value: Any, raw: Any, what: str) -> dict[str, Any]:
    """``value`` when it is a JSON object, else :class:`UnreadableAnswer` saying ``what`` with the start of ``raw`` (the
    answer or watch line as received) on one line: the one check of an API server's answers, requests and watches."""
    if isinstance(value, dict):
        return value
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    raise UnreadableAnswer(f"{what}: {' '.join(text.split())[:200]!r}")


def _status(body: str) -> dict[str, Any]:
    """The API server's Status in ``body``, or {} when it is none."""
    try:
        status = json.loads(body)
    except ValueError:
        return {}
    return status if isinstance(status, dict) else {}


class NoCredentials(Exception):
    """Neither in-cluster credentials nor a usable kubeconfig: the message says what was tried."""


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


async def load_configuration() -> k8s.Configuration:
    """Credentials as kubectl finds them: the pod's service account, else ``KUBECONFIG`` / ``~/.kube/config``.

    Raises :class:`NoCredentials` with one line saying why neither worked.
    """
    configuration = k8s.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)
        return configuration
    except k8s_config.ConfigException as exc:
        in_cluster = str(exc)
    # The library reads KUBECONFIG once, when imported; read it now.
    kubeconfig = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    where = f"KUBECONFIG={kubeconfig}" if os.environ.get("KUBECONFIG") else kubeconfig
    if not any(os.path.exists(os.path.expanduser(p)) for p in kubeconfig.split(os.pathsep) if p):
        raise NoCredentials(f"no Kubernetes credentials: not in a cluster ({in_cluster.rstrip('.')}) "
                            f"and no kubeconfig ({where} does not exist)")
    library = logging.getLogger("kubernetes_asyncio")
    level = library.level
    library.setLevel(logging.CRITICAL)  # it logs what it raises; we say it once
    try:
        await k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    except Exception as exc:  # a broken file, no current context, a failing exec plugin, ...
        raise NoCredentials(f"cannot use the kubeconfig {where}: {type(exc).__name__}: {exc}") from exc
    finally:
        library.setLevel(level)
    return configuration


async def connection_info(configuration: k8s.Configuration, settings: kopf.OperatorSettings) -> kopf.ConnectionInfo:
    """kopf's view of the same credentials (what ``kopf.login_via_async_client`` extracts from the
    library's process-wide default; here from our own configuration, so nothing global is shared)."""
    if not configuration.host:
        raise NoCredentials("the Kubernetes configuration names no API server")
    header = await configuration.get_api_key_with_prefix("BearerToken")
    parts = header.split(" ", 1) if header else []
    scheme, token = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0] if parts else None)
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        username=configuration.username or None,
        password=configuration.password or None,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        proxy_url=configuration.proxy,
        trust_env=settings.networking.trust_env,
    )


def kopf_session(info: kopf.ConnectionInfo, listed: Callable[[str], None]) -> kopf.AiohttpSession:
    """kopf's HTTP session, made of ``info`` as kopf makes its own (kopf/_cogs/clients/auth.py: a connector with no
    limit and ``info``'s TLS, its Authorization header, its proxy; tests/operator/test_kopf_privates.py compares the
    two) and given to kopf instead (its documented custom session, :class:`kopf.AiohttpSession`), so that ``listed`` is
    told the URL path of each listing kopf begins (a GET of a collection the API server answers 200: not a watch, not a
    listing's later chunk). kopf passes its handlers each object of a listing and nothing of the listing itself: one
    with no object in it reached the operator in no way."""
    trace = aiohttp.TraceConfig()

    async def ended(_: aiohttp.ClientSession, __: Any, params: aiohttp.TraceRequestEndParams) -> None:
        query = params.url.query
        if params.method == "GET" and params.response.status == 200 and "watch" not in query and "continue" not in query:
            listed(params.url.path)
    trace.on_request_end.append(ended)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ssl=info.as_ssl_context()),
                                    headers=info.as_http_headers(), proxy=info.proxy_url, trust_env=info.trust_env,
                                    trace_configs=[trace])
    return kopf.AiohttpSession(aiohttp_session=session, server=info.server, priority=info.priority,
                               default_namespace=info.default_namespace, expiration=info.expiration)


class Kube:
    """The calls the operator makes (get, create, patch, server-side apply, delete), on one ApiClient.

    Built from a configuration (:func:`load_configuration`), or without one and given it at
    kopf's login (:meth:`use`). A 401 reloads the credentials once and retries: exec-plugin and
    OIDC tokens expire while the operator runs.
    """

    def __init__(self, configuration: k8s.Configuration | None = None, *,
                 user_agent: str = USER_AGENT, timeout: float = 30) -> None:
        self._configuration = configuration
        self._client: k8s.ApiClient | None = None
        self._retired: set[Any] = set()
        self.user_agent = user_agent
        self.timeout = timeout
        #: Set once there are credentials (at once when given, else at kopf's login).
        self.configured = asyncio.Event()
        if configuration is not None:
            self.configured.set()

    async def use(self, configuration: k8s.Configuration) -> None:
        """Switch to new credentials (kopf's login and re-login); calls in flight end on the old ones."""
        old, self._client = self._client, None
        self._configuration = configuration
        self.configured.set()
        if old is not None:
            self._retired.add(old)
            asyncio.get_running_loop().call_later(self.timeout + 1, self._retire, old)

    def _retire(self, client: k8s.ApiClient) -> None:
        if client in self._retired:
            self._retired.discard(client)
            task = asyncio.ensure_future(client.close())
            self._retired.add(task)  # keep a reference until it is done
            task.add_done_callback(self._retired.discard)

    async def reload(self) -> k8s.Configuration:
        """Load the credentials afresh (runs an exec plugin again) and use them."""
        configuration = await load_configuration()
        await self.use(configuration)
        return configuration

    def _api(self) -> k8s.ApiClient:
        if self._configuration is None:
            raise RuntimeError("no credentials yet: the operator's login handler has not run")
        if self._client is None:
            self._client = k8s.ApiClient(self._configuration)
            self._client.user_agent = self.user_agent
        return self._client

    async def request(self, method: str, url: str, body: Any = None, *, content_type: str = JSON,
                      query: dict[str, str] | None = None) -> dict[str, Any] | None:
        """One call; ``None`` for 404, :class:`KubeError` for any other failure, :class:`UnreadableAnswer` for an
        answer that is no JSON object (the client library hands such a body over as it is)."""
        for attempt in (1, 2):
            try:
                answer = await self._api().call_api(
                    url, method, query_params=list((query or {}).items()),
                    header_params={"Accept": JSON, "Content-Type": content_type},
                    body=body, auth_settings=["BearerToken"],
                    response_types_map={200: "object", 201: "object", 202: "object"},
                    _return_http_data_only=True, _request_timeout=self.timeout)
            except k8s.ApiException as exc:
                if exc.status == 404:
                    return None
                if exc.status == 401 and attempt == 1:
                    await self.reload()
                    continue
                text = exc.body.decode() if isinstance(exc.body, bytes) else str(exc.body or exc.reason)
                raise KubeError(exc.status, method, url, text) from None
            return None if answer is None else _json_object(answer, answer, f"{method} {url} -> no JSON object")
        raise AssertionError("unreachable")

    async def watch(self, url: str, query: dict[str, str], seconds: int) -> AsyncIterator[dict[str, Any]]:
        """The events (``{"type": ..., "object": ...}``) of a watch on the collection ``url`` until the API
        server ends it after ``seconds``; :class:`KubeError` when it refuses (a 401 reloads the credentials
        once, as :meth:`request` does); :class:`UnreadableAnswer` for a line that is JSON but no event (a proxy's),
        ValueError for one that is no JSON."""
        params = list({**query, "watch": "true", "timeoutSeconds": str(seconds)}.items())
        for attempt in (1, 2):
            response = await self._api().call_api(
                url, "GET", query_params=params, header_params={"Accept": JSON}, auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=aiohttp.ClientTimeout(connect=self.timeout, sock_read=seconds + self.timeout))
            if response.status == 401 and attempt == 1:
                response.close()
                await self.reload()
                continue
            break
        try:
            if not 200 <= response.status < 300:
                raise KubeError(response.status, "GET", url, await response.text())
            async for line in response.content:
                if line.strip():
                    event = _json_object(json.loads(line), line, f"watch {url} -> no watch event")
                    _json_object(event.get("object", {}), line, f"watch {url} -> no watch event")
                    yield event
        finally:
            response.close()  # a watch cut short leaves its connection unusable for another request

    async def get(self, url: str) -> dict[str, Any] | None:
        return await self.request("GET", url)

    async def create(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.request("POST", url, body) or {}

    async def patch(self, url: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """A JSON merge patch (what kubectl patch --type=merge sends)."""
        return await self.request("PATCH", url, body, content_type=MERGE_PATCH)

    async def apply(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply of the whole object ``body`` under our field manager, taking over
        conflicting fields (``force``): the API server creates the object, updates what differs,
        and removes the fields we applied before but no longer send."""
        query = {"fieldManager": FIELD_MANAGER, "force": "true"}
        return await self.request("PATCH", url, body, content_type=APPLY_PATCH, query=query) or {}

    async def delete(self, url: str) -> bool:
        """Delete (pods follow in the background); ``False`` when it was already gone."""
        return await self.request("DELETE", url, query={"propagationPolicy": "Background"}) is not None

    async def close(self) -> None:
        clients, self._retired = [self._client, *self._retired], set()
        self._client = None
        for client in clients:
            if isinstance(client, k8s.ApiClient):
                await client.close()


async def list_and_watch(kube: Kube, url: str, query: dict[str, str], what: str,
                 listed: Callable[[list[dict[str, Any]]], None], changed: Callable[[str, dict[str, Any]], None],
                 seconds: int = WATCH_SECONDS) -> KubeError:
    """List the collection ``url`` into ``listed``, then watch it from the list's version into ``changed`` (``ADDED``,
    ``MODIFIED`` or ``DELETED`` and the object), again after each watch ends, until cancelled: what the operator
    follows beside kopf's watches (the SpeechToText CRD, HorizontalPodAutoscalers). Returns the refusal where the
    collection may not be read (403: no RBAC for it) or is not served (404): the caller says it, once, and no retry
    follows. Other failures (the API server away, a watch cut) are a WARNING each naming ``what`` and a retry, 1 s
    after the first and up to a minute apart. A watch that ends quietly is followed by a list, at most one each
    :data:`RELIST_SECONDS`."""
    await kube.configured.wait()
    delay = 1.0
    loop = asyncio.get_running_loop()
    listed_at = -RELIST_SECONDS
    while True:
        try:
            await asyncio.sleep(listed_at + RELIST_SECONDS - loop.time())
            listed_at = loop.time()
            listing = await kube.request("GET", url, query=query)
            if listing is None:  # 404: the API server serves no such collection
                raise KubeError(404, "GET", url, f"{url} is not served")
            listed(listing.get("items") or [])
            version = (listing.get("metadata") or {}).get("resourceVersion")
            async for event in kube.watch(url, {**query, "resourceVersion": version} if version else query, seconds):
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:  # the list's version is gone: list again
                        break
                    raise KubeError(int(obj.get("code") or 500), "GET", url, str(obj.get("message")))
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    changed(kind, obj)
            delay = 1.0
            continue
        except KubeError as exc:
            if exc.status in (403, 404):
                return exc
            failure: Exception = exc
        except (UnreadableAnswer, aiohttp.ClientError, ConnectionError, TimeoutError, ValueError) as exc:  # ValueError: a line that is no JSON
            failure = exc
        log.warning("watching %s: %s; again in %g s", what, str(failure) or type(failure).__name__, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 60.0)
