"""A real gRPC server and client (grpcio, the reference C-core implementation) for the
proxy's tests. Messages are raw bytes, so no generated code is needed.

  grpc_peer.py serve PORT
  grpc_peer.py call ADDR unary|fail|server-stream|bidi
The client prints one JSON line: what came back, or the status it failed with.
"""
import json
import sys
from concurrent import futures

import grpc

SERVICE = "conduit.test.Echo"


def identity(b):
    return b


def unary(request, context):
    return b"echo:" + request


def fail(request, context):
    context.abort(grpc.StatusCode.UNAVAILABLE, "asked to fail")


def server_stream(request, context):
    for i in range(5):
        yield b"%s-%d" % (request, i)


def bidi(requests, context):
    for message in requests:
        yield b"echo:" + message


def serve(port):
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, identity, identity),
        "Fail": grpc.unary_unary_rpc_method_handler(fail, identity, identity),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, identity, identity),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi, identity, identity),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(f"[::]:{port}")
    server.start()
    print(f"serving on {port}", flush=True)
    server.wait_for_termination()


def call(addr, mode):
    channel = grpc.insecure_channel(addr)
    grpc.channel_ready_future(channel).result(timeout=10)
    method = {"unary": "Unary", "fail": "Fail", "server-stream": "ServerStream", "bidi": "Bidi"}[mode]
    path = f"/{SERVICE}/{method}"
    try:
        if mode in ("unary", "fail"):
            reply = channel.unary_unary(path, identity, identity)(b"hello", timeout=10)
            out = [reply.decode()]
        elif mode == "server-stream":
            out = [m.decode() for m in channel.unary_stream(path, identity, identity)(b"item", timeout=10)]
        else:
            out = [m.decode() for m in channel.stream_stream(path, identity, identity)(
                iter([b"one", b"two", b"three"]), timeout=10)]
        print(json.dumps({"ok": True, "messages": out}))
    except grpc.RpcError as e:
        print(json.dumps({"ok": False, "code": e.code().name, "details": e.details()}))


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        call(sys.argv[2], sys.argv[3])
