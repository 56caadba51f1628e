"""A process that speaks memtop's framing but not its replies (another memtop version, or
not memtop): every view says what the agent sent, exits 2, and shows no traceback."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from conftest import ROOT, Plain, memtop_cli, wait_for, wait_state
from terminal import Terminal

from memtop.agent import rundir
from memtop.client import AgentClient
from memtop.errors import BadReply
from memtop.model import Query
from memtop.source import LiveSource
from memtop.ui.app import MemtopApp

TOKEN = "f" * 64
UNUSABLE = "it may be a different memtop version or not memtop"

# case -> what the message names
CASES = {
    "greeting_type": "its greeting, which has nframe = 'four' where a whole number",
    "greeting_error": "its greeting, which has error = a list of 3 items where an object",
    "handshake": "the answer to memtop's session token, which has ok = 'yes' where true or",
    "wrong_type": "its reply to `top`, which has result.rows[0].size = '1000' where a whole",
    "missing": "its reply to `top`, which has no result.totals (an object belongs there)",
    # Non-finite and huge numbers are refused by the protocol's one strict decoder, before
    # any field is looked at (memtop.agent.protocol, shared with the agent).
    "nan": "the agent sent a frame, which breaks the protocol (NaN is not a number JSON allows)",
    "infinity": "breaks the protocol (Infinity is not a number JSON allows)",
    "huge": "breaks the protocol (integer of 41 digits is out of range)",
    "nested": "result.rows[0].traceback[0] = a list of 1 item where an object belongs",
    "result_list": "which has result = a list of 3 items where an object belongs",
    "wrong_id": "its reply to `top`, which answers request 100",  # id + 1000
    "deep": "the agent sent a frame, which breaks the protocol (frame is not valid JSON)",
    "not_json": "the agent sent a frame, which breaks the protocol (frame is not valid UTF-8)",
    "huge_frame": f"the agent sent a frame, which announces {1 << 30} bytes",
}


@pytest.fixture
def hostile(plain: Plain):  # type: ignore[no-untyped-def]
    """Start a fake agent answering as the case says; its socket and token file go at the
    end (it is killed, so it cannot remove them)."""
    started: list[dict] = []

    def start(case: str) -> dict:
        _, state_path = plain.start(sys.executable, "hostile_agent.py", case)
        state = wait_state(state_path)
        started.append(state)
        return state

    yield start
    plain.close()
    for state in started:
        socket_path = Path(state["socket"])
        socket_path.unlink(missing_ok=True)
        socket_path.with_suffix(".token").unlink(missing_ok=True)


@pytest.mark.parametrize("view", ["-b", "--json"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_batch_and_json_say_what_the_agent_sent(hostile, case: str, view: str) -> None:  # type: ignore[no-untyped-def]
    state = hostile(case)
    result = memtop_cli(str(state["pid"]), view, "-n", "2", "-i", "0.1", timeout=30)
    assert result.returncode == 2, result.stderr
    assert CASES[case] in result.stderr
    assert UNUSABLE in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("case", ["wrong_type", "nan", "nested", "not_json"])
async def test_live_view_ends_with_what_the_agent_sent(hostile, case: str) -> None:  # type: ignore[no-untyped-def]
    state = hostile(case)
    client = AgentClient.connect(state["socket"], TOKEN, expected_pid=state["pid"])
    source = LiveSource(client, state["pid"], "reuse", token=TOKEN)
    app = MemtopApp(source, Query(), interval=0.2, cwd=str(ROOT))
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            deadline = 200
            while app.return_value is None and deadline:
                await pilot.pause(0.05)
                deadline -= 1
    finally:
        source.close()
    outcome = app.return_value
    assert outcome is not None and outcome.exit_code == 2
    assert outcome.error is not None and CASES[case] in outcome.error


def test_live_view_in_a_terminal_exits_2_with_the_message(hostile, short_tmp: Path) -> None:  # type: ignore[no-untyped-def]
    state = hostile("nested")
    done = short_tmp / "exit"
    terminal = Terminal(
        f"{sys.executable} -m memtop {state['pid']}; echo $? > {done}", {"TERM": "xterm"}
    )
    try:
        wait_for(lambda: done.exists() and done.read_text().strip(), 30, "memtop to exit")
        assert done.read_text().strip() == "2"
        screen = terminal.wait_for(UNUSABLE[:30])
        assert "Traceback" not in screen
    finally:
        terminal.close()


def test_a_bad_reply_closes_the_connection(hostile) -> None:  # type: ignore[no-untyped-def]
    """After a reply memtop cannot use, nothing more is read from that stream."""
    state = hostile("huge_frame")
    client = AgentClient.connect(state["socket"], TOKEN, expected_pid=state["pid"])
    with pytest.raises(BadReply):
        client.request("top")
    assert client.sock.fileno() == -1


def test_fake_agent_serves_where_memtop_looks(hostile) -> None:  # type: ignore[no-untyped-def]
    """The fake's socket is the one `memtop PID` reuses (else the tests above prove
    nothing about replies)."""
    state = hostile("none")
    path = Path(rundir.default_run_dir(os.geteuid(), os.environ))
    assert Path(state["socket"]).parent == path
    result = memtop_cli(str(state["pid"]), "--json", "-n", "1", timeout=30)
    assert result.returncode == 0, result.stderr
    assert "via reuse" in result.stderr
