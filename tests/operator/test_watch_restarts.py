"""The operator across the ends of its watches: the API server ends every watch (at its ``timeoutSeconds``, else after
30-60 minutes), and kopf watches again from the last resourceVersion it saw. Here its watches last 1 s."""

from __future__ import annotations

import asyncio
import collections
import copy
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import prometheus_client
import pytest
from conftest import NAMESPACE, condition, deployment, one_pod_ready, quiet

from speech_operator import api
from speech_operator.config import OperatorConfig
from speech_operator.kube import USER_AGENT
from speech_operator.reconcile import Runtime

if TYPE_CHECKING:
    import kmock
    from conftest import Cluster

#: The operator's relist_settle_seconds here (its default: 2): far longer than the gaps between the objects of a listing
#: of a few reaching its handlers, which come at once from kmock, even when the test gets a small share of a CPU (an
#: early look re-reads a SpeechToText, one GET more than these tests count); each look after a listing made again comes
#: that late.
SETTLE = 1.0


@pytest.fixture
def relist_settle_seconds() -> float:
    return SETTLE


BASE: dict[str, Any] = {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "en-us", "namespace": NAMESPACE},
                        "spec": {"locale": "en-US", "eula": "accept", "replicas": 1}}


@pytest.mark.parametrize("watch_seconds", [1])
async def test_what_changes_after_a_watch_ended_is_handled_once_and_nothing_is_lost(cluster: Cluster) -> None:
    """A SpeechToText created after kopf's first watch of them ended, changed after the next ended and deleted after
    the one after: its Deployment appears, changes and goes. What kopf's watches were sent, one after the other, is
    every event after its list's version exactly once, in order (what a watch from that version replays now), each
    watch starting from the last version the one before sent (kopf resumes; it does not list again), and the
    operator's Events say each write once. Before, the emulator's watches never ended, so this path never ran."""
    def watches() -> list[kmock.Request]:
        return [r for r in cluster.sent("GET", api.PLURAL) if r.params.get("watch") == "true"]

    async def restarted(after: int) -> bool:
        return len(watches()) > after

    async def until_restarted() -> None:
        now = len(watches())
        await cluster.eventually(lambda: restarted(now))

    await cluster.eventually(lambda: restarted(1))  # the first watch ended, kopf watches again
    await cluster.api.create(cluster.stt_url(), copy.deepcopy(BASE))
    await cluster.eventually(lambda: deployment(cluster))
    await until_restarted()
    await cluster.api.patch(cluster.stt_url("en-us"), {"spec": {"version": "2.0.0"}})

    async def rolled() -> bool:
        dep = await deployment(cluster) or {}
        return dep["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":2.0.0")
    await cluster.eventually(rolled)
    await until_restarted()
    assert await cluster.api.delete(cluster.stt_url("en-us"))

    async def gone() -> bool:
        return await deployment(cluster) is None and await cluster.api.get(cluster.stt_url("en-us")) is None
    await cluster.eventually(gone)

    first = watches()[0].params["resourceVersion"]
    everything = [(e["type"], e["object"]["metadata"]["name"], e["object"]["metadata"]["resourceVersion"])
                  async for e in cluster.api.watch(cluster.stt_url(), {"resourceVersion": first}, 1)]
    assert ("ADDED", "en-us") == everything[0][:2] and ("DELETED", "en-us") == everything[-1][:2], everything

    def sent() -> list[tuple[str, str, str]]:
        return [(kind, name, version) for r in watches() for kind, _, name, version in cluster.emulator.streamed.get(r.id, [])]

    async def all_sent() -> bool:
        return sent() == everything
    try:
        await cluster.eventually(all_sent)
    except AssertionError:
        raise AssertionError(f"kopf's watches were sent {sent()}, not {everything}") from None
    runs = watches()
    assert len(runs) >= 4, f"{len(runs)} watches"
    for before, after in itertools.pairwise(runs):
        last = [version for *_, version in cluster.emulator.streamed[before.id]]
        assert after.params.get("resourceVersion") == (last[-1] if last else before.params["resourceVersion"]), (
            before.params, cluster.emulator.streamed[before.id], after.params)

    said = collections.Counter((e["reason"], e["message"]) for e in await cluster.events()
                               if e["reason"] in ("Created", "Updated", "Deleted"))
    assert said and max(said.values()) == 1, said
    assert ("Created", "Created Deployment en-us") in said and any(r == "Updated" for r, _ in said), said


def own(request: kmock.Request) -> bool:
    """Whether ``request`` is the operator's own or one of kopf's writes (its patches of a SpeechToText): not kopf's
    watches and lists, which go on all the time here (its watches end every second)."""
    agent = request.headers.get("User-Agent", "")
    return request.resource is not None and (
        agent.startswith(USER_AGENT) or agent.startswith("kopf/") and request.method != "GET")


def ours(cluster: Cluster, since: int) -> dict[str, int]:
    """The requests :func:`own` counts from the emulator's ``since``-th on, by verb, resource and name."""
    return dict(sorted(collections.Counter(
        " ".join(filter(None, (r.method, r.resource.plural, r.subresource, r.name)))
        for r in list(cluster.emulator)[since:] if own(r) and r.resource is not None).items()))


def kopf_listed(cluster: Cluster, since: int) -> list[tuple[int, str]]:
    """kopf's lists (not its watches) from the emulator's ``since``-th request on: the number of each, and its plural."""
    return [(since + i, r.resource.plural) for i, r in enumerate(list(cluster.emulator)[since:])
            if r.method == "GET" and r.resource is not None and r.name is None and r.params.get("watch") != "true"
            and r.headers.get("User-Agent", "").startswith("kopf/")]


async def relisted(cluster: Cluster, meanwhile: Callable[[], Awaitable[Any]], *plurals: str) -> int:
    """Hold every watch of ``plurals`` (Deployments when none; the API server out of reach for them), kopf's next one
    of each namespace it watches (or of all), do ``meanwhile`` (and a write of another resource: the cluster's version
    moves on), forget their history
    (:meth:`Emulator.compact`; the other resources' watches go on), let them go:
    kopf's next watch of each is answered 410 Expired and it lists them again. The number of the emulator's request
    the first of those listings was, once each came."""
    plurals = plurals or ("deployments",)

    def watches(plural: str) -> list[kmock.Request]:
        return [r for r in cluster.sent("GET", plural) if r.params.get("watch") == "true"]

    async def restarted(plural: str, after: int) -> bool:  # the next watch of each namespace watched (or of all): held
        return {r.namespace for r in watches(plural)[after:]} >= {r.namespace for r in watches(plural)}
    away = {plural: asyncio.Event() for plural in plurals}
    began = {plural: len(watches(plural)) for plural in plurals}
    cluster.emulator.watches_held.update(away)
    # the next one of each held: waited for together (each ends within the watches' 1 s, not one after the other)
    await asyncio.gather(*(cluster.eventually(lambda plural=plural: restarted(plural, began[plural])) for plural in plurals))
    await meanwhile()
    await cluster.api.create(cluster.url("v1", "configmaps"), {  # the cluster goes on meanwhile: a version past theirs
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "meanwhile-", "namespace": NAMESPACE}})
    await cluster.emulator.compact(*plurals)
    since = len(list(cluster.emulator))
    for plural, event in away.items():
        del cluster.emulator.watches_held[plural]
        event.set()

    async def listed(plural: str) -> int | None:
        return next((i for i, listed in kopf_listed(cluster, since) if listed == plural), None)
    listings = [await cluster.eventually(lambda plural=plural: listed(plural)) for plural in plurals]
    for plural in plurals:
        assert any(code == "410" for r in watches(plural) for *_, code in cluster.emulator.streamed.get(r.id, [])), (
            f"a 410 Expired of {plural}")
    return int(min(listings))


async def created(cluster: Cluster, name: str, locale: str, namespace: str = NAMESPACE) -> None:
    """The SpeechToText ``name`` made in ``namespace``, its pod ready."""
    await cluster.api.create(cluster.stt_url(namespace=namespace), {
        **copy.deepcopy(BASE), "metadata": {"name": name, "namespace": namespace}, "spec": {**BASE["spec"], "locale": locale}})
    dep = await cluster.eventually(lambda: deployment(cluster, name, namespace))
    await one_pod_ready(cluster, dep, name, namespace)


async def unchanged_listing(cluster: Cluster, *plurals: str) -> tuple[int, dict[str, int]]:
    """:func:`relisted` with nothing changed meanwhile, once its looks are over: the number of the emulator's request
    the first listing was, and the operator's own requests from the next on (:func:`ours`)."""
    async def nothing() -> None:
        pass
    listing = await relisted(cluster, nothing, *plurals)
    await asyncio.sleep(SETTLE)  # the looks for children not listed, once the listing is over
    await cluster.eventually(lambda: quiet(cluster, counted=own), 10)
    return listing, ours(cluster, listing + 1)


async def deleted_while_away(cluster: Cluster, *plurals: str, namespace: str = NAMESPACE) -> dict[str, int]:
    """en-us's Deployment of ``namespace`` deleted while :func:`relisted` holds the watches of ``plurals``; once it
    is made again and the operator is quiet, the operator's own requests from the first listing on (:func:`ours`)."""
    async def delete() -> None:
        assert await cluster.api.delete(cluster.url("apps/v1", "deployments", "en-us", namespace=namespace))
    listing = await relisted(cluster, delete, *plurals)
    await cluster.eventually(lambda: deployment(cluster, "en-us", namespace), 5 + SETTLE)
    await cluster.eventually(lambda: quiet(cluster, counted=own), 10)
    return ours(cluster, listing + 1)


@pytest.mark.parametrize("watch_seconds", [1])
async def test_an_edit_made_while_a_watch_was_away_past_the_history_is_put_back_at_the_listing_after(
        cluster: Cluster) -> None:
    """The API server out of reach for kopf's watches of Deployments while the SpeechToText's is scaled by hand, the
    history forgotten meanwhile: kopf lists the Deployments again (:func:`relisted`), each with no event type, as at its
    start. That listing puts the replicas back (one apply, a ScaledByHand warning); one with nothing changed costs no
    request at all. Before, a listing's objects were all taken for the start's and left: the Deployment kept its 3
    replicas until the SpeechToText's next reconcile."""
    await created(cluster, "en-us", "en-US")
    await cluster.eventually(lambda: quiet(cluster, counted=own), 10)
    listing, sent = await unchanged_listing(cluster)
    assert sent == {}, "a listing with nothing changed costs nothing"
    assert [plural for _, plural in kopf_listed(cluster, listing)] == ["deployments"], "the Deployments' listing alone"

    async def scale() -> None:
        await cluster.api.patch(cluster.url("apps/v1", "deployments", "en-us"), {"spec": {"replicas": 3}})
    listing = await relisted(cluster, scale)

    async def put_back() -> bool:
        return (await deployment(cluster) or {}).get("spec", {}).get("replicas") == 1
    await cluster.eventually(put_back)
    await cluster.eventually(lambda: quiet(cluster, counted=own), 10)
    sent = ours(cluster, listing + 1)
    print("the operator's requests after the listing that had the Deployment scaled by hand:", sent)
    assert sent.get("PATCH deployments en-us") == 1, sent
    assert "ScaledByHand" in await cluster.reasons()


@pytest.mark.parametrize("watch_seconds", [1])
async def test_a_child_deleted_while_a_watch_was_away_past_the_history_is_made_again_once_the_listing_is_over(
        cluster: Cluster) -> None:
    """Two SpeechToTexts; one's Deployment deleted while kopf's watches of Deployments are away, the history forgotten
    meanwhile: kopf's listing after has the other's alone, and no event says the deletion. Once the listing is over, the
    one whose Deployment it lacked is reconciled (its Deployment made again), the other not. Before, the deleted
    Deployment stayed deleted until that SpeechToText's next reconcile."""
    await asyncio.gather(created(cluster, "en-us", "en-US"), created(cluster, "ko-kr", "ko-KR"))
    await cluster.eventually(lambda: quiet(cluster, counted=own), 10)

    sent = await deleted_while_away(cluster)
    print("the operator's requests after the listing that lacked a Deployment:", sent)
    assert sent.get("GET speechtotexts en-us") == 1 and "GET speechtotexts ko-kr" not in sent, sent
    assert not [k for k in sent if k.startswith("PATCH") and k.endswith("ko-kr")], sent


@pytest.mark.parametrize("watch_seconds", [1])
async def test_the_last_child_of_its_kind_deleted_while_the_watches_were_away_is_made_again_once_the_owners_are_listed(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """The one SpeechToText's Deployment, the only Deployment of the namespace, deleted while kopf's watches of
    Deployments and of SpeechToTexts are away, their history forgotten meanwhile: kopf's listing of Deployments after
    is empty and reaches no handler; kopf's session tells the operator it came (:meth:`Runtime.kopf_listed`), and once
    it is over the SpeechToText lacking its Deployment is reconciled. Once its listing of SpeechToTexts is over, the
    operator lists the kinds of their children kopf did not list again (Services: one request). A listing of
    SpeechToTexts with nothing changed costs those lists alone, and none when kopf listed the children again too.
    Before, the Deployment stayed deleted until the SpeechToText's next reconcile; then (bcef7dd) until the look after
    the SpeechToTexts' listing, which listed the Deployments too."""
    caplog.set_level(logging.INFO, logger="speech_operator")
    await created(cluster, "en-us", "en-US")
    await cluster.eventually(lambda: quiet(cluster, counted=own), 10)

    sent = await deleted_while_away(cluster, api.PLURAL, "deployments")
    print("the operator's requests after the listings that lacked the Deployment:", sent)
    assert "GET deployments" not in sent and sent.get("GET services") == 1, sent
    assert sent.get("GET speechtotexts en-us") == 1 and sent.get("PATCH deployments en-us") == 1, sent
    assert caplog.text.count("its Deployment was not in the listing kopf made again: reconciled") == 1, caplog.text

    async def nothing() -> None:
        pass
    costs: dict[tuple[str, ...], dict[str, int]] = {}
    for plurals in ((api.PLURAL,), (api.PLURAL, "deployments", "services")):
        listing = await relisted(cluster, nothing, *plurals)
        await asyncio.sleep(SETTLE)  # the look for children, once the listing is over
        await cluster.eventually(lambda: quiet(cluster, counted=own), 10)
        costs[plurals] = ours(cluster, listing + 1)
    print("the operator's requests after a listing with nothing changed:", costs)
    assert costs == {(api.PLURAL,): {"GET deployments": 1, "GET services": 1},
                     (api.PLURAL, "deployments", "services"): {}}, costs
    assert caplog.text.count(": reconciled") == 1 and "is gone" not in caplog.text, caplog.text


@pytest.mark.parametrize("watch_seconds", [1])
async def test_a_child_deleted_while_its_kind_s_watch_is_still_away_is_made_again_at_the_owners_listing(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """The one SpeechToText's Deployment deleted while kopf's watch of Deployments is away and stays away (the API
    server out of reach for it: reconnecting, no 410 yet), and kopf's watch of SpeechToTexts away meanwhile past their
    history: kopf lists the SpeechToTexts again, and neither a listing nor an event of Deployments comes. The look after
    the SpeechToTexts' listing (:meth:`~speech_operator.reconcile.Runtime._children_looked_for`) lists the Deployments
    kopf did not list again and makes the Deployment again then, while their watch is still away: what kopf's session
    (:meth:`~speech_operator.reconcile.Runtime.kopf_listed`) cannot see, as no listing of Deployments is made.
    Without that look, it stays deleted until the Deployments' watch comes back."""
    caplog.set_level(logging.INFO, logger="speech_operator")
    await created(cluster, "en-us", "en-US")
    await cluster.eventually(lambda: quiet(cluster, counted=own), 10)
    away = asyncio.Event()

    def watches() -> list[kmock.Request]:
        return [r for r in cluster.sent("GET", "deployments") if r.params.get("watch") == "true"]

    async def held_and_deleted() -> None:
        began = len(watches())
        cluster.emulator.watches_held["deployments"] = away

        async def restarted() -> bool:
            return len(watches()) > began
        await cluster.eventually(restarted)  # the next watch of Deployments is held: away
        assert await cluster.api.delete(cluster.url("apps/v1", "deployments", "en-us"))
    try:
        listing = await relisted(cluster, held_and_deleted, api.PLURAL)
        await cluster.eventually(lambda: deployment(cluster), 5 + SETTLE)
        assert not away.is_set() and "deployments" not in {p for _, p in kopf_listed(cluster, listing)}, (
            "made again while the Deployments' watch is still away, with no listing of them")
        await cluster.eventually(lambda: quiet(cluster, counted=own), 10)
        sent = ours(cluster, listing + 1)
    finally:
        cluster.emulator.watches_held.pop("deployments", None)
        away.set()
    print("the operator's requests after the SpeechToTexts' listing, the Deployments' watch still away:", sent)
    assert sent.get("GET deployments") == 1 and sent.get("PATCH deployments en-us") == 1, sent
    assert caplog.text.count("its Deployment is gone: reconciled") == 1, caplog.text


#: The namespaces beside :data:`NAMESPACE` of the tests of an operator that watches several.
OTHERS = ("speech-b", "speech-c")


@pytest.mark.parametrize("watch_seconds", [1])
@pytest.mark.parametrize(("namespaces", "elsewhere"), [(None, OTHERS[0]), ([NAMESPACE], NAMESPACE), ([NAMESPACE], None)],
                         ids=["every-namespace", "given-namespace", "given-namespace-alone"])
async def test_the_last_child_of_its_kind_deleted_while_its_kind_s_watch_alone_was_away_is_made_again_at_that_listing(
        cluster: Cluster, caplog: pytest.LogCaptureFixture, elsewhere: str | None) -> None:
    """The one SpeechToText's Deployment, the only child Deployment of the namespace, deleted while kopf's watch of
    Deployments alone is away (the SpeechToTexts' goes on), the history forgotten meanwhile: kopf's listing after has
    no child, only a Deployment no SpeechToText owns (another's; with ``--all-namespaces`` in another namespace, as the
    operator's own would be), or nothing at all (``elsewhere`` None: the only Deployment of the one namespace watched),
    which reaches no handler. kopf's session tells the operator that listing came
    (:meth:`~speech_operator.reconcile.Runtime.kopf_listed`): once it is over, the SpeechToText lacking its Deployment
    is reconciled (its Deployment made again), at no list of the operator's; a listing with nothing changed costs no
    request. Before, the Deployment stayed deleted until the SpeechToText's next reconcile (or the next listing of the
    SpeechToTexts): with nothing else listed, kopf passed no handler anything of the listing."""
    caplog.set_level(logging.INFO, logger="speech_operator")
    if elsewhere not in (None, NAMESPACE):
        await cluster.api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": elsewhere}})
    if elsewhere is not None:
        await cluster.api.create(cluster.url("apps/v1", "deployments", namespace=elsewhere), {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "another", "namespace": elsewhere},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "another"}}, "template": {
                "metadata": {"labels": {"app": "another"}}, "spec": {"containers": [{"name": "c", "image": "example.test/c"}]}}}})
    await created(cluster, "en-us", "en-US")
    await cluster.eventually(lambda: quiet(cluster, counted=own), 10)
    assert (await unchanged_listing(cluster))[1] == {}, "a listing with nothing changed costs nothing"

    sent = await deleted_while_away(cluster)
    print("the operator's requests after the listing that lacked the last child Deployment:", sent)
    assert sent.get("GET speechtotexts en-us") == 1 and sent.get("PATCH deployments en-us") == 1, sent
    assert not [k for k in sent if k.startswith("GET") and len(k.split()) == 2], f"no list of the operator's: {sent}"
    assert caplog.text.count("its Deployment was not in the listing kopf made again: reconciled") == 1, caplog.text
    assert cluster.runtime is not None and cluster.runtime.relisted_at == {}, cluster.runtime.relisted_at


@pytest.mark.parametrize("watch_seconds", [1])
@pytest.mark.parametrize(("namespaces", "scopes"), [(None, [None]), ([NAMESPACE, *OTHERS], [NAMESPACE, *OTHERS])],
                         ids=["every-namespace", "given-namespaces"])
async def test_the_look_for_children_after_a_listing_of_several_namespaces_lists_each_kind_once_when_every_one_is_watched(
        cluster: Cluster, caplog: pytest.LogCaptureFixture, scopes: list[str | None]) -> None:
    """One SpeechToText in each of 3 namespaces; kopf's watch of SpeechToTexts away, the history forgotten meanwhile.
    Once its listing is over, the look for their children lists each kind the SpeechToTexts keep once for every
    namespace when the operator watches them all (``--all-namespaces``: the chart's cluster mode, a ClusterRole), and
    once in each namespace when it watches those it was given (a Role in each may bind it: never a cluster-wide list).
    A Deployment deleted while the Deployments' watch was away too is made again either way; each is looked for where
    kopf did not list its kind again (kopf's listing of the Deployments is its own look: of every namespace, it has the
    others'; of one namespace, it is empty, and kopf's session tells it, :meth:`Runtime.kopf_listed`). Then nothing is kept of those listings (:attr:`Runtime.relisted_at`). Before, the
    look listed each kind once per namespace whatever the operator watched, and each listing's start was kept for
    good."""
    caplog.set_level(logging.INFO, logger="speech_operator")
    for namespace in OTHERS:
        await cluster.api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    await asyncio.gather(*(created(cluster, "en-us", "en-US", namespace) for namespace in (NAMESPACE, *OTHERS)))
    await cluster.eventually(lambda: quiet(cluster, counted=own), 10)

    def lists(since: int) -> list[str | None]:
        return sorted((r.namespace for r in list(cluster.emulator)[since:] if own(r) and r.method == "GET" and r.name is None),
                      key=str)

    async def nothing() -> None:
        pass
    listing = await relisted(cluster, nothing, api.PLURAL)
    await asyncio.sleep(SETTLE)  # the look for their children, once the listing is over
    await cluster.eventually(lambda: quiet(cluster, counted=own), 10)
    sent = ours(cluster, listing + 1)
    print("the operator's requests after a listing of the SpeechToTexts of 3 namespaces:", sent)
    assert sent == {"GET deployments": len(scopes), "GET services": len(scopes)}, sent
    assert lists(listing + 1) == sorted(scopes * 2, key=str), lists(listing + 1)

    sent = await deleted_while_away(cluster, api.PLURAL, "deployments", namespace=OTHERS[-1])
    print("the operator's requests after the listings that lacked a Deployment:", sent)
    # kopf's listing of the Deployments is their own look, that of a namespace with none too
    why = "was not in the listing kopf made again"
    assert "GET deployments" not in sent, sent
    assert sent.get("GET services") == len(scopes) and sent.get("PATCH deployments en-us") == 1, sent
    assert caplog.text.count(f"{OTHERS[-1]}/en-us: its Deployment {why}: reconciled") == 1, caplog.text
    assert caplog.text.count(": reconciled") == 1, caplog.text
    assert cluster.runtime is not None and cluster.runtime.relisted_at == {}, cluster.runtime.relisted_at


@pytest.mark.unit
@pytest.mark.parametrize("clusterwide", [False, True], ids=["given-namespaces", "every-namespace"])
async def test_the_starts_of_listings_made_again_are_forgotten_once_their_looks_are_over(clusterwide: bool) -> None:
    """kopf's listings made again of the SpeechToTexts and of each kind of child in 500 namespaces, one after the other
    (:meth:`Runtime.relisted`, as their handlers call it; none of them kept by a reconcile, so no request): once each
    listing's look is over, nothing of it is kept, and what is kept meanwhile is the listings under way: one per kind
    and namespace of a batch, or one per kind when kopf watches every namespace (its listing is of them all). Before,
    the start of each was kept for the process' life: one entry per kind and namespace ever listed again (2000 here);
    and then, with every namespace watched, a look per namespace of each child kind was under way (151 at once)."""
    rt = Runtime(config=OperatorConfig(image="example.test/recognizer", version="1.2.3", relist_settle_seconds=0.05),
                 clusterwide=clusterwide)
    kinds = [api.KIND, "Deployment", "Service", "PodDisruptionBudget"]
    most = 0
    for first in range(0, 500, 50):
        for i, kind in itertools.product(range(first, first + 50), kinds):
            rt.relisted(kind, f"ns-{i}", "en-us")
        most = max(most, len(rt.relisted_at))
        while rt.relistings:
            await asyncio.sleep(0.01)
    assert rt.relisted_at == {}, len(rt.relisted_at)
    assert most == (len(kinds) if clusterwide else 50 * len(kinds)), most  # the batch under way's alone
    await rt.stop_retries()


async def deleted_by_hand(cluster: Cluster, name: str) -> None:
    """The SpeechToText ``name`` deleted with its finalizer taken off by hand (README's uninstall note): gone with no
    deletion for the operator to handle."""
    assert await cluster.api.delete(cluster.stt_url(name))
    await cluster.api.patch(cluster.stt_url(name), {"metadata": {"finalizers": None}})
    assert await cluster.api.get(cluster.stt_url(name)) is None


#: Another SpeechToText beside the one deleted while the watch was away (None: it is the last of the namespace, and
#: kopf's listing after is empty: it reaches no handler, and kopf's session tells it, Runtime.kopf_listed).
OTHER = pytest.mark.parametrize("other", ["ko-kr", None], ids=["another-left", "the-last"])


@pytest.mark.parametrize("watch_seconds", [1])
@OTHER
async def test_a_speechtotext_deleted_while_the_watch_was_away_has_its_daemons_ended_once_the_listing_is_over(
        cluster: Cluster, caplog: pytest.LogCaptureFixture, other: str | None) -> None:
    """Two SpeechToTexts (or one: ``other`` None); one, with ``spec.autoscaling``, deleted while kopf's watch of
    SpeechToTexts is away, its finalizer taken off by hand (no deletion for kopf to handle), the history forgotten
    meanwhile: kopf's listing after has the other alone (or nothing), and kopf, which saw no deletion, keeps the one gone
    and runs its daemons on. Once the listing is over the operator reads it (one GET), forgets it and ends its daemons,
    in one line and no WARNING: its autoscaler lists its pods no more. Before, it listed them every
    ``autoscale_seconds`` for the operator's life (with no other, also after e8b8a9d: an empty listing reached no
    handler)."""
    caplog.set_level(logging.INFO)
    if other is not None:
        await created(cluster, other, "ko-KR")
    await cluster.api.create(cluster.stt_url(), {**copy.deepcopy(BASE), "spec": {
        **BASE["spec"], "autoscaling": {"minReplicas": 1, "maxReplicas": 2}}})
    await one_pod_ready(cluster, await cluster.eventually(lambda: deployment(cluster)))
    assert cluster.runtime is not None
    others = 0 if other is None else 1
    await cluster.eventually(lambda: asyncio.sleep(0, len(cluster.runtime.daemons) == 2 + others))  # follow_crd each, autoscale

    listing = await relisted(cluster, lambda: deleted_by_hand(cluster, "en-us"), api.PLURAL)

    def pods_listed(since: int) -> int:  # only en-us autoscales
        return sum(r.method == "GET" and r.resource is not None and r.resource.plural == "pods"
                   for r in list(cluster.emulator)[since:])

    async def unlisted() -> bool:  # no list of its pods for 3 of its autoscaler's periods
        since = len(list(cluster.emulator))
        await asyncio.sleep(3 * cluster.config.autoscale_seconds)
        return not pods_listed(since)
    try:
        await cluster.eventually(unlisted, 5 + SETTLE)
    except AssertionError:
        raise AssertionError(f"its pods are listed on: {pods_listed(listing)} lists since the listing") from None
    assert len(cluster.runtime.daemons) == others, cluster.runtime.daemons  # ko-kr's follow_crd
    sent = ours(cluster, listing + 1)
    print("the operator's requests after the listing that lacked the SpeechToText:", sent)
    assert sent.get("GET speechtotexts en-us") == 1, sent
    assert caplog.text.count("en-us was deleted while kopf's watch of them was away: forgotten, its daemons ended") == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert ("speech", "en-us") not in cluster.runtime.observed and ("speech", "en-us") not in cluster.runtime.reported


@pytest.mark.parametrize(("watch_seconds", "exported"), [(1, True)])
@OTHER
async def test_a_speechtotext_deleted_while_the_watch_was_away_leaves_the_metrics_once_the_listing_is_over(
        cluster: Cluster, other: str | None) -> None:
    """Two SpeechToTexts (or one: ``other`` None); one deleted while kopf's watch of SpeechToTexts is away, its
    finalizer taken off by hand, the history forgotten meanwhile. kopf's index keeps its entry (it drops one only at a
    deletion it watches); once the listing is over the operator knows it gone, and ``/metrics`` has the other alone (or
    none). Before, the one gone was exported (Ready, its replicas) for the operator's life."""
    left = [] if other is None else [other]
    await asyncio.gather(*(created(cluster, name, "ko-KR") for name in left), created(cluster, "en-us", "en-US"))
    assert cluster.exporter is not None
    exporter = cluster.exporter

    def exported_names() -> list[str]:
        return [s.name for s in exporter.summaries()]

    async def both() -> bool:
        return exported_names() == ["en-us", *left]
    await cluster.eventually(both)
    await relisted(cluster, lambda: deleted_by_hand(cluster, "en-us"), api.PLURAL)

    async def other_alone() -> bool:
        return exported_names() == left
    try:
        await cluster.eventually(other_alone, 5 + SETTLE)
    except AssertionError:
        raise AssertionError(f"exported after the listing: {exported_names()}") from None
    text = prometheus_client.generate_latest(exporter.registry).decode()
    assert all(f'name="{name}"' in text for name in left) and 'name="en-us"' not in text, text


@pytest.mark.unit
async def test_a_listing_made_again_is_one_look_under_way_however_many_objects_it_has() -> None:
    """kopf's listing made again of 1000 Deployments of one namespace, passed to :meth:`Runtime.relisted` object by
    object as its handler does, in 10 bursts: one look (one task) under way for the whole listing, over
    ``relist_settle_seconds`` after its last object, and then nothing is kept of it. Before, each object cancelled
    the look under way and made another: 1000 tasks for one listing."""
    rt = Runtime(config=OperatorConfig(image="example.test/recognizer", version="1.2.3", relist_settle_seconds=1.0))
    loop, looks = asyncio.get_running_loop(), set()
    for burst in range(10):
        for i in range(100):
            rt.relisted("Deployment", NAMESPACE, f"stt-{burst}-{i}")
            looks |= {task for task in asyncio.all_tasks() if task.get_name().endswith(" listed again")}
            last = loop.time()
        await asyncio.sleep(0.01)
    while rt.relistings:
        await asyncio.sleep(0.01)
    assert len(looks) == 1, f"{len(looks)} looks made for one listing"
    assert loop.time() - last >= rt.config.relist_settle_seconds, "over a settle after its last object, not its first"
    assert rt.relisted_at == {}, rt.relisted_at
    await rt.stop_retries()


@pytest.mark.parametrize("watch_seconds", [1])
@pytest.mark.parametrize(("written", "said"), [
    ({"conditions": []}, "its status was written by someone else: written again"),
    (None, "its status was removed by someone else: written again")], ids=["cleared", "removed"])
async def test_a_status_written_over_while_a_watch_was_away_past_the_history_is_written_again_at_the_listing_after(
        cluster: Cluster, caplog: pytest.LogCaptureFixture, written: dict[str, Any] | None, said: str) -> None:
    """The API server out of reach for kopf's watches of SpeechToTexts while someone clears the conditions of one (or
    removes its whole status), the history forgotten meanwhile: kopf lists them again, each with no event type, as at
    its start. That listing has the status written again, in one line; one with nothing changed costs no write (neither
    the operator's nor kopf's), only the lists of the children's kinds kopf did not list again (the look for a child
    gone with them). Before, a listing's SpeechToTexts were all taken for the start's and left:
    the status stayed cleared until that SpeechToText's next event."""
    caplog.set_level(logging.INFO, logger="kopf.objects")
    await created(cluster, "en-us", "en-US")
    await cluster.eventually(lambda: quiet(cluster, counted=own), 10)

    async def nothing() -> None:
        pass
    listing = await relisted(cluster, nothing, api.PLURAL)
    await asyncio.sleep(SETTLE)  # the look for its children, once the listing is over
    await cluster.eventually(lambda: quiet(cluster, counted=own), 10)
    assert ours(cluster, listing + 1) == {"GET deployments": 1, "GET services": 1}, "a listing with nothing changed"

    async def write() -> None:
        await cluster.api.patch(cluster.stt_url("en-us", "status"), {"status": written})
        assert not await condition(cluster, "Ready")
    listing = await relisted(cluster, write, api.PLURAL)

    async def written_again() -> bool:
        return (await condition(cluster, "Ready")).get("status") == "True"
    await cluster.eventually(written_again)
    await asyncio.sleep(SETTLE)  # the look for its children, once the listing is over
    await cluster.eventually(lambda: quiet(cluster, counted=own), 10)
    sent = ours(cluster, listing + 1)
    print("the operator's requests after the listing that had the status written over:", sent)
    assert sent.get("PATCH speechtotexts status en-us") == 1, sent
    assert caplog.text.count("by someone else: written again") == caplog.text.count(said) == 1


@pytest.mark.parametrize("watch_seconds", [1])
async def test_a_spec_changed_while_a_watch_was_away_past_the_history_is_handled_at_the_listing_after(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """The SpeechToText scaled while kopf's watches of SpeechToTexts are away, the history forgotten meanwhile: kopf's
    listing after compares its spec with the one it last handled (its last-handled-configuration annotation) and calls
    the update handler once (not the resume handler: kopf resumes an object once per process), which puts the
    Deployment at 2 replicas."""
    caplog.set_level(logging.INFO, logger="kopf.objects")
    await created(cluster, "en-us", "en-US")
    await cluster.eventually(lambda: quiet(cluster, counted=own), 10)
    assert "Updating is processed" not in caplog.text and "Resuming is processed" not in caplog.text, caplog.text

    async def scale() -> None:
        await cluster.api.patch(cluster.stt_url("en-us"), {"spec": {"replicas": 2}})
    await relisted(cluster, scale, api.PLURAL)

    async def scaled() -> bool:
        return (await deployment(cluster) or {}).get("spec", {}).get("replicas") == 2
    await cluster.eventually(scaled)
    await asyncio.sleep(1)
    assert caplog.text.count("Updating is processed: 1 succeeded") == 1, caplog.text
    assert "Resuming is processed" not in caplog.text, caplog.text
