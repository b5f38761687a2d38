"""Rolling order statistics and exponentially weighted moments, in flat double arrays.

>>> w = RollingWindow(3)
>>> for x in [5.0, 1.0, 3.0, 9.0]:
...     w.push(x)
>>> list(w.chronological()), w.median()
([1.0, 3.0, 9.0], 3.0)
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, insort

#: IQR of the standard normal distribution: IQR / 1.349 estimates sigma.
IQR_TO_SIGMA = 1.349
#: The most values a window or ring holds (a checkpoint declaring more is refused).
MAX_SIZE = 100_000


def check_size(size: int, least: int = 1) -> None:
    """ValueError unless ``size`` is a whole number in ``[least, MAX_SIZE]``."""
    if isinstance(size, bool) or not isinstance(size, int) or not least <= size <= MAX_SIZE:
        raise ValueError(
            f"window size must be a whole number in [{least}, {MAX_SIZE}], got {size!r}"
        )


class RollingWindow:
    """The last ``size`` values, kept in arrival order and sorted (median and quartiles
    in O(1), an update moves at most ``size`` doubles: ``16 * size`` bytes)."""

    __slots__ = ("head", "ring", "size", "srt")

    def __init__(self, size: int, values: array | None = None) -> None:
        check_size(size)
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


class FixedWindow:
    """:class:`RollingWindow`'s statistics in buffers allocated whole at creation: the
    memory of a window is the same from its first value to its millionth (``16 * size``
    bytes plus the object), so a detector's size is known when its series appears.

    The sorted buffer holds the ``n`` values in its first ``n`` slots and ``+inf`` after
    them; an update shifts at most ``size`` doubles and never reallocates.

    >>> w = FixedWindow(3)
    >>> for x in [5.0, 1.0, 3.0, 9.0]:
    ...     w.push(x)
    >>> list(w.chronological()), w.median(), len(w)
    ([1.0, 3.0, 9.0], 3.0, 3)
    """

    __slots__ = ("head", "n", "ring", "size", "srt")

    def __init__(self, size: int, values: array | None = None) -> None:
        check_size(size)
        self.size = size
        self.ring = array("d", [0.0]) * size
        self.srt = array("d", [math.inf]) * size
        self.n = 0
        self.head = 0  # index of the oldest value once the ring is full
        for x in values or ():
            self.push(x)

    def __len__(self) -> int:
        return self.n

    def push(self, x: float) -> None:
        """Add ``x``, evicting the oldest value when full."""
        srt, n = self.srt, self.n
        if n < self.size:
            self.ring[n] = x
            self.n = n = n + 1
            del srt[-1]  # a +inf slot: the length stays within the allocation
        else:
            old = self.ring[self.head]
            self.ring[self.head] = x
            self.head = (self.head + 1) % self.size
            del srt[bisect_left(srt, old, 0, n)]
        insort(srt, x, 0, n - 1)

    def chronological(self) -> array:
        """Values oldest first (what a checkpoint stores): the filled part only."""
        return self.ring[self.head : self.n] + self.ring[: self.head]

    def median(self) -> float:
        return self.srt[self.n // 2]

    def scale(self, floor: float) -> float:
        """``max(IQR / 1.349, floor)``: a robust standard deviation; not empty."""
        srt = self.srt
        n = self.n
        scale = (srt[(3 * n) // 4] - srt[n // 4]) / IQR_TO_SIGMA
        return scale if scale > floor else floor

    def robust_z(self, x: float, floor: float) -> float:
        """``|x - median| / max(IQR / 1.349, floor)``; the window must not be empty."""
        srt = self.srt
        n = self.n
        scale = (srt[(3 * n) // 4] - srt[n // 4]) / IQR_TO_SIGMA
        return abs(x - srt[n // 2]) / (scale if scale > floor else floor)

    def nbytes(self) -> int:
        """Bytes of the two buffers."""
        return (self.ring.buffer_info()[1] + self.srt.buffer_info()[1]) * 8


class Ring:
    """The last ``size`` values in a buffer allocated whole at creation (``-inf`` in the
    slots not yet filled, so :meth:`max` needs no bookkeeping).

    >>> r = Ring(2)
    >>> for x in [1.0, 5.0, 2.0]:
    ...     r.push(x)
    >>> list(r.chronological()), r.max(), len(r)
    ([5.0, 2.0], 5.0, 2)
    """

    __slots__ = ("buf", "head", "n")

    def __init__(self, size: int, values: array | None = None) -> None:
        check_size(size, least=0)
        self.buf = array("d", [-math.inf]) * size
        self.n = 0
        self.head = 0  # the next slot written (the oldest once full)
        for x in values or ():
            self.push(x)

    def __len__(self) -> int:
        return self.n

    def push(self, x: float) -> None:
        size = len(self.buf)
        if size == 0:
            return
        self.buf[self.head] = x
        self.head = (self.head + 1) % size
        if self.n < size:
            self.n += 1

    def max(self) -> float:
        """The largest value (``-inf`` when empty)."""
        return max(self.buf, default=-math.inf)

    def chronological(self) -> array:
        """Values oldest first, the filled part only."""
        if self.n < len(self.buf):
            return self.buf[: self.n]
        return self.buf[self.head :] + self.buf[: self.head]
