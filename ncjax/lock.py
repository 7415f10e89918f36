"""DIR/.lock: one writer of a run directory at a time (the single-process mode; workers
claim chunks instead, ``ncjax.claims``).

The lock is a file created exclusively, holding JSON {"pid", "host", "start"}: the
writer's pid, its host name and its process start time (field 22 of /proc/<pid>/stat,
clock ticks since boot; null where /proc is absent). A lock is stale, and is taken over,
when its host is this one and its pid is not alive, or is alive with another start time
(the pid was reused by an unrelated process). A lock of another host cannot be judged from
here: it is refused with its host named. A lock file holding only a pid (an earlier ncjax)
is judged by the pid alone.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from ncjax.validate import InputError


class RunError(InputError):
    """A run directory that cannot be used as asked (its message says why)."""


def start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), None where unknown."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()[19]  # field 22; the name in () may hold spaces


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read(path: Path) -> dict | None:
    """The lock's holder {"pid", "host", "start"}, None where the file is unreadable."""
    try:
        text = path.read_text()
    except OSError:
        return None
    try:
        held = json.loads(text)
    except ValueError:
        return None
    if isinstance(held, int) and not isinstance(held, bool):
        return {"pid": held, "host": None, "start": None}  # an earlier ncjax's lock
    if isinstance(held, dict) and isinstance(held.get("pid"), int):
        return {"pid": held["pid"], "host": held.get("host"), "start": held.get("start")}
    return None


def live(held: dict | None) -> bool:
    """Whether the holder may still be writing: on another host always (it cannot be seen
    from here), on this one while its pid is alive with the same start time."""
    if not held or held["pid"] <= 0:
        return False
    if held["host"] not in (None, socket.gethostname()):
        return True
    if not alive(held["pid"]):
        return False
    return held["start"] is None or held["start"] == start_time(held["pid"])


class Lock:
    """DIR/.lock created exclusively with our pid, host and start time; a stale lock
    (module docstring) is taken over."""

    def __init__(self, out: Path):
        self.path = Path(out) / ".lock"

    def __enter__(self):
        where = self.path.parent
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if self.path.is_symlink() or not self.path.is_file():
                    raise RunError(f"{self.path}: not a lock file; remove it if no ncjax "
                                   f"process is writing to {where}") from None
                held = read(self.path)
                if live(held):
                    on = (f" on host {held['host']}" if held["host"] not in
                          (None, socket.gethostname()) else "")
                    raise RunError(f"{where}: another process (pid {held['pid']}{on}) is "
                                   "writing to this run directory"
                                   + (f"; if none is, remove {self.path}" if on else "")
                                   ) from None
                try:
                    self.path.unlink(missing_ok=True)  # stale: its writer is gone
                except OSError as e:
                    raise RunError(f"{self.path}: a stale lock that cannot be removed "
                                   f"({e.strerror})") from None
                continue
            except OSError as e:
                raise RunError(f"{where}: cannot take the lock ({e.strerror})") from None
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                           "start": start_time(os.getpid())}, f)
            return self
        raise RunError(f"{self.path}: could not take the lock")

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)

    def holder(self) -> int | None:
        """The pid in the lock if its writer may still be writing (``live``), else None."""
        held = read(self.path)
        return held["pid"] if live(held) else None
