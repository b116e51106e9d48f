"""The pods of a test module run a few at a time, as a kubelet runs a node's pods side by side; each test still
takes its own pod's outcome, with its own assertions and failure message.

A pod's life here (tests/kubelet.py, tests/example_pods.py) is mostly waiting: probe periods, the preStop pause,
the drain. Run one after another, the pods of tests/ship/test_images.py took most of that file's time. A test
marked with :func:`runs_pod` names its job, a function that runs one pod and returns what the test looks at; the
module's ``pod_pool`` fixture (tests/conftest.py) submits the job of every selected test of the module to a pool
of :data:`AT_ONCE` threads when the module's first such test (or a test that asks for the pool) starts, and each
test's ``pod_run`` fixture is its own job's Future: ``pod_run.result()`` returns what the job returned, or raises
what it raised (a failed probe, with the pod's log), so a pod that fails fails the tests that take it and no other.

What a job takes it names as a test does: the test's parameters, ``tmp_path`` (a directory of its own) and any
fixture of module or session scope, all resolved on pytest's thread before the job starts.

A job whose pod has done its work and is only stopping says so with :func:`stopping` (tests/example_pods.py, before
it deletes the pod as a kubelet does: the preStop pause, SIGTERM, the drain: about 6 s of waiting a pod): the pool's
next pod starts then, beside the stop, which still runs in full and is still judged by the test that takes it.

Tests whose job is the same function with the same arguments (``tmp_path`` aside) share one run: the pod runs once
and each of them takes the same Future, asserting on its outcome in its own way (tests/ship/test_images.py's
jemalloc check looks at the pod of the multi-locale example's ko-KR SpeechToText, which another of its tests runs,
rather than run an identical second one).

Why pods running at once cannot meet (tests/kubelet.py):

- network: each pod has a network namespace of its own (only loopback), so each one's port 5000, its file
  server's port and its probes are its own;
- files: each container's root is the image's filesystem bound in a mount namespace of its own; the kubelet
  refuses a container whose root is not read-only when the image's filesystem is shared (a mounted image: every
  container the operator emits sets ``readOnlyRootFilesystem``), and this checkout as an image is bound read-only
  under a tmpfs of the container's own. A pod's emptyDirs live in its own directory (``mkdtemp``), its PVCs and
  hostPaths in its job's ``tmp_path``; what pods share they only read (the model folder copied into a PVC, the
  model zip a pod's file server sends, the WAV they transcribe);
- processes: a pod signals only its own processes, by pid; ``Pod.in_network`` joins the pod's namespace on a
  thread of its own (``setns`` changes the calling thread only).

Under pytest-xdist, ``--dist loadfile`` (pyproject) gives a module's tests to one worker, which then runs all the
pods of its module; under another ``--dist`` a worker would also run the pods of tests another worker runs.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

#: Pods running at once in a module's pool. A recognizer pod is not all waiting: its start-up warm-up decodes on
#: every core it sees (about 25 CPU s), so on 2 cores more pods at once only stretch each one's start towards its
#: readiness budget (run_example's 300 s) and starve the other xdist worker's tests: with 3, a fresh clone's run took
#: 1963 s against 1620 s, test_images.py no sooner done (710 s against 684 s). One at a time, the pods still run
#: beside the module's operator, gateway and layout tests (`git log -S AT_ONCE tests/pods_at_once.py`).
AT_ONCE = 1
#: Pods that may be stopping (past :func:`stopping`) beside the :data:`AT_ONCE` busy ones: a stop is waiting, not work.
STOPPING_AT_ONCE = 1

F = TypeVar("F", bound=Callable[..., Any])
_JOB = "pod_job"
#: The running job's hold on its pool's busy slots (a pool's thread runs one job at a time).
_slot = threading.local()


def runs_pod(job: Callable[..., Any]) -> Callable[[F], F]:
    """Mark a test whose pod ``job`` runs in its module's pool (see the module doc); the test takes the outcome
    from its ``pod_run`` fixture."""
    def mark(test: F) -> F:
        setattr(test, _JOB, job)
        return test
    return mark


def job_of(item: pytest.Item) -> Callable[..., Any] | None:
    return getattr(getattr(item, "function", None), _JOB, None)


def stopping() -> None:
    """From a pool's job: its pod has done its work and is only stopping now, so the pool's next pod may start.
    Outside a pool (a job called directly, as tests/ship/build_images.py calls run_example), nothing."""
    release = getattr(_slot, "release", None)
    _slot.release = None
    if release is not None:
        release()


def _in_slot(busy: threading.Semaphore, closing: threading.Event, job: Callable[..., Any], args: dict[str, Any]) -> Any:
    """Run ``job`` once one of the pool's busy slots is free, holding it until the job ends or calls :func:`stopping`;
    not at all once the pool is closing (its tests are over: a job still waiting for a slot was never taken)."""
    busy.acquire()
    _slot.release = busy.release
    try:
        if closing.is_set():
            raise RuntimeError("the pool closed before this pod could start")
        return job(**args)
    finally:
        stopping()


@contextlib.contextmanager
def pool(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future[Any]]]:
    """The jobs of the selected tests of ``request``'s module, running: test node id -> its job's Future. Leaving
    cancels the jobs not started and waits for those running (their pods end within their own budgets)."""
    items = [item for item in request.session.items if item.path == request.path and job_of(item) is not None]
    busy, closing = threading.BoundedSemaphore(AT_ONCE), threading.Event()
    with ThreadPoolExecutor(AT_ONCE + STOPPING_AT_ONCE, thread_name_prefix="pod") as threads:
        futures: dict[str, Future[Any]] = {}
        runs: dict[str, Future[Any]] = {}  # one per job and arguments (tmp_path aside): tests that name the same run share it
        try:
            for item in items:
                job = job_of(item)
                assert job is not None
                callspec = getattr(item, "callspec", None)
                params = callspec.params if callspec else {}
                args = {}
                for name in inspect.signature(job).parameters:
                    if name in params:
                        args[name] = params[name]
                    elif name != "tmp_path":
                        args[name] = request.getfixturevalue(name)
                run = f"{job.__module__}.{job.__qualname__}{sorted(args.items())!r}"
                if run not in runs:
                    if "tmp_path" in inspect.signature(job).parameters:  # as pytest names a test's: its name, the case kept whole
                        args["tmp_path"] = tmp_path_factory.mktemp(re.sub(r"\W+", "_", item.name[:24] + (callspec.id if callspec else "")))
                    runs[run] = threads.submit(_in_slot, busy, closing, job, args)
                futures[item.nodeid] = runs[run]
            yield futures
        finally:
            closing.set()
            for future in futures.values():
                future.cancel()


def outcome(futures: dict[str, Future[Any]], item: pytest.Item) -> Future[Any]:
    """The Future of ``item``'s pod."""
    if job_of(item) is None:
        raise pytest.UsageError(f"{item.nodeid} takes pod_run but names no job: mark it with tests.pods_at_once.runs_pod(job)")
    return futures[item.nodeid]
