"""``speech-operator cleanup``: delete SpeechToTexts and wait until the operator has released them.

Helm's pre-delete hook runs it (the chart's ``cleanup-hook.yaml``, from the operator image) so
that ``helm uninstall`` removes the SpeechToTexts it created while the operator still runs;
otherwise each would stay stuck on the operator's finalizer once the operator is gone. It needs
only ``get`` and ``delete`` on those SpeechToTexts.
"""

from __future__ import annotations

import asyncio
import time

from speech_operator import api
from speech_operator.kube import Kube, KubeError, path


def say(line: str) -> None:
    print(f"cleanup: {line}", flush=True)


async def cleanup(kube: Kube, namespace: str, names: list[str], timeout: float, interval: float = 2.0) -> int:
    """Delete ``names`` in ``namespace`` and wait for them to go; the exit status (0 all gone, 1 not)."""
    urls = {name: path(api.API_VERSION, api.PLURAL, namespace, name) for name in names}
    try:
        for name, url in urls.items():
            say(f"deleting speechtotext/{name}" if await kube.delete(url) else f"speechtotext/{name} is already gone")
        deadline = time.monotonic() + timeout
        pending = dict(urls)
        while pending:
            for name, url in list(pending.items()):
                if await kube.get(url) is None:
                    say(f"speechtotext/{name} is gone")
                    del pending[name]
            if not pending:
                break
            if time.monotonic() > deadline:
                say(f"still there after {timeout:g} s (is the operator running?): {', '.join(sorted(pending))}")
                return 1
            await asyncio.sleep(interval)
    except KubeError as exc:
        say(str(exc))
        return 1
    return 0
