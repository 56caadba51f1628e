"""The command line's grammar: commands, options, and their checks (DESIGN.md §2).
Usage errors exit with code 1 and say how to get help."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from memtop import __version__
from memtop.attach.chain import METHODS
from memtop.errors import UsageError
from memtop.model import GROUP_KEYS, SORT_KEYS
from memtop.modes import MODES, parse_rate
from memtop.snapfile import FORMATS


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit with code 1 and say how to get help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message}\n(see `{self.prog} --help`)")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError("must be between 0.05 and 3600 seconds")
    return value


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return value

    return parse


def _add_view_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-i",
        "--interval",
        type=_positive_float,
        default=1.0,
        metavar="SECONDS",
        help="refresh period (default 1.0)",
    )
    parser.add_argument(
        "-g",
        "--group",
        choices=GROUP_KEYS,
        default="lineno",
        help="group rows by source line (default), file, or whole traceback",
    )
    parser.add_argument(
        "-s",
        "--sort",
        choices=SORT_KEYS,
        default="size",
        help="row order: size (default), size_diff / count_diff (largest change either way), "
        "count, growth (largest growth first: leak hunting)",
    )
    parser.add_argument(
        "--hide-internal",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="leave out the import system, <unknown> frames and memtop's own agent, as the "
        "live view does (x there); --no-hide-internal shows them (default: hidden)",
    )
    parser.add_argument(
        "--cumulative",
        action="store_true",
        help="count every frame of a traceback, not only the allocating one",
    )
    parser.add_argument(
        "-l",
        "--limit",
        type=_bounded_int(1, 500),
        default=50,
        metavar="N",
        help="rows kept per refresh (default 50)",
    )
    _add_nframe_option(parser)
    parser.add_argument(
        "-b", "--batch", action="store_true", help="plain text refreshes like `top -b`, no TUI"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per refresh")
    parser.add_argument(
        "-n",
        "--iterations",
        type=_bounded_int(1, 10**9),
        metavar="N",
        help="with --batch/--json: stop after N refreshes",
    )
    parser.add_argument(
        "--record",
        metavar="FILE",
        help="also append every refresh to FILE as a JSON line (any view)",
    )


def _add_nframe_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nframe",
        type=_bounded_int(1, 1000),
        default=4,
        metavar="N",
        help="traceback depth when memtop starts tracemalloc (default 4)",
    )


def _add_mode_options(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--mode",
        choices=MODES,
        default=None,
        help="exact: tracemalloc, every allocation (5-25x slower while watched); sampled: "
        f"a native byte sampler, estimates with error bars for a few percent (default: "
        f"{default}; without sampled mode memtop says why and traces exactly)",
    )
    parser.add_argument(
        "--rate",
        type=parse_rate,
        default=None,
        metavar="BYTES",
        help="sampled mode: one block sampled per BYTES allocated, on average (default 256K; "
        "smaller is more accurate: a site of B bytes is within about ±sqrt(R/B))",
    )


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--python",
        metavar="PATH",
        help="interpreter to run the program with (default: memtop's own)",
    )
    parser.add_argument(
        "--log",
        metavar="FILE",
        help="where the program's stdout/stderr go (default: in the run dir)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="memtop", description="top for the Python heap.")
    parser.add_argument("--version", action="version", version=f"memtop {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = commands.add_parser(
        "run",
        help="start a program with the agent and view it",
        description="Start a program with the agent inside it and view "
        "it. Options go before the script.",
    )
    _add_view_options(run)
    _add_run_options(run)
    _add_mode_options(run, "exact")
    run.add_argument("-m", dest="module", metavar="MODULE", help="run a library module")
    run.add_argument(
        "program",
        nargs=argparse.REMAINDER,
        metavar="script.py [ARGS...]",
        help="the script and its arguments (or, with -m, the module's arguments)",
    )

    demo = commands.add_parser("demo", help="run the bundled leaky demo program and view it")
    _add_view_options(demo)
    _add_run_options(demo)
    _add_mode_options(demo, "exact")

    attach = commands.add_parser(
        "attach", help="attach to a running CPython process and view it (also: memtop PID)"
    )
    attach.add_argument("pid", type=_bounded_int(1, 2**22), metavar="PID")
    attach.add_argument(
        "more", type=_bounded_int(1, 2**22), nargs="*", metavar="PID",
        help="more processes, watched as one group (tables merged by line)",
    )  # fmt: skip
    attach.add_argument(
        "--children",
        action="store_true",
        help="also watch PID's Python children, and new ones as they appear (workers)",
    )
    _add_view_options(attach)
    _add_attach_options(attach)
    _add_mode_options(attach, "sampled")

    ps = commands.add_parser("ps", help="list Python processes and whether an agent serves")
    ps.add_argument("--json", action="store_true", help="one JSON array on stdout")
    ps.add_argument("-a", "--all", action="store_true", help="every user's processes (root)")
    ps.add_argument(
        "--tree",
        action="store_true",
        help="each process under its parent (a gunicorn master above its workers)",
    )

    detach = commands.add_parser("detach", help="stop the agent in a process")
    detach.add_argument("pid", type=_bounded_int(1, 2**22), metavar="PID")
    _add_attach_options(detach)

    snapshot = commands.add_parser("snapshot", help="save a whole snapshot of a process")
    snapshot.add_argument("pid", type=_bounded_int(1, 2**22), metavar="PID")
    snapshot.add_argument(
        "-o", "--output", metavar="FILE", help="where to save it (default: memtop-PID-TIME.memtop)"
    )
    snapshot.add_argument(
        "--format",
        choices=FORMATS,
        default="memtop",
        help="memtop's file format (default), tracemalloc's (a pickle), or pprof (gzipped "
        "profile.proto, for go tool pprof, Pyroscope, speedscope)",
    )
    _add_nframe_option(snapshot)
    snapshot.add_argument(
        "--wait",
        type=_positive_float,
        default=0.0,
        metavar="SECONDS",
        help="when the attach starts tracing, trace this long before saving",
    )
    snapshot.add_argument(
        "--keep",
        action="store_true",
        help="leave the agent tracing after saving, so that a later snapshot of the same "
        "tracing session shows what grew in between (`memtop detach PID` stops it)",
    )
    _add_attach_options(snapshot)
    _add_mode_options(snapshot, "sampled")

    view = commands.add_parser("view", help="browse a saved snapshot, or the diff of two")
    view.add_argument("file", metavar="FILE")
    view.add_argument(
        "--base", metavar="OLDFILE", help="show FILE's changes against OLDFILE (like compare_to)"
    )
    view.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow tracemalloc pickles, which can run code when opened",
    )
    _add_view_options(view)

    export = commands.add_parser(
        "export",
        help="serve heap metrics of processes to Prometheus (stays attached, headless)",
    )
    export.add_argument("pids", type=_bounded_int(1, 2**22), nargs="+", metavar="PID")
    export.add_argument(
        "--listen",
        default="127.0.0.1:9464",
        metavar="ADDRESS:PORT",
        help="where /metrics is served (default 127.0.0.1:9464, this machine only)",
    )
    export.add_argument(
        "--top",
        type=_bounded_int(1, 500),
        default=20,
        metavar="N",
        help="sites (file:line) served per process, the largest (default 20)",
    )
    export.add_argument(
        "-i",
        "--interval",
        type=_positive_float,
        default=15.0,
        metavar="SECONDS",
        help="refresh period (default 15, a common scrape interval)",
    )
    export.add_argument(
        "--children",
        action="store_true",
        help="also serve each PID's Python children, and new ones as they appear (workers)",
    )
    export.add_argument(
        "--keep-agent",
        action="store_true",
        help="on exit, leave the agents serving (as Q does) instead of detaching",
    )
    export.add_argument(
        "--hide-internal",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="leave out importlib, <unknown> and memtop's own lines (default: left out)",
    )
    _add_nframe_option(export)
    _add_attach_options(export)
    _add_mode_options(export, "sampled")

    convert = commands.add_parser("convert", help="convert between memtop and tracemalloc files")
    convert.add_argument("source", metavar="IN")
    convert.add_argument("target", metavar="OUT")
    convert.add_argument(
        "--to",
        choices=FORMATS,
        default=None,
        help="the output format (default from OUT's name: .memtop memtop, .pb.gz or .pprof "
        "pprof, anything else tracemalloc)",
    )
    convert.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow reading a tracemalloc pickle, which can run code",
    )
    return parser


def _add_attach_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="auto",
        help="how to get the agent in (default: auto, the safest that works)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=5.0,
        metavar="SECONDS",
        help="how long to wait for the agent to answer (default 5)",
    )
    parser.add_argument(
        "--force-gdb",
        action="store_true",
        help="use gdb even on a target that opted out of remote debugging",
    )
