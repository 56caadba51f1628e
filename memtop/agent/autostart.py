"""Opt-in by environment: importing this module starts the agent when MEMTOP_AGENT is set.

    MEMTOP_AGENT=1            trace from the start (a viewer sees the whole history)
    MEMTOP_AGENT=on-connect   serve now, trace only while a viewer is attached

Put `import memtop.agent.autostart` in a .pth file of the environment (read at interpreter
start) or at the top of the program. The process is then attachable without ptrace
(`memtop PID` finds the agent and its token file), under any Yama setting and in
containers without CAP_SYS_PTRACE. The trade-off: the token sits in a 0600 file, so any
process of the same user can connect; and with MEMTOP_AGENT=1 the program pays
tracemalloc's cost all the time.
"""

import os

from . import lifecycle


def _start_from_environment():
    mode = os.environ.get("MEMTOP_AGENT", "").strip().lower()
    if mode in ("", "0", "no", "off"):
        return
    try:
        nframe = int(os.environ.get("MEMTOP_NFRAME", lifecycle.DEFAULT_NFRAME))
    except ValueError:
        nframe = lifecycle.DEFAULT_NFRAME
    try:
        lifecycle.start(
            {
                "origin": "opt-in",
                "trace": "on-connect" if mode == "on-connect" else True,
                "nframe": nframe,
            }
        )
    except Exception:
        pass  # never break the program that opted in


_start_from_environment()
