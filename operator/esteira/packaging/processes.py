"""Processes as Linux's /proc tells them: whether a pid is a live member of a process group, and a group's live
members. Live means not a zombie: an exited process waiting to be reaped still has a group, and does nothing."""

from __future__ import annotations

from pathlib import Path


def _state_and_group(stat: str) -> tuple[str, int]:
    """(state, process group) from the text of /proc/<pid>/stat (the command name may hold spaces and ')')."""
    state, _parent, group = stat[stat.rindex(")") + 2 :].split()[:3]
    return state, int(group)


def in_group(pid: int, group: int) -> bool:
    """Whether ``pid`` is a live process of ``group``: a process, not one of its threads (``/proc/<tid>`` answers
    too, and a signal sent to a thread's id reaches its whole process)."""
    try:
        state, pgrp = _state_and_group(Path(f"/proc/{pid}/stat").read_text())
        tgid = next(
            int(line.split()[1])
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("Tgid:")
        )
    except (OSError, ValueError, IndexError, StopIteration):
        return False
    return state != "Z" and pgrp == group and tgid == pid


def group_members(pgid: int) -> list[int]:
    """The live processes of process group ``pgid``."""
    pids = (int(stat.parent.name) for stat in Path("/proc").glob("[0-9]*/stat"))
    return [pid for pid in pids if in_group(pid, pgid)]
