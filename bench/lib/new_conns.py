"""new_conns.py HOST N: N new TCP connections, one after another, to HOST:7000 (an
echo_server.py), each a connect, one line sent and echoed, and a close; prints each one's
time in microseconds, one per line. A connection that closes early fails the run."""

import socket
import sys
import time

host, n = sys.argv[1], int(sys.argv[2])
out = []
for i in range(n):
    t = time.perf_counter()
    c = socket.create_connection((host, 7000), timeout=10)
    c.sendall(b"ping:%d\n" % i)
    got = b""
    while not got.endswith(b"\n"):
        d = c.recv(64)
        if not d:
            sys.exit("connection %d closed early" % i)
        got += d
    c.close()
    out.append((time.perf_counter() - t) * 1e6)
print("\n".join("%.1f" % us for us in out))
