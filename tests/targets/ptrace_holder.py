"""Holds another process under ptrace without stopping it, like a debugger or strace
that stays attached. argv: PID. Prints "traced" once PTRACE_SEIZE succeeded, then sleeps
until killed (the kernel detaches the tracee when the tracer exits)."""

import ctypes
import os
import sys
import time

PTRACE_SEIZE = 0x4206

libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long
if libc.ptrace(PTRACE_SEIZE, int(sys.argv[1]), None, None) != 0:
    sys.exit("PTRACE_SEIZE failed: " + os.strerror(ctypes.get_errno()))
print("traced", flush=True)
while True:
    time.sleep(60)
