"""Finding, loading and checking memtop's native byte sampler (native/sampler.c).

The library is loaded by path with `ctypes.PyDLL`: every call keeps the GIL, which is what
keeps the hook and the control calls apart. It gets the addresses of the C API functions
it needs from here (it resolves nothing itself), and its stack walk is checked against
`sys._getframe()` before it is trusted.
"""

import ctypes
import os
import sys
import sysconfig
import types

LIBRARY_NAME = "libmemtopsampler.so"
NATIVE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "native")
BUILD_ERROR_FILE = "build-error.txt"
API_VERSION = 1
MAX_FRAMES = 64

_API_FIELDS = (
    "get_allocator",
    "set_allocator",
    "mem_malloc",
    "mem_free",
    "obj_malloc",
    "obj_free",
    "incref",
    "decref",
    "tstate_get",
    "code_type",
    "runtime",
    "interp_head",
    "interp_next",
    "interp_main",
)


class _Api(ctypes.Structure):
    _fields_ = [("api_version", ctypes.c_uint64), ("hexversion", ctypes.c_uint64)] + [
        (name, ctypes.c_void_p) for name in _API_FIELDS
    ]


class Unavailable(Exception):
    """Sampled mode cannot run in this process; the message says why."""

    def __str__(self):
        return "sampled mode unavailable: %s" % (self.args[0] if self.args else "unknown reason")


def refusal():
    """Why this interpreter cannot host the sampler, or None."""
    if sys.implementation.name != "cpython":
        return "not CPython (%s)" % sys.implementation.name
    if not sys.platform.startswith("linux"):
        return "only Linux is supported"
    if sys.maxsize < 2**32 or sys.byteorder != "little":
        return "only 64-bit little-endian builds are supported"
    if not (3, 9) <= sys.version_info[:2] <= (3, 15):
        return "Python %d.%d is not supported (3.9-3.15 are)" % sys.version_info[:2]
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        return "free-threaded build (no GIL): the sampler needs the GIL"
    if hasattr(sys, "getobjects"):
        return "Py_TRACE_REFS build: its object header has another layout"
    return None


def library_path(native_dir=NATIVE_DIR):
    """The built library's path; raises Unavailable with the build's reason when missing."""
    path = os.path.join(native_dir, LIBRARY_NAME)
    if os.path.exists(path):
        return path
    try:
        with open(
            os.path.join(native_dir, BUILD_ERROR_FILE), encoding="utf-8", errors="replace"
        ) as f:
            reason = f.read().strip().splitlines()[0][:300]
    except (OSError, IndexError):
        reason = "the library was not built (reinstall memtop with a C compiler: pip install .)"
    raise Unavailable(reason)


def open_library(path):
    """`ctypes.PyDLL(path)`; from a copy in an anonymous memory file when the file's
    mount forbids executing it (noexec). The mapping outlives the descriptor."""
    try:
        return ctypes.PyDLL(path)
    except OSError as exc:
        if "failed to map segment" not in str(exc) or not hasattr(os, "memfd_create"):
            raise
    with open(path, "rb") as f:
        data = f.read()
    fd = os.memfd_create("memtop-sampler", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        return ctypes.PyDLL("/proc/self/fd/%d" % fd)
    finally:
        os.close(fd)


def _address(name):
    return ctypes.cast(getattr(ctypes.pythonapi, name), ctypes.c_void_p).value


def c_api():
    api = _Api()
    api.api_version = API_VERSION
    api.hexversion = sys.hexversion
    api.get_allocator = _address("PyMem_GetAllocator")
    api.set_allocator = _address("PyMem_SetAllocator")
    api.mem_malloc = _address("PyMem_Malloc")
    api.mem_free = _address("PyMem_Free")
    api.obj_malloc = _address("PyObject_Malloc")
    api.obj_free = _address("PyObject_Free")
    api.incref = _address("Py_IncRef")
    api.decref = _address("Py_DecRef")
    unchecked = (
        "PyThreadState_GetUnchecked"
        if sys.version_info >= (3, 13)
        else "_PyThreadState_UncheckedGet"
    )
    api.tstate_get = _address(unchecked)
    api.code_type = id(types.CodeType)
    if sys.version_info >= (3, 13):
        api.runtime = ctypes.addressof(ctypes.c_char.in_dll(ctypes.pythonapi, "_PyRuntime"))
    api.interp_head = _address("PyInterpreterState_Head")
    api.interp_next = _address("PyInterpreterState_Next")
    api.interp_main = _address("PyInterpreterState_Main")
    return api


def declare(lib):
    lib.mts_error.restype = ctypes.c_char_p
    lib.mts_error.argtypes = []
    lib.mts_version.restype = ctypes.c_int
    lib.mts_init.argtypes = [ctypes.POINTER(_Api)]
    lib.mts_init.restype = ctypes.c_int
    lib.mts_walk.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_int]
    lib.mts_walk.restype = ctypes.c_int
    lib.mts_set_layout_fault.argtypes = [ctypes.c_int]
    lib.mts_set_layout_fault.restype = None
    lib.mts_start.argtypes = [ctypes.c_double, ctypes.c_uint64]
    lib.mts_start.restype = ctypes.c_int
    lib.mts_attached.argtypes = []
    lib.mts_attached.restype = ctypes.c_int
    lib.mts_stop.argtypes = []
    lib.mts_stop.restype = ctypes.c_int64
    lib.mts_compact.argtypes = []
    lib.mts_compact.restype = ctypes.c_int64
    lib.mts_snapshot.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_int64]
    lib.mts_snapshot.restype = ctypes.c_int64


def reason(lib):
    return lib.mts_error().decode("utf-8", "replace")


_addr2line = None


def line_of(code, offset):
    global _addr2line
    if offset < 0:
        return code.co_firstlineno
    if _addr2line is None:
        fn = ctypes.pythonapi.PyCode_Addr2Line
        fn.argtypes = [ctypes.py_object, ctypes.c_int]
        fn.restype = ctypes.c_int
        _addr2line = fn
    # Instructions the compiler gave no line (exception cleanup, 3.11+) come back as -1;
    # tracemalloc reports those as line 0, and so do we.
    return max(_addr2line(code, offset), 0)


def code_at(address):
    # A new reference to a code object the library holds a reference to.
    return ctypes.cast(ctypes.c_void_p(address), ctypes.py_object).value


def self_test(lib, depth=12):
    """None when the library's stack walk matches `sys._getframe()` (code objects and
    line numbers), else what differed."""
    buf = (ctypes.c_uint64 * (2 * MAX_FRAMES))()

    def descend(n):
        if n:
            return descend(n - 1)
        walked = lib.mts_walk(buf, MAX_FRAMES)
        # This frame has moved on since the walk: its line is checked against the
        # function's span; the outer frames wait at their calls, so theirs must match.
        frame = sys._getframe()
        expected = [(frame.f_code, None)]
        frame = frame.f_back
        while frame is not None and len(expected) < MAX_FRAMES:
            expected.append((frame.f_code, frame.f_lineno))
            frame = frame.f_back
        return walked, expected

    walked, expected = descend(depth)
    if walked != len(expected):
        return "the stack walk found %d frames where Python has %d" % (walked, len(expected))
    for i, (code, lineno) in enumerate(expected):
        if buf[2 * i] != id(code):
            return "frame %d is not %s" % (i, code.co_name)
        line = line_of(code, ctypes.c_int64(buf[2 * i + 1]).value)
        if lineno is None:
            if not code.co_firstlineno < line < code.co_firstlineno + 4:
                return "the innermost frame is at line %s, outside %s" % (line, code.co_name)
        elif line != lineno:
            return "frame %d (%s) is at line %s, Python says %s" % (i, code.co_name, line, lineno)
    return None
