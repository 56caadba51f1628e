"""A fake agent planted by the target's user at the target's socket path, with a token
file beside it. argv: SOCKET TOKEN_FILE LOG. Prints "listening" when ready. It greets
like an agent, so a viewer that trusted the socket would go on and send its handshake;
one line per connection, handled in order, gives the number of bytes it received."""

import json
import os
import socket
import struct
import sys

path, token_path, log_path = sys.argv[1:4]
os.umask(0o077)
with open(token_path, "w") as f:
    f.write("planted-token\n")
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
server.listen(8)
print("listening", flush=True)
greeting = json.dumps({"agent": "memtop", "proto": [1, 0], "pid": 1, "status": "ok"}).encode()
while True:
    conn, _ = server.accept()
    received = 0
    try:
        conn.sendall(struct.pack(">I", len(greeting)) + greeting)
    except OSError:
        pass  # the peer left already: still count what it sent
    try:
        conn.settimeout(2.0)
        while True:
            chunk = conn.recv(4096)
            if not chunk:
                break
            received += len(chunk)
    except OSError:
        pass
    conn.close()
    with open(log_path, "a") as log:
        log.write("%d\n" % received)
