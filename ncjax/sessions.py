"""The sessions of a run: which process worked on a run directory, on what, when.

Every ``ncjax sweep`` or ``ncjax resume`` of a run (and every independent worker) writes
one file ``sessions/<start>-<host>-<pid>[-n].json`` in the run directory when it starts and again when
it ends, each time atomically (``files.write_atomic``):

    {"start": ISO 8601 UTC time, "end": the time it ended (null while it runs, or if the
     process was killed), "outcome": "running" | "finished" | "interrupted" | "failed:
     <error type>", "command": the process's argv, "host", "pid", "process": its index
     of "processes" (jax.distributed), "worker": "i/n" or null, "devices": the devices it
     solved on (platform and kind of each), "versions": ``store.versions()``, "commit":
     the git commit of the ncjax source when it runs from a checkout
     (``store.commit``), else null}

One file a session, so that resumes and concurrent workers never rewrite each other's
records; the chunks, not these files, say what is done. This module is JAX-free: the
caller names the devices.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import os
import socket
import sys
from pathlib import Path

from ncjax import store
from ncjax.files import write_atomic

DIR = "sessions"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")


def start(out, devices: list[str], *, process: int = 0, processes: int = 1,
          worker: str | None = None) -> Path:
    """Write the record of a session of the run ``out`` that starts now; returns its path
    (for ``end``)."""
    begun = now()
    folder = Path(out) / DIR
    folder.mkdir(exist_ok=True)
    record = {"start": begun, "end": None, "outcome": "running", "command": sys.argv,
              "host": socket.gethostname(), "pid": os.getpid(), "process": process,
              "processes": processes, "worker": worker, "devices": devices,
              "versions": store.versions(), "commit": store.commit()}
    stem = f"{begun[:19].replace(':', '')}-{socket.gethostname()}-{os.getpid()}"
    for n in itertools.count():  # a second session of this process within this second
        path = folder / (f"{stem}.json" if n == 0 else f"{stem}-{n}.json")
        if write_atomic(path, json.dumps(record, indent=1), exclusive=True):
            return path


@contextlib.contextmanager
def recorded(out, devices, stopping=lambda: None, *, on: bool = True, **where):
    """The body recorded as a session of the run ``out`` on ``devices`` (JAX devices, or
    their names) when ``on``, with ``start``'s arguments ``where``: its outcome
    "finished", "interrupted" (by a signal, raised, or deferred: ``stopping()`` not None)
    or "failed: <error type>"."""
    if not on:
        yield
        return
    names = [d if isinstance(d, str) else f"{d.platform}:{getattr(d, 'device_kind', d)}"
             for d in devices]
    processes = len({getattr(d, "process_index", 0) for d in devices}) or 1
    path = start(out, names, processes=processes, **where)
    outcome = "failed"
    try:
        yield
        outcome = "interrupted" if stopping() is not None else "finished"
    except (KeyboardInterrupt, store.Interrupted):
        outcome = "interrupted"
        raise
    except BaseException as e:
        outcome = f"failed: {type(e).__name__}"
        raise
    finally:
        end(path, outcome)


def end(path: Path, outcome: str) -> None:
    """Record that the session of ``path`` ended now with ``outcome``."""
    record = json.loads(Path(path).read_text())
    record.update(end=now(), outcome=outcome)
    write_atomic(path, json.dumps(record, indent=1))


def read(out) -> list[dict]:
    """The sessions of the run ``out``, oldest first (unreadable files left out)."""
    records = []
    for p in sorted((Path(out) / DIR).glob("*.json")):
        try:
            records.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    return sorted(records, key=lambda r: str(r.get("start")))


def describe(out) -> str | None:
    """``ncjax show``'s line on the sessions of the run ``out`` (None if it has none): how
    many, and the last one's start, end, outcome, devices and source."""
    records = read(out)
    if not records:
        return None
    last = records[-1]
    devices = last.get("devices") or []
    kinds = sorted(set(devices))
    where = ", ".join(f"{devices.count(k)} × {k}" for k in kinds) or "no device recorded"
    source = last.get("commit") or f"ncjax {last.get('versions', {}).get('ncjax', '?')}"
    when = lambda t: f"{t[:19].replace('T', ' ')} UTC" if t else None
    return (f"  sessions {len(records)}; the last started {when(last.get('start'))}, ended "
            f"{when(last.get('end')) or '(not recorded: running or killed)'}, "
            f"{last.get('outcome')}, on {where} ({source})")
