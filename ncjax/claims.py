"""Independent workers over a shared run directory: claims on chunks, their heartbeats,
the order a worker takes chunks in, and the launcher of ``--workers N``.

    claims/<c>           the claim on chunk c of the run's plan (``sweep.plan`` with the
                         manifest's chunk size: the same for every worker, so a claim names
                         a chunk number), created with O_CREAT|O_EXCL by the worker that
                         solves it: one JSON line {"host", "pid", "worker": "i/n",
                         "heartbeat": Unix time}; the heartbeat is rewritten in place (same
                         length, the claim's own inode) every ``timeout / 4`` s while the
                         worker holds it, and the file is removed once chunk c is committed
    claims/<c>.expired-* a claim being taken over (renamed there first, then removed)

Protocol. Worker i of n takes the chunks ≡ i (mod n) in order, then steals the others from
the end of the plan. Chunk c is skipped when index/<c>.json is a committed entry. A claim
is taken by creating claims/<c> exclusively; if it exists and its heartbeat is older than
``timeout`` (by this host's clock: hosts must agree on the time to well within it), it is
expired: renamed to a unique name (one worker wins the rename), checked again (a claim
refreshed or re-created meanwhile is put back with ``os.link``, which never overwrites),
removed, and claims/<c> is created again. A holder checks that claims/<c> is still its
inode before it commits; the commit itself starts by creating index/<c>.json exclusively
(``chunks.Chunks.save(..., exclusive=True)``), so two workers never commit chunk c twice:
a worker that wakes to find its claim taken or the entry present discards its chunk.
The chunks (orbax checkpoints, index entries, checksums) are ``ncjax.chunks``'s. A worker
waits until every chunk is committed: a claim of a crashed worker expires and is taken.
No coordinator, no lock: the run directory's .lock is the single-process mode's.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from ncjax import cores
from ncjax.chunks import ORBAX_TMP, Damaged, entry_ok
from ncjax.store import RunError
from ncjax.validate import InputError

__all__ = ["CLAIM_TIMEOUT", "Claim", "Claims", "check_numbering", "check_timeout",
           "committed", "heartbeat_of", "launch", "live_claims", "order", "parse_worker",
           "recover", "work", "worker_argv"]

# Seconds without a heartbeat after which a claim is expired. A live holder refreshes it
# from its own thread every timeout / 4 s, whatever a chunk takes, so the timeout only has
# to outlast a stalled process (swapping, a suspended job, a slow shared file system).
CLAIM_TIMEOUT = 120.0


def parse_worker(text: str) -> tuple[int, int]:
    """'i/n' → (i, n) with 0 ≤ i < n; InputError otherwise."""
    i, sep, n = str(text).partition("/")
    try:
        i, n = int(i), int(n)
    except ValueError:
        i = n = None
    if not sep or i is None:
        raise InputError(f"--worker: expected i/n (worker i of n, e.g. 0/4), got {text!r}")
    if not 0 <= i < n:
        raise InputError(f"--worker: expected 0 <= i < n, got {text!r}")
    return i, n


def check_timeout(t) -> float:
    """``t`` if it is a claim timeout in seconds (> 0, finite), else InputError."""
    if not (isinstance(t, (int, float)) and 0 < t < float("inf")):
        raise InputError(f"--claim-timeout: expected seconds > 0, got {t!r}")
    return float(t)


def order(n_chunks: int, i: int, n: int) -> list[int]:
    """The chunks worker i of n tries: its own (≡ i mod n) first, then the others from the
    end of the plan (away from where their own workers are)."""
    own = list(range(i, n_chunks, n))
    mine = set(own)
    return own + [c for c in range(n_chunks - 1, -1, -1) if c not in mine]


def _text(worker: str, t: float) -> bytes:
    # fixed width: the heartbeat is rewritten in place without truncating the file
    return (json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "worker": worker})
            [:-1] + f', "heartbeat": {t:014.3f}}}\n').encode()


def heartbeat_of(path: Path) -> float | None:
    """The heartbeat time of the claim at ``path`` (its mtime while it is being written),
    None if there is no such file."""
    try:
        raw = path.read_bytes()
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        return float(json.loads(raw)["heartbeat"])
    except (ValueError, KeyError, TypeError):
        return mtime


class Claim:
    """A claim this process holds: claims/<chunk>, open, its heartbeat refreshed in place."""

    def __init__(self, path: Path, fd: int, worker: str, took_over: bool = False):
        self.path, self.fd, self.worker, self.took_over = path, fd, worker, took_over
        self.lock = threading.Lock()

    def beat(self) -> None:
        with self.lock:
            if self.fd >= 0:
                os.pwrite(self.fd, _text(self.worker, time.time()), 0)

    def owned(self) -> bool:
        """Whether claims/<chunk> is still this claim's file (not taken over)."""
        with self.lock:
            if self.fd < 0:
                return False
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                return False
            mine = os.fstat(self.fd)
            return (st.st_ino, st.st_dev) == (mine.st_ino, mine.st_dev)

    def release(self) -> None:
        """Remove the claim if it is still this one's, and close it."""
        if self.owned():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        with self.lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1


class Claims:
    """The claims/ folder of the run ``out`` as worker ``worker`` ("i/n") sees it."""

    def __init__(self, out, worker: tuple[int, int], timeout: float = CLAIM_TIMEOUT):
        self.dir, self.timeout = Path(out) / "claims", timeout
        self.index, self.count = worker
        self.worker = f"{self.index}/{self.count}"
        self.held: list[Claim] = []
        self.dir.mkdir(exist_ok=True)

    def expired(self, path: Path) -> bool:
        """Whether the claim at ``path`` exists and its heartbeat is older than the timeout."""
        hb = heartbeat_of(path)
        return hb is not None and time.time() - hb > self.timeout

    def take(self, chunk: int) -> Claim | None:
        """The claim on ``chunk``, or None if a live worker holds it."""
        path, took_over = self.dir / str(chunk), False
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
            except FileExistsError:
                if not (self.expired(path) and self._retire(path)):
                    return None
                took_over = True
                continue
            claim = Claim(path, fd, self.worker, took_over)
            claim.beat()
            self.held.append(claim)
            return claim
        return None

    def _retire(self, path: Path) -> bool:
        """Take an expired claim out of the way; False if another worker got there first
        or the claim turned out to be alive."""
        aside = path.with_name(f"{path.name}.expired-{uuid.uuid4().hex}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return False
        if self.expired(aside):
            aside.unlink(missing_ok=True)
            return True
        with contextlib.suppress(FileExistsError):  # refreshed meanwhile: put it back
            os.link(aside, path)
        aside.unlink(missing_ok=True)
        return False

    def release(self, claim: Claim) -> None:
        claim.release()
        with contextlib.suppress(ValueError):
            self.held.remove(claim)

    def release_all(self) -> None:
        for claim in list(self.held):
            self.release(claim)

    @contextlib.contextmanager
    def heartbeat(self):
        """Refresh every held claim every timeout / 4 s from a daemon thread."""
        stop = threading.Event()

        def beat():
            while not stop.wait(min(self.timeout / 4, 10.0)):
                for claim in list(self.held):
                    with contextlib.suppress(OSError):
                        claim.beat()

        t = threading.Thread(target=beat, name="ncjax-heartbeat", daemon=True)
        t.start()
        try:
            yield self
        finally:
            stop.set()
            t.join()
            self.release_all()


def live_claims(out, timeout: float = CLAIM_TIMEOUT) -> list[str]:
    """The chunks of ``out``/claims/ whose heartbeat is younger than ``timeout`` (workers
    at work there)."""
    d, now = Path(out) / "claims", time.time()
    names = [p for p in d.iterdir() if p.name.isdigit()] if d.is_dir() else []
    return [p.name for p in names if (hb := heartbeat_of(p)) is not None and now - hb <= timeout]


def _entry(path: Path, step: int) -> dict | None:
    try:
        e = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return e if entry_ok(e, step) else None


def committed(chunks, step: int) -> dict | None:
    """The committed index entry of ``step`` in ``chunks`` (a ``chunks.Chunks``), None if
    there is none or it is pending."""
    e = _entry(chunks.index_dir / f"{step}.json", step)
    return e if e is not None and not e.get("pending") else None


def recover(chunks, step: int, cells: int, log) -> dict | None:
    """For the one worker that holds the claim on chunk ``step``: its committed entry, or
    None once a write that its last writer did not finish is cleaned up (a chunk orbax
    committed is verified and indexed, its entry returned; a damaged one set aside;
    orbax's temporary folder and the pending entry removed). ``cells``: the grid's size."""
    path = chunks.index_dir / f"{step}.json"
    if not path.exists():
        return None
    e = _entry(path, step)
    if e is not None and not e.get("pending"):
        return e
    try:
        if e is None:
            raise Damaged("its index entry is unreadable")
        for n in os.listdir(chunks.root) if chunks.root.is_dir() else []:
            if (m := ORBAX_TMP.match(n)) and int(m.group(1)) == step:
                shutil.rmtree(chunks.root / n, ignore_errors=True)
        if (chunks.root / str(step)).is_dir():  # orbax committed it: only the entry is due
            flat = chunks.verify(step, {"rows": e["rows"], "cells": e["cells"]}, cells, True)
            chunks.write_entry(step, done := chunks.entry(step, flat))
            return done
    except Damaged as why:
        log(f"chunk {step} is damaged ({why}): set aside in {chunks.set_aside(step)}; "
            "its cells will be solved again")
        return None
    path.unlink(missing_ok=True)
    return None


def check_numbering(chunks, plan: list) -> None:
    """RunError (``store``'s) unless every index entry at a step c < len(plan) holds cells
    of chunk c of ``plan`` (a run numbered otherwise, by an ncjax before workers or a
    single process that split its chunks, cannot take workers' commits)."""
    entries, _, _ = chunks.entries()
    for step, e in entries.items():
        if step < len(plan) and not set(e["cells"]) <= set(plan[step].tolist()):
            raise RunError(f"{chunks.out}: its chunk {step} is not chunk {step} of the plan "
                           "that workers share; continue this run without --worker")


def work(claims: Claims, chunks, plan: list, done, solve, log, stopping,
         poll: float = 1.0) -> int:
    """Worker ``claims.index`` of ``claims.count``: claim, solve and commit chunks of
    ``plan`` (flat indices per chunk) until every cell is ``done`` (bool, updated) or
    ``stopping()`` returns a signal; ``solve(idx)`` → (outputs, rows' indices) for
    ``chunks.save``. Returns the number of configurations this worker committed."""
    check_numbering(chunks, plan)
    cells = done.size
    todo = [c for c in order(len(plan), claims.index, claims.count) if not done[plan[c]].all()]
    n_new, t0 = 0, time.perf_counter()
    while todo and stopping() is None:
        progressed = False
        for c in list(todo):
            if stopping() is not None:
                break
            e = committed(chunks, c)
            claim = None if e is not None else claims.take(c)
            if e is None and claim is None:
                continue  # a live worker holds it
            if claim is not None and claim.took_over:
                log(f"chunk {c}: took over the claim of a worker silent for more than "
                    f"{claims.timeout:g} s")
            try:
                if e is None and (e := recover(chunks, c, cells, log)) is None:
                    idx = plan[c][~done[plan[c]]]
                    r, index = solve(idx)
                    if claim.owned() and chunks.save(c, r, index, exclusive=True):
                        e, n_new = {"cells": idx.tolist()}, n_new + idx.size
                        log(f"chunk {c}: {idx.size} configurations solved "
                            f"({n_new / (time.perf_counter() - t0):.1f}/s)")
                    else:
                        log(f"chunk {c} was taken over by another worker; its result "
                            "discarded")
            finally:
                if claim is not None:
                    claims.release(claim)
            if e is not None:
                done[np.asarray(e["cells"], dtype=np.int64)] = True
            if done[plan[c]].all():
                todo.remove(c)
                progressed = True
        if todo and not progressed and stopping() is None:
            time.sleep(min(poll, claims.timeout / 10))  # the rest is another worker's
    return n_new


def launch(argv_of, n: int) -> int:
    """Run the commands ``argv_of(i)`` for i < n as n processes (each in its own session,
    so that a terminal's Ctrl-C reaches them once, forwarded from here); returns 0 if all
    succeeded, else the exit status of the first that failed (128 + signum for a signal
    forwarded to them)."""
    # the host's cores shared among them (ncjax.cores: each splits its chunks over its share)
    env = {**os.environ, cores.ENV: str(max(1, cores.available() // n))}
    procs = [subprocess.Popen(argv_of(i), stdout=subprocess.DEVNULL, start_new_session=True,
                              env=env) for i in range(n)]
    got = []

    def forward(signum, _frame):
        got.append(signum)
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signum)

    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)} \
        if main else {}
    try:
        codes = [p.wait() for p in procs]
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    failed = [128 - c if c < 0 else c for c in codes if c != 0]  # -s: killed by signal s
    if got and all(c == 128 + got[0] for c in failed):
        return 128 + got[0]
    return failed[0] if failed else 0


def worker_argv(command: str, target: str, out: str | None, i: int, n: int,
                extra: list[str]) -> list[str]:
    """``python -m ncjax COMMAND TARGET [--out OUT] --worker i/n EXTRA``."""
    argv = [sys.executable, "-m", "ncjax", command, str(target)]
    if out is not None:
        argv += ["--out", str(out)]
    return argv + ["--worker", f"{i}/{n}", *extra]
