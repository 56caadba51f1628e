"""memtop's demo program: a small fake web service with the memory problems people meet.

- A session cache that never evicts: traced memory grows steadily (a leak).
- Per-request garbage: parsed payloads and rendered responses, freed at once (churn).
- A bounded LRU cache: big but steady.
- A nightly report: builds ~40 MB of small objects, keeps 1 in 50, frees the rest. The
  survivors pin pymalloc's arenas, so RSS stays high while traced memory drops: the
  fragmentation gap that only RSS next to traced memory reveals.

Runs until interrupted; stdlib only. `memtop demo` starts it under memtop.
"""

from __future__ import annotations

import functools
import json
import random
import sys
import time

REQUESTS_PER_SECOND = 200
REPORT_EVERY = 40.0


class Session:
    """A logged-in user's state."""

    def __init__(self, user_id: int, token: str) -> None:
        self.user_id = user_id
        self.token = token
        self.history: list[str] = []
        self.preferences = {"theme": "dark", "lang": "en", "page_size": 50}


class SessionStore:
    """Sessions by token. The bug: nothing ever expires them."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}

    def login(self, user_id: int) -> Session:
        token = f"{user_id:08x}-{random.getrandbits(64):016x}"
        session = Session(user_id, token)
        self._sessions[token] = session
        return session

    def __len__(self) -> int:
        return len(self._sessions)


# The service's one session store, a module global as in many web apps: what keeps every
# session alive (`w` in the viewer's types view shows the chain from here).
SESSIONS = SessionStore()


@functools.lru_cache(maxsize=2048)
def render_template(name: str, variant: int) -> str:
    """Rendered templates, cached: large but bounded."""
    return f"<html><!-- {name} #{variant} -->" + ("<div class='row'>...</div>" * 40) + "</html>"


def handle_request(store: SessionStore, request_id: int) -> str:
    """Parse a payload, maybe log in, render a page: mostly short-lived garbage."""
    payload = json.dumps({"id": request_id, "items": list(range(request_id % 50)), "q": "x" * 64})
    parsed = json.loads(payload)
    if request_id % 10 == 0:
        session = store.login(request_id)
        session.history.append(f"GET /page/{request_id} {parsed['q'][:8]}")
    page = render_template(f"page{request_id % 300}", request_id % 7)
    return page[:100] + str(len(parsed["items"]))


class Reports:
    """The nightly report: a burst of small objects, an index of 1 in 50 kept."""

    def __init__(self) -> None:
        self.index: list[tuple[int, str, float]] = []

    def build(self, rows: int = 300_000) -> None:
        table = [(i, f"customer-{i:07d}", i * 1.5) for i in range(rows)]
        self.index = table[::50]
        del table


def main(argv: list[str]) -> int:
    duration = float(argv[1]) if len(argv) > 1 else float("inf")
    store = SESSIONS
    reports = Reports()
    started = time.monotonic()
    next_report = started + 10.0
    request_id = 0
    try:
        while time.monotonic() - started < duration:
            tick = time.monotonic()
            for _ in range(REQUESTS_PER_SECOND // 20):
                request_id += 1
                handle_request(store, request_id)
            if tick >= next_report:
                reports.build()
                next_report = tick + REPORT_EVERY
            time.sleep(max(0.0, 0.05 - (time.monotonic() - tick)))
    except KeyboardInterrupt:
        pass
    print(f"served {request_id} requests, {len(store)} sessions kept")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
