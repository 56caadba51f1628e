"""Checking request arguments: every value from the socket is checked for type and
range here, and only compared or counted afterwards, never evaluated or used as a path."""

import math

from . import rowkeys
from .globmatch import GlobError, compile_glob
from .protocol import MAX_PATTERN_CHARS, MAX_PATTERNS


class BadArgs(Exception):
    """An argument of the wrong type or value: replied as `bad_args`."""


class Busy(Exception):
    """The duty-cycle budget is spent: replied as `busy` with the seconds to wait."""

    def __init__(self, retry_in, what):
        Exception.__init__(
            self,
            "%s waits for the agent's time budget (it keeps its work under a fixed share "
            "of the program's time): retry in %.1f s" % (what, retry_in),
        )
        self.retry_in = retry_in


def get(args, name, kind, default):
    value = args.get(name, default)
    if kind is int and isinstance(value, bool):
        raise BadArgs("%s must be an integer" % name)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind):
        raise BadArgs("%s must be of type %s" % (name, kind.__name__))
    if kind is float and not math.isfinite(value):
        raise BadArgs("%s must be a finite number" % name)
    return value


def choice(args, name, choices, default):
    value = get(args, name, str, default)
    if value not in choices:
        raise BadArgs("%s must be one of %s" % (name, ", ".join(choices)))
    return value


def patterns(args, name):
    value = args.get(name, [])
    if not isinstance(value, list) or len(value) > MAX_PATTERNS:
        raise BadArgs("%s must be a list of at most %d patterns" % (name, MAX_PATTERNS))
    for item in value:
        if not isinstance(item, str) or len(item) > MAX_PATTERN_CHARS:
            raise BadArgs("%s must hold strings of at most %d chars" % (name, MAX_PATTERN_CHARS))
        try:
            compile_glob(item)
        except GlobError as exc:
            raise BadArgs("%s: %r is not a valid pattern (%s)" % (name, item[:40], exc)) from None
    return tuple(value)


def limit(args, default, cap):
    value = get(args, "limit", int, default)
    if value < 1:
        raise BadArgs("limit must be at least 1")
    return min(value, cap)


def grouping_config(args):
    """(group_by, cumulative, include, exclude) from request arguments."""
    group_by = choice(args, "group_by", rowkeys.GROUP_KEYS, "lineno")
    cumulative = get(args, "cumulative", bool, False)
    problem = rowkeys.cumulative_error(group_by, cumulative)
    if problem is not None:
        raise BadArgs(problem)
    return (group_by, cumulative, patterns(args, "include"), patterns(args, "exclude"))


def row_key(value, group_by):
    """A row key sent back by the viewer (rowkeys' wire form), checked for shape."""
    try:
        return rowkeys.decode(value, group_by)
    except ValueError as exc:
        raise BadArgs(str(exc)) from None


def row_keys(value, group_by, cap):
    """Row keys sent back by the viewer (a list of `row_key` objects, at most `cap`)."""
    if not isinstance(value, list) or len(value) > cap:
        raise BadArgs("keys must be a list of at most %d row keys" % cap)
    return [row_key(item, group_by) for item in value]


def type_name(args):
    name = args.get("type")
    if not isinstance(name, str) or not 0 < len(name) <= 300:
        raise BadArgs("type must be a type name such as 'app.models.Session'")
    return name
