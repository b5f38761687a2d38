"""``monitoring bench loop-lag``: how long a partition's restore and checkpoint block
the event loop.

In process, no broker: one anomaly partition of ``series`` detectors (each fed
``points`` values) is snapshotted into a state table, then restored and checkpointed
through ``runtime.partition_state.PartitionStates`` (the worker's code path) with an
in-memory table and a sink that accepts everything. Meanwhile a probe task sleeps
``PROBE_S`` in a loop and records how much later than asked it woke: the loop's block.
The worker's consumer heartbeats and polls on that loop, so a block past the session
timeout (10 s) expels it from its group.

The last line printed is
``restore_s= restore_block_max_ms= restore_block_p99_ms= checkpoint_s=
checkpoint_block_max_ms= checkpoint_block_p99_ms=``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from monitoring.agents.anomaly import AnomalyAgent
from monitoring.anomaly.partition import PartitionScorers
from monitoring.config import Settings
from monitoring.runtime.partition_state import PartitionStates

PROBE_S = 0.01  # the probe's sleep: its overshoot is the loop's block


class _Sink:
    """Accepts every record (the checkpoint's writes are not what is measured)."""

    def __init__(self) -> None:
        self.records = 0

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
        headers: Any = None,
    ) -> None:  # fmt: skip
        self.records += 1

    async def flush(self) -> bool:
        return True


@dataclass(frozen=True)
class Phase:
    """One measured step: its wall time and the loop's blocks meanwhile (seconds)."""

    seconds: float
    blocks: list[float]

    @property
    def max_ms(self) -> float:
        return max(self.blocks, default=0.0) * 1000

    @property
    def p99_ms(self) -> float:
        return float(np.percentile(self.blocks, 99)) * 1000 if self.blocks else 0.0


async def _probed(step: Callable[[], Awaitable[object]]) -> Phase:
    """Run ``step`` while a probe records the loop's blocks."""
    blocks: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            t = time.perf_counter()
            await asyncio.sleep(PROBE_S)
            blocks.append(max(0.0, time.perf_counter() - t - PROBE_S))

    task = asyncio.ensure_future(probe())
    await asyncio.sleep(0)  # the probe is sleeping before the step starts
    started = time.perf_counter()
    await step()
    took = time.perf_counter() - started
    done.set()
    await task
    return Phase(took, blocks)


def state_table(agent: AnomalyAgent, series: int, points: int, seed: int = 1) -> dict[bytes, bytes]:
    """The checkpoint records of one partition of ``series`` trained detectors."""
    rng = np.random.default_rng(seed)
    part = agent.restore(0, {})
    values = rng.normal(100.0, 10.0, size=(points, series))
    for i in range(points):
        for s in range(series):
            key = f'bench_metric{{series="{s}"}}'
            part.process(i, key, "bench_metric", 1_700_000_000_000 + i * 10_000, values[i, s])
    agent.release(0, part)
    return {k: v for k, v in agent.snapshot(part) or () if v is not None}


async def measure(series: int, points: int) -> tuple[Phase, Phase, int]:
    """The restore's and the checkpoint's phases, and the table's bytes."""
    agent = AnomalyAgent(Settings(), CollectorRegistry())
    table = state_table(agent, series, points)
    states: PartitionStates[PartitionScorers] = PartitionStates(
        source_topic="bench.aggregates",
        state_topic="bench.anomaly.state",
        bootstrap="",
        outputs=_Sink(),
        restore=agent.restore,
        snapshot=agent.snapshot,
        read_state=lambda topic, p: dict(table),
    )
    restore = await _probed(lambda: states.get(0))
    restored = states.slots[0].state
    restored._dirty.update(restored._series)  # every detector changed: all written
    checkpoint = await _probed(lambda: states.checkpoint(None, force=True))
    return restore, checkpoint, sum(len(k) + len(v) for k, v in table.items())


def run(series: int, points: int) -> str:
    """Print the phases; the summary line is returned (and printed last)."""
    restore, checkpoint, nbytes = asyncio.run(measure(series, points))
    print(f"series={series} points={points} table_bytes={nbytes}")
    line = (
        f"restore_s={restore.seconds:.3f} restore_block_max_ms={restore.max_ms:.1f} "
        f"restore_block_p99_ms={restore.p99_ms:.1f} checkpoint_s={checkpoint.seconds:.3f} "
        f"checkpoint_block_max_ms={checkpoint.max_ms:.1f} "
        f"checkpoint_block_p99_ms={checkpoint.p99_ms:.1f}"
    )
    print(line)
    return line
