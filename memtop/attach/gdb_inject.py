# Runs inside gdb's embedded Python (`gdb -x gdb_inject.py`), never in memtop's process.
# Parameters come as JSON in the file named by $MEMTOP_GDB_PARAMS; the outcome is one line
# "MEMTOP-RESULT {json}" on stdout. Keep it to Python 3.6 syntax and the gdb module.
#
# pending: in the main thread, mmap a page (no malloc in the target), write the bootstrap
#   into it, queue Py_AddPendingCall(PyRun_SimpleString, page). The interpreter runs it in
#   the main thread at its own safe point, with the GIL; nothing Python runs here.
# parked: find a thread whose frame 0 is a blocking system call, with nothing dangerous on
#   its stack (allocator, loader, import, GIL handover) and PyGILState_Check() == 0, and
#   run the bootstrap there between PyGILState_Ensure and PyGILState_Release. PyRun_* is
#   never called in a thread that holds the GIL.
import json
import os
import re

import gdb

BLOCKING = re.compile(
    r"clock_nanosleep|nanosleep|select|poll|epoll_wait|epoll_pwait|libc_read|__read\b|"
    r"libc_recv|recvfrom|recvmsg|accept|futex|sem_wait|sem_timedwait|sem_clockwait|"
    r"pthread_cond_wait|pthread_cond_timedwait|pthread_cond_clockwait|wait4|waitpid"
)
DANGEROUS = re.compile(
    r"malloc|calloc|realloc|\bfree\b|__libc_free|_int_|memalign|\bdl|_dl_|fork|"
    r"_PyImport|import_|gc_collect|take_gil|drop_gil|PyEval_RestoreThread|"
    r"PyEval_AcquireThread|PyGILState_Ensure|Py_AddPendingCall|_PyEval_AddPendingCall|"
    r"make_pending_calls|_push_pending_call|Py_FinalizeEx|_PyRuntime_Finalize"
)
PENDING_BUSY = re.compile(
    r"Py_AddPendingCall|_PyEval_AddPendingCall|make_pending_calls|"
    r"_push_pending_call|_pop_pending_call"
)


def frame_names(thread, depth=64):
    """Function names of a thread's stack, newest first ("??" where unknown)."""
    return [name for name, _ in frames(thread, depth)]


def frames(thread, depth=64):
    """(name, shared object) of each frame of a thread's stack, newest first."""
    thread.switch()
    found = []
    try:
        frame = gdb.newest_frame()
        while frame is not None and len(found) < depth:
            found.append((frame.name() or "??", gdb.solib_name(frame.pc()) or ""))
            frame = frame.older()
    except gdb.error:
        pass
    return found


def blocking_call(stack):
    """The blocking libc call the thread waits in, or None. Newer glibc enters system calls
    through unnamed internal helpers (__syscall_cancel_arch), so unnamed libc frames on
    top are skipped."""
    for name, solib in stack[:4]:
        if (name == "??" or "syscall_cancel" in name) and "libc" in solib:
            continue
        return name if BLOCKING.search(name) else None
    return None


def value(expression):
    return int(gdb.parse_and_eval(expression))


def new_page():
    """An anonymous read-write page in the target: a system call, no malloc."""
    page = value("(long)mmap(0, 4096, 3, 0x22, -1, 0)")
    if page in (-1, 0):
        raise gdb.GdbError("mmap failed in the target")
    return page


def write_text(page, text):
    data = text.encode("ascii") + b"\0"
    if len(data) > 4096:
        raise gdb.GdbError("bootstrap larger than a page")
    gdb.selected_inferior().write_memory(page, data)


def pending(params):
    inferior = gdb.selected_inferior()
    main = [t for t in inferior.threads() if t.ptid[1] == inferior.pid]
    if not main:
        return {"ok": False, "reason": "no main thread"}
    names = frame_names(main[0])
    if any(PENDING_BUSY.search(n) for n in names):
        # The pending-calls lock may be held right now: calling in would deadlock.
        return {"ok": False, "reason": "busy", "frames": names[:8]}
    page = new_page()
    # The bootstrap frees its own page once running: it needs the page's address. exec()
    # in a fresh dict keeps the target's __main__, where PyRun_SimpleString runs, clean.
    text = params["text"].replace(params["placeholder"], "0x%016x" % page)
    write_text(page, "exec(%r,{})" % text)
    rc = value("(int)Py_AddPendingCall((int(*)(void*))PyRun_SimpleString, (void*)%d)" % page)
    if rc != 0:
        value("(int)munmap(%d, 4096)" % page)
        return {"ok": False, "reason": "pending-call queue full", "rc": rc}
    return {"ok": True, "page": page, "frames": names[:8]}


def parked(params):
    inferior = gdb.selected_inferior()
    seen = []
    chosen = None
    threads = sorted(inferior.threads(), key=lambda t: t.ptid[1] != inferior.pid)
    for thread in threads:
        stack = frames(thread)
        names = [name for name, _ in stack]
        entry = {"lwp": thread.ptid[1], "frame0": names[0] if names else "??"}
        seen.append(entry)
        waiting = blocking_call(stack)
        if waiting is None:
            entry["skip"] = "not in a blocking call"
            continue
        entry["frame0"] = waiting
        bad = [n for n in names if DANGEROUS.search(n)]
        if bad:
            entry["skip"] = "unsafe frame " + bad[0]
            continue
        thread.switch()
        entry["gil"] = value("(int)PyGILState_Check()")
        if entry["gil"] != 0:
            entry["skip"] = "holds the GIL"
            continue
        chosen = (thread, entry)
        break
    if chosen is None:
        return {"ok": False, "reason": "no parked thread", "threads": seen}
    thread, entry = chosen
    thread.switch()
    page = new_page()
    write_text(page, params["text"])
    state = value("(int)PyGILState_Ensure()")
    rc = value("(int)PyRun_SimpleString((char*)%d)" % page)
    gdb.parse_and_eval("(void)PyGILState_Release(%d)" % state)
    value("(int)munmap(%d, 4096)" % page)
    return {"ok": rc == 0, "rc": rc, "thread": entry, "threads": seen}


def main():
    with open(os.environ["MEMTOP_GDB_PARAMS"]) as f:
        params = json.load(f)
    if gdb.selected_inferior().pid == 0:
        print("MEMTOP-RESULT " + json.dumps({"ok": False, "reason": "not attached"}))
        return
    try:
        result = pending(params) if params["mode"] == "pending" else parked(params)
    except (gdb.error, gdb.GdbError, ValueError) as exc:
        result = {"ok": False, "reason": "gdb error", "error": str(exc)}
    print("MEMTOP-RESULT " + json.dumps(result))
    gdb.execute("detach")


main()
