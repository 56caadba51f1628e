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
#
# Signals (gdb.py sets the table): a signal sent to the program never stops gdb; it is
# delivered at once, in the middle of a call below if it lands there, and the program's
# handler runs as it would without memtop (a stop signal stops the program once gdb
# detaches). Only faults stop gdb. A fault in the calling thread makes gdb unwind the call
# (unwindonsignal) and drop the fault; a fault in another thread leaves the call in place,
# and finish_calls() runs it to its end, passing the fault on. No thread is ever detached
# with gdb's dummy frame on its stack: returning into it is what crashes a target. What a
# call given up half-way may have left is settled where the call is made:
#   mmap: asked for at a free address with MAP_FIXED_NOREPLACE, so /proc/PID/maps says
#     whether the page exists.
#   Py_AddPendingCall: once it may have queued the page, the page belongs to the
#     bootstrap, which frees it when it runs; it is never freed here nor queued again, so
#     the bootstrap runs at most once per page.
#   PyGILState_Ensure / PyRun_SimpleString / PyGILState_Release: PyGILState_Check() says
#     whether this thread holds the GIL; if it does, it is given back.
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
PAGE = 4096
# MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE (Linux 4.17+; older kernels take the
# address as a hint, which they follow when it is free).
MAP_FLAGS = 0x22 | 0x100000
GIL_UNLOCKED = 1  # PyGILState_UNLOCKED: what Ensure returns in a thread that held no GIL
TRIES = 3
STACK_DEPTH = 4096


class Gone(Exception):
    """The process ended while gdb held it."""


class Abandoned(Exception):
    """gdb gave up a call into the target part-way. `finished`: the call was left in
    place and then run to its end (its return value is lost); otherwise gdb unwound it."""

    def __init__(self, message, finished):
        Exception.__init__(self, message)
        self.finished = finished


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


def alive():
    inferior = gdb.selected_inferior()
    return inferior.pid != 0 and bool(inferior.threads())


def has_dummy_frame(thread):
    """Whether gdb left one of its calls on this thread's stack."""
    thread.switch()
    try:
        frame = gdb.newest_frame()
        for _ in range(STACK_DEPTH):
            if frame is None:
                return False
            if frame.type() == gdb.DUMMY_FRAME:
                return True
            frame = frame.older()
    except gdb.error:
        pass
    return False


def finish_calls():
    """Run every call gdb left in place to its end (gdb pops its dummy frame when the call
    returns into it). Returns whether there was one."""
    found = False
    for _ in range(100):
        if not alive():
            raise Gone("the process ended")
        left = [t for t in gdb.selected_inferior().threads() if has_dummy_frame(t)]
        if not left:
            return found
        found = True
        left[0].switch()
        try:
            gdb.execute("continue", to_string=True)
        except gdb.error:
            if not alive():
                raise Gone("the process ended") from None
    raise gdb.GdbError("a call into the target kept being stopped")


def call(expression):
    """Evaluate `expression` (a call into the target) in the selected thread."""
    thread = gdb.selected_thread()
    try:
        value = gdb.parse_and_eval(expression)
    except gdb.error as exc:
        if not alive():
            raise Gone(str(exc)) from None
        finished = finish_calls()
        if not finished and "from GDB" not in str(exc):
            raise  # not a call that was stopped: a plain error (a missing symbol ...)
        thread.switch()
        raise Abandoned("%s: %s" % (expression, " ".join(str(exc).split())), finished) from None
    return None if value.type.code == gdb.TYPE_CODE_VOID else int(value)


def retry(expression):
    """The value of a call that changes nothing in the target, asked again if gdb gave it up."""
    for _ in range(TRIES - 1):
        try:
            return call(expression)
        except Abandoned:
            pass
    return call(expression)


def repeat(expression, needed):
    """Call `expression` until it ran, or until `needed()` says its effect is there anyway.
    Returns whether it took effect."""
    for _ in range(TRIES):
        try:
            call(expression)
            return True
        except Abandoned as exc:
            if exc.finished or not needed():
                return True
    return False


def holds_gil():
    return retry("(int)PyGILState_Check()") == 1


def mappings(pid):
    """(start, end) of every mapping of the process, sorted."""
    spans = []
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            if "[vsyscall]" in line:
                continue  # above the user address space: its gap is not ours to use
            low, high = line.split(None, 1)[0].split("-")
            spans.append((int(low, 16), int(high, 16)))
    return sorted(spans)


def mapped(pid, address):
    return any(low <= address < high for low, high in mappings(pid))


def free_address(pid):
    """A page address in the middle of the widest unmapped gap: far from the heap's and
    the mappings' growth, and known before mmap runs, so that a call gdb gave up can be
    checked in /proc/PID/maps."""
    widest = (0, 0, 0)
    end = None
    for low, high in mappings(pid):
        if end is not None:
            widest = max(widest, (low - end, end, low))
        end = high
    _, low, high = widest
    return ((low + high) // 2) & ~(PAGE - 1)


def new_page(pid):
    """An anonymous read-write page in the target: a system call, no malloc."""
    for _ in range(TRIES):
        address = free_address(pid)
        flags = MAP_FLAGS if address else MAP_FLAGS & ~0x100000
        try:
            page = call("(long)mmap(%d, %d, 3, %d, -1, 0)" % (address, PAGE, flags))
        except Abandoned:
            if address and mapped(pid, address):
                return address  # mapped before gdb gave the call up
            continue
        if page not in (-1, 0):
            return page
    raise gdb.GdbError("mmap failed in the target")


def free_page(pid, page):
    """Unmap a page memtop mapped and nothing else refers to."""
    return repeat("(int)munmap(%d, %d)" % (page, PAGE), lambda: mapped(pid, page))


def write_text(page, text):
    data = text.encode("ascii") + b"\0"
    if len(data) > PAGE:
        raise gdb.GdbError("bootstrap larger than a page")
    gdb.selected_inferior().write_memory(page, data)


def abandoned(exc, **extra):
    return dict({"ok": False, "reason": "abandoned", "error": str(exc)}, **extra)


def pending(params):
    inferior = gdb.selected_inferior()
    main = [t for t in inferior.threads() if t.ptid[1] == inferior.pid]
    if not main:
        return {"ok": False, "reason": "no main thread"}
    names = frame_names(main[0])
    if any(PENDING_BUSY.search(n) for n in names):
        # The pending-calls lock may be held right now: calling in would deadlock.
        return {"ok": False, "reason": "busy", "frames": names[:8]}
    page = new_page(inferior.pid)
    # The bootstrap frees its own page once running: it needs the page's address. exec()
    # in a fresh dict keeps the target's __main__, where PyRun_SimpleString runs, clean.
    text = params["text"].replace(params["placeholder"], "0x%016x" % page)
    write_text(page, "exec(%r,{})" % text)
    try:
        rc = call("(int)Py_AddPendingCall((int(*)(void*))PyRun_SimpleString, (void*)%d)" % page)
    except Abandoned as exc:
        if exc.finished:
            # It ran to its end: queued, unless the queue was full (then a page is left).
            return {"ok": True, "page": page, "frames": names[:8], "finished": str(exc)}
        # It may have queued the page before gdb gave up: the page is the bootstrap's now.
        return abandoned(exc, page=page)
    if rc != 0:
        free_page(inferior.pid, page)
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
        entry["gil"] = retry("(int)PyGILState_Check()")
        if entry["gil"] != 0:
            entry["skip"] = "holds the GIL"
            continue
        chosen = (thread, entry)
        break
    if chosen is None:
        return {"ok": False, "reason": "no parked thread", "threads": seen}
    thread, entry = chosen
    thread.switch()
    page = new_page(inferior.pid)
    write_text(page, params["text"])
    result = {"ok": False, "thread": entry, "threads": seen}
    gil = None  # the PyGILState_Ensure() state to give back once this thread holds the GIL
    try:
        gil = call("(int)PyGILState_Ensure()")
    except Abandoned as exc:
        # The thread held no GIL before: if it holds it now, Ensure took it.
        gil = GIL_UNLOCKED if holds_gil() else None
        if not exc.finished:
            result = abandoned(exc, **result)
    if gil is not None and result.get("reason") is None:
        try:
            result["rc"] = call("(int)PyRun_SimpleString((char*)%d)" % page)
            result["ok"] = result["rc"] == 0
        except Abandoned as exc:
            # If it ran to its end, the agent's own result file says how it went.
            result = dict(result, ok=exc.finished) if exc.finished else abandoned(exc, **result)
    # Given back whatever happened to the run: a thread left holding the GIL would stop
    # every other thread of the program.
    if gil is not None and not repeat("(void)PyGILState_Release(%d)" % gil, holds_gil):
        raise gdb.GdbError("could not give the GIL back in thread %d" % entry["lwp"])
    free_page(inferior.pid, page)
    return result


def main():
    with open(os.environ["MEMTOP_GDB_PARAMS"]) as f:
        params = json.load(f)
    if not alive():
        print("MEMTOP-RESULT " + json.dumps({"ok": False, "reason": "not attached"}))
        return
    try:
        result = pending(params) if params["mode"] == "pending" else parked(params)
    except Gone as exc:
        result = {"ok": False, "reason": "gone", "error": str(exc)}
    except Abandoned as exc:
        result = abandoned(exc)
    except (gdb.error, gdb.GdbError, ValueError, OSError) as exc:
        result = {"ok": False, "reason": "gdb error", "error": str(exc)}
    if not result.get("ok") and alive():
        try:
            finish_calls()  # never detach inside a call, whatever went wrong above
        except (Gone, gdb.error, gdb.GdbError):
            pass
    if not alive():
        result = {"ok": False, "reason": "gone", "error": "the process ended"}
    print("MEMTOP-RESULT " + json.dumps(result))
    if alive():
        gdb.execute("detach")


main()
