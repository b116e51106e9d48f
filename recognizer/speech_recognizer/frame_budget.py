"""What one WebSocket client's frames may cost the event loop that serves every stream of the pod.

Reading pauses once a message waits for its route (uvicorn's read-ahead, then the route's :class:`~.inbox.Inbox`), so a
client's messages cost what its route takes in. Frames that complete no message bypass that: a ping (answered by the
protocol with a pong), a pong, a message's fragments before its last. A client sending nothing else was read and parsed
for as long as it sent, its pongs piling up unsent if it read none, and every reply to every other stream on the pod waited
behind it. And websockets parses every frame of what it is fed at once: a read of tiny frames held the event loop for as
long as it took to parse them all.

So the server's WebSocket protocol (:class:`~.http_limits.UnmappedWebSockets`) feeds its parser :data:`FEED_BYTES` of
what it read at a time, the event loop's other work running between two pieces (reading paused until the rest is
parsed); and a client that sends control frames faster than :class:`ControlBudget` allows, or a message in more than
:data:`MAX_FRAGMENTS` fragments, is closed with :data:`~.errors.FRAME_FLOOD` (1008 and the reason).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Bytes of a read fed to websockets' parser in one turn of the event loop: as many frames as the smallest (6 bytes) fit.
FEED_BYTES = 1024
#: Control frames (pings and pongs) a client may send at once ...
CONTROL_BURST = 50
#: ... and each second beyond (a keepalive pings every few seconds; the server pings every 20 s).
CONTROL_PER_SECOND = 5.0
#: ... and each second the server holds reading the client, kept whole until spent: what a keepalive pinging once a
#: second needs (websockets' pings every 20 s; the Speech SDK sends none of its own, it answers the server's), its pings
#: of all that time coming at once when reading resumes.
HELD_PER_SECOND = 1.0
#: Most fragments of one message (each one is held until the message ends).
MAX_FRAGMENTS = 1024
#: The key of the disconnect the protocol gives the app once it closed its client for its frames, beside ASGI's: the
#: :class:`~.errors.Failure` that says why, which the route raises (counted and logged once, as its own failures).
CUT_OFF = "speech.cut_off"


@dataclass
class ControlBudget:
    """A token bucket of control frames: :data:`CONTROL_BURST` at once, refilled at :data:`CONTROL_PER_SECOND`; the
    server's own pings (:meth:`asked`) owed their pongs beyond.

    The bucket is capped at :data:`CONTROL_BURST` only for the time the server reads the client. While it does not (a
    message waits for its route: its read-ahead full, its model loading; or a read is still being parsed), what the
    client sends waits unread in the socket behind it, and its pings of all that time come at once when reading resumes:
    what accrues meanwhile, at :data:`HELD_PER_SECOND`, is kept whole (capped, a keepalive pinging behind held-back
    audio was closed as a flood; at :data:`CONTROL_PER_SECOND`, a client held an hour could send 18 000 pings at once).
    What the held socket can hold bounds nothing here: the kernel's receive buffer grows to megabytes (a million
    6-byte pings), and a client queues what it writes meanwhile in its own memory, without bound. A client is never
    allowed more than :data:`CONTROL_BURST` plus :data:`CONTROL_PER_SECOND` for as long as it is connected, nor more
    than the burst plus :data:`HELD_PER_SECOND` for the time it was held, and pongs for the server's pings."""

    #: When the bucket was last looked at (the event loop's clock).
    since: float
    left: float = CONTROL_BURST
    #: Whether the server holds reading the client (:meth:`reading`).
    held: bool = False

    def _accrue(self, now: float) -> None:
        seconds = now - self.since
        if self.held:
            self.left += seconds * HELD_PER_SECOND
        else:
            self.left = max(self.left, min(CONTROL_BURST, self.left + seconds * CONTROL_PER_SECOND))
        self.since = now

    def reading(self, now: float, held: bool) -> None:
        """The server holds reading the client (``held``), or reads it, from ``now`` on."""
        self._accrue(now)
        self.held = held

    def asked(self) -> None:
        """The server pinged the client: its pong is owed, not taken from the budget."""
        self.left += 1

    def spend(self, now: float) -> bool:
        """Take one control frame arrived at ``now``: False once the client has sent more than the budget allows."""
        self._accrue(now)
        self.left -= 1
        return self.left >= 0


def over_budget() -> str:
    """Why a client sending control frames faster than :class:`ControlBudget` allows is closed."""
    return (f"more than {CONTROL_BURST} control frames (pings, pongs) at once or {CONTROL_PER_SECOND:g} a second "
            f"beyond ({HELD_PER_SECOND:g} a second while its reading was held): the connection is closed")


def too_many_fragments() -> str:
    """Why a client sending a message in more than :data:`MAX_FRAGMENTS` fragments is closed."""
    return f"a message in more than {MAX_FRAGMENTS} fragments: the connection is closed"
