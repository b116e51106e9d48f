"""The gateway's directory of locales: how a language picks a SpeechToText, and the watch that keeps
it current against kmock (the API server: tests/gateway/conftest.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from speech_operator import api
from speech_operator.gateway_directory import Backend, Directory
from speech_operator.kube import MERGE_PATCH
from speech_recognizer.models import ModelRegistry, UnknownLocale

from .conftest import NAMESPACE, Stack, speech_to_text

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)


def stt(name: str, locale: str, namespace: str = NAMESPACE, ready: int = 1, port: int = 5000) -> dict:
    body = speech_to_text(name, locale, port)
    body["metadata"]["namespace"] = namespace
    body["status"] = {"readyReplicas": ready}
    return body


def directory(*bodies: dict) -> Directory:
    d = Directory()
    for body in bodies:
        d.upsert(body)
    return d


@pytest.mark.parametrize(("asked", "served"), [
    ("ko-KR", "ko-KR"), ("ko-kr", "ko-KR"), ("KO_kr", "ko-KR"), ("ko", "ko-KR"), ("ko-KP", "ko-KR"),
    ("en-us", "en-US"), ("en-GB", "en-US"), ("sr-latn-rs", "sr-Latn-RS"),
])
def test_a_language_picks_the_locale_the_recognizer_would(asked: str, served: str, tmp_path: Path) -> None:
    d = directory(stt("ko", "ko-KR"), stt("en", "en-US"), stt("sr", "sr-Latn-RS"))
    assert d.lookup(asked).locale == served
    registry = ModelRegistry(tmp_path, ())
    registry.sources = {"ko-KR": tmp_path, "en-US": tmp_path, "sr-Latn-RS": tmp_path}  # the models it found
    assert registry.resolve(asked) == served, "the recognizer's own choice"


def test_unknown_languages_are_refused_naming_the_locales() -> None:
    d = directory(stt("ko", "ko-KR"), stt("en", "en-US"))
    with pytest.raises(UnknownLocale, match=r"^no model for language 'xx-YY'; this server has: en-US, ko-KR$"):
        d.lookup("xx-YY")
    with pytest.raises(UnknownLocale, match=r"is not a locale"):
        d.lookup("en US!")
    with pytest.raises(UnknownLocale, match=r"^add \?language=<locale>; this server has: en-US, ko-KR$"):
        d.lookup(None)
    assert directory(stt("ko", "ko-KR")).lookup(None).locale == "ko-KR", "one locale needs no language"
    with pytest.raises(UnknownLocale, match="this server has: none"):
        Directory().lookup("ko-KR")


def test_a_locale_served_twice_prefers_ready_pods_then_the_name() -> None:
    d = directory(stt("b", "ko-KR", ready=0), stt("c", "ko-KR", ready=2), stt("a", "ko-KR", namespace="other", ready=1))
    assert d.lookup("ko-KR").key == ("other", "a")
    d.upsert(stt("a", "ko-KR", namespace="other", ready=0))
    assert d.lookup("ko-KR").key == (NAMESPACE, "c")


def test_a_backend_is_its_service() -> None:
    body = stt("ko-kr", "ko-KR", ready=3, port=5050)
    assert Backend.of(body) == Backend(NAMESPACE, "ko-kr", "ko-KR", "http://ko-kr.speech.svc:5050", 3, False, 1)
    body["spec"]["autoscaling"] = {"minReplicas": 0}
    body["status"]["autoscaling"] = {"replicas": 0}
    assert (Backend.of(body).autoscaled, Backend.of(body).replicas) == (True, 0)


def test_a_status_a_newer_version_wrote_is_read_for_what_this_one_knows() -> None:
    """A rollout runs the old gateway beside the new operator (and a rollback the old operator beside the status the
    new one wrote): fields of the status it does not know are ignored, not a reason to route nothing to the locale."""
    body = stt("ko-kr", "ko-KR", ready=2)
    body["spec"]["autoscaling"] = {"minReplicas": 0}
    body["status"].update(desiredReplicas=2, fieldOfANewerVersion={"any": "thing"}, autoscaling={
        "replicas": 2, "newerGauge": 7, "lastDecision": {"time": "2026-12-05T00:00:00Z", "replicas": 2, "previous": 1,
                                                         "reason": "r", "newerDetail": True}})
    body["status"]["conditions"] = [{"type": "Ready", "status": "True", "reason": "ReplicasReady",
                                     "lastTransitionTime": "2026-12-05T00:00:00Z", "newerHint": "x"}]
    backend = Backend.of(body)
    assert (backend.ready_replicas, backend.replicas, backend.autoscaled) == (2, 2, True)
    assert directory(body).lookup("ko-KR").key == (NAMESPACE, "ko-kr")
    status = api.SpeechToText.model_validate(body).status
    assert status is not None and status.autoscaling is not None and status.autoscaling.lastDecision is not None
    assert "fieldOfANewerVersion" not in status.model_dump()  # ignored, not kept: this version writes what it knows


def test_a_spec_the_operator_would_refuse_is_not_routed(caplog: pytest.LogCaptureFixture) -> None:
    bad = stt("x", "ko-KR")
    del bad["spec"]["eula"]
    with caplog.at_level(logging.WARNING):
        d = directory(bad, stt("en", "en-US"))
    assert d.locales == ["en-US"]
    assert "SpeechToText speech/x is not routed" in caplog.text


def test_a_listing_replaces_what_was_known_in_its_namespace() -> None:
    d = directory(stt("a", "ko-KR"), stt("b", "en-US"), stt("c", "de-DE", namespace="other"))
    d.replace(NAMESPACE, [stt("a", "ko-KR", ready=2)])
    assert [b.key for b in d.backends()] == [("other", "c"), (NAMESPACE, "a")]
    assert d.get((NAMESPACE, "a")).ready_replicas == 2
    d.replace(None, [])
    assert d.backends() == []


def test_the_watch_keeps_the_directory_current(tmp_path: Path) -> None:
    """Created, scaled, changed and deleted SpeechToTexts reach the gateway by the watch, each within
    a moment (the relist after a failure waits seconds: this would fail on a poll or a relist)."""
    with Stack(tmp_path) as stack:
        stack.eventually(lambda: stack.directory.synced, 5, "listed")
        stack.create(speech_to_text("ko-kr", "ko-KR", 5001), ready=0)
        stack.routes("ko-KR", timeout=2)
        assert stack.directory.get((NAMESPACE, "ko-kr")).ready_replicas == 0

        def patch(body: dict, status: bool = False) -> None:
            call = stack.objects.patch_namespaced_custom_object_status if status else stack.objects.patch_namespaced_custom_object
            stack.call(call(api.GROUP, api.VERSION, NAMESPACE, api.PLURAL, "ko-kr", body, _content_type=MERGE_PATCH))

        patch({"status": {"readyReplicas": 3}}, status=True)
        stack.eventually(lambda: stack.directory.get((NAMESPACE, "ko-kr")).ready_replicas == 3, 2, "ready pods seen")
        patch({"spec": {"locale": "en-US"}})
        stack.eventually(lambda: stack.directory.locales == ["en-US"], 2, "the new locale routed")
        stack.create(speech_to_text("de-de", "de-DE", 5002))
        stack.routes("de-DE", timeout=2)
        stack.delete("ko-kr")
        stack.eventually(lambda: stack.directory.locales == ["de-DE"], 2, "the deleted one gone")
