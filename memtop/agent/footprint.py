"""memtop's own footprint in the program: what a table read costs in resident memory,
and handing that memory back to the operating system.

`_tracemalloc._get_traces()` copies tracemalloc's trace table with the C allocator (an
entry per live block) before it builds its list. Freed at once, those small chunks are
holes between the trace entries tracemalloc keeps for the program's own new blocks, so
glibc cannot shrink its heap, and every read at a larger heap needs more: a leaking program
watched at 1 Hz grew its RSS about 1.5-2.5x as fast as with tracemalloc alone, and kept it
after detach. `malloc_trim(0)` returns the free pages inside the heap (madvise), which
takes a few tens of milliseconds at a million blocks and is counted against the agent's
budget like the read itself. Other C libraries (musl) have no `malloc_trim`: nothing to do.

Even then a read leaves a few MiB of free but resident memory behind (measured: 2-3 MiB
for `_get_traces()` alone at 200k-1M blocks, single-threaded), which the program reuses
over the following seconds. The agent measures what each read left in untraced memory and
reports the total as memtop's own, so the verdict does not call it the program's.

malloc_trim is reached through ctypes, and only in a program that has loaded libffi
already (it imported ctypes, or something that did): loading libffi can open a file
descriptor that stays open in the program (libffi's static trampolines keep a descriptor
of their own library, as in CPython 3.14 builds with libffi 3.5), and the agent must not
leave one behind. Elsewhere reads still give their memory back to the program's heap, and
what they left is counted as memtop's own.
"""

import os
import sys
import tracemalloc

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_state = {"trim": None, "looked": None}


def _load():
    """glibc's malloc_trim, or None."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
    except (ValueError, OSError):
        return None
    if "_ctypes" not in sys.modules and not _libffi_loaded():
        return None
    try:
        import ctypes

        trim = ctypes.CDLL(None).malloc_trim
    except (ImportError, OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def _libffi_loaded():
    """True when libffi is mapped in this process already."""
    try:
        with open("/proc/self/maps", "rb") as maps:
            return any(b"/libffi.so" in line for line in maps)
    except OSError:
        return False


def release_free_memory():
    """Return the C heap's free pages to the OS; True when that was possible."""
    # Looked for again once the program has loaded ctypes itself.
    ctypes_loaded = "_ctypes" in sys.modules
    looked = _state["looked"]  # None: not yet; else whether ctypes was loaded then
    if looked is None or (ctypes_loaded and not looked):
        _state["trim"] = _load()
        _state["looked"] = ctypes_loaded
    trim = _state["trim"]
    if trim is None:
        return False
    try:
        trim(0)
    except Exception:
        _state["trim"], _state["looked"] = None, True  # never again
        return False
    return True


def resident_bytes():
    """This process's RSS (0 when /proc cannot be read)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def untraced_bytes():
    """RSS held neither by traced memory nor by tracemalloc's own tables."""
    rss = resident_bytes()
    if not tracemalloc.is_tracing():
        return rss
    return rss - tracemalloc.get_traced_memory()[0] - tracemalloc.get_tracemalloc_memory()
