"""The pod's disk, run as a kubelet runs it: tests/kubelet.py gives an emptyDir with a ``sizeLimit`` a tmpfs of that
size, so a write past it fails where a kubelet would evict the pod (its docstring says the difference); the emitted /tmp
is run so by every pod test."""

from __future__ import annotations

from tests.kubelet import Pod, host_image

WRITE = """
import sys
for path, size in (("/sized/a", 1 << 20), ("/sized/b", 2 << 20), ("/plain/c", 3 << 20)):
    try:
        with open(path, "wb") as out:
            out.write(b"x" * size)
        print(path, "written")
    except OSError as exc:
        print(path, exc.strerror)
"""


def test_an_emptydir_with_a_size_limit_takes_no_more_than_it() -> None:
    """A container writes 1 MiB, then 2 MiB more into an emptyDir of 2Mi: the second write fails (No space left on
    device), as the pod would be evicted; an emptyDir without a size takes 3 MiB. Before: all three written."""
    container = {"name": "write", "command": ["python", "-c", WRITE],
                 "securityContext": {"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": True},
                 "volumeMounts": [{"name": "sized", "mountPath": "/sized"}, {"name": "plain", "mountPath": "/plain"}]}
    spec = {"securityContext": {"fsGroup": 65532}, "initContainers": [container], "containers": [container],
            "volumes": [{"name": "sized", "emptyDir": {"sizeLimit": "2Mi"}}, {"name": "plain", "emptyDir": {}}]}
    with Pod(spec, host_image(), name="disk") as pod:
        done = pod.run_init("write")
    assert done.returncode == 0, done.log
    assert done.log.split("\n")[:3] == ["/sized/a written", "/sized/b No space left on device", "/plain/c written"], done.log
