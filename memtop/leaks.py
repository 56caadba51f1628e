"""Leak-hunting answers from the agent, as values: objects by type, where a type's
instances were allocated, and what keeps one of them alive. Pure: no IO, no UI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from memtop.agent.protocol import NOT_SHOWN
from memtop.model import Frame


@dataclass(frozen=True)
class TypeRow:
    """Live objects of one type (as the gc sees them) and their growth."""

    name: str
    count: int
    size: int  # shallow bytes (sys.getsizeof)
    count_diff: int
    size_diff: int
    # "__sizeof__" when the class defines its own: not called, the objects' own struct
    # is counted instead.
    not_shown: str = ""


@dataclass(frozen=True)
class TypesTable:
    """The gc's view of the heap, by type, with growth since the baseline (or the last look)."""

    rows: tuple[TypeRow, ...]
    objects: int
    total_types: int
    since: float | None
    baseline: float | None
    cost_ms: float
    not_shown: str = ""  # NOT_SHOWN when some row's value was not shown


@dataclass(frozen=True)
class OriginSite:
    """Where a share of a type's sampled instances were allocated."""

    count: int
    frames: tuple[Frame, ...]  # oldest first


@dataclass(frozen=True)
class Origins:
    """Allocation sites of a sample of one type's instances."""

    type_name: str
    sampled: int
    untraced: int
    note: str
    sites: tuple[OriginSite, ...]


@dataclass(frozen=True)
class ChainStep:
    """One step of a referrer chain, from the root down to the object."""

    type_name: str
    edge: str  # how this object refers to the next one ("global CACHE", "['k1']", ".items")
    root: str  # set on the first step: "module app.cache", "class app.Registry", "thread ..."
    # A thread's frame as the root: where it stands, the function and the thread's name.
    frame: Frame | None = None
    function: str = ""
    thread: str = ""


@dataclass(frozen=True)
class ReferrerChain:
    """What keeps a sample object alive."""

    found: bool
    what: str
    steps: tuple[ChainStep, ...]
    cut: bool
    allocated_at: tuple[Frame, ...]
    note: str
    reason: str


def values_not_shown(chain: ReferrerChain) -> bool:
    """True when the agent left out a value of the chain (a dict key whose repr the program
    defines, say): it never runs the program's code to show one."""
    return any(NOT_SHOWN in step.edge or NOT_SHOWN in step.type_name for step in chain.steps)


def types_from_reply(reply: dict[str, Any]) -> TypesTable:
    return TypesTable(
        rows=tuple(
            TypeRow(
                str(r["type"]),
                int(r["count"]),
                int(r["size"]),
                int(r["count_diff"]),
                int(r["size_diff"]),
                str(r.get("not_shown", "")),
            )
            for r in reply["rows"]
        ),
        objects=int(reply["objects"]),
        total_types=int(reply["total_types"]),
        since=reply.get("since"),
        baseline=reply.get("baseline"),
        cost_ms=float(reply["cost_ms"]),
        not_shown=str(reply.get("not_shown", "")),
    )


def _frames_from(raw: list[dict[str, Any]]) -> tuple[Frame, ...]:
    return tuple(Frame(str(f["filename"]), int(f["lineno"]), str(f.get("source", ""))) for f in raw)


def origins_from_reply(reply: dict[str, Any]) -> Origins:
    return Origins(
        type_name=str(reply["type"]),
        sampled=int(reply["sampled"]),
        untraced=int(reply["untraced"]),
        note=str(reply.get("note", "")),
        sites=tuple(OriginSite(int(s["count"]), _frames_from(s["frames"])) for s in reply["sites"]),
    )


def _chain_step(step: dict[str, Any]) -> ChainStep:
    frame = step.get("frame")
    if not frame:
        return ChainStep(str(step["type"]), str(step["edge"]), str(step["root"]))
    filename, lineno, function, thread = frame
    return ChainStep(
        str(step["type"]),
        str(step["edge"]),
        str(step["root"]),
        Frame(str(filename), int(lineno)),
        str(function),
        str(thread),
    )


def chain_from_reply(reply: dict[str, Any]) -> ReferrerChain:
    return ReferrerChain(
        found=bool(reply["found"]),
        what=str(reply["what"]),
        steps=tuple(_chain_step(s) for s in reply["steps"]),
        cut=bool(reply["cut"]),
        allocated_at=tuple(Frame(str(f), int(n)) for f, n in reply.get("allocated_at", ())),
        note=str(reply.get("note", "")),
        reason=str(reply.get("reason", "")),
    )
