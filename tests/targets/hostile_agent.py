"""A process that serves a socket where memtop looks for its own agent, speaks memtop's
framing, and answers with what CASE names: fields of the wrong type, missing ones, NaN,
huge numbers, nested garbage, frames that are not JSON. It is the target itself (the
viewer checks who serves the socket), with a token file beside the socket, so
`memtop PID` connects to it as to an agent left serving.

argv: STATE CASE. Writes STATE once it listens.
"""

import json
import os
import socket
import struct
import sys

from _state import report

from memtop.agent import rundir

path, case = sys.argv[1], sys.argv[2]
pid, uid = os.getpid(), os.geteuid()
start = rundir.process_start_time(pid)
run_dir = rundir.default_run_dir(uid, os.environ)
rundir.ensure_private_dir(run_dir, uid)
socket_path = os.path.join(run_dir, rundir.socket_name(pid, start))
token_path = os.path.join(run_dir, rundir.token_name(pid, start))
TOKEN = "f" * 64

GREETING = {
    "agent": "memtop", "proto": [1, 0], "version": "0.1.0", "pid": pid, "start": start,
    "py": "3.11.7", "ft": False, "tracing_owner": "agent", "nframe": 4, "origin": "run",
    "status": "ok",
}  # fmt: skip


def top():
    """A well-formed `top` result."""
    return {
        "group_by": "lineno", "cumulative": False, "sort": "size", "compare": "previous",
        "baseline_time": None,
        "sample": {"id": 1, "time": 1.0, "age": 0.1, "fresh": True, "pause_ms": 1.0,
                   "next_in": 0.0, "budget": 0.05, "traced_blocks": 1, "read_peak": 0},
        "totals": {"traced_current": 1000, "traced_peak": 2000, "tracemalloc_memory": 100,
                   "nframe": 4, "memtop_traced": 0, "memtop_residue": 0},
        "total_rows": 1,
        "rows": [{"filename": "app.py", "lineno": 3, "size": 1000, "count": 1,
                  "size_diff": 0, "count_diff": 0, "source": "x = 1",
                  "traceback": [{"filename": "app.py", "lineno": 3}]}],
    }  # fmt: skip


def frame(body):
    return struct.pack(">I", len(body)) + body


def encode(message):
    return frame(json.dumps(message).encode())  # NaN and Infinity as Python writes them


def top_reply(request_id):
    """The reply to a `top` request: bytes, hostile as CASE says."""
    result = top()
    reply = {"id": request_id, "ok": True, "result": result}
    if case == "wrong_type":
        result["rows"][0]["size"] = "1000"
    elif case == "missing":
        del result["totals"]
    elif case == "nan":
        result["sample"]["age"] = float("nan")
    elif case == "infinity":
        result["totals"]["traced_peak"] = float("inf")
    elif case == "huge":
        result["totals"]["traced_current"] = 10**40
    elif case == "nested":
        result["rows"][0]["traceback"] = [[[[{"filename": {"x": [1]}}]]]]
    elif case == "result_list":
        reply["result"] = [1, 2, 3]
    elif case == "wrong_id":
        reply["id"] = request_id + 1000
    elif case == "deep":
        return frame(b'{"id": %d, "ok": true, "result": ' % request_id + b"[" * 100000)
    elif case == "not_json":
        return frame(b"\xff\xfe not json")
    elif case == "huge_frame":
        return struct.pack(">I", 1 << 30)
    return encode(reply)


def read_frame(conn):
    header = read_exact(conn, 4)
    return None if header is None else read_exact(conn, struct.unpack(">I", header)[0])


def read_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def serve(conn):
    greeting = dict(GREETING)
    if case == "greeting_type":
        greeting["nframe"] = "four"
    elif case == "greeting_error":
        greeting.update(status="busy", error=["not", "an", "object"])
    conn.sendall(encode(greeting))
    if read_frame(conn) is None:
        return
    conn.sendall(encode({"id": None, "ok": "yes"} if case == "handshake" else {"ok": True}))
    while True:
        body = read_frame(conn)
        if body is None:
            return
        request = json.loads(body)
        if request.get("cmd") == "top":
            conn.sendall(top_reply(request["id"]))
        else:
            conn.sendall(encode({"id": request["id"], "ok": True, "result": {}}))


with open(token_path, "w") as f:
    f.write(TOKEN)
os.chmod(token_path, 0o600)
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(socket_path)
os.chmod(socket_path, 0o600)
server.listen(8)
report(path, socket=socket_path)
try:
    while True:
        conn, _ = server.accept()
        try:
            serve(conn)
        except OSError:
            pass
        finally:
            conn.close()
finally:
    os.unlink(socket_path)
    os.unlink(token_path)
