"""The viewer's `S`: the source's whole snapshot saved in memtop's format, in the working
directory. Headless (no Textual): the App runs it in a worker thread."""

from __future__ import annotations

import os
from collections.abc import Callable

from memtop import snapfile
from memtop.source import Snapshots


def free_path(path: str, exists: Callable[[str], bool] = os.path.exists) -> str:
    """`path`, or `name-2.ext`, `name-3.ext`… when it is taken (two saves in one second)."""
    stem, ext = os.path.splitext(path)
    candidate, number = path, 1
    while exists(candidate):
        number += 1
        candidate = f"{stem}-{number}{ext}"
    return candidate


def save_snapshot(source: Snapshots) -> str:
    """Save the snapshot to memtop-PID-TIME.memtop here; returns what to tell the user."""
    snapshot = source.snapshot()
    path = free_path(os.path.abspath(snapfile.default_snapshot_path(source.info.pid)))
    snapfile.write(snapshot, path, "memtop")
    blocks = sum(count for _, _, count in snapshot.entries)
    name = os.path.basename(path)
    return f"Snapshot saved: {path} ({blocks:,} traced blocks). Open it with: memtop view {name}"
