"""Filename patterns in fnmatch's syntax, compiled and matched by the agent itself.

`fnmatch` turns each pattern into a regular expression and keeps it in two caches of the
program (`re`'s and fnmatch's own), warns on stderr about some sets, and a pattern of many
stars can make the regex backtrack for seconds. A viewer's filters must leave nothing in
the program and cost time linear in what they match, so here a pattern is a list of
segments split at its stars; a plain segment is found with `str.find`, one with `?` or
`[...]` with a shift-and scan over bit masks. Sets follow fnmatch (`[!...]`, ranges, a
leading `]`, an unclosed `[` read literally) and are then read as `re` reads a class.
"""

_MAX_MASKS = 256  # characters remembered per segment


class GlobError(ValueError):
    """A pattern fnmatch itself could not compile."""


class CharSet:
    """One `[...]` of a pattern."""

    __slots__ = ("negate", "ranges", "singles")

    def __init__(self, negate, singles, ranges):
        self.negate = negate
        self.singles = singles
        self.ranges = ranges

    def accepts(self, char):
        hit = char in self.singles
        if not hit:
            for low, high in self.ranges:
                if low <= char <= high:
                    hit = True
                    break
        return hit != self.negate


_ANY = CharSet(True, frozenset(), ())  # `?`, and fnmatch's `[!]`-like sets
_NONE = CharSet(False, frozenset(), ())  # an empty set never matches


def _accepts(atom, char):
    if type(atom) is str:
        return atom == char
    return atom.accepts(char)


class Segment:
    """The part of a pattern between two stars: a fixed number of characters."""

    __slots__ = ("atoms", "masks", "size", "text")

    def __init__(self, atoms):
        self.atoms = tuple(atoms)
        self.size = len(atoms)
        plain = all(type(atom) is str for atom in atoms)
        self.text = "".join(atoms) if plain else None
        self.masks = {}

    def at(self, name, start):
        """True when the segment matches `name` at `start` (which leaves room for it)."""
        if self.text is not None:
            return name.startswith(self.text, start)
        return all(_accepts(atom, name[start + offset]) for offset, atom in enumerate(self.atoms))

    def find(self, name, start, stop):
        """The first position >= start where the segment matches within name[:stop], or -1."""
        if self.text is not None:
            return name.find(self.text, start, stop)
        goal = 1 << (self.size - 1)
        state = 0
        masks = self.masks
        for index in range(start, stop):
            char = name[index]
            mask = masks.get(char)
            if mask is None:
                mask = 0
                for bit, atom in enumerate(self.atoms):
                    if _accepts(atom, char):
                        mask |= 1 << bit
                if len(masks) < _MAX_MASKS:
                    masks[char] = mask
            state = ((state << 1) | 1) & mask
            if state & goal:
                return index - self.size + 1
        return -1


class Glob:
    """A compiled pattern: `match(name)` is `fnmatch.fnmatchcase(name, pattern)`."""

    __slots__ = ("segments",)

    def __init__(self, segments):
        self.segments = segments

    def match(self, name):
        segments = self.segments
        first = segments[0]
        if len(segments) == 1:
            return len(name) == first.size and first.at(name, 0)
        last = segments[-1]
        end = len(name) - last.size
        if first.size > end or not first.at(name, 0) or not last.at(name, end):
            return False
        position = first.size
        for segment in segments[1:-1]:
            found = segment.find(name, position, end)
            if found < 0:
                return False
            position = found + segment.size
        return True


def compile_glob(pattern):
    """The Glob of an fnmatch pattern; GlobError when fnmatch would fail on it too."""
    segments = [[]]
    index = 0
    length = len(pattern)
    after_star = False
    while index < length:
        char = pattern[index]
        index += 1
        if char == "*":
            if not after_star:
                segments.append([])
            after_star = True
            continue
        after_star = False
        if char == "?":
            segments[-1].append(_ANY)
        elif char == "[":
            end = _set_end(pattern, index)
            if end < 0:
                segments[-1].append("[")
            else:
                segments[-1].append(_char_set(_set_text(pattern, index, end)))
                index = end + 1
        else:
            segments[-1].append(char)
    return Glob([Segment(atoms) for atoms in segments])


def _set_end(pattern, start):
    """Index of the `]` closing a set opened just before `start`, or -1 (then `[` is literal)."""
    end = start
    if end < len(pattern) and pattern[end] == "!":
        end += 1
    if end < len(pattern) and pattern[end] == "]":
        end += 1
    while end < len(pattern) and pattern[end] != "]":
        end += 1
    return end if end < len(pattern) else -1


def _set_text(pattern, start, end):
    """The inside of the regex class fnmatch.translate writes for pattern[start:end]
    (same steps: hyphens split ranges, reversed ranges are dropped, specials escaped)."""
    stuff = pattern[start:end]
    if "-" not in stuff:
        stuff = stuff.replace("\\", "\\\\")
    else:
        chunks = []
        scan = start + 2 if pattern[start] == "!" else start + 1
        while True:
            scan = pattern.find("-", scan, end)
            if scan < 0:
                break
            chunks.append(pattern[start:scan])
            start = scan + 1
            scan += 3
        chunk = pattern[start:end]
        if chunk:
            chunks.append(chunk)
        else:
            chunks[-1] += "-"
        try:
            for k in range(len(chunks) - 1, 0, -1):
                if chunks[k - 1][-1] > chunks[k][0]:
                    chunks[k - 1] = chunks[k - 1][:-1] + chunks[k][1:]
                    del chunks[k]
        except IndexError:
            raise GlobError("a set of reversed ranges fnmatch cannot read") from None
        stuff = "-".join(s.replace("\\", "\\\\").replace("-", "\\-") for s in chunks)
    out = []
    for char in stuff:
        if char in "&~|":
            out.append("\\")
        out.append(char)
    return "".join(out)


def _char_set(stuff):
    """A CharSet from the inside of a class, read as `re` reads `[stuff]`."""
    if not stuff:
        return _NONE
    if stuff == "!":
        return _ANY
    negate = stuff[0] == "!"
    body = stuff[1:] if negate else stuff
    singles = set()
    ranges = []
    position = 0
    while position < len(body):
        low, position = _class_item(body, position)
        if position + 1 < len(body) and body[position] == "-":
            high, position = _class_item(body, position + 1)
            if high < low:
                raise GlobError("a reversed range %s-%s" % (low, high))
            ranges.append((low, high))
        else:
            singles.add(low)
    return CharSet(negate, frozenset(singles), tuple(ranges))


def _class_item(body, position):
    # Inside a class fnmatch escapes only characters that stand for themselves.
    if body[position] == "\\" and position + 1 < len(body):
        return body[position + 1], position + 2
    return body[position], position + 1
