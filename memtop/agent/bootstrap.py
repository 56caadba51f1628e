"""The agent's side of an attach: one request, handed over in a one-shot session file.

The viewer writes `<rundir>/<pid>-<start>-<nonce>.session` (0600, the target's uid) with
the session token and settings, then gets the target to run a tiny bootstrap that loads
this package by path (once) and calls `boot(path)`. A bootstrap that runs late, after
the viewer gave up and deleted the file, finds nothing and does nothing. The outcome is
written next to it as `.result`, so the viewer learns a failure at once; the viewer
removes both files once read.
"""

import json
import os
import time

from . import lifecycle


def boot(session_path):
    """Carry out the attach request in `session_path`; never raises, never prints."""
    try:
        # Binary: a text wrapper looks up a dozen attribute names through temporary
        # strings, which CPython's type cache keeps alive until their entries are reused.
        with open(session_path, "rb") as f:
            request = json.loads(f.read(65536))
    except (OSError, ValueError):
        return
    # Removing the file claims the session. The viewer withdraws it the same way when it
    # gives up: whoever removes it first decides, so a bootstrap that read the file just
    # before the viewer gave up does nothing, and a viewer that finds it claimed waits.
    try:
        os.unlink(session_path)
    except OSError:
        return
    if not isinstance(request, dict) or request.get("expires", 0) < time.time():
        return
    try:
        if request.get("action") == "stop":
            result = {"ok": True, "stopped": lifecycle.stop()}
        else:
            config = request.get("config")
            result = dict(lifecycle.start(config if isinstance(config, dict) else {}), ok=True)
    except Exception as exc:
        result = {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)}
    _write_result(session_path + ".result", result)


def _write_result(path, result):
    try:
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600
        )
        try:
            os.write(fd, json.dumps(result).encode("utf-8"))
        finally:
            os.close(fd)
    except OSError:
        pass
