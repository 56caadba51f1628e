"""A program started without memtop, to be attached to. It allocates at a known line
(`# LINE: grow`) all the time, and reports its state (ready = the file exists).

argv: STATE KIND
  sleeping         main thread: allocate, report, sleep 0.05 s
  busy             main thread: allocate constantly (dict/list churn), report every 0.1 s
  multithread      4 allocating workers; the main thread sleeps in short naps
  asyncio          an event loop with allocating tasks
  blocked_sleep    main thread in time.sleep(1e5); a worker allocates and reports
  blocked_select   main thread in select() for 1e5 s; a worker allocates and reports
  blocked_join     main thread in Thread.join(); 4 busy workers, one reports
  idle             report and sleep, allocating nothing else (a steady heap)
  quiet            report once, then only sleep: nothing allocated after an attach
  late FIFO        main thread blocked reading FIFO (made here) until the test writes to
                   it (queued calls wait meanwhile), then behaves like `sleeping`
  audit_veto       like `sleeping`, with an audit hook that refuses remote debugger scripts
  nondumpable      like `sleeping`, after prctl(PR_SET_DUMPABLE, 0)
"""

import os
import select
import sys
import threading
import time

from _state import report

STATE, KIND = sys.argv[1], sys.argv[2]
KEEP = []
COUNTER = [0]


def grow():
    KEEP.append(bytearray(512))  # LINE: grow
    if len(KEEP) > 4000:
        del KEEP[:2000]


def churn():
    junk = [{"n": i, "s": str(i)} for i in range(200)]
    return len(junk)


def tick():
    COUNTER[0] += 1
    report(STATE, counter=COUNTER[0], kind=KIND)


def worker(reporting, busy):
    while True:
        for _ in range(20):
            grow()
        if busy:
            churn()
        else:
            time.sleep(0.01)
        if reporting:
            tick()


def start_workers(count, busy):
    threads = [
        threading.Thread(target=worker, args=(i == 0, busy), daemon=True) for i in range(count)
    ]
    for thread in threads:
        thread.start()
    return threads


def sleeping():
    while True:
        for _ in range(20):
            grow()
        tick()
        time.sleep(0.05)


if KIND == "audit_veto":

    def veto(event, args):
        if event == "cpython.remote_debugger_script":
            raise RuntimeError("remote debugging refused by this program")

    sys.addaudithook(veto)
    sleeping()
elif KIND == "nondumpable":
    import ctypes

    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    sleeping()
elif KIND == "late":
    # Blocked in C (a read, not Python code) until the test writes to the FIFO: a queued
    # call or remote script waits until then, however long the attach took.
    fifo = sys.argv[3]
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR)
    tick()
    os.read(fd, 1)
    os.close(fd)
    sleeping()
elif KIND == "idle":
    while True:
        tick()
        time.sleep(0.05)
elif KIND == "quiet":
    tick()
    while True:
        time.sleep(0.05)
elif KIND == "sleeping":
    sleeping()
elif KIND == "busy":
    last = 0.0
    while True:
        grow()
        churn()
        if time.monotonic() - last > 0.1:
            last = time.monotonic()
            tick()
elif KIND == "multithread":
    start_workers(4, busy=False)
    while True:
        time.sleep(0.05)
elif KIND == "asyncio":
    import asyncio

    async def task(reporting):
        while True:
            for _ in range(20):
                grow()
            if reporting:
                tick()
            await asyncio.sleep(0.02)

    async def main():
        await asyncio.gather(*(task(i == 0) for i in range(3)))

    asyncio.run(main())
elif KIND == "blocked_sleep":
    start_workers(1, busy=False)
    time.sleep(1e5)
elif KIND == "blocked_select":
    start_workers(1, busy=False)
    select.select([], [], [], 1e5)
elif KIND == "blocked_join":
    threads = start_workers(4, busy=True)
    threads[0].join()
else:
    sys.exit("unknown kind %r" % KIND)
os._exit(0)
