"""Framing helpers under the reference's name. The framing itself is
hyperpod_worker's (one implementation for both faces): a 4-byte
big-endian length, then that many bytes."""
from dataclasses import dataclass
from enum import Enum, auto
from typing import Optional

import hyperpod_worker as _wire

from .common import RestartMode


class LengthPrefixMessageFramer:
    """frame_message(bytes) -> framed bytes; process_data(chunk) -> the
    complete payloads so far. After a length over
    hyperpod_worker.MAX_FRAME (the reference has no limit; the agent has
    one) it returns the frames before it, then raises OSError."""

    def __init__(self):
        self._decoder = _wire.FrameDecoder()
        self.prefix_size = 4

    @property
    def buffer(self):
        return self._decoder.buffer

    @staticmethod
    def frame_message(data):
        return _wire.frame(data)

    def process_data(self, data):
        out = self._decoder.feed(data)
        if not out and self._decoder.error is not None:
            raise self._decoder.error
        return out


# The agent's bookkeeping types, for code that imports them; hyperpodrun's
# agent keeps this state in C.
class IPCRankState(Enum):
    AT_BARRIER = auto()
    FAILED = auto()
    HEALTHY = auto()
    PAST_BARRIER = auto()


@dataclass
class IPCRankData:
    local_rank: int
    rank: int = -1
    group_rank: int = -1
    data: Optional[str] = None
    restart_mode: RestartMode = RestartMode.IN_PROCESS_RESTART
    reason: Optional[str] = None
    message: Optional[str] = None
    state: IPCRankState = IPCRankState.HEALTHY
    failed: bool = False
