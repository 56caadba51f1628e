"""Reports, every 0.05 s, the functions and contexts of its MEM and OBJ allocators (what
PyMem_GetAllocator returns), so a test can see from outside who hooked them and whether
they were given back.

argv: STATE
"""

import ctypes
import sys
import time

from _state import report

DOMAINS = {"mem": 1, "obj": 2}  # PYMEM_DOMAIN_MEM, PYMEM_DOMAIN_OBJ


class Allocator(ctypes.Structure):
    _fields_ = [
        ("ctx", ctypes.c_void_p),
        ("malloc", ctypes.c_void_p),
        ("calloc", ctypes.c_void_p),
        ("realloc", ctypes.c_void_p),
        ("free", ctypes.c_void_p),
    ]


get_allocator = ctypes.pythonapi.PyMem_GetAllocator
get_allocator.argtypes = [ctypes.c_int, ctypes.POINTER(Allocator)]
get_allocator.restype = None


def allocators():
    out = {}
    for name, domain in DOMAINS.items():
        found = Allocator()
        get_allocator(domain, ctypes.byref(found))
        out[name] = [found.ctx or 0, found.malloc, found.calloc, found.realloc, found.free]
    return out


counter = 0
while True:
    counter += 1
    report(sys.argv[1], counter=counter, allocators=allocators())
    time.sleep(0.05)
