#!/usr/bin/env python3
"""One-connection TCP proxy that records both directions: PREFIX.c2s and PREFIX.s2c.
Usage: rtmp_proxy.py LISTEN_PORT UPSTREAM_PORT PREFIX"""
import socket
import sys
import threading

listen_port, upstream_port, prefix = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", listen_port))
server.listen(1)
client, _ = server.accept()
upstream = socket.create_connection(("127.0.0.1", upstream_port))


def pump(src, dst, path):
    with open(path, "wb") as out:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            out.write(data)
            out.flush()
            try:
                dst.sendall(data)
            except OSError:
                break
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


threads = [threading.Thread(target=pump, args=(client, upstream, prefix + ".c2s")),
           threading.Thread(target=pump, args=(upstream, client, prefix + ".s2c"))]
for t in threads:
    t.start()
for t in threads:
    t.join()
