"""Just enough ELF reading to find CPython's exported symbols in a file on disk.

Used by the preflight, which must learn the target's Python version without running
anything in it or reading its memory: `Py_Version` (3.11+) is a constant in .rodata.
64-bit little-endian ELF only (x86-64, aarch64).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")


@dataclass(frozen=True)
class _Section:
    name: str
    kind: int
    addr: int
    offset: int
    size: int
    link: int
    entsize: int


class ElfError(Exception):
    """Not a 64-bit little-endian ELF file, or a malformed one."""


class ElfFile:
    """Symbols and constant data of one ELF file, read on demand."""

    def __init__(self, path: str) -> None:
        self.path = path
        with open(path, "rb") as f:
            self.data = f.read()
        if self.data[:4] != b"\x7fELF" or self.data[4] != 2 or self.data[5] != 1:
            raise ElfError(f"{path} is not a 64-bit little-endian ELF file")
        try:
            self.sections = self._read_sections()
        except (struct.error, IndexError) as exc:
            raise ElfError(f"{path}: malformed ELF headers") from exc
        self._symbols: dict[str, tuple[int, int]] | None = None

    def _read_sections(self) -> list[_Section]:
        header = _EHDR.unpack_from(self.data, 0)
        shoff, shentsize, shnum, shstrndx = header[6], header[11], header[12], header[13]
        raw = [_SHDR.unpack_from(self.data, shoff + i * shentsize) for i in range(shnum)]
        names = raw[shstrndx]
        sections = []
        for entry in raw:
            start = names[4] + entry[0]
            name = self.data[start : self.data.index(b"\0", start)].decode("ascii", "replace")
            sections.append(
                _Section(name, entry[1], entry[3], entry[4], entry[5], entry[6], entry[9])
            )
        return sections

    def symbols(self) -> dict[str, tuple[int, int]]:
        """Defined symbols from .dynsym and .symtab: name -> (address, size)."""
        if self._symbols is None:
            found: dict[str, tuple[int, int]] = {}
            for table in self.sections:
                if table.kind not in (2, 11) or not table.entsize:  # SYMTAB, DYNSYM
                    continue
                strings = self.sections[table.link]
                for i in range(table.size // table.entsize):
                    name_off, _, _, shndx, value, size = _SYM.unpack_from(
                        self.data, table.offset + i * table.entsize
                    )
                    if not name_off or shndx == 0:
                        continue
                    start = strings.offset + name_off
                    name = self.data[start : self.data.index(b"\0", start)].decode(
                        "ascii", "replace"
                    )
                    found.setdefault(name, (value, size))
            self._symbols = found
        return self._symbols

    def has(self, name: str) -> bool:
        return name in self.symbols()

    def read_symbol(self, name: str) -> bytes | None:
        """The initial bytes of a data symbol, from the section holding it."""
        entry = self.symbols().get(name)
        if entry is None:
            return None
        address, size = entry
        for section in self.sections:
            if section.kind != 8 and section.addr <= address < section.addr + section.size:
                start = section.offset + address - section.addr
                return self.data[start : start + size]
        return None
