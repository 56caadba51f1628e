"""`memtop run`, inside the new process: start the agent, report to the viewer, then run
the program as `python script.py` / `python -m module` would.

argv: CONFIG_FD STATUS_FD script|module TARGET [ARGS...]. The viewer writes the session
config (token included) into a pipe, so the token is never in argv, the environment or a
file.
"""

import json
import os
import runpy
import sys

from . import lifecycle


def main(argv):
    """Start the agent and run the program; never returns normally."""
    config_fd, status_fd, kind, target = int(argv[0]), int(argv[1]), argv[2], argv[3]
    with os.fdopen(config_fd, "rb") as pipe:
        config = json.loads(pipe.read().decode("utf-8"))
    try:
        info = lifecycle.start(config)
        report = {"ok": True, "socket": info["socket"], "pid": os.getpid()}
    except Exception as exc:
        report = {"ok": False, "error": str(exc)}
    with os.fdopen(status_fd, "wb") as pipe:
        pipe.write(json.dumps(report).encode("utf-8") + b"\n")
    if not report["ok"]:
        sys.exit(70)
    sys.argv = [target, *argv[4:]]
    if kind == "module":
        # `python -m` keeps the working directory first on sys.path, as `-c` left it.
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        sys.path[0] = os.path.dirname(os.path.realpath(target))
        runpy.run_path(target, run_name="__main__")
