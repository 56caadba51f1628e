"""Leaks in known ways, at known lines, while doing harmless work around them.

argv: STATE MODE [TRIGGER]
  list      a global list of class instances grows       (# LINE: list_leak)
  cache     a cache dict that never evicts grows          (# LINE: cache_leak)
  closure   closures keep self-referencing nodes alive    (# LINE: closure_leak)
  all       the three at once
  static    makes 300 Widgets once, then only reports; when the TRIGGER file appears it
            drops them and reports whether a weak reference to one still lives
  local     a worker thread keeps one Holder in a local variable, nothing else refers to it;
            a thread without a name (started with _thread) keeps one Anonymous the same way
  slots     a global list of Slotted objects (with __slots__) keeps a Payload each
Every mode also churns short-lived objects and, once, keeps a 2 MB spike (# LINE: spike).
"""

import gc
import os
import sys
import time
import weakref

from _state import report

STATE, MODE = sys.argv[1], sys.argv[2]
TRIGGER = sys.argv[3] if len(sys.argv) > 3 else None


class Widget:
    def __init__(self, n, payload):
        self.n = n
        self.payload = payload


class Entry:
    def __init__(self, key, payload):
        self.key = key
        self.payload = payload


class Holder:
    pass


class Anonymous:
    pass


class Payload:
    pass


class Slotted:
    __slots__ = ("n", "payload")

    def __init__(self, n):
        self.n = n
        self.payload = Payload()


SLOTTED = []


def hold_anonymously():
    keep = Anonymous()  # LINE: held_anonymously
    while True:
        time.sleep(0.05)
        assert keep is not None


def hold_forever():
    keep = Holder()  # LINE: held_local
    while True:
        time.sleep(0.05)  # LINE: holder_waits
        assert keep is not None


class Node:
    def __init__(self, payload):
        self.me = self  # a reference cycle
        self.payload = payload


LEAKED = []
CACHE = {}
CALLBACKS = []
SPIKE = []


def make_callback():
    node = Node(bytes(256))  # LINE: closure_leak
    return lambda: node


def leak(turn):
    for i in range(10):
        n = turn * 10 + i
        if MODE in ("list", "all"):
            LEAKED.append(Widget(n, bytes(256)))  # LINE: list_leak
        if MODE in ("cache", "all"):
            CACHE["k%d" % n] = Entry(n, bytes(256))  # LINE: cache_leak
        if MODE in ("closure", "all"):
            CALLBACKS.append(make_callback())


def churn():
    return sum(len(str(i)) for i in [{"i": i} for i in range(300)])


def main():
    turn = 0
    watched = None
    if MODE == "local":
        import _thread
        import threading

        threading.Thread(target=hold_forever, name="holder", daemon=True).start()
        _thread.start_new_thread(hold_anonymously, ())
    if MODE == "slots":
        SLOTTED.extend(Slotted(n) for n in range(50))
    if MODE == "static":
        LEAKED.extend(Widget(n, bytes(64)) for n in range(300))  # LINE: static
        watched = weakref.ref(LEAKED[-1])
    while True:
        turn += 1
        if turn == 5:
            SPIKE.append(bytearray(2 * 1024 * 1024))  # LINE: spike
        if MODE not in ("static", "local", "slots"):
            leak(turn)
        churn()
        if TRIGGER and os.path.exists(TRIGGER) and LEAKED:
            del LEAKED[:]
            gc.collect()
        report(STATE, counter=turn, watched_alive=watched is not None and watched() is not None)
        time.sleep(0.1)


main()
