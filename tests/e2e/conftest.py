"""The e2e test runs only when asked for by marker: ``pytest -m e2e tests/e2e``.

Without ``-m`` naming ``e2e`` it is deselected (it is not collected as a pass or a
skip). When selected on a machine without Docker/kind and without ``SPEECH_E2E_ARGS``
naming a cluster, it is skipped with the reason ``python -m tests.e2e`` printed, never
passed. The suite's own unit tests (every other test here) run in the normal suite.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "e2e" in (config.getoption("markexpr") or ""):
        return
    deselected = [item for item in items if item.get_closest_marker("e2e")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("e2e")]
