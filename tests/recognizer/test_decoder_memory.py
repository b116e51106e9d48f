"""The default ``DecoderMaxCount`` counts the memory the loaded models really take: real recognizer processes, each in a
cgroup with a memory limit as a kubelet gives a container (tests/kubelet.py), serving the real ko-KR model under one
locale or under two (the same model files as two locale folders, so two models loaded: twice the base)."""

from __future__ import annotations

import contextlib
import json
import re
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from speech_recognizer import contract
from speech_recognizer.models import installed_packages
from tests.kubelet import Pod, host_image
from tests.pods_at_once import runs_pod

#: The default pod's limits (a SpeechToText's: 2 CPUs, 3Gi): 3 × 2 cores and (3072 - 576) // 400 both give 6.
LIMITS = {"cpu": "2", "memory": "3Gi"}
#: The start-up line once the models are loaded (app.fit_decoders).
LOADED = re.compile(r"speech_recognizer\.app: ([^\n]+?) loaded \((\d+) MiB resident\): serving with (\d+) decoders? \(([^\n]*)\)\n")
#: A tenth of a second of 16 kHz 16-bit silence: a stream's first audio, which takes its decoder.
FIRST_AUDIO = bytes(3200)


@dataclass
class Served:
    """What a recognizer pod said and did once ready."""

    #: ``/sessions``' ``decoders``: what the operator's autoscaling reads.
    decoders: int
    #: ``/metrics``' ``speech_decoders_max`` and ``speech_locale_loaded`` by locale, read then.
    exported: int
    locales: dict[str, float]
    #: Streams that got a decoder before one was refused, and that one's close code and reason.
    admitted: int
    refused: tuple[int | None, str]
    log: str

    def loaded(self) -> tuple[str, int, int, str]:
        """The start-up line's locales, resident MiB, decoders, and what it says they are made of."""
        match = LOADED.search(self.log)
        assert match, self.log[-3000:]
        return match[1], int(match[2]), int(match[3]), match[4]


def streams_until_refused(most: int) -> tuple[int, tuple[int | None, str]]:
    """/vosk streams opened one after another, each holding its decoder (its first audio answered), until one is
    refused (or ``most`` were admitted): how many got one, and the refusal's close code and reason."""
    with contextlib.ExitStack() as held:
        for admitted in range(most):
            stream = held.enter_context(connect(f"ws://127.0.0.1:{contract.PORT}/vosk?language=ko-KR", open_timeout=10))
            try:
                stream.send(FIRST_AUDIO)
                stream.recv(timeout=30)
            except ConnectionClosed as closed:
                assert closed.rcvd is not None
                return admitted, (closed.rcvd.code, closed.rcvd.reason)
        return most, (None, "")


def serve(tmp_path: Path, locales: tuple[str, ...], *args: str) -> Served:
    """A recognizer serving the installed ko-KR model as each of ``locales`` (``Mounts:Models/<locale>`` links to its
    folder) under :data:`LIMITS`, run as a kubelet runs a container, to ready; then what it reports and admits."""
    models = tmp_path / "models"
    models.mkdir()
    for locale in locales:
        (models / locale).symlink_to(installed_packages()["ko-KR"])  # the image's Python, so its path, is in the pod
    ready = {"httpGet": {"path": contract.ROUTE_READY, "port": contract.PORT}, "periodSeconds": 1, "timeoutSeconds": 3}
    container = {"name": "recognizer", "args": ["Eula=accept", "Mounts:Models=/models", f"Locale={','.join(locales)}", *args],
                 "volumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True}],
                 "resources": {"limits": LIMITS}, "readinessProbe": ready}
    spec = {"containers": [container], "volumes": [{"name": "models", "hostPath": {"path": "/srv/models"}}]}
    with Pod(spec, host_image(), volumes={"models": models}, name="locales") as pod:
        running = pod.start()
        try:
            pod.wait_probe(running, "readinessProbe", budget=300)
            status, body = pod.http_get(contract.PORT, contract.ROUTE_SESSIONS)
            assert status == 200, body
            status, metrics = pod.http_get(contract.PORT, contract.ROUTE_METRICS)
            assert status == 200, metrics
            samples = [s for family in text_string_to_metric_families(metrics) for s in family.samples]
            exported = int(next(s.value for s in samples if s.name == "speech_decoders_max"))
            locales = {s.labels["locale"]: s.value for s in samples if s.name == "speech_locale_loaded"}
            admitted, refused = pod.in_network(lambda: streams_until_refused(8))
            return Served(int(json.loads(body)["decoders"]), exported, locales, admitted, refused, running.log())
        finally:
            pod.stop(running, grace=0)


def two_locales(tmp_path: Path) -> Served:
    return serve(tmp_path, ("ko-KR", "ko-KP"), "Warmup:Seconds=1")


def two_locales_six_given(tmp_path: Path) -> Served:
    return serve(tmp_path, ("ko-KR", "ko-KP"), "Warmup:Count=0", "DecoderMaxCount=6")


def one_locale(tmp_path: Path) -> Served:
    return serve(tmp_path, ("ko-KR",), "Warmup:Count=0")


@runs_pod(two_locales)
def test_two_locales_get_the_decoders_the_memory_left_by_their_models_holds(pod_run: Future[Served]) -> None:
    """Two models loaded (~1050 MiB resident with glibc's malloc, against ~557 for one) leave 5 decoders in 3Gi, not
    the 6 the small ko-KR model's 576 MiB would: ``/sessions`` says 5, the sixth stream at once is refused with 1013,
    the start-up line says the measured base, and the warm-up fills the smaller pool (2 per locale). Before, the base
    was 576 MiB whatever was loaded: 6 decoders, whose streams of varied speech take past 1050 + 6 × 400 MiB (the
    kernel OOM-kills the container, every stream on it)."""
    seen = pod_run.result()
    assert (seen.decoders, seen.admitted) == (5, 5), seen.log[-3000:]
    assert seen.exported == 5 and seen.locales == {"ko-KR": 1, "ko-KP": 1}, "/metrics says the count made after the load"
    code, reason = seen.refused
    assert code == 1013 and reason.startswith("all 5 decoders are busy"), seen.refused
    locales, resident, decoders, made_of = seen.loaded()
    print(f"two locales: {resident} MiB resident, {decoders} decoders ({made_of})")
    assert locales == "ko-KR, ko-KP" and 872 < resident <= 1272, seen.log[-3000:]  # the span where 3Gi holds 5
    assert decoders == 5
    assert made_of.startswith(f"3 × 2 cores: 6; the 3072 MiB memory limit holds 5 at 400 MiB each beyond {resident} MiB; cores: "), made_of
    assert "warm-up done: 2 ko-KR recognizers, 2 ko-KP recognizers" in seen.log, seen.log[-3000:]
    assert "is more than the" not in seen.log  # the default never warns


@runs_pod(two_locales_six_given)
def test_an_explicit_count_past_what_the_loaded_models_leave_is_obeyed_with_a_warning(pod_run: Future[Served]) -> None:
    """``DecoderMaxCount=6`` beside two locales in 3Gi is obeyed (6 streams admitted), with one warning in the measured
    figures: the limit holds 5 beyond what the process holds, and the limit that holds 6. Before: no warning (6 was
    what 3Gi held beside 576 MiB)."""
    seen = pod_run.result()
    assert (seen.decoders, seen.admitted, seen.refused[0]) == (6, 6, 1013), seen.log[-3000:]
    assert seen.exported == 6
    warnings = [line for line in seen.log.splitlines() if "is more than the" in line]
    assert len(warnings) == 1 and " WARNING " in warnings[0], seen.log[-3000:]
    assert "DecoderMaxCount=6 is more than the 3072 MiB memory limit holds (5)" in warnings[0], warnings
    _, resident, decoders, _ = seen.loaded()
    assert decoders == 6
    assert f"raise the memory limit to {resident + 6 * 400} MiB" in warnings[0], warnings


@runs_pod(one_locale)
def test_one_locale_keeps_the_decoders_of_the_small_ko_kr_model(pod_run: Future[Served]) -> None:
    """One ko-KR locale holds less than :data:`~speech_recognizer.settings.BASE_MIB` once loaded, so its figures are
    those of before: 6 decoders in 3Gi on 2 CPUs, beyond 576 MiB."""
    seen = pod_run.result()
    assert (seen.decoders, seen.admitted, seen.refused[0]) == (6, 6, 1013), seen.log[-3000:]
    locales, resident, decoders, made_of = seen.loaded()
    print(f"one locale: {resident} MiB resident, {decoders} decoders ({made_of})")
    assert locales == "ko-KR" and resident <= 576 and decoders == 6, seen.log[-3000:]
    assert made_of.startswith("3 × 2 cores: 6; the 3072 MiB memory limit holds 6 at 400 MiB each beyond 576 MiB; cores: "), made_of
