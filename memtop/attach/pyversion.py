"""Which CPython a process runs, found from its memory map and binaries on disk."""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass

from memtop.attach import procfs
from memtop.attach.elfinfo import ElfError, ElfFile

_LIBPYTHON = re.compile(r"libpython(\d)\.(\d+)(t?)\.so")
_PYTHON_NAME = re.compile(r"python(\d)\.(\d+)(t?)$")
_LOADER = re.compile(r"^ld(-linux)?[-.\w]*\.so")
# Exported only by free-threaded builds (biased reference counting, 3.13t+).
_FREE_THREADED_SYMBOLS = ("_Py_MergeZeroLocalRefcount", "_Py_brc_queue_object")


@dataclass(frozen=True)
class PythonInfo:
    """The interpreter inside a process."""

    version: tuple[int, int]
    full_version: str
    free_threaded: bool
    binary: str  # the ELF file with the C API: libpython, or the executable
    executable: str  # a python binary that can be run (for sys.remote_exec)

    @property
    def label(self) -> str:
        return self.full_version + ("t" if self.free_threaded else "")

    @property
    def static(self) -> bool:
        """True when the C API is in the executable itself (no libpython)."""
        return self.binary == self.executable


def detect_python(pid: int, contained: bool = False) -> PythonInfo | None:
    """The process's CPython, or None when it is not one. Raises PermissionError when its
    memory map is not readable (another user, or a non-dumpable process). `contained`:
    it has a mount namespace of its own, so its binaries are read through /proc (the
    paths it names are its own, not memtop's)."""
    exe = procfs.exe_path(pid)
    reading: dict[str, str] = {}
    if contained:
        # One reading of the map: a path it names on a second reading only would be opened
        # here, as a path of this host's, that the container chose (a FIFO, a device).
        reading = procfs.mapped_file_links(pid)
        mapped = list(reading)
        reading[exe] = procfs.proc_path(pid, "exe")
    else:
        mapped = procfs.mapped_files(pid)
    return _detect(mapped, exe, reading)


def _detect(mapped: list[str], exe: str, reading: dict[str, str]) -> PythonInfo | None:
    """`reading`: where to read each binary the process names, when not at its path."""
    executable = exe
    if not exe or _LOADER.match(os.path.basename(exe)):
        # Started through an explicit ld.so (/proc/PID/exe is the loader), or the link is
        # unreadable (root without CAP_SYS_PTRACE): the python binary is in the map.
        executable = next((p for p in mapped if _PYTHON_NAME.search(os.path.basename(p))), exe)
    for path in mapped:
        match = _LIBPYTHON.search(os.path.basename(path))
        if match:
            version = (int(match.group(1)), int(match.group(2)))
            return PythonInfo(
                version,
                _full_version(reading.get(path, path)) or f"{version[0]}.{version[1]}",
                bool(match.group(3)),
                path,
                executable,
            )
    for path in [executable] + [p for p in mapped if p != executable]:
        info = _from_binary(path, executable, reading.get(path, path))
        if info is not None:
            return info
    return None


def _from_binary(path: str, executable: str, readable: str) -> PythonInfo | None:
    """A statically linked interpreter: its exported C API names the version (the file
    named `path` is read at `readable`)."""
    try:
        elf = ElfFile(readable)
    except (OSError, ElfError):
        return None
    if not elf.has("PyRun_SimpleString"):
        return None
    full = _version_from(elf)
    name = _PYTHON_NAME.search(os.path.basename(path))
    if full is None and name is None:
        return None
    if full is None:
        assert name is not None
        full = f"{name.group(1)}.{name.group(2)}"
    major, minor = (int(x) for x in full.split(".")[:2])
    free = any(elf.has(s) for s in _FREE_THREADED_SYMBOLS) or bool(name and name.group(3))
    return PythonInfo(
        (major, minor),
        full,
        free,
        path,
        executable if elf.has("Py_BytesMain") or path == executable else path,
    )


def _full_version(path: str) -> str | None:
    try:
        return _version_from(ElfFile(path))
    except (OSError, ElfError):
        return None


def _version_from(elf: ElfFile) -> str | None:
    """'3.14.1' from the `Py_Version` constant (PY_VERSION_HEX, CPython 3.11+)."""
    raw = elf.read_symbol("Py_Version")
    if raw is None or len(raw) < 4:
        return None
    (value,) = struct.unpack_from("<I", raw)
    major, minor, micro = value >> 24, (value >> 16) & 0xFF, (value >> 8) & 0xFF
    level, serial = (value >> 4) & 0xF, value & 0xF
    suffix = {0xA: f"a{serial}", 0xB: f"b{serial}", 0xC: f"rc{serial}"}.get(level, "")
    return f"{major}.{minor}.{micro}{suffix}"
