"""A program whose every piece of text is an attack on the terminal that shows it: its
sys.version, its process name, a file and directory name, a source line, type names and
dict keys carry OSC 52 (clipboard), OSC 0/2 (window title), CSI 2J (clear screen), a BEL,
a bidi override and Rich markup.

argv: STATE heap          allocate through the hostile file and report; then idle
      STATE tracer PID    take the hostile process name and hold PID under ptrace
"""

import ctypes
import os
import sys
import time

from _state import report

# Each one alone would be visible in a terminal that interprets it.
CLIPBOARD = "\x1b]52;c;cHduZWQ=\x07"
TITLE = "\x1b]0;pwned-title\x07"
TITLE2 = "\x1b]2;pwned-title\x1b\\"
CLEAR = "\x1b[2J\x1b[H"
C1_CSI = "\x9b2J"
BIDI = "\u202e"
MARKUP = "[bold red]markup[/bold red]"
ATTACK = CLIPBOARD + TITLE + TITLE2 + CLEAR + C1_CSI + BIDI + "\x07\x7f" + MARKUP

STATE, MODE = sys.argv[1], sys.argv[2]


def set_process_name(name):
    """prctl(PR_SET_NAME): what /proc/PID/comm and `ps` show (15 bytes at most)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(15, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


set_process_name("\x1b]0;pwn\x07\x1b[2J")

if MODE == "tracer":
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    if libc.ptrace(0x4206, int(sys.argv[3]), None, None) != 0:  # PTRACE_SEIZE
        sys.exit("PTRACE_SEIZE failed: " + os.strerror(ctypes.get_errno()))
    report(STATE, traced=int(sys.argv[3]))
    while True:
        time.sleep(60)

sys.version = TITLE + CLEAR + "[bold]3.99" + " (hostile)"  # no space before the attack

# A module in a directory whose name attacks, with a source line that attacks too.
where = os.path.join(os.path.dirname(os.path.abspath(STATE)), "dir" + TITLE + "[bold]d")
os.makedirs(where, exist_ok=True)
module = os.path.join(where, "evil" + CLEAR + ".py")
code = "def allocate(keep):\n    keep.append([bytearray(300) for _ in range(3000)])  # %s\n"
with open(module, "w", encoding="utf-8") as f:
    f.write(code % ATTACK)
namespace = {}
exec(compile(code % ATTACK, module, "exec"), namespace)

Evil = type("Evil" + CLIPBOARD + TITLE + MARKUP, (), {})
HOLDER = {"key" + TITLE2 + CLEAR + MARKUP: [Evil() for _ in range(20000)]}
KEEP = []

while True:
    namespace["allocate"](KEEP)
    del KEEP[:-2]
    report(STATE, module=module, evil=Evil.__name__)
    time.sleep(0.2)
