"""What a user does on day one, each a named check with a message that says what went wrong.

The judgements (is this pod ready, did it restart, what is left) are pure functions of the
objects ``kubectl get -o json`` returns, so they are unit-tested on such objects; the checks
around them only fetch, wait and act.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from speech_recognizer import contract

from . import manifests as m
from .speech import Audio, Outcome, mismatch, recognize

Manifest = dict[str, Any]


class CheckFailed(AssertionError):
    """A check's verdict; the message is what the user reads."""


# ---- pure judgements -------------------------------------------------------------------------
def condition(obj: Manifest, type_: str) -> Manifest | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == type_), None)


def pod_ready(pod: Manifest) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    return (condition(pod, "Ready") or {}).get("status") == "True"


def pod_restarts(pod: Manifest) -> int:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return sum(int(s.get("restartCount") or 0) for s in statuses)


PULL_ERRORS = {"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"}


def pod_state(pod: Manifest) -> str:
    """One line: phase, readiness, and why a container is not running (or why it last stopped)."""
    status = pod.get("status") or {}
    name = pod["metadata"]["name"]
    parts = [f"pod {name}: {status.get('phase', 'Unknown')}"]
    if pod["metadata"].get("deletionTimestamp"):
        parts.append("terminating")
    unscheduled = condition(pod, "PodScheduled")
    if unscheduled and unscheduled.get("status") == "False":
        parts.append(f"not scheduled: {unscheduled.get('reason')}: {unscheduled.get('message', '')}".strip())
    for s in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        state = s.get("state") or {}
        if "waiting" in state:
            why = state["waiting"].get("reason", "waiting")
            text = f"{s['name']} waiting: {why}"
            if state["waiting"].get("message"):
                text += f" ({state['waiting']['message'][:200]})"
            if why in PULL_ERRORS:
                text += " - is the image loaded on every node (--load-image) or pullable from it?"
            parts.append(text)
        elif "terminated" in state:
            t = state["terminated"]
            parts.append(f"{s['name']} terminated: {t.get('reason')} exit {t.get('exitCode')}")
        elif not s.get("ready"):
            parts.append(f"{s['name']} running, not ready")
        last = (s.get("lastState") or {}).get("terminated")
        if s.get("restartCount"):
            parts.append(f"{s['name']} restarted {s['restartCount']}x"
                         + (f", last: {last.get('reason')} exit {last.get('exitCode')}" if last else ""))
    if pod_ready(pod):
        parts.append("ready")
    return ", ".join(parts)


def restarted(before: list[Manifest], after: list[Manifest]) -> list[str]:
    """What changed for the worse between two snapshots of the same pods: a pod gone or replaced,
    a container restarted, a pod no longer ready."""
    now = {p["metadata"]["uid"]: p for p in after}
    problems = []
    for pod in before:
        uid, name = pod["metadata"]["uid"], pod["metadata"]["name"]
        later = now.get(uid)
        if later is None:
            problems.append(f"pod {name} was replaced or deleted")
        elif pod_restarts(later) > pod_restarts(pod):
            problems.append(f"{pod_state(later)}")
        elif not pod_ready(later):
            problems.append(f"{pod_state(later)} (no longer ready)")
    return problems


def warnings_about(events: list[Manifest], names: set[str]) -> list[str]:
    """Warning events about the named objects, oldest first, as ``kubectl get events`` shows them."""
    out = []
    for e in sorted(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or ""):
        obj = e.get("involvedObject") or {}
        if e.get("type") == "Warning" and obj.get("name") in names:
            out.append(f"{obj.get('kind')}/{obj.get('name')}: {e.get('reason')}: {e.get('message', '').strip()}"
                       + (f" (x{e['count']})" if (e.get("count") or 1) > 1 else ""))
    return out


def stt_state(stt: Manifest) -> str:
    """``name: Ready=False ReplicasNotReady: 0/1 replicas ready; Degraded=True ...``."""
    conds = (stt.get("status") or {}).get("conditions") or []
    if not conds:
        return f"{stt['metadata']['name']}: no status yet (is the operator watching namespace {stt['metadata'].get('namespace')}?)"
    return f"{stt['metadata']['name']}: " + "; ".join(
        f"{c['type']}={c['status']} {c.get('reason', '')}: {c.get('message', '')}".strip() for c in conds)


def leftovers(objects: dict[str, list[Manifest]]) -> list[str]:
    """``kind/name`` of every object still there (those being deleted included)."""
    return [f"{kind}/{o['metadata']['name']}" + (" (terminating)" if o["metadata"].get("deletionTimestamp") else "")
            for kind, items in objects.items() for o in items]


# ---- the checks ------------------------------------------------------------------------------
class Cluster(Protocol):
    """What the checks use of :class:`tests.e2e.kube.Kube`."""

    def get(self, kind: str, namespace: str | None = None, selector: str | None = None) -> list[Manifest]: ...
    def get_one(self, kind: str, name: str, namespace: str | None = None) -> Manifest | None: ...
    def apply(self, manifest: Manifest) -> None: ...
    def delete(self, kind: str, names: list[str], namespace: str | None = None, *, timeout: float = 300) -> None: ...
    def delete_now(self, kind: str, name: str, namespace: str) -> None: ...
    def scale(self, kind: str, name: str, namespace: str, replicas: int) -> None: ...
    def logs(self, namespace: str, pod: str, *, previous: bool = False, tail: int = 40) -> str: ...
    def port_forward(self, namespace: str, target: str, remote: int) -> Any: ...


@dataclass
class Timeouts:
    """Seconds; the defaults fit a small cluster that pulls nothing (images loaded) on 2 cores."""

    operator: float = 300
    ready: float = 900  # model load + warm-up of two recognizers
    stay_up: float = 120
    poll: float = 5
    scale: float = 600
    delete: float = 180
    refused: float = 180  # the operator reads the Deployment's ReplicaFailure


@dataclass
class Context:
    kube: Cluster
    run: m.Run
    timeouts: Timeouts
    audio: Callable[[], Audio]  # made on first use (espeak-ng, sox, in-process Vosk)
    log: Callable[[str], None] = print
    api_key: str = field(default_factory=lambda: secrets.token_hex(16))
    pace: float = 1.0  # audio seconds per second of the live stream in the drain check (real time)

    @property
    def ns(self) -> str:
        return self.run.namespace


def wait_for(what: str, probe: Callable[[], tuple[bool, str]], timeout: float, poll: float) -> str:
    """Poll ``probe`` -> (done, detail) until done; CheckFailed with the last detail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        done, detail = probe()
        if done:
            return detail
        if time.monotonic() >= deadline:
            raise CheckFailed(f"{what} not within {timeout:.0f} s: {detail}")
        time.sleep(poll)


def operator_pods(ctx: Context) -> list[Manifest]:
    return ctx.kube.get("pods", ctx.ns, ctx.run.operator_selector)


def stt_pods(ctx: Context, name: str) -> list[Manifest]:
    return [p for p in ctx.kube.get("pods", ctx.ns, m.recognizer_selector(name)) if not p["metadata"].get("deletionTimestamp")]


def explain(ctx: Context, pods: list[Manifest], names: set[str] = frozenset()) -> str:
    """Pod states, warning events and the logs of a pod that restarted: the context of a failure."""
    lines = [pod_state(p) for p in pods] or ["no pods"]
    lines += warnings_about(ctx.kube.get("events", ctx.ns), names | {p["metadata"]["name"] for p in pods})[-10:]
    for p in pods:
        if pod_restarts(p):
            lines.append(f"--- last log of {p['metadata']['name']} before its restart ---\n"
                         + ctx.kube.logs(ctx.ns, p["metadata"]["name"], previous=True))
    return "\n  ".join(lines)


def check_operator_runs(ctx: Context) -> str:
    def probe() -> tuple[bool, str]:
        pods = operator_pods(ctx)
        ready = [p for p in pods if pod_ready(p)]
        return bool(ready), "; ".join(pod_state(p) for p in pods) or f"no pod matches {ctx.run.operator_selector}"

    try:
        return wait_for("the operator pod ready", probe, ctx.timeouts.operator, ctx.timeouts.poll)
    except CheckFailed as exc:
        raise CheckFailed(f"{exc}\n  {explain(ctx, operator_pods(ctx))}") from None


def check_speech_to_texts_ready(ctx: Context) -> str:
    ctx.kube.apply(m.api_key_secret(ctx.run, ctx.api_key))
    for name, keyed in ((m.PLAIN, False), (m.KEYED, True)):
        ctx.kube.apply(m.speech_to_text(ctx.run, name, keyed=keyed))

    def probe() -> tuple[bool, str]:
        stts = {s["metadata"]["name"]: s for s in ctx.kube.get("speechtotexts", ctx.ns)}
        states = [stt_state(stts[n]) if n in stts else f"{n}: missing" for n in (m.PLAIN, m.KEYED)]
        ok = all(n in stts and (condition(stts[n], "Ready") or {}).get("status") == "True" for n in (m.PLAIN, m.KEYED))
        return ok, "; ".join(states)

    try:
        return wait_for("both SpeechToTexts Ready", probe, ctx.timeouts.ready, ctx.timeouts.poll)
    except CheckFailed as exc:
        pods = stt_pods(ctx, m.PLAIN) + stt_pods(ctx, m.KEYED)
        raise CheckFailed(f"{exc}\n  {explain(ctx, pods, {m.PLAIN, m.KEYED})}") from None


def check_stay_up(ctx: Context) -> str:
    before = operator_pods(ctx) + stt_pods(ctx, m.PLAIN) + stt_pods(ctx, m.KEYED)
    deadline = time.monotonic() + ctx.timeouts.stay_up
    while True:
        after = operator_pods(ctx) + stt_pods(ctx, m.PLAIN) + stt_pods(ctx, m.KEYED)
        problems = restarted(before, after)
        if problems:
            raise CheckFailed(f"within {ctx.timeouts.stay_up:.0f} s of being ready: " + "; ".join(problems)
                              + f"\n  {explain(ctx, after)}")
        if time.monotonic() >= deadline:
            return f"{len(before)} pods up for {ctx.timeouts.stay_up:.0f} s, no restarts"
        time.sleep(min(ctx.timeouts.poll * 2, max(0.0, deadline - time.monotonic())))


def check_sdk(name: str, keyed: bool) -> Callable[[Context], str]:
    def check(ctx: Context) -> str:
        audio = ctx.audio()
        with ctx.kube.port_forward(ctx.ns, f"service/{name}", 5000) as port:
            outcome = recognize(port, audio, key=ctx.api_key if keyed else None)
        problem = outcome_problem(outcome, audio)
        if problem:
            raise CheckFailed(f"Service {name}: {problem}")
        return f"{len(outcome.recognized)} utterances as in-process Vosk: {[r[0] for r in outcome.recognized]}"
    return check


def outcome_problem(outcome: Outcome, audio: Audio) -> str | None:
    if outcome.errors:
        return f"the Speech SDK reported {outcome.errors} after {[r[0] for r in outcome.recognized]}"
    if not outcome.stopped:
        return f"the recognition did not end (got {[r[0] for r in outcome.recognized]})"
    if not outcome.recognized:
        return "the Speech SDK got no result and no error"
    return mismatch(outcome.recognized, audio.expected)


def gateway_pods(ctx: Context) -> list[Manifest]:
    return [p for p in ctx.kube.get("pods", ctx.ns, ctx.run.gateway_selector) if not p["metadata"].get("deletionTimestamp")]


def run_locales(ctx: Context) -> list[str]:
    """The locales of the run's SpeechToTexts: what the gateway must route (sorted, as it lists them)."""
    return sorted({s["spec"]["locale"] for s in ctx.kube.get("speechtotexts", ctx.ns)})


def gateway_routes(port: int) -> tuple[int, list[str]]:
    """The gateway's ``/ready``: its status and the locales it routes."""
    import httpx

    try:
        answer = httpx.get(f"http://127.0.0.1:{port}{contract.ROUTE_READY}", timeout=10)
        return answer.status_code, list(answer.json().get("locales") or [])
    except (httpx.HTTPError, ValueError) as exc:
        return 0, [f"no answer: {exc}"]


def wait_for_gateway_pod(ctx: Context) -> None:
    def probe() -> tuple[bool, str]:
        pods = gateway_pods(ctx)
        return any(pod_ready(p) for p in pods), "; ".join(pod_state(p) for p in pods) or f"no pod matches {ctx.run.gateway_selector}"

    try:
        wait_for("the gateway pod ready", probe, ctx.timeouts.operator, ctx.timeouts.poll)
    except CheckFailed as exc:
        raise CheckFailed(f"{exc}\n  {explain(ctx, gateway_pods(ctx))}") from None


def wait_for_gateway(ctx: Context, port: int) -> list[str]:
    """The gateway (its pod ready, waited for before the port-forward) routing every locale of the run; the locales."""
    want = run_locales(ctx)

    def routes_probe() -> tuple[bool, str]:
        status, routed = gateway_routes(port)
        return status == 200 and set(want) <= set(routed), f"/ready: HTTP {status}, routes {routed}; the run's SpeechToTexts serve {want}"

    wait_for(f"the gateway (Service {ctx.run.gateway}) routing every locale", routes_probe, ctx.timeouts.operator, ctx.timeouts.poll)
    return want


def check_gateway(ctx: Context) -> str:
    """The unmodified Speech SDK through the gateway's Service, once for each locale of the run's
    SpeechToTexts, as through their own Services. The key goes with every request: the gateway picks
    which SpeechToText of a locale serves it, and one without a key accepts any."""
    audio = ctx.audio()
    got = []
    wait_for_gateway_pod(ctx)
    with ctx.kube.port_forward(ctx.ns, f"service/{ctx.run.gateway}", 5000) as port:
        for locale in wait_for_gateway(ctx, port):
            outcome = recognize(port, audio, key=ctx.api_key, language=locale)
            problem = outcome_problem(outcome, audio)
            if problem:
                raise CheckFailed(f"Service {ctx.run.gateway} (the gateway), language {locale}: {problem}")
            got.append(f"{locale}: {len(outcome.recognized)} utterances as in-process Vosk")
    return "; ".join(got)


#: A language no SpeechToText of the run serves.
UNKNOWN_LOCALE = "xx-YY"


def check_gateway_unknown_locale(ctx: Context) -> str:
    """REST through the gateway for a locale nobody serves: 400 naming the locales that exist."""
    import httpx

    wait_for_gateway_pod(ctx)
    with ctx.kube.port_forward(ctx.ns, f"service/{ctx.run.gateway}", 5000) as port:
        want = wait_for_gateway(ctx, port)
        url = f"http://127.0.0.1:{port}{contract.RECOGNITION_PATHS[1]}?language={UNKNOWN_LOCALE}"
        answer = httpx.post(url, content=b"", headers={"Content-Type": "audio/wav"}, timeout=30)
    expected = f"no model for language {UNKNOWN_LOCALE!r}; this server has: {', '.join(want)}"
    try:
        message = answer.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = None
    if answer.status_code != 400 or message != expected:
        raise CheckFailed(f"language={UNKNOWN_LOCALE} through the gateway: HTTP {answer.status_code} {answer.text[:300]!r}; "
                          f"expected 400 with {expected!r}")
    return f"400: {message}"


def check_scale(ctx: Context) -> str:
    for replicas in (2, 1):
        ctx.kube.scale("speechtotext", m.PLAIN, ctx.ns, replicas)

        def probe(replicas: int = replicas) -> tuple[bool, str]:
            pods = ctx.kube.get("pods", ctx.ns, m.recognizer_selector(m.PLAIN))
            live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
            stt = ctx.kube.get_one("speechtotext", m.PLAIN, ctx.ns) or {"metadata": {"name": m.PLAIN}}
            ready = sum(pod_ready(p) for p in live)
            status_ready = (stt.get("status") or {}).get("readyReplicas")
            done = len(pods) == replicas and ready == replicas and status_ready == replicas
            return done, (f"{len(pods)} pods ({ready} ready, {len(pods) - len(live)} terminating), "
                          f"status.readyReplicas {status_ready}; " + stt_state(stt))

        wait_for(f"`kubectl scale speechtotext/{m.PLAIN} --replicas={replicas}`: {replicas} ready pods",
                 probe, ctx.timeouts.scale, ctx.timeouts.poll)
    return "2 pods after scaling up, 1 after scaling down"


DRAIN_NEEDS = ("this needs the recognizer to drain on SIGTERM: stop taking new work, let the sessions in "
               "progress finish (within the pod's terminationGracePeriodSeconds, set from the spec), then exit")
#: Seconds of audio sent before the pod is deleted: inside the second of three utterances.
DELETE_AT = 4.0


def check_drain(ctx: Context) -> str:
    audio = ctx.audio()
    pods = [p for p in stt_pods(ctx, m.PLAIN) if pod_ready(p)]
    if not pods:
        raise CheckFailed(f"no ready pod of {m.PLAIN} to stream to: " + "; ".join(pod_state(p) for p in stt_pods(ctx, m.PLAIN)))
    pod = pods[0]["metadata"]["name"]
    deleted = threading.Event()
    errors: list[str] = []

    def on_audio(sent: float) -> None:
        if sent >= DELETE_AT and not deleted.is_set():
            deleted.set()
            try:
                ctx.kube.delete_now("pod", pod, ctx.ns)
            except Exception as exc:  # noqa: BLE001 - reported as the check's failure
                errors.append(str(exc))

    with ctx.kube.port_forward(ctx.ns, f"pod/{pod}", 5000) as port:
        outcome = recognize(port, audio, paced=True, pace=ctx.pace, on_audio=on_audio, timeout=audio.seconds + 90)
    if errors or not deleted.is_set():
        raise CheckFailed(f"could not delete pod {pod} mid-stream: {errors}")
    problem = outcome_problem(outcome, audio)
    if problem:
        raise CheckFailed(f"pod {pod} deleted {DELETE_AT:.0f} s into a {audio.seconds:.0f} s stream: {problem}; {DRAIN_NEEDS}")
    return f"pod {pod} deleted {DELETE_AT:.0f} s in; all {len(outcome.recognized)} utterances arrived"


def refused_by_pod_security(stt: Manifest) -> bool:
    """Whether the SpeechToText says the API server refused its pods for the namespace's Pod Security level."""
    c = condition(stt, "Degraded") or {}
    return c.get("status") == "True" and c.get("reason") == "PodsNotCreated" and "PodSecurity" in (c.get("message") or "")


def check_restricted_namespace(ctx: Context) -> str:
    """Output on a PVC: the chown step (root) is refused in the run's restricted namespace and the status says so,
    with what to set; with ``chownVolumes: false`` the pod runs (the default StorageClass's volume writable by 65532)."""
    ctx.kube.apply(m.output_claim(ctx.run))
    ctx.kube.apply(m.speech_to_text(ctx.run, m.ON_A_CLAIM, output_claim=m.OUTPUT_CLAIM))

    def state() -> tuple[Manifest, str]:
        stt = ctx.kube.get_one("speechtotext", m.ON_A_CLAIM, ctx.ns) or {"metadata": {"name": m.ON_A_CLAIM}}
        return stt, stt_state(stt)

    def refused() -> tuple[bool, str]:
        stt, said = state()
        return refused_by_pod_security(stt), said

    said = wait_for(f"{m.ON_A_CLAIM}: Degraded, its pods refused by Pod Security", refused, ctx.timeouts.refused, ctx.timeouts.poll)
    if "chownVolumes" not in said:
        raise CheckFailed(f"the refusal does not say what to set: {said}")
    refusal = (condition(state()[0], "Degraded") or {}).get("message") or said
    ctx.kube.patch("speechtotext", m.ON_A_CLAIM, ctx.ns, {"spec": {"chownVolumes": False}})

    def ready() -> tuple[bool, str]:
        stt, said = state()
        return (condition(stt, "Ready") or {}).get("status") == "True", said

    try:
        wait_for(f"{m.ON_A_CLAIM} Ready with chownVolumes: false", ready, ctx.timeouts.ready, ctx.timeouts.poll)
    except CheckFailed as exc:
        raise CheckFailed(f"{exc}\n  {explain(ctx, stt_pods(ctx, m.ON_A_CLAIM), {m.ON_A_CLAIM})}") from None
    ctx.kube.delete("speechtotext", [m.ON_A_CLAIM], ctx.ns, timeout=ctx.timeouts.delete)
    return f"refused with the chown step ({refusal[:160]}…); Ready without it"


def check_delete(ctx: Context) -> str:
    ctx.kube.delete("speechtotext", [m.PLAIN, m.KEYED], ctx.ns, timeout=ctx.timeouts.delete)

    def probe() -> tuple[bool, str]:
        left = {kind: [o for name in (m.PLAIN, m.KEYED) for o in ctx.kube.get(kind, ctx.ns, m.owned_selector(name))]
                for kind in ("deployments", "services")}
        left["pods"] = [p for name in (m.PLAIN, m.KEYED) for p in ctx.kube.get("pods", ctx.ns, m.recognizer_selector(name))]
        left_names = leftovers(left)
        return not left_names, "left: " + ", ".join(left_names) if left_names else "Deployments, Services and pods gone"

    return wait_for("the children of the deleted SpeechToTexts gone", probe, ctx.timeouts.delete, ctx.timeouts.poll)


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[Context], str]
    needs: tuple[str, ...] = ()


OPERATOR = "the operator pod runs"
READY = "a SpeechToText without and one with an API key become Ready"
STAY_UP = "the operator and recognizer pods stay up with no restarts"
SDK_PLAIN = f"the unmodified Speech SDK through Service {m.PLAIN} matches in-process Vosk"
SDK_KEYED = f"the unmodified Speech SDK through Service {m.KEYED} (API key) matches in-process Vosk"
GATEWAY = "the unmodified Speech SDK through the gateway's Service matches in-process Vosk for each locale"
GATEWAY_UNKNOWN = "the gateway answers a locale nobody serves with 400 naming the locales"
SCALE = "kubectl scale changes the pods"
DRAIN = "a stream in progress when its pod is deleted gets all its results"
RESTRICTED = "in a namespace enforcing the restricted Pod Security Standard, a PVC's chown step is refused and said so; chownVolumes: false runs"
DELETE = "deleting the SpeechToTexts removes their children"

#: Day one, in order. A check runs only when the checks it needs passed.
CHECKS: tuple[Check, ...] = (
    Check(OPERATOR, check_operator_runs),
    Check(READY, check_speech_to_texts_ready, (OPERATOR,)),
    Check(STAY_UP, check_stay_up, (READY,)),
    Check(SDK_PLAIN, check_sdk(m.PLAIN, keyed=False), (READY,)),
    Check(SDK_KEYED, check_sdk(m.KEYED, keyed=True), (READY,)),
    Check(GATEWAY, check_gateway, (READY,)),
    Check(GATEWAY_UNKNOWN, check_gateway_unknown_locale, (READY,)),
    Check(SCALE, check_scale, (READY,)),
    Check(DRAIN, check_drain, (READY,)),
    Check(DELETE, check_delete, (READY,)),
    Check(RESTRICTED, check_restricted_namespace, (OPERATOR,)),  # last: its pod has the node to itself
)
