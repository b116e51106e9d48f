"""tests/pods_at_once.py: a module's pods run in its pool, and tests that name the same run share one pod."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests import pods_at_once

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

CALLS: list[tuple[str, str, Path]] = []
_LOCK = threading.Lock()


def job(case: str, shared: str, tmp_path: Path) -> str:
    with _LOCK:
        CALLS.append((case, shared, tmp_path))
    return f"{case} ran in {tmp_path.name}"


@dataclass
class Item:
    """What the pool reads of a pytest item."""

    name: str
    path: Path
    params: dict[str, Any] = field(default_factory=dict)
    function: Any = None

    @property
    def nodeid(self) -> str:
        return f"{self.path.name}::{self.name}"

    @property
    def callspec(self) -> Any:
        return SimpleNamespace(params=self.params, id=self.params.get("case", "")) if self.params else None


def test_tests_naming_the_same_job_and_arguments_share_one_run(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Two tests whose job is the same function with the same arguments (their tmp_path aside) get the one Future of
    one run, as the jemalloc check and the emitted ko-KR pod of tests/ship/test_images.py do; another case, or another
    module's test, gets a run of its own or none."""
    marked = pods_at_once.runs_pod(job)(lambda: None)
    here = Path("test_here.py")
    items = [Item("test_a[one]", here, {"case": "one"}, marked), Item("test_b[one]", here, {"case": "one"}, marked),
             Item("test_a[two]", here, {"case": "two"}, marked), Item("test_other", here),
             Item("test_c[one]", Path("test_elsewhere.py"), {"case": "one"}, marked)]
    request = SimpleNamespace(session=SimpleNamespace(items=items), path=here,
                              getfixturevalue=lambda name: {"shared": "fixture value"}[name])
    CALLS.clear()
    with pods_at_once.pool(request, tmp_path_factory) as futures:  # type: ignore[arg-type]
        assert sorted(futures) == ["test_here.py::test_a[one]", "test_here.py::test_a[two]", "test_here.py::test_b[one]"]
        assert futures["test_here.py::test_a[one]"] is futures["test_here.py::test_b[one]"]
        assert futures["test_here.py::test_a[two]"] is not futures["test_here.py::test_a[one]"]
        assert futures["test_here.py::test_b[one]"].result(10).startswith("one ran in test_a_one_")
        assert futures["test_here.py::test_a[two]"].result(10).startswith("two ran in test_a_two_")
    assert sorted((case, shared) for case, shared, _ in CALLS) == [("one", "fixture value"), ("two", "fixture value")]
    assert len({where for *_, where in CALLS}) == 2, CALLS
    with pytest.raises(pytest.UsageError, match="names no job"):
        pods_at_once.outcome(futures, items[3])  # type: ignore[arg-type]


#: Per case of :func:`stopping_job`: set when its pod starts (begins its work).
STARTED: dict[str, threading.Event] = {}
#: Per case: what its pod saw of the next one's start, before and after it said it was stopping.
SAW: dict[str, tuple[bool, bool]] = {}
#: The cases that say they are stopping before they end; the others hold the pool until they end.
STOPS = ("1", "2")


def stopping_job(case: str) -> str:
    """A pod that does its work, says it is stopping (cases of :data:`STOPS`), then stops once the next pod has
    started; what it saw of the next pod's start, while busy and when done, goes to :data:`SAW`."""
    following = STARTED.get(str(int(case) + 1))
    STARTED[case].set()
    busy_saw = following is not None and following.is_set()
    if case in STOPS:
        pods_at_once.stopping()
        SAW[case] = busy_saw, following is None or following.wait(10)
    else:
        SAW[case] = busy_saw, following is not None and following.is_set()
    return f"pod {case} stopped"


def test_the_next_pod_starts_when_the_one_before_is_only_stopping(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A job that says its pod is only stopping (tests/example_pods.py, before the preStop hook) lets the pool's next
    pod start beside its stop; no pod starts while another is busy, and a job that never says so holds the pool to its
    end. Before, the next pod started only when the one before had ended: each run_example pod's stop (~6 s of
    preStop pause and drain) came on top of the next pod's run."""
    marked = pods_at_once.runs_pod(stopping_job)(lambda: None)
    here = Path("test_here.py")
    items = [Item(f"test_pod[{case}]", here, {"case": case}, marked) for case in ("1", "2", "3", "4")]
    request = SimpleNamespace(session=SimpleNamespace(items=items), path=here, getfixturevalue=None)
    STARTED.clear(), SAW.clear()
    STARTED.update({case: threading.Event() for case in ("1", "2", "3", "4")})
    with pods_at_once.pool(request, tmp_path_factory) as futures:  # type: ignore[arg-type]
        assert [futures[f"test_here.py::test_pod[{case}]"].result(30) for case in ("1", "2", "3", "4")] == [
            "pod 1 stopped", "pod 2 stopped", "pod 3 stopped", "pod 4 stopped"]
    assert SAW == {"1": (False, True), "2": (False, True), "3": (False, False), "4": (False, False)}, SAW
    pods_at_once.stopping()  # outside a pool: nothing to let go
