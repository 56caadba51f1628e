"""Command line: parse, dispatch, map typed errors to exit codes. Thin by design."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from memtop import signals, snapfile
from memtop.attach.chain import attach, detach, tidy
from memtop.attach.discovery import as_tree, python_processes
from memtop.attach.runner import Program, log_tail, start_program
from memtop.batch import TextView, run_batch
from memtop.cliargs import build_parser
from memtop.client import AgentClient
from memtop.ending import Ending
from memtop.errors import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, MemtopError, TargetExited, UsageError
from memtop.formatting import display_command, fit, format_size
from memtop.json_lines import JsonLines
from memtop.model import INTERNAL_PATTERNS, Query
from memtop.modes import ModeRequest, mode_request, settle_mode
from memtop.record import Recorder
from memtop.sink import Sink
from memtop.snapfile import PICKLE_WARNING, load
from memtop.source import LiveSource, Source, fetch_snapshot
from memtop.terminal import SafeStream, clean_text

DEMO_PROGRAM = str(Path(__file__).resolve().parent / "demo.py")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `memtop` command; returns the exit code."""
    code = _main(argv)
    if signals.hung_up() and _terminal_threads():
        # The terminal went away under the live view: Textual's input and output threads
        # wait on it for good (the input thread spinning on a dead tty), and the
        # interpreter would wait for them at exit. Everything memtop had to do is done.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    return code


def _terminal_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("textual-") and t.is_alive()]


def _main(argv: Sequence[str] | None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0].isdigit():
        args_list.insert(0, "attach")  # `memtop PID` is `memtop attach PID`
    signals.install()
    # Everything memtop prints quotes the target or a file somewhere: both streams let
    # no control character through (the TUI draws on sys.__stderr__, untouched).
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = SafeStream(sys.stdout), SafeStream(sys.stderr)
    try:
        args = build_parser().parse_args(args_list)
        if args.command is None:
            raise UsageError("no command given (see `memtop --help`)")
        return _dispatch(args)
    except MemtopError as exc:
        sys.stderr.write(f"memtop: {clean_text(exc.message, keep=chr(10))}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as Unix tools do. Every cleanup
        # on the way here ran as usual; stdout now goes nowhere, so that the interpreter's
        # last flush at exit finds no closed pipe either.
        _discard_stdout(streams[0])
        return EXIT_BROKEN_PIPE
    finally:
        sys.stdout, sys.stderr = streams


def _discard_stdout(stdout: TextIO) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, stdout.fileno())
    except (OSError, ValueError):
        pass  # not a real file (a test's StringIO): nothing will flush into a pipe
    finally:
        os.close(devnull)


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
        sys.stderr.write(f"memtop: {_snapshot(args)}\n")
        return 0
    if args.command == "view":
        return _view_file(args)
    if args.command == "export":
        return _export(args)
    if args.command == "convert":
        sys.stderr.write(
            f"memtop: {snapfile.convert(args.source, args.target, args.to, args.trust_pickle)}\n"
        )
        return 0
    raise UsageError(f"unknown command {args.command}")


def _query(args: argparse.Namespace) -> Query:
    if args.cumulative and args.group == "traceback":
        raise UsageError("--cumulative applies to lineno and filename grouping only")
    return Query(
        group_by=args.group,
        cumulative=args.cumulative,
        limit=args.limit,
        sort=args.sort,
        exclude=INTERNAL_PATTERNS if args.hide_internal else (),
    )


def _run_program(args: argparse.Namespace, target: str, rest: list[str], *, module: bool) -> int:
    query = _query(args)
    mode = mode_request(args, "exact")
    if args.iterations is not None and not (args.batch or args.json):
        args.batch = True
    program = start_program(
        target,
        rest,
        module=module,
        python=args.python,
        nframe=args.nframe,
        log_path=args.log,
        agent_config=mode.agent_config(),
    )
    sys.stderr.write(f"memtop: program pid {program.pid}, output in {program.log_path}\n")
    try:
        client = AgentClient.connect(program.socket_path, program.token, expected_pid=program.pid)
        settle_mode(client, mode, _note)
    except MemtopError as exc:
        ended = program.wait_for_exit(2.0)
        status = ended or program.stop()
        _report_program_end(program, ended, status)
        if ended is not None:
            raise TargetExited(f"the program {ended} before the first refresh") from exc
        raise
    source = LiveSource(client, program.pid, "run", program)

    def leave(keep_agent: bool) -> None:
        ended_itself = program.exit_status()
        closed = source.close(keep_agent=keep_agent)
        if keep_agent and ended_itself is None:
            sys.stderr.write(
                f"memtop: left pid {program.pid} running with its agent serving: `memtop "
                f"{program.pid}` resumes, `memtop detach {program.pid}` stops tracing; its "
                f"output is in {program.log_path}\n"
            )
        else:
            _report_program_end(program, ended_itself, closed)

    return _view(source, query, args, leave)


def _view(
    source: Source, query: Query, args: argparse.Namespace, leave: Callable[[bool], object]
) -> int:
    """Show a source with the view the options ask for; returns the exit code.

    The TUI unless --batch/--json/-n, or when not on a terminal (like `top -b`). However
    the view ends, `leave(keep_agent)` runs: `keep_agent` after `Q`, or when the terminal
    went away (SIGHUP), and the agent then stays serving."""
    record = None
    keep = False
    try:
        sinks: list[Sink] = []
        if getattr(args, "record", None):
            try:
                record = open(args.record, "a", encoding="utf-8")  # noqa: SIM115 - closed below
            except OSError as exc:
                raise UsageError(f"cannot write {args.record}: {exc.strerror}") from exc
            sinks.append(Recorder(record))
        terminal = all(stream.isatty() for stream in (sys.stdin, sys.stdout, sys.stderr))
        if args.batch or args.json or args.iterations is not None or not terminal:
            view: Sink = (
                JsonLines(sys.stdout, getattr(source, "unknown_fields", ()))
                if args.json
                else TextView(sys.stdout, source, _batch_width())
            )
            code = run_batch(
                source,
                query,
                interval=args.interval,
                iterations=args.iterations,
                sinks=[view, *sinks],
                err=sys.stderr,
            )
        else:
            from memtop.ui.app import run_tui  # Textual loads only when the TUI runs

            outcome = run_tui(source, query, args.interval, args.hide_internal, sinks)
            if outcome.error is not None:
                raise MemtopError(outcome.error, outcome.exit_code)
            if outcome.ended is not None:  # said on screen; said again once it is gone
                sys.stderr.write(f"memtop: target {source.info.pid} {outcome.ended}\n")
            code, keep = outcome.exit_code, outcome.keep_agent
    finally:
        if record is not None:
            record.close()
        # Also when the view ended in KeyboardInterrupt: SIGHUP arrives as one.
        leave(keep or signals.hung_up())
    return code


def _view_file(args: argparse.Namespace) -> int:
    # Here only: a saved file's rows are grouped by the agent's own collector, which a
    # live view (grouped in the target) does not load.
    from memtop.filesource import FileSource

    if args.trust_pickle:
        sys.stderr.write(f"memtop: {PICKLE_WARNING}\n")
    current = load(args.file, args.trust_pickle)
    base = load(args.base, args.trust_pickle) if args.base else None
    source = FileSource(current, args.file, base, args.base)
    if source.sessions_differ():
        _warn(
            f"{args.file} and {args.base} come from two tracing sessions (tracing stopped or "
            "restarted in between, or another process): what the later one never traced "
            "shows as freed. Take both snapshots of one session: `memtop snapshot PID --keep` "
            "first, then `memtop snapshot PID` later"
        )
    if args.iterations is None and (args.batch or args.json):
        args.iterations = 1  # a file does not change: one refresh says it all
    return _view(source, _query(args), args, lambda keep_agent: source.close())


def _report_program_end(program: Program, ended: Ending | None, status: Ending | None) -> None:
    """Say where the output went; show its last lines when the program failed by itself."""
    if ended is None:
        sys.stderr.write(f"memtop: stopped the program ({status}); output in {program.log_path}\n")
        return
    sys.stderr.write(f"memtop: the program's output is in {program.log_path}\n")
    if ended.code != 0:
        tail = log_tail(program.log_path)
        if tail:
            sys.stderr.write(f"memtop: last lines of its output:\n{tail}\n")


def _batch_width() -> int:
    """Terminal width on a terminal; wide when piped (like `top -b`), unless COLUMNS says."""
    if sys.stdout.isatty() or "COLUMNS" in os.environ:
        return shutil.get_terminal_size((120, 24)).columns
    return 200


def _attach(args: argparse.Namespace) -> int:
    if args.more or args.children:
        return _attach_group(args)
    query = _query(args)
    if args.iterations is not None and not (args.batch or args.json):
        args.batch = True
    attached = attach(
        args.pid,
        args.method,
        args.nframe,
        args.timeout,
        args.force_gdb,
        mode=mode_request(args, "sampled"),
        note=_note,
    )
    target = attached.target
    sys.stderr.write(
        f"memtop: attached to pid {target.pid} (CPython {target.python.label}, "
        f"{target.user}) via {attached.how} in {attached.seconds:.2f} s\n"
    )
    source = LiveSource(attached.client, target.pid, attached.how, token=attached.token)

    def leave(keep_agent: bool) -> None:
        ended = source.exit_status()
        source.close(keep_agent=keep_agent)
        if ended is None and keep_agent:
            sys.stderr.write(
                f"memtop: the agent keeps serving in pid {target.pid}: `memtop {target.pid}` "
                f"resumes, `memtop detach {target.pid}` stops it\n"
            )
        elif ended is None and source.detached:
            if source.agent_stopped:
                tidy(target)
            sys.stderr.write(f"memtop: detached from pid {target.pid}\n")

    return _view(source, query, args, leave)


def _attach_group(args: argparse.Namespace) -> int:
    """`memtop PID PID…` or `memtop PID --children`: several processes as one table."""
    from memtop.children import attach_child, python_children, start_of
    from memtop.group import GroupSource

    query = _query(args)
    mode = mode_request(args, "sampled")
    if args.iterations is not None and not (args.batch or args.json):
        args.batch = True
    note = _note
    attach_member = _member_attacher(args, mode)
    pids = list(dict.fromkeys([args.pid, *args.more]))
    found = []
    if args.children:
        parent_start = start_of(args.pid)
        found = python_children(args.pid, parent_start, lambda pid, _: pid in pids)
    members: dict[int, LiveSource] = {}
    refused: set[tuple[int, int]] = set()
    try:
        for pid in pids:
            members[pid] = attach_member(pid)
        for pid, start in found:
            # A child found, not typed: it may refuse (opted out, another user) or end
            # meanwhile, as later children may; the group goes on without it.
            try:
                members[pid] = attach_child(attach_member, pid, start)
            except MemtopError as exc:
                refused.add((pid, start))
                note(f"child {pid} not attached: {exc.message}")
    except BaseException:
        for member in members.values():
            member.close()
        raise
    note(f"watching {len(members)} processes: {' '.join(str(p) for p in members)}")
    source = GroupSource(
        members, attach_member, note, parent=args.pid if args.children else None, refused=refused
    )
    return _view(source, query, args, lambda keep_agent: source.close(keep_agent=keep_agent))


def _snapshot(args: argparse.Namespace) -> str:
    """`memtop snapshot PID -o FILE`: attach, save, and leave the target as it was, or,
    with --keep, with the agent tracing on (and serving, with no idle timeout).

    tracemalloc sees only what is allocated after it starts: when this attach started it,
    waiting --wait seconds first lets allocations accumulate, and keeping the agent lets a
    later snapshot of the same tracing session show what grew in between."""
    pid, keep, wait = args.pid, args.keep, args.wait
    path = args.output or snapfile.default_snapshot_path(pid)
    mode = mode_request(args, "sampled")
    attached = attach(
        pid, args.method, args.nframe, args.timeout, args.force_gdb, mode=mode, note=_warn
    )
    try:
        ping = attached.client.request("ping")
        fresh = (
            attached.how not in ("reuse", "opt-in")
            and attached.client.greeting.get("tracing_owner") == "agent"
            and ping["uptime"] < 5
        )
        if fresh and wait <= 0 and not keep:
            _warn(
                "tracing started only now, so the snapshot holds just the last moments' "
                "allocations; use --wait SECONDS, or --keep and a second snapshot later "
                "(`memtop view LATER --base THIS` shows what grew)"
            )
        if wait > 0:
            time.sleep(wait)
        snapshot = fetch_snapshot(attached.client, pid)
        if keep:
            attached.client.request("configure", idle_timeout=None)
        elif attached.how not in ("reuse", "opt-in"):
            attached.client.request("detach")
    finally:
        attached.client.close()
    snapfile.write(snapshot, path, args.format)
    blocks = sum(count for _, _, count in snapshot.entries)
    estimated = "an estimated " if snapshot.meta.get("mode") == "sampled" else ""
    entries = len(snapshot.entries)
    done = f"saved {estimated}{blocks} traced blocks of pid {pid} ({entries} entries) to {path}"
    if keep:
        done += f"; the agent keeps tracing (`memtop detach {pid}` stops it)"
    return done


def _member_attacher(args: argparse.Namespace, mode: ModeRequest) -> Callable[[int], LiveSource]:
    """Attaches one process of a group or an export as the command line asks."""

    def attach_member(pid: int) -> LiveSource:
        attached = attach(
            pid, args.method, args.nframe, args.timeout, args.force_gdb, mode=mode, note=_note
        )
        return LiveSource(attached.client, pid, attached.how, token=attached.token)

    return attach_member


def _export(args: argparse.Namespace) -> int:
    from memtop.fleet.export_command import run_export  # prometheus_client loads only here

    query = Query(
        limit=max(args.top, 50),
        exclude=INTERNAL_PATTERNS if args.hide_internal else (),
    )
    return run_export(
        args.pids,
        args.listen,
        query,
        top=args.top,
        interval=args.interval,
        keep_agent=args.keep_agent,
        attach_member=_member_attacher(args, mode_request(args, "sampled")),
        err=sys.stderr,
        hung_up=signals.hung_up,
        children=args.children,
    )


def _ps(args: argparse.Namespace) -> int:
    rows = python_processes(all_users=args.all)
    ordered = as_tree(rows) if args.tree else [(0, row) for row in rows]
    if args.json:
        listed = [{**row.as_json(), "depth": depth} for depth, row in ordered]
        json.dump(listed if args.tree else [row.as_json() for row in rows], sys.stdout)
        sys.stdout.write("\n")
        return 0
    sys.stdout.write(f"{'PID':>7} {'PYTHON':<8} {'RSS':>10} {'AGENT':<6} {'USER':<10} COMMAND\n")
    width = _batch_width()
    for depth, row in ordered:
        line = (
            f"{row.pid:>7} {row.python:<8} {format_size(row.rss):>10} "
            f"{'yes' if row.agent else '-':<6} {fit(row.user, 10):<10} "
        )
        command = ("  " * (depth - 1) + "└─ " if depth else "") + display_command(row.command)
        if row.container is not None:
            inside = row.container["pid_inside"]
            where = row.container.get("id") or row.container["namespace"]
            command = f"[container {where}, pid {inside} there] {command}"
        sys.stdout.write(line + fit(command, max(10, width - len(line))) + "\n")
    return 0


def _note(text: str) -> None:
    sys.stderr.write(f"memtop: {text}\n")


def _warn(text: str) -> None:
    sys.stderr.write(f"memtop: warning: {text}\n")
