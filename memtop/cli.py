"""Command line: parse, dispatch, map typed errors to exit codes. Thin by design."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from memtop import __version__, offline, signals
from memtop.attach.chain import METHODS, attach, detach
from memtop.attach.discovery import python_processes
from memtop.batch import run_batch
from memtop.client import AgentClient
from memtop.errors import EXIT_INTERRUPTED, MemtopError, TargetExited, UsageError
from memtop.filesource import FileSource
from memtop.formatting import fit, format_size
from memtop.model import GROUP_KEYS, SORT_KEYS, Query
from memtop.offline import FORMATS
from memtop.runner import Program, log_tail, start_program
from memtop.snapfile import PICKLE_WARNING, load
from memtop.source import LiveSource

DEMO_PROGRAM = str(Path(__file__).resolve().parent / "demo.py")


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

    attach = commands.add_parser(
        "attach", help="attach to a running CPython process and view it (also: memtop PID)"
    )
    attach.add_argument("pid", type=_bounded_int(1, 2**22), metavar="PID")
    _add_view_options(attach)
    _add_attach_options(attach)

    ps = commands.add_parser("ps", help="list Python processes and whether an agent serves")
    ps.add_argument("--json", action="store_true", help="one JSON array on stdout")
    ps.add_argument("-a", "--all", action="store_true", help="every user's processes (root)")

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
        help="memtop's file format (default) or tracemalloc's (a pickle)",
    )
    _add_nframe_option(snapshot)
    snapshot.add_argument(
        "--wait",
        type=_positive_float,
        default=0.0,
        metavar="SECONDS",
        help="when the attach starts tracing, trace this long before saving",
    )
    _add_attach_options(snapshot)

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

    convert = commands.add_parser("convert", help="convert between memtop and tracemalloc files")
    convert.add_argument("source", metavar="IN")
    convert.add_argument("target", metavar="OUT")
    convert.add_argument("--to", choices=FORMATS, default="tracemalloc")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `memtop` command; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0].isdigit():
        args_list.insert(0, "attach")  # `memtop PID` is `memtop attach PID`
    signals.install()
    try:
        args = build_parser().parse_args(args_list)
        if args.command is None:
            raise UsageError("no command given (see `memtop --help`)")
        return _dispatch(args)
    except MemtopError as exc:
        sys.stderr.write(f"memtop: {exc.message}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        if args.module:
            return _run_program(args, args.module, args.program, module=True)
        if not args.program:
            raise UsageError("memtop run needs a script (or -m MODULE)")
        return _run_program(args, args.program[0], args.program[1:], module=False)
    if args.command == "demo":
        return _run_program(args, DEMO_PROGRAM, [], module=False)
    if args.command == "attach":
        return _attach(args)
    if args.command == "ps":
        return _ps(args)
    if args.command == "detach":
        sys.stderr.write(f"memtop: {detach(args.pid, args.method, args.force_gdb, args.timeout)}\n")
        return 0
    if args.command == "snapshot":
        path = args.output or offline.default_snapshot_path(args.pid)
        done = offline.take(
            args.pid,
            path,
            args.format,
            args.method,
            args.nframe,
            args.timeout,
            args.force_gdb,
            args.wait,
            _warn,
        )
        sys.stderr.write(f"memtop: {done}\n")
        return 0
    if args.command == "view":
        return _view_file(args)
    if args.command == "convert":
        sys.stderr.write(
            f"memtop: {offline.convert(args.source, args.target, args.to, args.trust_pickle)}\n"
        )
        return 0
    raise UsageError(f"unknown command {args.command}")


def _query(args: argparse.Namespace) -> Query:
    if args.cumulative and args.group == "traceback":
        raise UsageError("--cumulative applies to lineno and filename grouping only")
    return Query(group_by=args.group, cumulative=args.cumulative, limit=args.limit, sort=args.sort)


def _run_program(args: argparse.Namespace, target: str, rest: list[str], *, module: bool) -> int:
    query = _query(args)
    if args.iterations is not None and not (args.batch or args.json):
        args.batch = True
    program = start_program(
        target, rest, module=module, python=args.python, nframe=args.nframe, log_path=args.log
    )
    sys.stderr.write(f"memtop: program pid {program.pid}, output in {program.log_path}\n")
    try:
        client = AgentClient.connect(program.socket_path, program.token, expected_pid=program.pid)
    except MemtopError as exc:
        ended = program.wait_for_exit(2.0)
        status = ended or program.stop()
        _report_program_end(program, ended, status)
        if ended is not None:
            raise TargetExited(f"the program {ended} before the first refresh") from exc
        raise
    source = LiveSource(client, program.pid, "run", program)
    try:
        return _view(source, query, args)
    finally:
        ended_itself = program.exit_status()
        closed = source.close()
        if source.keep_agent and ended_itself is None:
            sys.stderr.write(
                f"memtop: left pid {program.pid} running with its agent serving: `memtop "
                f"{program.pid}` resumes, `memtop detach {program.pid}` stops tracing; its "
                f"output is in {program.log_path}\n"
            )
        else:
            _report_program_end(program, ended_itself, closed)


def _view(source: Any, query: Query, args: argparse.Namespace) -> int:
    """Show a source with the view the options ask for; returns the exit code.

    The TUI unless --batch/--json/-n, or when not on a terminal (like `top -b`). After
    `Q`, or when the terminal went away (SIGHUP), `source.keep_agent` is set: the
    caller's close() then leaves the agent serving."""
    shown = source
    record = None
    if getattr(args, "record", None):
        try:
            record = open(args.record, "a", encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise UsageError(f"cannot write {args.record}: {exc.strerror}") from exc
        shown = offline.RecordingSource(source, record)
    try:
        terminal = all(stream.isatty() for stream in (sys.stdin, sys.stdout, sys.stderr))
        if args.batch or args.json or args.iterations is not None or not terminal:
            code = run_batch(
                shown,
                query,
                interval=args.interval,
                iterations=args.iterations,
                as_json=args.json,
                out=sys.stdout,
                err=sys.stderr,
                width=_batch_width(),
            )
            keep = False
        else:
            from memtop.ui.app import run_tui  # Textual loads only when the TUI runs

            outcome = run_tui(shown, query, args.interval)
            code, keep = outcome.exit_code, outcome.keep_agent
    finally:
        if record is not None:
            record.close()
    source.keep_agent = keep or signals.hung_up()
    return code


def _view_file(args: argparse.Namespace) -> int:
    if args.trust_pickle:
        sys.stderr.write(f"memtop: {PICKLE_WARNING}\n")
    current = load(args.file, args.trust_pickle)
    base = load(args.base, args.trust_pickle) if args.base else None
    source = FileSource(current, args.file, base, args.base)
    if args.iterations is None and (args.batch or args.json):
        args.iterations = 1  # a file does not change: one refresh says it all
    return _view(source, _query(args), args)


def _report_program_end(program: Program, ended: str | None, status: str | None) -> None:
    """Say where the output went; show its last lines when the program failed by itself."""
    if ended is None:
        sys.stderr.write(f"memtop: stopped the program ({status}); output in {program.log_path}\n")
        return
    sys.stderr.write(f"memtop: the program's output is in {program.log_path}\n")
    if ended != "exited with code 0":
        tail = log_tail(program.log_path)
        if tail:
            sys.stderr.write(f"memtop: last lines of its output:\n{tail}\n")


def _batch_width() -> int:
    """Terminal width on a terminal; wide when piped (like `top -b`), unless COLUMNS says."""
    if sys.stdout.isatty() or "COLUMNS" in os.environ:
        return shutil.get_terminal_size((120, 24)).columns
    return 200


def _attach(args: argparse.Namespace) -> int:
    query = _query(args)
    if args.iterations is not None and not (args.batch or args.json):
        args.batch = True
    attached = attach(args.pid, args.method, args.nframe, args.timeout, args.force_gdb)
    target = attached.target
    sys.stderr.write(
        f"memtop: attached to pid {target.pid} (CPython {target.python.label}, "
        f"{target.user}) via {attached.how} in {attached.seconds:.2f} s\n"
    )
    source = LiveSource(attached.client, target.pid, attached.how, token=attached.token)
    try:
        return _view(source, query, args)
    finally:
        ended = source.exit_status()
        source.close()
        if ended is None and source.keep_agent:
            sys.stderr.write(
                f"memtop: the agent keeps serving in pid {target.pid}: `memtop {target.pid}` "
                f"resumes, `memtop detach {target.pid}` stops it\n"
            )
        elif ended is None:
            sys.stderr.write(f"memtop: detached from pid {target.pid}\n")


def _ps(args: argparse.Namespace) -> int:
    rows = python_processes(all_users=args.all)
    if args.json:
        json.dump([row.as_json() for row in rows], sys.stdout)
        sys.stdout.write("\n")
        return 0
    sys.stdout.write(f"{'PID':>7} {'PYTHON':<8} {'RSS':>10} {'AGENT':<6} {'USER':<10} COMMAND\n")
    width = _batch_width()
    for row in rows:
        line = (
            f"{row.pid:>7} {row.python:<8} {format_size(row.rss):>10} "
            f"{'yes' if row.agent else '-':<6} {fit(row.user, 10):<10} "
        )
        sys.stdout.write(line + fit(row.command, max(10, width - len(line))) + "\n")
    return 0


def _warn(text: str) -> None:
    sys.stderr.write(f"memtop: warning: {text}\n")
