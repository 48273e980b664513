"""A DNS responder on 127.0.0.1 for the process-level topology (standard library only).

It stands in for Docker's embedded DNS: one name answers with one A record per
replica, so HAProxy runs deploy/haproxy.cfg unchanged (server-template +
resolvers). Change ``addresses`` to "scale": HAProxy picks it up by itself.
Answers A queries for ``name`` only; other types get an empty answer, other
names NXDOMAIN.
"""
from __future__ import annotations

import socket
import struct
import threading
from typing import List


class DnsStub:
    def __init__(self, name: str, addresses: List[str], ttl: int = 1) -> None:
        self.name = name.lower().rstrip(".")
        self.addresses = list(addresses)
        self.ttl = ttl
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                query, peer = self.sock.recvfrom(4096)
            except OSError:  # closed
                return
            try:
                self.sock.sendto(self.answer(query), peer)
            except (ValueError, IndexError, struct.error):
                continue  # not a query we understand: no reply, as a real server may do

    def answer(self, query: bytes) -> bytes:
        ident, _flags, qdcount = struct.unpack("!HHH", query[:6])
        labels, at = [], 12
        while query[at]:
            labels.append(query[at + 1:at + 1 + query[at]].decode("ascii"))
            at += 1 + query[at]
        question = query[12:at + 5]
        qtype = struct.unpack("!H", query[at + 1:at + 3])[0]
        known = ".".join(labels).lower() == self.name
        records = [a for a in self.addresses] if known and qtype == 1 else []
        flags = 0x8180 if known else 0x8183  # response, recursion desired+available; rcode 3 = NXDOMAIN
        out = struct.pack("!HHHHHH", ident, flags, 1, len(records), 0, 0) + question
        for address in records:  # a pointer (0xC00C) to the name in the question
            out += struct.pack("!HHHIH", 0xC00C, 1, 1, self.ttl, 4) + socket.inet_aton(address)
        return out

    def close(self) -> None:
        self.sock.close()
