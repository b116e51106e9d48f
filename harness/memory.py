"""How much a process's memory grew over a span: its peak resident set (Linux), reset at the start."""

from __future__ import annotations

from pathlib import Path


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


class PeakRss:
    """The growth of a process's peak RSS over a ``with`` block, in MB (Linux: ``VmHWM``, reset on entry)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before_kb = 0
        self.peak_kb = 0

    def __enter__(self) -> PeakRss:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        self.before_kb = _status_kb(self.pid, "VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak_kb = _status_kb(self.pid, "VmHWM")

    @property
    def growth_mb(self) -> float:
        return (self.peak_kb - self.before_kb) * 1024 / 1e6
