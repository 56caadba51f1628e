"""Text a target controls never reaches the terminal as control sequences: a program whose
sys.version, process name, file names, source lines, type names and dict keys carry
OSC 52, title changes, CSI 2J, BEL, bidi overrides and Rich markup, watched in batch,
JSON, a saved file, the TUI (pilot) and a real terminal (tmux)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import ROOT, TARGETS, memtop_cli, need_gdb, stream_json, wait_for, wait_state
from ui_fakes import screen_as

from memtop import snapfile
from memtop.attach.chain import attach
from memtop.model import Query
from memtop.source import LiveSource
from memtop.terminal import clean_text
from memtop.ui.app import MemtopApp
from memtop.ui.origins_panel import OriginsPanel
from memtop.ui.referrers_panel import ReferrersPanel
from memtop.ui.traceback_panel import TracebackPanel
from memtop.ui.types_screen import TypesScreen

HOSTILE = TARGETS / "hostile.py"
# What must never be written raw: ESC, BEL, the C1 CSI/OSC, DEL, a bidi override.
RAW = ("\x1b", "\x07", "\x9b", "\x9d", "\x7f", "\u202e")


def assert_inert(text: str, where: str) -> None:
    found = [repr(c) for c in RAW if c in text]
    assert not found, f"{where} wrote {', '.join(found)} raw"


@pytest.fixture
def hostile(short_tmp: Path) -> Iterator[tuple[int, dict]]:
    """The hostile program, started without memtop (so that an attach reads the
    sys.version it set); killed at teardown."""
    need_gdb()
    state_path = short_tmp / "hostile.json"
    proc = subprocess.Popen(
        [sys.executable, str(HOSTILE), str(state_path), "heap"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc.pid, wait_state(state_path)
    finally:
        proc.kill()
        proc.wait()


def test_clean_text_shows_every_control_as_a_visible_escape() -> None:
    assert clean_text("a\x1b]0;t\x07b\x9b2J\u202ec\x7f") == "a\\x1b]0;t\\x07b\\x9b2J\\u202ec\\x7f"
    assert clean_text("[bold]x[/bold] é ✓") == "[bold]x[/bold] é ✓"
    assert clean_text("a\nb\tc", keep="\n") == "a\nb\\x09c"


def test_batch_and_json_quote_the_target_inertly(hostile: tuple[int, dict]) -> None:
    pid, state = hostile
    batch = memtop_cli(str(pid), "-b", "-n", "2", env={**os.environ, "COLUMNS": "300"})
    assert batch.returncode == 0, batch.stderr
    assert_inert(batch.stdout + batch.stderr, "memtop -b")
    assert "python \\x1b]0;pwned-title\\x07\\x1b[2J\\x1b[H[bold]3.99" in batch.stdout
    assert "evil\\x1b[2J\\x1b[H.py:2" in batch.stdout
    assert "# \\x1b]52;c;cHduZWQ=\\x07" in batch.stdout  # the source line
    as_json = memtop_cli(str(pid), "--json", "-n", "1")
    assert as_json.returncode == 0, as_json.stderr
    assert_inert(as_json.stdout + as_json.stderr, "memtop --json")
    json.loads(as_json.stdout)
    # JSON keeps the exact text (escaped as JSON): the module's row, once it allocated.
    stream_json(
        [str(pid), "--json", "-i", "0.3"],
        lambda line: any(row["filename"] == state["module"] for row in line["rows"]),
    )


def test_a_saved_snapshot_of_the_target_views_inertly(
    hostile: tuple[int, dict], short_tmp: Path
) -> None:
    pid, _ = hostile
    saved = short_tmp / "hostile.memtop"
    taken = memtop_cli("snapshot", str(pid), "-o", str(saved), "--wait", "1")
    assert taken.returncode == 0, taken.stderr
    assert_inert(taken.stderr, "memtop snapshot")
    viewed = memtop_cli("view", str(saved), "-b")
    assert viewed.returncode == 0, viewed.stderr
    assert_inert(viewed.stdout + viewed.stderr, "memtop view -b")
    assert "evil\\x1b[2J\\x1b[H.py:2" in viewed.stdout


def test_preflight_error_quotes_the_tracer_name_inertly(
    hostile: tuple[int, dict], short_tmp: Path
) -> None:
    pid, _ = hostile
    state_path = short_tmp / "tracer.json"
    tracer = subprocess.Popen(
        [sys.executable, str(HOSTILE), str(state_path), "tracer", str(pid)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: state_path.exists() or tracer.poll() is not None, 10, "the tracer")
        if tracer.poll() is not None:
            told = tracer.stderr.read() if tracer.stderr is not None else ""
            pytest.skip(f"this machine does not allow PTRACE_SEIZE: {told}")
        refused = memtop_cli(str(pid), "-b", "-n", "1")
    finally:
        tracer.kill()
        tracer.wait()
    assert refused.returncode == 2
    assert_inert(refused.stderr, "the preflight error")
    assert f"already traced by pid {tracer.pid} (\\x1b]0;pwn\\x07\\x1b[2J)" in refused.stderr


def _screen_text(app: MemtopApp) -> str:
    """What the screen shows, as text (the screenshot's text runs, unescaped)."""
    svg = app.export_screenshot()
    runs = re.findall(r"<text [^>]*>([^<]*)</text>", svg)
    return html.unescape("".join(runs)).replace("\xa0", " ")


async def test_tui_shows_target_text_inertly_and_never_as_markup(
    hostile: tuple[int, dict],
) -> None:
    """Header (sys.version), table (path, source line), types (type name), origins and
    referrers (dict key): visible escapes, and `[bold red]` shown as text."""
    pid, _ = hostile
    attached = attach(pid)
    source = LiveSource(attached.client, pid, attached.how, token=attached.token)
    app = MemtopApp(source, Query(), interval=0.3, cwd=str(ROOT))
    try:
        async with app.run_test(size=(200, 40)) as pilot:
            await _until(pilot, lambda: app.sample is not None and app.sample.rows, "a table")
            screen = _screen_text(app)
            assert_inert(screen, "the table screen")
            assert "[bold]3.99" in screen and "evil\\x1b[2J" in screen
            await _until(pilot, lambda: "evil" in app.table.keys[0], "the hostile row on top")
            await pilot.press("enter")  # its tracebacks: the path and the source line
            await _until(
                pilot,
                lambda: isinstance(app.screen, TracebackPanel) and app.screen.entries,
                "the tracebacks",
            )
            screen = _screen_text(app)
            assert_inert(screen, "the traceback panel")
            assert "# \\x1b]52;c;cHduZWQ=" in screen
            await pilot.press("escape")
            await pilot.press("o")
            types = app.screen
            assert isinstance(types, TypesScreen)
            await _until(pilot, lambda: types.table is not None, "the types walk")
            evil = next(n for n in types.rows.names if n.startswith("__main__.Evil"))
            screen = _screen_text(app)
            assert_inert(screen, "the types screen")
            assert "[bold red]markup[/bold red]" in screen
            types.rows.move_cursor(row=types.rows.names.index(evil))
            await pilot.press("enter")
            await _until(
                pilot,
                lambda: isinstance(app.screen, OriginsPanel) and app.screen.origins is not None,
                "the origins",
            )
            assert_inert(_screen_text(app), "the origins panel")
            await pilot.press("escape", "w")
            await _until(
                pilot,
                lambda: isinstance(app.screen, ReferrersPanel) and app.screen.chain is not None,
                "the referrer chain",
            )
            body = screen_as(app, ReferrersPanel).body_text
            assert_inert(body + _screen_text(app), "the referrers panel")
            assert "\\x1b]2;pwned-title\\x1b\\" in body  # the dict key, visible
            await pilot.press("escape", "escape", "q")
    finally:
        source.close()


async def _until(pilot, predicate, what: str, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    """Let the app run until `predicate()` holds; returns what it returned."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.05)
    return value


class PrivateTmux:
    """A tmux server of its own (own socket: its buffers and titles are the test's),
    100×30; everything started in it is killed at close, also when the test failed."""

    def __init__(self) -> None:
        self.tmux = shutil.which("tmux") or ""
        if not self.tmux:
            pytest.skip("tmux is not installed (CI installs it)")
        self.socket = f"memtop-hostile-{uuid.uuid4().hex[:8]}"
        self.started: list[psutil.Process] = []

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [self.tmux, "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        return done.stdout

    def start(self, command: str) -> None:
        """Run `command` in a shell of the 100×30 pane (typed in once the pane is up, so
        that the program starts at its final size)."""
        self.run("-f", "/dev/null", "new-session", "-d", "-x", "100", "-y", "30", "-s", "t",
                 "bash --norc --noprofile")  # fmt: skip
        self.run("set-option", "-g", "set-clipboard", "on")  # an OSC 52 would fill a buffer
        pane = int(self.run("display-message", "-p", "-t", "t", "#{pane_pid}").strip())
        self.started.append(psutil.Process(pane))
        self.run("send-keys", "-t", "t", f"cd {ROOT} && {command}", "Enter")

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "t")

    def wait_for_text(self, text: str, timeout: float) -> None:
        try:
            wait_for(lambda: text in self.screen(), timeout, repr(text))
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the screen:\n{self.screen()}") from None

    def processes(self) -> list[psutil.Process]:
        found = []
        for root in self.started:
            try:
                found += [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        return found

    def close(self) -> None:
        left = self.processes()
        self.run("kill-server")
        for proc in left:
            try:
                proc.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(left, timeout=10)


@pytest.fixture
def private_tmux() -> Iterator[PrivateTmux]:
    terminal = PrivateTmux()
    try:
        yield terminal
    finally:
        terminal.close()


def test_real_terminal_keeps_its_title_and_clipboard(
    hostile: tuple[int, dict], private_tmux: PrivateTmux, short_tmp: Path
) -> None:
    """`memtop PID` in a real terminal: the title and the clipboard stay untouched, the
    attack shows as text, and `q` ends memtop."""
    pid, _ = hostile
    done = short_tmp / "exit"
    private_tmux.start(f"env TERM=xterm-256color {sys.executable} -m memtop {pid}; echo $? >{done}")
    title = private_tmux.run("display-message", "-p", "-t", "t", "#{pane_title}")
    private_tmux.wait_for_text("evil\\x1b[2J", 40)
    assert "pwned" not in private_tmux.run("display-message", "-p", "-t", "t", "#{pane_title}")
    assert private_tmux.run("display-message", "-p", "-t", "t", "#{pane_title}") == title
    private_tmux.run("send-keys", "-t", "t", "o")
    private_tmux.wait_for_text("Evil\\x1b]52", 30)
    assert private_tmux.run("list-buffers") == ""  # no OSC 52 reached tmux
    assert private_tmux.run("display-message", "-p", "-t", "t", "#{pane_title}") == title
    private_tmux.run("send-keys", "-t", "t", "Escape")
    private_tmux.wait_for_text("LOCATION", 20)
    private_tmux.run("send-keys", "-t", "t", "q")
    wait_for(lambda: done.exists() and done.read_text().strip(), 20, "memtop to exit")
    assert done.read_text().strip() == "0"


def test_real_terminal_views_a_hostile_file_inertly(
    hostile: tuple[int, dict], private_tmux: PrivateTmux, short_tmp: Path
) -> None:
    """`memtop view FILE` of a snapshot of the hostile program (its meta holds the attack
    too) in a real terminal: title and clipboard untouched, `q` ends it."""
    pid, _ = hostile
    saved = short_tmp / "hostile.memtop"
    assert memtop_cli("snapshot", str(pid), "-o", str(saved), "--wait", "1").returncode == 0
    snapshot = snapfile.load(str(saved))  # a file can say anything: a short title change
    snapshot.meta["python"] = "\x1b]2;pwned\x07"
    snapfile.save(snapshot, str(saved))
    done = short_tmp / "view-exit"
    private_tmux.start(f"env TERM=xterm-256color {sys.executable} -m memtop view {saved}; "
                       f"echo $? >{done}")  # fmt: skip
    title = private_tmux.run("display-message", "-p", "-t", "t", "#{pane_title}")
    private_tmux.wait_for_text("evil\\x1b[2J", 30)
    private_tmux.wait_for_text("python \\x1b]2;pwned\\x07", 10)
    assert private_tmux.run("display-message", "-p", "-t", "t", "#{pane_title}") == title
    assert private_tmux.run("list-buffers") == ""
    private_tmux.run("send-keys", "-t", "t", "q")
    wait_for(lambda: done.exists() and done.read_text().strip(), 20, "memtop view to exit")
    assert done.read_text().strip() == "0"
