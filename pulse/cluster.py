"""Redis Cluster routing for the CLI's socket client: which node serves a command's slot, and
following MOVED and ASK to it.

A SocketConnection loads this module only once a reply has redirected it, so the per-step
path on a single server never pays for it. From then on, commands go straight to the node
that owns their slot (all keys of a namespace share one slot, thanks to the hash tag), and a
cluster in transition (a failover) is waited out for a while before the update is journaled.
"""

from __future__ import annotations

from .errors import BackendUnavailable
from .transport import REDIRECTS, TRANSITION_CODES, ReplyError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from .transport import SocketConnection


# Replies that mean the command did not run, so sending it again is safe: a redirect to the
# node that serves its slot, or a server or cluster in transition (a failover, a restart).
_RERUN = REDIRECTS + TRANSITION_CODES
# How long a command waits out a cluster in transition (a failover takes about
# cluster-node-timeout plus a second) before BackendUnavailable: the update is journaled.
CLUSTER_PATIENCE = 2.0
_MAX_ROUNDS = 64
# Commands whose key is not their first argument, and commands with no key at all.
_KEY_AT = {"XGROUP": 2, "XINFO": 2, "OBJECT": 2, "MEMORY": 2}
_KEYLESS = frozenset(
    "PING SELECT AUTH HELLO INFO TIME SCRIPT CLUSTER ECHO READONLY READWRITE ASKING "
    "CLIENT COMMAND CONFIG DBSIZE FLUSHALL FLUSHDB ACL WAIT QUIT RESET".split()
)


_slots_of_keys: dict[Any, int] = {}  # a process sends the same few keys over and over


def key_slot(key: str | bytes) -> int:
    """The Redis Cluster hash slot of ``key``: CRC16 of its hash tag (``{...}``) or of all
    of it, modulo 16384."""
    slot = _slots_of_keys.get(key)
    if slot is not None:
        return slot
    from binascii import crc_hqx  # CRC16-CCITT (XMODEM), as Redis Cluster uses

    raw = key.encode() if isinstance(key, str) else bytes(key)
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    if len(_slots_of_keys) > 10000:
        _slots_of_keys.clear()
    slot = _slots_of_keys[key] = crc_hqx(raw, 0) % 16384
    return slot


_SCRIPTS = frozenset(("EVALSHA", "EVAL", "EVALSHA_RO", "EVAL_RO", "FCALL", "FCALL_RO"))


def command_key(command: Sequence[Any]) -> Any:
    """The (first) key a command names, or None for a command without one."""
    name = command[0]
    name = (name.decode() if isinstance(name, bytes) else str(name)).upper()
    if name in _SCRIPTS:
        return command[3] if len(command) > 3 and int(command[2]) > 0 else None
    if name in ("XREAD", "XREADGROUP"):
        words = [str(c).upper() for c in command]
        return command[words.index("STREAMS") + 1] if "STREAMS" in words else None
    if name in _KEYLESS:
        return None
    at = _KEY_AT.get(name, 1)
    return command[at] if len(command) > at else None


def _redirect(reply: ReplyError) -> tuple[int, str]:
    # "MOVED 3999 127.0.0.1:6381": the slot and the node; an empty host is the same host.
    _, slot, address = str(reply).split(" ", 2)
    return int(slot), address


class Cluster:
    """Redirects followed for one SocketConnection (the origin, the URL's node): where each
    slot lives as MOVED replies said, and one connection per node, for the life of the
    process. Commands whose slot is known go straight to its node.

    A command answered with a redirect or a transient refusal (CLUSTERDOWN, TRYAGAIN,
    MASTERDOWN, READONLY, LOADING) did not run, so it is sent again: to the node named
    (after ASKING for ASK), or after a short wait. A node that cannot be reached (a master
    that died) is forgotten and its slots asked of the origin (or any node known) again;
    after CLUSTER_PATIENCE seconds of that the command fails with BackendUnavailable.
    """

    def __init__(self, origin: SocketConnection) -> None:
        self.origin = origin
        self.slots: dict[int, str] = {}  # slot -> "host:port"
        self.nodes: dict[str, SocketConnection] = {}
        self.down: set[str] = set()  # nodes that could not be reached in this exchange

    def owner(self, commands: Sequence[Sequence[Any]]) -> SocketConnection:
        """The node to send ``commands`` to: that of the first key's slot, if known."""
        for command in commands:
            key = command_key(command)
            if key is not None:
                address = self.slots.get(key_slot(key))
                if address is not None and address not in self.down:
                    node = self.nodes.get(address)
                    return node if node is not None else self.node(address)
                break
        if "" not in self.down:
            return self.origin
        # The origin is down: any node redirects to the right one.
        for address, node in self.nodes.items():
            if address not in self.down:
                return node
        return self.origin

    def node(self, address: str) -> SocketConnection:
        node = self.nodes.get(address)
        if node is None:
            host, _, port = address.rpartition(":")
            node = self.nodes[address] = self.origin._peer(host, int(port))
        return node

    def exchange(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        if self.down:
            self.down.clear()
        replies = self._send(self.owner(commands), commands)
        for r in replies:
            if isinstance(r, BackendUnavailable) or (
                isinstance(r, ReplyError) and r.code in _RERUN
            ):
                return self.settle(commands, replies)
        return replies

    def _send(self, node: SocketConnection, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """The replies of ``node``; if it cannot be reached (nothing sent), the error as the
        reply of every command, to be retried like a cluster in transition."""
        try:
            if node._sock is None:  # else _write checks it is still open, and reconnects
                node.connect()
        except BackendUnavailable as e:
            self._forget(node)
            return [e] * len(commands)
        try:
            return node._roundtrip(commands)
        except BackendUnavailable as e:
            # The socket had closed and reconnecting was refused (a node that died): nothing
            # was sent. Anything else may have happened after the command went out.
            if node._sock is not None or not isinstance(e.__cause__, ConnectionRefusedError):
                raise
            self._forget(node)
            return [e] * len(commands)

    def _forget(self, node: SocketConnection) -> None:
        address = "" if node is self.origin else f"{node._host}:{node._port}"
        self.down.add(address)
        for slot in [s for s, a in self.slots.items() if a == address]:
            del self.slots[slot]

    def settle(self, commands: Sequence[Sequence[Any]], replies: list[Any]) -> list[Any]:
        import time

        replies = list(replies)
        deadline = time.monotonic() + CLUSTER_PATIENCE
        pause = 0.01
        for _ in range(_MAX_ROUNDS):
            todo: dict[int, tuple[SocketConnection, bool]] = {}  # command -> (node, ASKING)
            waiting: BackendUnavailable | ReplyError | None = None
            for i, reply in enumerate(replies):
                if isinstance(reply, BackendUnavailable):
                    waiting = reply
                    todo[i] = (self.owner([commands[i]]), False)
                elif isinstance(reply, ReplyError) and reply.code in _RERUN:
                    if reply.code in REDIRECTS:
                        slot, address = _redirect(reply)
                        if not address.rpartition(":")[0]:
                            address = f"{self.origin._host}{address}"
                        if reply.code == "MOVED":
                            self.slots[slot] = address
                            self.down.discard(address)
                        todo[i] = (self.node(address), reply.code == "ASK")
                    else:
                        waiting = reply
                        todo[i] = (self.owner([commands[i]]), False)
            if not todo:
                return replies
            if waiting is not None:
                if time.monotonic() + pause > deadline:
                    if isinstance(waiting, BackendUnavailable):
                        raise waiting
                    raise BackendUnavailable(f"Redis at {self.origin.url} is not ready: {waiting}")
                time.sleep(pause)
                pause = min(pause * 2, 0.2)
                # the map may have changed meanwhile: route the waiting ones again
                todo = {
                    i: (node if ask else self.owner([commands[i]]), ask)
                    for i, (node, ask) in todo.items()
                }
            by_node: dict[int, list[int]] = {}
            for i, (node, _) in todo.items():
                by_node.setdefault(id(node), []).append(i)
            for indexes in by_node.values():
                node = todo[indexes[0]][0]
                batch: list[Sequence[Any]] = []
                for i in indexes:
                    batch += [("ASKING",), commands[i]] if todo[i][1] else [commands[i]]
                got = self._send(node, batch)
                for i in indexes:
                    if todo[i][1]:
                        got.pop(0)  # ASKING's OK
                    replies[i] = got.pop(0)
        raise BackendUnavailable(f"the Redis Cluster at {self.origin.url} keeps redirecting")

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()
