"""A real agent in a real target, spoken to over its real socket with hostile input
(attach-and-safety.md §6, cases 7 and 10–17). After each abuse the agent keeps serving and
the target keeps running."""

from __future__ import annotations

import json
import os
import pickle
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import Targets, state_of, wait_for, wait_state
from wire import Raw, error_code

from memtop.agent import protocol, server


@pytest.fixture
def agent(targets: Targets):
    """An idle target with the agent serving; yields (program, state path)."""
    program, state = targets.start("idle.py")
    wait_state(state)
    return program, state


def still_serving(program, state: Path) -> None:
    """A fresh client is answered and the target's loop still advances."""

    def greeted() -> Raw | None:
        # Clients a test just closed free their slots when the agent sees their EOF.
        client = Raw(program.socket_path)
        if client.reply()["status"] == "ok":
            return client
        client.close()
        return None

    client = wait_for(greeted, 5, "a free client slot")
    client.send({"proto": protocol.PROTO_MAJOR, "token": program.token})
    assert client.reply()["ok"]
    assert client.call("ping")["ok"]
    client.close()
    before = state_of(state)["counter"]
    wait_state(state, lambda s: s["counter"] > before, timeout=5)


def test_server_speaks_first_with_its_identity(agent) -> None:
    program, _ = agent
    greeting = Raw(program.socket_path).reply()
    assert greeting["agent"] == "memtop"
    assert greeting["proto"][0] == protocol.PROTO_MAJOR
    assert greeting["pid"] == program.pid
    assert greeting["status"] == "ok"
    assert greeting["tracing_owner"] == "agent"
    assert greeting["nframe"] == 4
    assert greeting["py"] == sys.version.split()[0]


# --- case 17: token ------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "0" * 64, 42, "é" * 20])
def test_missing_or_wrong_token_is_unauthorized_and_closed(agent, token) -> None:
    program, state = agent
    client = Raw(program.socket_path)
    client.read()
    hello = {"proto": protocol.PROTO_MAJOR, "client": "test"}
    if token is not None:
        hello["token"] = token
    client.send(hello)
    assert error_code(client.read()) == "unauthorized"
    assert client.closed_by_peer()
    still_serving(program, state)


def test_requests_before_authentication_are_refused(agent) -> None:
    program, state = agent
    client = Raw(program.socket_path)
    client.read()
    client.send({"id": 1, "cmd": "top", "args": {}})
    assert error_code(client.read()) in ("proto_mismatch", "unauthorized")
    assert client.closed_by_peer()
    still_serving(program, state)


def test_token_is_compared_with_compare_digest() -> None:
    source = Path("memtop/agent/lifecycle.py").read_text()
    assert "hmac.compare_digest(" in source


def test_a_request_sent_with_the_token_in_one_write_is_answered(agent) -> None:
    program, _ = agent
    client = Raw(program.socket_path)
    client.read()
    hello = json.dumps({"proto": protocol.PROTO_MAJOR, "token": program.token}).encode()
    request = json.dumps({"id": 5, "cmd": "ping", "args": {"pad": "x" * 20_000}}).encode()
    client.send_bytes(frame(hello) + frame(request))
    assert client.reply()["ok"]
    reply = client.reply()
    assert reply["ok"] and reply["id"] == 5


# --- case 15: protocol versions --------------------------------------------------------


def test_other_major_version_gets_proto_mismatch(agent) -> None:
    program, state = agent
    client = Raw(program.socket_path)
    client.read()
    client.send({"proto": protocol.PROTO_MAJOR + 1, "token": program.token})
    reply = client.reply()
    assert error_code(reply) == "proto_mismatch"
    assert str(protocol.PROTO_MAJOR) in reply["error"]["message"]
    still_serving(program, state)


def test_fields_of_a_newer_minor_version_are_ignored(agent) -> None:
    program, _ = agent
    client = Raw(program.socket_path)
    client.read()
    client.send({"proto": 1, "token": program.token, "client": "t", "features": ["x"]})
    assert client.reply()["ok"]
    client.send(
        {"id": 7, "cmd": "top", "args": {"limit": 3, "future_option": True}, "trace_id": "abc"}
    )
    reply = client.reply()
    assert reply["ok"] and reply["id"] == 7 and len(reply["result"]["rows"]) <= 3


# --- case 11: truncated and oversized frames ------------------------------------------


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


@pytest.mark.parametrize(
    "data",
    [b"\x00\x00", struct.pack(">I", 100) + b"x" * 10],
    ids=["partial-header", "partial-body"],
)
def test_truncated_frame_then_close_leaves_agent_serving(agent, data) -> None:
    program, state = agent
    client = Raw(program.socket_path)
    client.hello(program.token)
    client.send_bytes(data)
    client.close()
    still_serving(program, state)


def test_frame_longer_than_its_body_is_dropped_at_the_time_limit(agent) -> None:
    program, state = agent
    client = Raw(program.socket_path, timeout=15)
    client.hello(program.token)
    client.send_bytes(struct.pack(">I", 100) + b"{")
    started = time.monotonic()
    assert client.closed_by_peer()
    waited = time.monotonic() - started
    assert protocol.FRAME_TIMEOUT - 0.5 <= waited <= protocol.FRAME_TIMEOUT + 3
    still_serving(program, state)


@pytest.mark.parametrize("length", [0xFFFFFFFF, protocol.MAX_REQUEST + 1])
def test_oversized_frame_gets_frame_too_large_without_allocating(agent, length) -> None:
    program, state = agent
    before = rss(program.pid)
    client = Raw(program.socket_path)
    client.hello(program.token)
    client.send_bytes(struct.pack(">I", length) + b"{}")
    assert error_code(client.read()) == "frame_too_large"
    assert client.closed_by_peer()
    assert rss(program.pid) - before < 1024 * 1024
    still_serving(program, state)


# --- case 12: garbage and wrong payloads ----------------------------------------------


class _Dangerous:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def test_garbage_gets_error_codes_and_the_connection_stays_usable(agent, short_tmp) -> None:
    program, state = agent
    marker = short_tmp / "pickle-ran"
    client = Raw(program.socket_path)
    client.hello(program.token)
    cases = [
        (b"\xff\xfe\x00garbage", "bad_json"),
        (b"[1, 2, 3]", "bad_request"),
        (b'"just a string"', "bad_request"),
        (pickle.dumps(_Dangerous(str(marker))), "bad_json"),
        # Nested arrays as deep as the 64 KiB request limit allows: RecursionError inside.
        (b"[" * 30_000 + b"]" * 30_000, "bad_json"),
        (b'{"id": 1, "cmd": "no_such_command", "args": {}}', "unknown_command"),
        (b'{"id": 1, "cmd": "__init__", "args": {}}', "unknown_command"),
        (b'{"id": 1, "cmd": "top", "args": {"limit": "lots"}}', "bad_args"),
        (b'{"id": 1, "cmd": "top", "args": {"group_by": "everything"}}', "bad_args"),
        (b'{"id": 1, "cmd": "top", "args": {"include": "*.py"}}', "bad_args"),
        (b'{"id": 1, "cmd": "top", "args": {"cumulative": 1}}', "bad_args"),
        (b'{"id": 1, "cmd": "top", "args": {"keys": {"filename": "a.py"}}}', "bad_args"),
        (b'{"id": 1, "cmd": "top", "args": {"keys": ["a.py:1"]}}', "bad_args"),
        (b'{"id": 1, "cmd": "top", "args": {"keys": [{"filename": "a.py"}]}}', "bad_args"),
        (b'{"id": 1, "cmd": "top", "args": {"keys": [{}' + b", {}" * 500 + b"]}}", "bad_args"),
        (b'{"id": 1, "cmd": "top", "args": []}', "bad_request"),
        (b'{"id": "one", "cmd": "ping", "args": {}}', "bad_request"),
        (b'{"id": 1, "cmd": ["ping"], "args": {}}', "bad_request"),
        (b'{"id": 1, "cmd": "tracebacks", "args": {"key": "../../etc/passwd"}}', "bad_args"),
    ]
    for body, code in cases:
        client.send_bytes(frame(body))
        reply = client.reply()
        assert error_code(reply) == code, (body[:40], reply)
        assert client.call("ping")["ok"], body[:40]
    assert not marker.exists()
    still_serving(program, state)


def test_huge_row_limit_is_capped(agent) -> None:
    program, _ = agent
    client = Raw(program.socket_path)
    client.hello(program.token)
    reply = client.call("top", limit=10**9, max_age=0.0)
    assert reply["ok"]
    assert len(reply["result"]["rows"]) <= 500


def test_rows_of_asked_keys_follow_the_top_rows_whatever_their_rank(agent) -> None:
    """A group's viewer asks each process for rows another process ranks higher."""
    program, _ = agent
    client = Raw(program.socket_path)
    client.hello(program.token)
    every = client.call("top", limit=500, max_age=3600.0)["result"]
    assert every["total_rows"] > 3
    low = every["rows"][-1]
    asked = [
        {"filename": low["filename"], "lineno": low["lineno"]},
        {"filename": every["rows"][0]["filename"], "lineno": every["rows"][0]["lineno"]},
        {"filename": "/nowhere/held.py", "lineno": 1},  # a key the table does not hold
    ]
    while True:  # a second table of one sample waits for the agent's time budget
        reply = client.call("top", limit=2, max_age=3600.0, keys=asked)
        if error_code(reply) != "busy":
            break
        time.sleep(reply["error"]["retry_in"])
    reply = reply["result"]
    assert reply["sample"]["id"] == every["sample"]["id"]
    assert reply["rows"] == [*every["rows"][:2], low]


# --- case 13: slowloris ------------------------------------------------------------------


def test_slow_client_is_cut_off_while_others_are_served(agent) -> None:
    program, state = agent
    slow = Raw(program.socket_path, timeout=15)
    slow.hello(program.token)
    body = b'{"id": 1, "cmd": "ping", "args": {}}'
    data = frame(body)
    slow.send_bytes(data[:1])
    started = time.monotonic()
    served = []
    dropped_after = None
    for byte in data[1:]:
        time.sleep(1.0)
        quick = Raw(program.socket_path)
        t0 = time.monotonic()
        quick.hello(program.token)
        assert quick.call("ping")["ok"]
        served.append(time.monotonic() - t0)
        quick.close()
        try:
            slow.send_bytes(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            dropped_after = time.monotonic() - started
            break
    assert dropped_after is not None, "the slow client was never cut off"
    assert dropped_after <= protocol.FRAME_TIMEOUT + 3
    # Served while the slow frame was pending, not after it was dropped.
    assert max(served) < 1.0
    still_serving(program, state)


# --- case 14: many clients ----------------------------------------------------------------


def test_fifth_and_later_viewers_get_a_readable_busy_refusal(agent) -> None:
    program, state = agent
    threads_before = len(os.listdir(f"/proc/{program.pid}/task"))
    viewers = [Raw(program.socket_path) for _ in range(protocol.MAX_CLIENTS)]
    late = Raw(program.socket_path)  # greeted while a seat was free, authenticates too late
    assert late.reply()["status"] == "ok"
    for viewer in viewers:
        assert viewer.hello(program.token)["ok"]
    late.send({"proto": protocol.PROTO_MAJOR, "token": program.token})
    reply = late.reply()
    assert error_code(reply) == "busy"
    assert late.closed_by_peer()
    clients = [Raw(program.socket_path) for _ in range(50)]
    greetings = [c.reply() for c in clients]
    assert [g["status"] for g in greetings] == ["busy"] * 50
    assert all(g["error"]["code"] == "busy" for g in greetings)
    assert len(os.listdir(f"/proc/{program.pid}/task")) <= threads_before
    for viewer in viewers:
        assert viewer.call("ping")["ok"]
    for client in [*clients, *viewers]:
        client.close()
    still_serving(program, state)


def socket_fds(pid: int) -> int:
    count = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:")
        except OSError:
            pass
    return count


@pytest.mark.parametrize("count", [4, 64])
def test_token_less_connections_cannot_keep_the_viewer_out(targets: Targets, count: int) -> None:
    program, state = targets.start("heap.py", "1000")
    wait_state(state)
    sockets_before, rss_before = socket_fds(program.pid), rss(program.pid)
    idle = [Raw(program.socket_path) for _ in range(count)]
    assert all(c.reply()["status"] == "ok" for c in idle)
    # Held open, never authenticating: only a small pool of them stays with the agent.
    pool = protocol.MAX_UNAUTHENTICATED
    assert socket_fds(program.pid) <= sockets_before + pool
    viewer = targets.connect(program)
    rows = viewer.request("top", max_age=0.0)["rows"]
    assert any(row["filename"].endswith("heap.py") for row in rows)
    assert socket_fds(program.pid) <= sockets_before + pool + 1
    assert rss(program.pid) - rss_before < 4 * 1024 * 1024
    # Past the authentication deadline every one of them is gone; the viewer stays.
    assert all(c.closed_by_peer() for c in idle)
    assert viewer.request("ping")["clients"] == 1
    assert socket_fds(program.pid) == sockets_before + 1


# Another process opens token-less connections on request (a line with a number on its
# stdin), reads their greetings (so the agent has accepted them), holds them, says "ok".
OPENER = """
import socket, struct, sys
held = []
for line in sys.stdin:
    for _ in range(int(line)):
        s = socket.socket(socket.AF_UNIX)
        s.connect(sys.argv[1])
        s.recv(struct.unpack(">I", s.recv(4))[0], socket.MSG_WAITALL)
        held.append(s)
    print("ok", flush=True)
"""


def test_fresh_token_less_connections_do_not_push_out_an_authenticating_viewer(agent) -> None:
    program, state = agent
    opener = subprocess.Popen(
        [sys.executable, "-c", OPENER, program.socket_path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    stdin, stdout = opener.stdin, opener.stdout
    assert stdin is not None and stdout is not None

    def open_more(count: int) -> None:
        stdin.write(f"{count}\n")
        stdin.flush()
        assert stdout.readline() == "ok\n"

    try:
        open_more(protocol.MAX_UNAUTHENTICATED)  # the pool is full
        viewer = Raw(program.socket_path)
        assert viewer.reply()["status"] == "ok"
        # Before the viewer authenticates, twice a pool's worth of newer connections.
        open_more(2 * protocol.MAX_UNAUTHENTICATED)
        viewer.send({"proto": protocol.PROTO_MAJOR, "token": program.token})
        assert viewer.reply()["ok"]
        assert viewer.call("ping")["result"]["clients"] == 1
        assert socket_fds(program.pid) <= 1 + protocol.MAX_UNAUTHENTICATED + 1
    finally:
        opener.kill()
        opener.wait()
    still_serving(program, state)


# --- case 16: peer uid ------------------------------------------------------------------

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
CONNECT_AS_NOBODY = """
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print(json.dumps({"connect_error": e.errno})); sys.exit()
n = struct.unpack(">I", s.recv(4))[0]
print(s.recv(n).decode())
"""


def run_as_nobody(path: str) -> dict:
    out = subprocess.run(
        [*NOBODY, "/usr/bin/python3", "-c", CONNECT_AS_NOBODY, path],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.returncode == 0, out.stderr
    import json

    return json.loads(out.stdout)


@pytest.fixture
def agent_in_own_run_dir(targets: Targets, short_tmp: Path):
    if os.geteuid() != 0 or not Path("/usr/bin/python3").exists():
        pytest.skip("needs root (to switch uid with setpriv) and /usr/bin/python3")
    os.chmod(short_tmp, 0o711)  # others may traverse the temp dir, not the run dir
    run_dir = short_tmp / "run"
    program, state = targets.start("idle.py", rundir=str(run_dir))
    wait_state(state)
    return program, state, run_dir


def test_other_uid_cannot_even_connect(agent_in_own_run_dir) -> None:
    program, _, run_dir = agent_in_own_run_dir
    assert oct(run_dir.stat().st_mode & 0o777) == "0o700"
    assert oct(Path(program.socket_path).stat().st_mode & 0o777) == "0o600"
    assert run_as_nobody(program.socket_path) == {"connect_error": 13}  # EACCES


def test_other_uid_is_refused_by_peer_credentials_when_files_are_opened_up(
    agent_in_own_run_dir,
) -> None:
    program, state, run_dir = agent_in_own_run_dir
    os.chmod(run_dir, 0o755)
    os.chmod(program.socket_path, 0o666)
    greeting = run_as_nobody(program.socket_path)
    assert greeting["status"] == "unauthorized"
    assert greeting["error"]["code"] == "unauthorized"
    os.chmod(run_dir, 0o700)
    still_serving(program, state)


# --- case 10: viewer killed mid-reply, then idle detach ----------------------------------


def test_viewer_killed_mid_reply_leaves_agent_serving_then_idle_detach(targets: Targets) -> None:
    # The idle period starts short only once the target is ready: building its heap may
    # take longer than two seconds on a busy machine.
    program, state = targets.start("heap.py", "200000", idle_timeout=600.0, budget=1.0)
    wait_state(state)
    for _ in range(3):
        client = Raw(program.socket_path)
        client.hello(program.token)
        client.send(
            {"id": 1, "cmd": "top", "args": {"group_by": "traceback", "limit": 500, "max_age": 0.0}}
        )
        client.close(reset=True)
    still_serving(program, state)
    client = Raw(program.socket_path)
    client.hello(program.token)
    reply = client.call("configure", idle_timeout=2.0)
    assert reply is not None and reply["result"] == {"idle_timeout": 2.0}
    client.close()
    # Nobody connected: after the idle period the agent detaches by itself.
    wait_state(
        state, lambda s: not s["tracing"] and s["threads"] == 1 and s["socket_fds"] == 0, timeout=15
    )
    assert not Path(program.socket_path).exists()
    assert program.exit_status() is None


def test_a_viewer_waiting_while_a_big_table_is_computed_still_gets_in(targets: Targets) -> None:
    # The agent answers one request at a time; the seconds it spends on a large table are
    # its own delay, not the waiting viewer's, so its token is not refused as too late.
    program, state = targets.start("heap.py", "300000", budget=1.0)
    wait_state(state)
    busy = Raw(program.socket_path)
    busy.hello(program.token)
    waiting = Raw(program.socket_path)
    greeting = waiting.reply()
    assert greeting is not None and greeting["status"] == "ok"
    # Fresh tables, asked for in one write: the agent answers them in one go, seconds
    # longer than the deadline for a token even on an idle machine.
    request = {"cmd": "top", "args": {"group_by": "traceback", "max_age": 0.0}}
    busy.send_bytes(b"".join(frame(json.dumps(dict(request, id=n)).encode()) for n in range(1, 7)))
    started = time.monotonic()
    time.sleep(0.5)  # the token arrives while the agent is busy with the tables
    waiting.send({"proto": protocol.PROTO_MAJOR, "token": program.token, "client": "test"})
    assert all(busy.read() is not None for _ in range(6))
    assert time.monotonic() - started > server.AUTH_TIMEOUT
    assert waiting.read() == {"id": None, "ok": True, "result": {"authenticated": True}}


# --- case 7: exception isolation -----------------------------------------------------------


@pytest.mark.parametrize("fault", ["memory", "runtime"])
def test_faults_inside_the_agent_become_internal_errors(targets: Targets, fault: str) -> None:
    program, state = targets.start("faulty.py", fault)
    wait_state(state)
    client = Raw(program.socket_path)
    client.hello(program.token)
    for request_id in range(1, 4):
        reply = client.call("top", request_id=request_id, max_age=0.0)
        assert error_code(reply) == "internal"
        assert reply["id"] == request_id
    ping = client.call("ping", request_id=9)
    assert ping["ok"]
    assert any(
        fault_name in e["error"]
        for e in ping["result"]["errors"]
        for fault_name in ("MemoryError", "RuntimeError")
    )
    before = state_of(state)["counter"]
    final = wait_state(state, lambda s: s["counter"] > before + 2)
    assert final["hooks"] == []
    assert final["threads"] == 2  # the target's main thread and the agent's
    assert Path(targets.tmp / "faulty-0.log").read_text() == ""


def test_stats_is_cheap_and_fresh(agent) -> None:
    program, _ = agent
    client = Raw(program.socket_path)
    client.hello(program.token)
    reply = client.call("stats")
    assert reply["ok"]
    result = reply["result"]
    assert result["tracing"] is True
    assert result["traced_current"] > 0
    assert result["traced_peak"] >= result["traced_current"]
    assert result["nframe"] == 4


def test_connection_refused_after_the_socket_is_gone(agent) -> None:
    program, _ = agent
    client = Raw(program.socket_path)
    client.hello(program.token)
    assert client.call("detach")["ok"]
    wait_for(lambda: not Path(program.socket_path).exists(), 5, "socket removal")
    with pytest.raises((FileNotFoundError, ConnectionRefusedError)):
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.connect(program.socket_path)
        finally:
            sock.close()


def test_viewer_gone_before_its_reply_does_not_kill_a_program_without_sigpipe_handling(
    targets: Targets,
) -> None:
    program, state = targets.start("sigpipe.py")
    wait_state(state)
    for _ in range(5):
        client = Raw(program.socket_path)
        client.hello(program.token)
        client.send({"id": 1, "cmd": "top", "args": {"max_age": 0.0}})
        client.close()  # the reply finds nobody: EPIPE, and SIGPIPE unless suppressed
    still_serving(program, state)
    assert program.exit_status() is None
