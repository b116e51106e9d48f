"""The real kopf operator against kmock, with the SpeechToText CRD older than the operator's served,
then replaced by the current one; and with CRDs it may not read (speech_operator.crd_watch)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from conftest import operator_requests, quiet
from stt_schema import older

from speech_operator import crd, crd_check, crd_watch
from speech_operator.kube import Kube

if TYPE_CHECKING:
    import kmock
    from conftest import Cluster

NAMESPACE = "speech"
CRDS = crd_watch.URL
#: How long the operator may take to act on a change on a loaded machine: it fails by never acting, not by acting late.
PATIENCE = 30.0
STT: dict[str, Any] = {"apiVersion": "speech-operator.io/v1alpha1", "kind": "SpeechToText", "metadata": {"name": "en-us", "namespace": NAMESPACE},
       "spec": {"locale": "en-US", "eula": "accept", "replicas": 1}}


async def degraded(cluster: Cluster) -> dict[str, Any]:
    body = await cluster.api.get(cluster.stt_url("en-us")) or {}
    return next((c for c in (body.get("status") or {}).get("conditions") or [] if c["type"] == "Degraded"), {})


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == crd_watch.__name__ and r.levelno == level]


@pytest_asyncio.fixture(loop_scope="function")
async def older_crd(apiserver: Cluster, caplog: pytest.LogCaptureFixture) -> Cluster:
    """The CRD of an older operator installed before this operator starts (the `cluster` fixture after this one)."""
    caplog.set_level(logging.INFO, logger=crd_watch.__name__)
    await apiserver.api.create(CRDS, older())
    return apiserver


async def test_an_older_crd_degrades_every_speechtotext_until_the_current_one_is_applied(
        older_crd: Cluster, cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    await cluster.api.create(cluster.stt_url(), STT)

    async def outdated() -> dict[str, Any] | None:
        c = await degraded(cluster)
        return c if c.get("reason") == "CRDOutdated" else None
    c = await cluster.eventually(outdated, PATIENCE)
    assert c["status"] == "True"
    assert "lacks spec.model.caBundle, status.autoscaling, subresource scale" in c["message"]
    assert "kubectl apply --server-side --force-conflicts -f crds/" in c["message"]
    assert (await cluster.event("CRDOutdated"))["type"] == "Warning"

    # More reconciles (a spec change, the children's events) say it once: one line per CRD state.
    patched = dict(STT, spec={**STT["spec"], "replicas": 2})
    await cluster.api.patch(cluster.stt_url("en-us"), patched)
    await cluster.eventually(lambda: _replicas(cluster, 2), PATIENCE)
    (warning,) = lines(caplog, logging.WARNING)
    assert warning.startswith(crd_check.problem(crd_check.compare(older(), crd.custom_resource_definition())) or "-")

    # The operator's own CRD applied (kubectl apply --server-side --force-conflicts -f crds/): the watch sees it, the condition clears
    # (once the reconciles the patch brought about are over: nothing but the CRD's change wakes one then).
    # The Degraded re-check (every 0.2 s here) leaves an outdated CRD to the watch: the reads stop, for good. Waited
    # for rather than timed, as a loaded machine may take seconds over those reconciles; a re-check reads every 0.2 s.
    def read(r: kmock.Request) -> bool:
        return r in cluster.sent("GET", "speechtotexts", "en-us")
    await cluster.eventually(lambda: quiet(cluster, counted=read), PATIENCE)
    reads = len(cluster.sent("GET", "speechtotexts", "en-us"))
    await asyncio.sleep(2)  # ten re-check periods
    assert len(cluster.sent("GET", "speechtotexts", "en-us")) == reads
    since = len(list(cluster.emulator))
    await cluster.api.delete(f"{CRDS}/{crd_check.NAME}")
    await cluster.api.create(CRDS, crd.custom_resource_definition())

    async def recovered() -> dict[str, Any] | None:
        c = await degraded(cluster)
        return c if c.get("reason") == "AsExpected" else None
    assert (await cluster.eventually(recovered, PATIENCE))["status"] == "False"
    await cluster.event("Recovered")
    # its status alone: the SpeechToText read again (the new CRD's defaults apply as it is read), its Deployment read
    # for the status; not its Service nor its PodDisruptionBudget (before, a whole reconcile read them too)
    sent = operator_requests(cluster, since)
    print("the operator's requests for the CRD's change:", sent)
    assert not any(k.startswith(("GET services", "GET poddisruptionbudgets", "PATCH deployments")) for k in sent), sent
    assert sent.get("GET speechtotexts") == 1 and sent.get("PATCH speechtotexts status") == 1, sent
    assert lines(caplog, logging.WARNING) == [warning]
    assert lines(caplog, logging.INFO)[-1].endswith("matches this operator's (0.1.0)")

    # Only list and watch, both of the one CRD (what the API server filters by name; kmock does not).
    asked = cluster.sent("GET", "customresourcedefinitions")
    assert asked and all(r.params.get("fieldSelector") == f"metadata.name={crd_check.NAME}" for r in asked)
    assert {r.params.get("watch") for r in asked} == {None, "true"}


async def _replicas(cluster: Cluster, replicas: int) -> bool:
    dep = await cluster.api.get(cluster.url("apps/v1", "deployments", "en-us")) or {}
    return (dep.get("spec") or {}).get("replicas") == replicas


@pytest.fixture
def bound_by_roles(older_crd: Cluster) -> Cluster:
    """From here on the operator's token (and the test's) may not read outside the namespace."""
    older_crd.emulator.namespaced_only.add("test-token")
    return older_crd


async def test_crds_it_may_not_read_are_one_info_line_and_change_nothing(
        bound_by_roles: Cluster, cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """Bound by Roles only (the chart's namespaced mode) the list of CRDs is 403: one INFO line, no retry, and the
    SpeechToText is served as ever (an older CRD is there, but the operator cannot know)."""
    await cluster.api.create(cluster.stt_url(), STT)

    async def as_expected() -> dict[str, Any] | None:
        c = await degraded(cluster)
        return c if c.get("reason") == "AsExpected" else None
    await cluster.eventually(as_expected)
    await asyncio.sleep(1.5)  # a retry would come after 1 s
    (info,) = lines(caplog, logging.INFO)
    assert "is not done: this operator may not read CustomResourceDefinitions (HTTP 403" in info
    assert not lines(caplog, logging.WARNING)
    assert len(cluster.sent("GET", "customresourcedefinitions")) == 1
    assert (await degraded(cluster))["reason"] == "AsExpected"


@contextlib.asynccontextmanager
async def api_server(watch: bytes, lists: list[float]) -> AsyncIterator[Kube]:
    """A small aiohttp server on loopback standing in for an API server (or a proxy before it) kmock cannot be: it
    lists the current CRD (the time of each list in ``lists``) and answers each watch with ``watch``, then ends it."""
    from aiohttp import web
    from kubernetes_asyncio import client as k8s

    async def crds(request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") == "true":
            return web.Response(body=watch, content_type="application/json")
        lists.append(asyncio.get_running_loop().time())
        return web.json_response({"metadata": {"resourceVersion": str(len(lists))}, "items": [crd.custom_resource_definition()]})

    app = web.Application()
    app.router.add_get(CRDS, crds)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    configuration = k8s.Configuration(host=f"http://127.0.0.1:{port}")
    configuration.api_key = {"BearerToken": "test-token"}
    kube = Kube(configuration)
    try:
        yield kube
    finally:
        await kube.close()
        await runner.cleanup()


async def followed(kube: Kube, seconds: float) -> tuple[crd_watch.InstalledCRD, asyncio.Task[None]]:
    """The CRD followed for ``seconds``: what was seen, and the following task (cancelled, or ended by itself)."""
    state = crd_watch.InstalledCRD()
    follow = asyncio.create_task(crd_watch.follow(kube, state))
    await asyncio.sleep(seconds)
    ended = follow.done()
    follow.cancel()
    await asyncio.gather(follow, return_exceptions=True)
    assert not ended, f"the CRD's watch task ended by itself: {follow.exception() if not follow.cancelled() else ''!r}"
    return state, follow


async def test_watches_the_api_server_ends_at_once_are_not_a_busy_loop_of_lists() -> None:
    """An API server (or a proxy before it) that ends each watch as soon as it begins, with no event: the CRD is
    listed again at most about once a second, not as fast as the loop turns (hundreds of lists of the whole CRD a
    second, and the operator's CPU). kmock never ends a watch early: :func:`api_server` stands in."""
    lists: list[float] = []
    async with api_server(b"", lists) as kube:
        state, _ = await followed(kube, 2.5)
    assert state.generation == 0 and state.problem is None  # it matched: nothing to show
    assert 2 <= len(lists) <= 4, f"{len(lists)} lists in 2.5 s"


@pytest.mark.parametrize("line", [b"[]", b'"ok"', b'{"type": "ADDED", "object": []}'])
async def test_a_watch_line_that_is_json_but_no_event_is_a_warning_and_a_retry(line: bytes, caplog: pytest.LogCaptureFixture) -> None:
    """A watch answered with JSON that is no event (a proxy's, or a body cut and joined): a WARNING naming what is
    watched and the line, then the CRD listed and watched again, as for a line that is no JSON. Before, the line
    reached the watch's reader as a list or a string: AttributeError, which ended the task following the CRD for
    good, in silence (no later change of the CRD seen, ``CRDOutdated`` never set or cleared)."""
    caplog.set_level(logging.INFO, logger=crd_watch.__name__)
    caplog.set_level(logging.INFO, logger="speech_operator.kube")
    lists: list[float] = []
    async with api_server(line + b"\n", lists) as kube:
        await followed(kube, 2.5)
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert said and all("watching the SpeechToText CRD: watch " in s and "no watch event" in s for s in said), said
    assert 2 <= len(lists) <= 4, f"{len(lists)} lists in 2.5 s"
