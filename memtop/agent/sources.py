"""Source lines for frames, read in the target (the viewer may not see its files).

linecache is not used: it would keep whole files alive in the target's own cache.
This keeps only the requested lines, in a bounded cache.
"""

import os
import stat

MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_LINE_CHARS = 240
MAX_CACHED_LINES = 4096


class SourceLines:
    """Bounded cache of (filename, lineno) -> stripped source text ('' when unavailable)."""

    def __init__(self):
        self.cache = {}

    def clear(self):
        self.cache.clear()

    def lookup(self, frames):
        """Source text for every (filename, lineno) in `frames`, as a dict."""
        missing = {}
        for filename, lineno in frames:
            if (filename, lineno) not in self.cache:
                missing.setdefault(filename, set()).add(lineno)
        if len(self.cache) + sum(len(v) for v in missing.values()) > MAX_CACHED_LINES:
            self.cache.clear()
        for filename, linenos in missing.items():
            lines = _read_lines(filename, linenos)
            for lineno in linenos:
                self.cache[(filename, lineno)] = lines.get(lineno, "")
        return {(f, n): self.cache.get((f, n), "") for f, n in frames}


def _read_lines(filename, linenos):
    # "<frozen importlib._bootstrap>", "<string>", "<unknown>": no file behind them.
    # Relative names are relative to the target's working directory, which is ours too.
    if not filename or filename.startswith("<"):
        return {}
    try:
        # O_NONBLOCK and the S_ISREG check: a frame naming a FIFO must not block the agent.
        fd = os.open(filename, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return {}
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FILE_BYTES:
            return {}
        # Read what fstat announced, in chunks: os.read(n) allocates n bytes up front.
        chunks = []
        remaining = info.st_size
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
    except OSError:
        return {}
    finally:
        os.close(fd)
    # One split() in C beats walking newlines from Python (measured: 10 ms vs 18 ms for
    # 132 lines of six stdlib modules): the temporary line objects are freed at once.
    # With maxsplit = the highest wanted line, every wanted line is a whole piece.
    wanted = set(linenos)
    lines = data.split(b"\n", max(wanted))
    found = {}
    for number in wanted:
        if 1 <= number <= len(lines):
            text = lines[number - 1].decode("utf-8", "replace").strip()
            found[number] = text[:MAX_LINE_CHARS]
    return found
