"""Rolling order statistics and exponentially weighted moments, in flat double arrays.

>>> w = RollingWindow(3)
>>> for x in [5.0, 1.0, 3.0, 9.0]:
...     w.push(x)
>>> list(w.chronological()), w.median()
([1.0, 3.0, 9.0], 3.0)
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, insort

#: IQR of the standard normal distribution: IQR / 1.349 estimates sigma.
IQR_TO_SIGMA = 1.349


class RollingWindow:
    """The last ``size`` values, kept in arrival order and sorted (median and quartiles
    in O(1), an update moves at most ``size`` doubles: ``16 * size`` bytes)."""

    __slots__ = ("head", "ring", "size", "srt")

    def __init__(self, size: int, values: array | None = None) -> None:
        if size < 1:
            raise ValueError(f"window size must be >= 1, got {size}")
        self.size = size
        self.ring = array("d")
        self.srt = array("d")
        self.head = 0  # index of the oldest value once the ring is full
        for x in values or ():
            self.push(x)

    def __len__(self) -> int:
        return len(self.ring)

    def push(self, x: float) -> None:
        """Add ``x``, evicting the oldest value when full."""
        ring = self.ring
        if len(ring) < self.size:
            ring.append(x)
        else:
            old = ring[self.head]
            ring[self.head] = x
            self.head = (self.head + 1) % self.size
            del self.srt[bisect_left(self.srt, old)]
        insort(self.srt, x)

    def chronological(self) -> array:
        """Values oldest first (what a checkpoint stores)."""
        return self.ring[self.head :] + self.ring[: self.head]

    def median(self) -> float:
        return self.srt[len(self.srt) // 2]

    def scale(self, floor: float) -> float:
        """``max(IQR / 1.349, floor)``: a robust standard deviation; not empty."""
        srt = self.srt
        n = len(srt)
        scale = (srt[(3 * n) // 4] - srt[n // 4]) / IQR_TO_SIGMA
        return scale if scale > floor else floor

    def robust_z(self, x: float, floor: float) -> float:
        """``|x - median| / max(IQR / 1.349, floor)``; the window must not be empty."""
        srt = self.srt
        n = len(srt)
        scale = (srt[(3 * n) // 4] - srt[n // 4]) / IQR_TO_SIGMA
        return abs(x - srt[n // 2]) / (scale if scale > floor else floor)

    def nbytes(self) -> int:
        """Bytes of the two buffers."""
        return (self.ring.buffer_info()[1] + self.srt.buffer_info()[1]) * 8
