"""A thread whose class computes its name and ident in Python: reading them runs the
program's code. The thread keeps one Kept in a local; reading the program's own code
leaves a mark (STATE.ran) the tests look for.

argv: STATE
"""

import sys
import threading
import time

from _state import report

STATE = sys.argv[1]


class Kept:
    pass


class Costumed(threading.Thread):
    @property
    def name(self):
        with open(STATE + ".ran", "a") as mark:
            mark.write("name\n")
        return "costumed"

    @name.setter
    def name(self, value):
        pass


def keep_one():
    keep = Kept()
    while True:
        time.sleep(0.05)  # LINE: kept_waits
        assert keep is not None


if __name__ == "__main__":
    Costumed(target=keep_one, daemon=True).start()
    while True:
        report(STATE)
        time.sleep(0.2)
