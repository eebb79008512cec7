#!/usr/bin/env python3
"""A TCP proxy that counts the bytes of ggml's RPC protocol it forwards, for scripts/bench-split.sh.

Usage: scripts/tcp-count.py TARGET_HOST:TARGET_PORT STATUS_FILE

Listens on 127.0.0.1 on a free port and forwards every connection to TARGET (a `gguftune
rpc-server`); a connection's two directions are pumped until either side closes, then both are
closed (the server serves one client at a time).

STATUS_FILE holds one JSON object, replaced atomically (temp file, then rename) when the proxy
starts listening and whenever a connection opens or closes:
  {"port": LISTEN_PORT, "open": connections open now, "connections": connections accepted,
   "sent": bytes client -> server, "received": bytes server -> client,
   "by_command": {"GRAPH_COMPUTE": [sent, received], ...},
   "by_phase": {"setup": [sent, received], "graphs": [...], "end": [...]},
   "graphs": [[nodes, tensors, bytes], ...], "transfers": [[graphs, "set"|"get", name, bytes], ...]}
"graphs" lists every graph sent to compute, in order: its node count, the tensors its message
describes (the nodes, and recursively their sources and views' sources), and the message's bytes.
"transfers" lists every tensor data transfer (RPC SET_TENSOR and GET_TENSOR), in order: how many
graphs its connection had sent before it, its direction, the tensor's name and the data's bytes.
Totals since the proxy started: a run's traffic is the difference between the status before it
and the status once "open" is back to 0.

The counts by command follow ggml's RPC protocol (ggml-rpc.cpp, protocol 7): a client message is
| command (1 byte) | size (8 bytes) | payload |, and the commands the server answers get
| size (8 bytes) | payload | back, in order. The phases of a connection: "setup" is everything
before its first graph computation (RPC_CMD_GRAPH_COMPUTE or _RECOMPUTE), "graphs" from it to
the end of its last one, "end" after that; what flows after a graph counts as "end" until another
graph comes, then moves to "graphs". In a training run, "setup" is the weights and the LoRA state
uploaded, "end" the LoRA state read back, and "graphs" the steps (less the inputs of the first).
Stops on SIGTERM or SIGINT.
"""

import asyncio
import json
import os
import signal
import socket
import sys
from collections import deque

CHUNK = 1 << 16

# ggml-rpc.cpp's enum rpc_cmd, in order.
COMMANDS = [
    "ALLOC_BUFFER", "GET_ALIGNMENT", "GET_MAX_SIZE", "BUFFER_GET_BASE", "FREE_BUFFER", "BUFFER_CLEAR",
    "SET_TENSOR", "SET_TENSOR_HASH", "GET_TENSOR", "COPY_TENSOR", "GRAPH_COMPUTE", "GET_DEVICE_MEMORY",
    "INIT_TENSOR", "GET_ALLOC_SIZE", "HELLO", "DEVICE_COUNT", "GRAPH_RECOMPUTE", "MEMSET_TENSOR",
]
# The commands rpc_serve_client answers (send_msg after the request).
ANSWERED = {"ALLOC_BUFFER", "GET_ALIGNMENT", "GET_MAX_SIZE", "BUFFER_GET_BASE", "SET_TENSOR_HASH", "GET_TENSOR",
            "COPY_TENSOR", "GET_DEVICE_MEMORY", "GET_ALLOC_SIZE", "HELLO", "DEVICE_COUNT"}
GRAPHS = {"GRAPH_COMPUTE", "GRAPH_RECOMPUTE"}
UNPARSED = "(unparsed)"
# ggml-rpc.cpp's packed struct rpc_tensor: its size, and where its name (64 bytes) starts.
RPC_TENSOR_SIZE = 296
RPC_TENSOR_NAME = 228
# The start of the payloads read for "transfers": SET_TENSOR is | rpc_tensor | cache flag (1) |
# offset (8) | data |, GET_TENSOR | rpc_tensor | offset (8) | size (8) |.
TRANSFER_HEAD = RPC_TENSOR_SIZE + 16


class Counts:
    """Totals of every connection so far, written to the status file on each change."""

    def __init__(self, status_path):
        self.status_path = status_path
        self.port = None
        self.open = 0
        self.connections = 0
        self.total = [0, 0]
        self.by_command = {}
        self.by_phase = {"setup": [0, 0], "graphs": [0, 0], "end": [0, 0]}
        self.graphs = []
        self.transfers = []

    def add(self, command, phase, direction, n):
        self.total[direction] += n
        self.by_command.setdefault(command, [0, 0])[direction] += n
        self.by_phase[phase][direction] += n

    def write(self):
        status = {"port": self.port, "open": self.open, "connections": self.connections,
                  "sent": self.total[0], "received": self.total[1],
                  "by_command": self.by_command, "by_phase": self.by_phase, "graphs": self.graphs,
                  "transfers": self.transfers}
        tmp = f"{self.status_path}.tmp"
        with open(tmp, "w") as f:
            json.dump(status, f)
            f.write("\n")
        os.replace(tmp, self.status_path)


class Connection:
    """One client's traffic: parses both directions' message headers to name each byte's command
    and phase. Bytes it cannot parse (a protocol it does not know) count as UNPARSED."""

    def __init__(self, counts):
        self.counts = counts
        self.graphs_seen = False
        self.pending_end = [0, 0]  # bytes since the last graph, by direction: "end" unless a graph follows
        self.answers = deque()  # commands sent whose answers have not come back yet
        self.request = {"header": bytearray(), "left": 0, "command": None}
        self.answer = {"header": bytearray(), "left": 0, "command": None}
        self.graph = None  # the payload of the graph message being received, until complete
        self.graph_count = 0
        self.head = None  # the start of a SET_TENSOR or GET_TENSOR payload, until TRANSFER_HEAD bytes
        self.head_command, self.head_size = None, 0

    def count(self, command, direction, n):
        if not self.graphs_seen:
            self.counts.add(command, "setup", direction, n)
        elif command in GRAPHS:
            self.counts.add(command, "graphs", direction, n)
        else:
            # Provisionally "end"; moved to "graphs" when another graph comes.
            self.counts.add(command, "end", direction, n)
            self.pending_end[direction] += n

    def graph_started(self):
        if self.graphs_seen:
            for d in (0, 1):
                self.counts.by_phase["end"][d] -= self.pending_end[d]
                self.counts.by_phase["graphs"][d] += self.pending_end[d]
        self.graphs_seen = True
        self.pending_end = [0, 0]

    def graph_complete(self):
        """Records the graph message just received: | device (4) | n_nodes (4) | node ids (8 each) |
        n_tensors (4) | tensors |."""
        g, self.graph = bytes(self.graph), None
        nodes = int.from_bytes(g[4:8], "little") if len(g) >= 8 else 0
        at = 8 + 8 * nodes
        tensors = int.from_bytes(g[at:at + 4], "little") if len(g) >= at + 4 else 0
        self.counts.graphs.append([nodes, tensors, len(g) + 9])

    def transfer_seen(self):
        """Records the SET_TENSOR or GET_TENSOR whose payload starts with self.head."""
        h, self.head = bytes(self.head), None
        name = h[RPC_TENSOR_NAME:RPC_TENSOR_NAME + 64].split(b"\0")[0].decode("utf-8", "replace")
        if self.head_command == "SET_TENSOR":
            self.counts.transfers.append([self.graph_count, "set", name, self.head_size - RPC_TENSOR_SIZE - 9])
        elif len(h) >= RPC_TENSOR_SIZE + 16:
            size = int.from_bytes(h[RPC_TENSOR_SIZE + 8:RPC_TENSOR_SIZE + 16], "little")
            self.counts.transfers.append([self.graph_count, "get", name, size])

    def feed(self, direction, data):
        """Counts `data` flowing client -> server (direction 0) or server -> client (1)."""
        state = self.request if direction == 0 else self.answer
        header_len = 9 if direction == 0 else 8
        i = 0
        while i < len(data):
            if state["command"] == UNPARSED:
                self.count(UNPARSED, direction, len(data) - i)
                return
            if state["left"] > 0:  # inside a payload
                n = min(state["left"], len(data) - i)
                self.count(state["command"], direction, n)
                if self.graph is not None and direction == 0:
                    self.graph += data[i:i + n]
                if self.head is not None and direction == 0:
                    self.head += data[i:i + min(n, TRANSFER_HEAD - len(self.head))]
                    if len(self.head) >= TRANSFER_HEAD or state["left"] == n:
                        self.transfer_seen()
                state["left"] -= n
                i += n
                if state["left"] == 0 and self.graph is not None and direction == 0:
                    self.graph_complete()
                continue
            n = min(header_len - len(state["header"]), len(data) - i)
            state["header"] += data[i:i + n]
            i += n
            if len(state["header"]) < header_len:
                break
            header = bytes(state["header"])
            state["header"].clear()
            if direction == 0:
                command = COMMANDS[header[0]] if header[0] < len(COMMANDS) else UNPARSED
                size = int.from_bytes(header[1:], "little")
                if command in GRAPHS:
                    self.graph_started()
                if command == "GRAPH_COMPUTE":
                    self.graph = bytearray()
                if command in GRAPHS:
                    self.graph_count += 1
                if command in ("SET_TENSOR", "GET_TENSOR"):
                    self.head, self.head_command, self.head_size = bytearray(), command, size
                if command in ANSWERED:
                    self.answers.append(command)
            else:
                command = self.answers.popleft() if self.answers else UNPARSED
                size = int.from_bytes(header, "little")
            self.count(command, direction, header_len)
            state["command"], state["left"] = command, size


async def pump(reader, writer, connection, direction):
    """Copies reader to writer until EOF or an error, counting what passes."""
    try:
        while data := await reader.read(CHUNK):
            connection.feed(direction, data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass


async def close(writer):
    try:
        writer.close()
        await writer.wait_closed()
    except (ConnectionError, OSError):
        pass


async def serve(target_host, target_port, counts):
    async def handle(client_reader, client_writer):
        counts.open += 1
        counts.connections += 1
        counts.write()
        try:
            server_reader, server_writer = await asyncio.open_connection(target_host, target_port)
        except OSError as e:
            print(f"tcp-count: cannot connect to {target_host}:{target_port}: {e}", file=sys.stderr)
            await close(client_writer)
            counts.open -= 1
            counts.write()
            return
        for w in (client_writer, server_writer):
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = Connection(counts)
        up = asyncio.ensure_future(pump(client_reader, server_writer, connection, 0))
        down = asyncio.ensure_future(pump(server_reader, client_writer, connection, 1))
        # Either side closing ends the connection: close both, then let the pumps finish.
        await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
        await close(server_writer)
        await close(client_writer)
        await asyncio.gather(up, down)
        counts.open -= 1
        counts.write()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    counts.port = server.sockets[0].getsockname()[1]
    counts.write()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    counts.write()


def main():
    target = sys.argv[1] if len(sys.argv) == 3 else ""
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        print("usage: tcp-count.py TARGET_HOST:TARGET_PORT STATUS_FILE", file=sys.stderr)
        sys.exit(2)
    asyncio.run(serve(host, int(port), Counts(sys.argv[2])))


if __name__ == "__main__":
    main()
