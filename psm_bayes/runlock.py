"""One run per output folder: the run lock ``<out>/.psm-bayes.lock``.

:func:`run_lock` holds an output folder for the length of a run. The lock
file names the process holding it (PID, its start time, host, command,
since when); it is created atomically (written under a temporary name, then
hard-linked into place, which fails when a lock exists), so of two runs
starting together exactly one gets it. The other is refused with an
:class:`~psm_bayes.io.OutputError` in one line naming the folder and the PID,
before it writes anything. A lock whose process no longer runs (the run was
killed) is stale and taken over; a normal exit, an error or Ctrl-C removes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Iterator

from psm_bayes.io import OutputError, pid_alive, prepare_output_dir

LOCK_NAME = ".psm-bayes.lock"
"""The lock file inside an output folder in use."""


def _start_time(pid: int) -> str | None:
    """Start time of process ``pid`` in clock ticks since boot (Linux), ``None`` where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def holder(folder: str | Path) -> dict | None:
    """What the lock of ``folder`` says (``pid``, ``start``, ``host``, ``command``, ``since``), or ``None``."""
    return _read(Path(folder) / LOCK_NAME)


def is_live(info: dict | None) -> bool:
    """True while the process named by lock contents ``info`` runs (a lock of another host counts as live)."""
    if info is None:
        return False
    if info.get("host") not in (None, socket.gethostname()):
        return True
    pid = int(info["pid"])
    if not pid_alive(pid):
        return False
    start = _start_time(pid)
    return info.get("start") is None or start is None or start == info["start"]  # a reused PID is not the holder


def _refusal(folder: Path, info: dict, flag: str) -> OutputError:
    return OutputError(f"{flag}: folder {str(folder)!r} is in use by another psm-bayes {info.get('command', 'run')} "
                       f"(PID {info['pid']}, since {info.get('since', '?')}); wait for it to finish or choose "
                       "another folder")


def _acquire(folder: Path, command: str, flag: str) -> dict:
    """Create the lock of ``folder`` (taking over a stale one); OutputError when a live run holds it."""
    mine = {"pid": os.getpid(), "start": _start_time(os.getpid()), "host": socket.gethostname(),
            "command": command, "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    lock = folder / LOCK_NAME
    tmp = folder / f".{LOCK_NAME}.psm-tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.write_text(json.dumps(mine) + "\n")
    try:
        for _ in range(5):
            try:
                os.link(tmp, lock)  # atomic: fails when a lock exists
                return mine
            except FileExistsError:
                pass
            info = holder(folder)
            if is_live(info):
                raise _refusal(folder, info, flag)
            stale = folder / f".{LOCK_NAME}.stale-{os.getpid()}-{secrets.token_hex(4)}"
            try:  # take the stale lock away; of two takers only one renames it
                os.rename(lock, stale)
            except FileNotFoundError:
                continue
            if is_live(holder_of := _read(stale)):  # it was renewed in between: put it back, refuse
                with contextlib.suppress(OSError):
                    os.link(stale, lock)
                stale.unlink(missing_ok=True)
                raise _refusal(folder, holder_of, flag)
            stale.unlink(missing_ok=True)
        raise OutputError(f"{flag}: could not take the lock of folder {str(folder)!r}; retry")
    finally:
        tmp.unlink(missing_ok=True)


def _read(path: Path) -> dict | None:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None


def _release(folder: Path, mine: dict) -> None:
    info = holder(folder)
    if info is not None and info.get("pid") == mine["pid"] and info.get("start") == mine["start"]:
        (folder / LOCK_NAME).unlink(missing_ok=True)


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike, *, command: str = "run", flag: str = "--out", resume: bool = True,
             overwrite: bool = False) -> Iterator[Path]:
    """Hold output folder ``folder`` for one run; yields the folder.

    A folder held by a live run is refused at once, writing nothing. Otherwise
    the folder is checked and created/marked (:func:`psm_bayes.io.prepare_output_dir`
    with ``resume`` / ``overwrite``) and the lock written; if another run took
    the lock meanwhile (both started on a new folder at once), this one is
    refused and the folder is the other run's.
    """
    folder = Path(folder)
    info = holder(folder)
    if is_live(info):
        raise _refusal(folder, info, flag)
    out = prepare_output_dir(folder, command=command, flag=flag, resume=resume, overwrite=overwrite)
    mine = _acquire(out, command, flag)  # refused only for a run that holds the folder (and made it, if new)
    try:
        yield out
    finally:
        _release(out, mine)
