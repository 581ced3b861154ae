#!/usr/bin/env python3
"""A worker that lends its IPC connection to the test: it connects to the
agent's socket ($HYPERPOD_ELASTICAGENT_SOCKET_SERVER_PATH) as local rank
$LOCAL_RANK, listens on DIR/relay-<LOCAL_RANK>.sock and copies bytes both
ways between the first client there and the agent. The agent only lets a
worker's own process group speak for its rank (issue 12), so a test that
drives the wire format itself goes through one of these. Then it stays up
until it is stopped. Usage: ipc_relay.py DIR"""
import os
import selectors
import socket
import sys
import time

lr = os.environ["LOCAL_RANK"]
agent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
agent.connect(os.environ["HYPERPOD_ELASTICAGENT_SOCKET_SERVER_PATH"])
path = os.path.join(sys.argv[1], f"relay-{lr}.sock")
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
srv.listen(1)
sys.stdout.write(f"relay {lr} listening on {path}\n")  # one write(2): ranks share the console
sys.stdout.flush()
test, _ = srv.accept()
sel = selectors.DefaultSelector()
sel.register(agent, selectors.EVENT_READ, test)
sel.register(test, selectors.EVENT_READ, agent)
live = True
while live:
    for key, _ in sel.select():
        data = key.fileobj.recv(65536)
        if not data:
            live = False
            break
        key.data.sendall(data)
agent.close()
test.close()
while True:
    time.sleep(3600)
