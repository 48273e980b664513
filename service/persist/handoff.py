"""Handoff of a session between live replicas, over Redis pub/sub.

Each replica listens on its inbox channel ``lstm:inbox:<replica id>``. A replica asked for a
session whose lease another live replica holds publishes an *ask* to the owner's inbox;
the owner (service/persist/durability.py ``hand_over``) waits for the session's current
call to end, writes its latest committed state and gives the lease to the asker (epoch+1)
in one script, drops its copy and publishes the answer to the asker's inbox: ``moved``
(take it), ``busy`` (a call or stream still holds it) or ``gone`` (it does not hold it:
ask Redis again). PUBLISH says how many listened: 0 means the owner is not there (dead or
cut off), so the asker does not wait for an answer and polls until its heartbeat expires.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
from typing import Awaitable, Callable, Dict, Optional, Set, Tuple

from redis.asyncio import Redis

from ..core.session_ids import SessionName
from .leases import INBOX_PREFIX, Leases

log = logging.getLogger("service.handoff")
RECONNECT_DELAY = 0.2  # seconds before the listener subscribes again after a lost connection

Serve = Callable[[SessionName, int, str], Awaitable[Tuple[str, int]]]


class Handoff:
    def __init__(self, url: str, leases: Leases, serve: Serve) -> None:
        # Its own connection, without a socket timeout: a subscriber waits for messages indefinitely.
        self.listener = Redis.from_url(url, socket_connect_timeout=0.5)
        self.leases = leases
        self.serve = serve  # the owner's side: (name, epoch, asker) -> (answer, new epoch)
        self.ready = asyncio.Event()  # subscribed
        self._waiting: Dict[str, asyncio.Future] = {}
        self._answering: Set[asyncio.Task] = set()
        self._task: Optional[asyncio.Task] = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._listen(), name="handoff-listener")

    async def _listen(self) -> None:
        while True:
            pubsub = self.listener.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.leases.inbox)
                self.ready.set()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._received(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis went away: asks to us find no listener meanwhile
                self.ready.clear()
                log.debug("handoff listener: %s", exc)
                await asyncio.sleep(RECONNECT_DELAY)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:
                    pass

    def _received(self, data: bytes) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            return
        if message.get("t") == "ask":
            task = asyncio.get_running_loop().create_task(self._answer(message))
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)
        elif message.get("t") == "re":
            waiter = self._waiting.pop(str(message.get("n")), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(message)

    async def _answer(self, ask: dict) -> None:
        try:
            name = SessionName(str(ask["owner"]), str(ask["id"]))
            answer, epoch = await self.serve(name, int(ask["epoch"]), str(ask["from"]))
        except Exception:
            log.exception("handoff: answering an ask failed")
            answer, epoch = "gone", 0
        reply = json.dumps({"t": "re", "n": ask.get("n"), "r": answer, "epoch": epoch})
        try:
            await self.leases.redis.publish(INBOX_PREFIX + str(ask.get("from")), reply)
        except Exception as exc:  # the asker polls Redis again after its wait
            log.debug("handoff: answer not sent: %s", exc)

    async def ask(self, owner: str, name: SessionName, epoch: int, timeout: float) -> Optional[dict]:
        """Ask ``owner`` to hand ``name`` over; its answer, or None if nobody listened or it did
        not answer within ``timeout`` s."""
        nonce = secrets.token_hex(8)
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[nonce] = waiter
        message = json.dumps({"t": "ask", "owner": name.owner, "id": name.id, "epoch": epoch,
                              "from": self.leases.replica_id, "n": nonce})
        try:
            if not await self.leases.redis.publish(INBOX_PREFIX + owner, message):
                return None  # nobody listens there: the owner is dead or cut off
            return await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            self._waiting.pop(nonce, None)

    async def close(self) -> None:
        for task in [self._task, *self._answering]:
            if task is not None:
                task.cancel()
        for task in [self._task, *self._answering]:
            if task is not None:
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        await self.listener.aclose()
