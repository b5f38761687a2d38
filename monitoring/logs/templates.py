"""Message templates with drain3, one miner per service, snapshot to bytes and back.

A service's records all land on one partition of the logs topic (key = service), so
one ``TemplateMiner`` per service gives template ids (drain3's cluster ids, 1, 2, ...)
that are stable for that service: ``(service, template_id)`` names a template. The
state is drain3's own snapshot format (jsonpickle of its ``Drain``, zlib-compressed,
through ``MemoryBufferPersistence``), taken only when asked (``snapshot``), not on
every change as drain3's persistence handlers do on their own.

Mining uses the first line of a message (at most ``max_chars`` characters): stack
traces live in ``exception``, and a multi-line message is named by its first line.
A template is therefore at most ``max_chars / 2`` tokens and, as a mask can lengthen
a token (``7`` -> ``<:N:>``), at most 5 x ``max_chars`` characters.

Templates are bounded per service (``max_templates``): drain3's ``max_clusters``
policy (the least recently matched template is evicted when a new one would exceed
the bound) in ``TemplateLRU``, a dict in LRU order that keeps its order through a
snapshot (drain3's ``LogClusterCache`` does not survive jsonpickle in order: a
restored miner evicted another template than the one it was saved from) and reports
what it evicted (``take_evicted``), so that the caller drops their counters. An
evicted id is never reused: a template whose text comes back is a new template.
drain3's prefix tree keeps the nodes of evicted templates (a leaf drops its stale
ids when a template is added to it), bounded by the tree's own limits (token counts
x ``max_children`` leaves), not by the number of templates ever seen.

>>> m = ServiceTemplates()
>>> m.add("user 17 logged in").template_id, m.add("user 42 logged in").change
(1, 'none')
>>> m.add("user ab7 logged in").change, m.template(1)
('updated', 'user <:*:> logged in')
>>> ServiceTemplates.restore(m.snapshot()).add("user 5 logged in").template_id
1
>>> m.add("config checksum c9c1b6d13089").template_id, m.template(2)
(2, 'config checksum <:ID:>')
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from drain3 import TemplateMiner
from drain3.drain import LogCluster
from drain3.masking import MaskingInstruction
from drain3.memory_buffer_persistence import MemoryBufferPersistence
from drain3.template_miner_config import TemplateMinerConfig

# Two masks, applied in order before drain (drain3's masker applies its instructions
# the same way, which the tests use as the reference):
# * every run of digits (with dots between, so an IPv4 address or a decimal is one
#   run) becomes ``<:N:>``. Measured: 4 us a line, against 16 us for separate
#   UUID/IP/hex/number patterns with look-arounds; drain then turns the tokens that
#   still vary (words) into ``<*>`` as it merges. Written ``\d\d*`` rather than
#   ``\d+`` (same matches) so that the regex engine scans for the first digit in C,
#   and as ``[0-9]`` for ASCII lines (``\d`` also matches other scripts' digits):
#   2.1 against 3.1 us a line on the corpus.
# * a whitespace-delimited token made of hex letters and at least two digit runs
#   (``c9c1b6d13089`` after the first mask is ``c<:N:>c<:N:>b<:N:>d<:N:>``) becomes
#   ``<:ID:>``. Such ids are unique per line, so without it every line holding one
#   missed the exact cache and took drain's tree search (a sixth of the corpus).
MASK = r"\d\d*(?:\.\d+)*"
MASK_NAME = "N"
_ASCII_MASK = r"[0-9][0-9]*(?:\.[0-9]+)*"
ID_MASK = r"(?<!\S)[a-fA-F]*<:N:>(?:[a-fA-F]+<:N:>)+[a-fA-F]*(?!\S)"
ID_MASK_NAME = "ID"
_CACHE_MAX = 20_000


class TemplateLRU(dict[int, LogCluster]):
    """drain3's ``id_to_cluster`` bounded to ``maxsize`` clusters, the least recently
    used evicted first, as drain3's ``LogClusterCache``: ``get`` and ``in`` are not a
    use, ``[]`` is (drain "touches" a matched cluster so), and so is ``touch``.
    Iteration is in LRU order, oldest first; evicted ids are appended to ``evicted``.

    >>> a, b, x, d = (LogCluster([w], i) for i, w in enumerate("abxd", 1))
    >>> c = TemplateLRU(2)
    >>> c[1], c[2] = a, b
    >>> _ = c[1]; c[3] = x; list(c), c.evicted
    ([1, 3], [2])
    >>> c.touch([x, a, x]); c[4] = d; list(c), c.evicted
    ([3, 4], [2, 1])
    """

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self.maxsize = maxsize
        self.evicted: list[int] = []

    def __getitem__(self, key: int) -> LogCluster:
        value = dict.pop(self, key)
        dict.__setitem__(self, key, value)
        return value

    def __setitem__(self, key: int, value: LogCluster) -> None:
        dict.pop(self, key, None)
        dict.__setitem__(self, key, value)
        while len(self) > self.maxsize:
            oldest = next(iter(self))
            dict.__delitem__(self, oldest)
            self.evicted.append(oldest)

    def touch(self, clusters: Sequence[LogCluster]) -> None:
        """``[]`` the id of each of ``clusters`` in order: each distinct one, in the
        order of its last use, moves to the end (clusters hash by identity: one
        object per id)."""
        recent = list(dict.fromkeys(reversed(clusters))) if len(clusters) > 1 else clusters
        pop, put = dict.pop, dict.__setitem__
        for c in reversed(recent):
            k = c.cluster_id
            put(self, k, pop(self, k))


def miner_config(
    sim_th: float = 0.4, depth: int = 4, max_clusters: int | None = None
) -> TemplateMinerConfig:
    """drain3 settings: the masks above, ``<:NAME:>`` placeholders, compressed snapshots."""
    c = TemplateMinerConfig()
    c.profiling_enabled = False
    c.drain_sim_th = sim_th
    c.drain_depth = depth
    c.drain_max_clusters = max_clusters
    c.parametrize_numeric_tokens = True
    c.snapshot_compress_state = True
    c.masking_instructions = [
        MaskingInstruction(MASK, MASK_NAME),
        MaskingInstruction(ID_MASK, ID_MASK_NAME),
    ]
    c.mask_prefix, c.mask_suffix = "<:", ":>"
    return c


class Mined(NamedTuple):
    """Result of adding one message: template id and what changed."""

    template_id: int
    change: str  # "created", "updated" or "none"
    size: int  # messages in this template so far (including this one)


_CHANGES = {"cluster_created": "created", "cluster_template_changed": "updated", "none": "none"}


class ServiceTemplates:
    """One service's drain3 miner, with an exact cache in front of its tree search.

    The cache maps a line after the digit mask, and a line after both masks (what
    drain sees), to the cluster drain matched it to without changing anything; it is
    emptied whenever drain creates a cluster or changes a template. Between such
    changes drain's tree and templates are fixed (sizes aside), so its search would
    return the same cluster: the cache changes speed, not results, and a restored
    miner (empty cache) mines exactly as the one it was saved from. A line the id
    mask changes is cached only after both masks: after the first its id makes it
    unique, and such keys would crowd out the others.
    """

    def __init__(
        self,
        miner: TemplateMiner | None = None,
        max_chars: int = 1000,
        max_templates: int | None = None,
    ) -> None:
        self.miner = miner or TemplateMiner(None, miner_config())
        self.max_chars = max_chars
        self.max_templates = max_templates
        self._lru: TemplateLRU | None = None
        if max_templates is not None:  # the clusters as they are, least recently used first
            drain = self.miner.drain
            lru = self._lru = TemplateLRU(max_templates)
            for cid, cluster in drain.id_to_cluster.items():
                lru[cid] = cluster
            drain.id_to_cluster = lru
            drain.max_clusters = max_templates
        self._mask = re.compile(MASK).sub
        self._ascii_mask = re.compile(_ASCII_MASK).sub
        self._id_mask = re.compile(ID_MASK).sub
        prefix, suffix = self.miner.config.mask_prefix, self.miner.config.mask_suffix
        self._placeholder = prefix + MASK_NAME + suffix
        self._id_placeholder = prefix + ID_MASK_NAME + suffix
        self._cache: dict[str, LogCluster] = {}
        self.change = "none"  # what mining the last line changed: "created", "updated"

    def add(self, message: str) -> Mined:
        """Mine one message (its first line)."""
        c = self.cluster_of(message)
        return Mined(c.cluster_id, self.change, c.size)

    def cluster_of(self, message: str) -> LogCluster:
        """``add`` without the tuple: drain's cluster of the message (its ``cluster_id``
        and ``size`` after counting this message); ``change`` says what drain changed."""
        return self.mine_masked(self.masked([message])[0])

    def masked(self, messages: Sequence[str]) -> list[str]:
        """The first lines of ``messages`` after the digit mask, the cache's keys (one
        regex call for all: the mask never matches the newlines between them)."""
        if not messages:
            return []
        mc = self.max_chars
        lines = "\n".join([(m.split("\n", 1)[0] if "\n" in m else m)[:mc] for m in messages])
        mask = self._ascii_mask if lines.isascii() else self._mask
        return [x.strip() for x in mask(self._placeholder, lines).split("\n")]

    def mine_masked(self, masked: str) -> LogCluster:
        """``cluster_of`` a line already through ``masked``: the cache's cluster, or
        drain's tree search (which may create or change one)."""
        out: list[LogCluster] = []
        if self.clusters_from((masked,), 0, out):
            self.change = "none"
            return out[0]
        return self._search(self._id_mask(self._id_placeholder, masked))

    def clusters_from(self, masked: Sequence[str], start: int, out: list[LogCluster]) -> int:
        """Mine ``masked[start:]`` (from ``masked``) in order while the cache knows each
        line, appending its cluster to ``out`` (nothing changes in drain). Returns the
        index of the first line the cache does not know (not mined: ``mine_masked`` it,
        drain may change) or ``len(masked)``."""
        cache, id_mask, id_placeholder = self._cache, self._id_mask, self._id_placeholder
        append = out.append
        first = len(out)
        end = len(masked)
        for j in range(start, len(masked)):
            m = masked[j]
            cluster = cache.get(m)
            if cluster is None:
                both = id_mask(id_placeholder, m)
                cluster = cache.get(both) if both != m else None
                if cluster is None:
                    end = j
                    break
            cluster.size += 1
            append(cluster)
        if self._lru is not None and len(out) > first:  # drain would have touched each
            self._lru.touch(out[first:])
        return end

    def _search(self, masked: str) -> LogCluster:
        """drain's tree search (it may create or change a cluster)."""
        cluster, change = self.miner.drain.add_log_message(masked)
        if change == "none":
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[masked] = cluster  # the line itself when the id mask changed nothing
        else:
            self._cache.clear()
        self.change = _CHANGES[change]
        return cluster

    def take_evicted(self) -> list[int]:
        """Ids of the templates evicted since the last call (oldest first)."""
        if self._lru is None or not self._lru.evicted:
            return []
        out, self._lru.evicted = self._lru.evicted, []
        return out

    def template(self, template_id: int) -> str | None:
        """The current text of a template, or None if unknown."""
        c = self.miner.drain.id_to_cluster.get(template_id)
        return None if c is None else str(c.get_template())

    def __len__(self) -> int:
        return len(self.miner.drain.clusters)

    def snapshot(self) -> bytes:
        """drain3's state as bytes (its own format: zlib + base64 of jsonpickle)."""
        handler = MemoryBufferPersistence()
        drain = self.miner.drain
        lru = drain.id_to_cluster
        self.miner.persistence_handler = handler
        drain.id_to_cluster = dict(lru)  # a plain dict, in LRU order: jsonpickle keeps it
        try:
            self.miner.save_state("checkpoint")
        finally:
            self.miner.persistence_handler = None
            drain.id_to_cluster = lru
        state: bytes = handler.state
        return state

    @classmethod
    def restore(
        cls, state: bytes, max_chars: int = 1000, max_templates: int | None = None
    ) -> ServiceTemplates:
        """A miner continuing from ``snapshot()``: same ids, same templates, same LRU
        order. If ``max_templates`` is below the snapshot's count, the least recently
        used are evicted now (``take_evicted``)."""
        handler = MemoryBufferPersistence()
        handler.state = state
        miner = TemplateMiner(handler, miner_config())
        miner.persistence_handler = None  # no automatic snapshots on every change
        return cls(miner, max_chars, max_templates)
