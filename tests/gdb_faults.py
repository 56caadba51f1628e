# Run inside gdb before gdb_inject.py by tests that need one of memtop's calls into the
# target stopped part-way, as a fault would stop it. The test defines SETTINGS
# {"function", "how", "times", "log"} and execs this file. At the entry of `function`,
# when gdb itself called it (its caller is gdb's dummy frame), the first `times` times
# (counted over every gdb run of the test):
#   here:       SIGSEGV is queued to the calling thread: gdb unwinds the call.
#   elsewhere:  SIGUSR2 (a stopping signal here) is queued to another thread: gdb leaves
#               the call in place.
# Every call of mmap/munmap/`function` made by gdb is logged to `log` as a JSON line
# {"function", "arg" (the first argument), "faulted"}.
import ctypes
import json
import signal

import gdb

SYS_TGKILL = 234  # x86-64
LIBC = ctypes.CDLL(None)
SETTINGS = globals()["SETTINGS"]


def called_by_gdb():
    caller = gdb.newest_frame().older()
    return caller is not None and caller.type() == gdb.DUMMY_FRAME


class Probe(gdb.Breakpoint):
    def __init__(self, function, faults):
        gdb.Breakpoint.__init__(self, function, internal=True)
        self.function = function
        self.faults = faults

    def stop(self):
        if not called_by_gdb():
            return False
        thread = gdb.selected_thread()
        faulted = self.faults > 0
        with open(SETTINGS["log"], "a") as f:
            arg = int(gdb.parse_and_eval("$rdi"))
            f.write(json.dumps({"function": self.function, "arg": arg, "faulted": faulted}))
            f.write("\n")
        if not faulted:
            return False
        self.faults -= 1
        pid = gdb.selected_inferior().pid
        if SETTINGS["how"] == "here":
            LIBC.syscall(SYS_TGKILL, pid, thread.ptid[1], int(signal.SIGSEGV))
        else:
            others = [t for t in gdb.selected_inferior().threads() if t.ptid[1] != thread.ptid[1]]
            LIBC.syscall(SYS_TGKILL, pid, others[0].ptid[1], int(signal.SIGUSR2))
        return False


def faulted_before():
    try:
        with open(SETTINGS["log"]) as f:
            return sum(1 for line in f if json.loads(line)["faulted"])
    except FileNotFoundError:
        return 0


gdb.execute("handle SIGUSR2 stop print pass")
for name in {"mmap", "munmap", SETTINGS["function"]}:
    faults = SETTINGS["times"] - faulted_before() if name == SETTINGS["function"] else 0
    Probe(name, faults)
