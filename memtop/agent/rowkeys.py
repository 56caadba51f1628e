"""Row identity, said once for the agent and the viewer: per grouping key, the key of a
traceback, whether a traceback counts in a row, the fields a row shows, and the key's
wire form (what the viewer sends back to name a row). The saved-file view builds its rows
with these functions too, so a live table and a file's cannot disagree.

Raw tracebacks are tuples of (filename, lineno), most recent frame first, as tracemalloc
keeps them; on the wire frames go oldest first, like `tracemalloc.Traceback`.
"""

from operator import itemgetter

GROUP_KEYS = ("lineno", "filename", "traceback")
# Counting every frame of a traceback (not only the allocating one) gives rows of lines or
# files; a whole-traceback row is already every frame.
CUMULATIVE_KEYS = ("lineno", "filename")
SORT_KEYS = ("size", "size_diff", "count", "count_diff", "growth")
MAX_WIRE_FRAMES = 1024


def cumulative_error(group_by, cumulative):
    """Why `cumulative` cannot go with `group_by` (None: it can)."""
    if cumulative and group_by not in CUMULATIVE_KEYS:
        return "cumulative applies to lineno and filename grouping only"
    return None


def _filename(tb):
    return tb[0][0]


def _itself(tb):
    return tb


def _filenames(tb):
    return [frame[0] for frame in tb]


# The key a traceback counts under, by grouping: its allocating frame, that frame's file,
# or the whole traceback. Each returns an existing object: no tuple per traceback (while
# tracing is on, every temporary is traced).
KEY_OF = {"lineno": itemgetter(0), "filename": _filename, "traceback": _itself}
# Cumulative grouping: the keys of every frame (a recursive frame counts each time).
KEYS_OF = {"lineno": _itself, "filename": _filenames}


def matches(tb, group_by, cumulative, key):
    """True when traceback `tb` counts in the row `key`."""
    if cumulative:
        return key in KEYS_OF[group_by](tb)
    return KEY_OF[group_by](tb) == key


def fields(key, group_by, tb):
    """(filename, lineno) a row shows: its line, its file (lineno None), or for a whole
    traceback its allocating frame (`tb`: the row's heaviest traceback)."""
    if group_by == "lineno":
        return key
    if group_by == "filename":
        return key, None
    return tb[0]


def order_frames(key, group_by):
    """What breaks a tie between two rows: their frames oldest first, compared as
    tracemalloc.Traceback compares them."""
    if group_by == "traceback":
        return tuple(reversed(key))
    if group_by == "lineno":
        return (key,)
    return ((key, 0),)


def history_key(key, group_by):
    """A key as the `history` reply lists it: the fields its row shows, and a traceback's
    frames (oldest first)."""
    filename, lineno = fields(key, group_by, key)
    if group_by == "traceback":
        return {
            "filename": filename,
            "lineno": lineno,
            "traceback": [{"filename": f, "lineno": n} for f, n in reversed(key)],
        }
    return {"filename": filename, "lineno": lineno}


def frames_out(tb, sources):
    """A raw traceback on the wire: oldest frame first, each with its source line."""
    return [
        {"filename": f, "lineno": n, "source": sources.get((f, n), "")} for f, n in reversed(tb)
    ]


def wire_row(group_by, key, size, size_diff, count, count_diff, tb, sources):
    """One row of a `top` reply from one of collector.rank's rows; `sources` maps
    (filename, lineno) to a source line."""
    filename, lineno = fields(key, group_by, tb)
    return {
        "filename": filename,
        "lineno": lineno,
        "size": size,
        "count": count,
        "size_diff": size_diff,
        "count_diff": count_diff,
        "source": sources.get((filename, lineno), "") if lineno is not None else "",
        "traceback": frames_out(tb, sources),
    }


def key_from_row(group_by, filename, lineno, frames):
    """The key of a row from what it shows (`frames`: (filename, lineno) pairs, oldest
    first, as a `top` row lists them)."""
    if group_by == "traceback":
        return tuple((f, n) for f, n in reversed(frames))
    if group_by == "filename":
        return filename
    return (filename, lineno)


def label(key, group_by):
    """A key as the viewer names its row: 'file:line', 'file', or a traceback's frames
    from the allocating one, 'a.py:3 <- b.py:9'."""
    if group_by == "traceback":
        return " <- ".join("%s:%s" % frame for frame in key)
    if group_by == "filename":
        return key
    return "%s:%s" % key


def encode(key, group_by):
    """The wire form of a key, as a request names a row."""
    if group_by == "traceback":
        return {"frames": [[f, n] for f, n in reversed(key)]}
    if group_by == "filename":
        return {"filename": key}
    return {"filename": key[0], "lineno": key[1]}


def decode(value, group_by):
    """A key from its wire form, checked for shape (it is only compared, never used as a
    path or evaluated); raises ValueError saying what is wrong."""
    if not isinstance(value, dict):
        raise ValueError("key must be an object")
    if group_by == "traceback":
        frames = value.get("frames")
        if not isinstance(frames, list) or not frames or len(frames) > MAX_WIRE_FRAMES:
            raise ValueError("key.frames must be a non-empty list")
        for frame in frames:
            if (
                not isinstance(frame, list)
                or len(frame) != 2
                or not isinstance(frame[0], str)
                or not isinstance(frame[1], int)
            ):
                raise ValueError("key.frames items must be [filename, lineno]")
        return key_from_row(group_by, None, None, frames)
    filename = value.get("filename")
    if not isinstance(filename, str):
        raise ValueError("key.filename must be a string")
    if group_by == "filename":
        return filename
    lineno = value.get("lineno")
    if not isinstance(lineno, int) or isinstance(lineno, bool):
        raise ValueError("key.lineno must be an integer")
    return (filename, lineno)
