"""The KV cache's blocks: who holds which, and a prefix cache of full blocks.

The C++ cache (``_core.KvCache``) is ``n_blocks`` blocks of ``block_tokens`` positions; a
sequence's *block table* lists the blocks that hold its positions in order. This module decides
which block goes where; the cache itself never allocates.

Design (vLLM's, docs/architecture.md):

* **One budget.** Every block is in exactly one of three states: *held* (refcount > 0: part of
  a running sequence's table), *cached* (refcount 0 but its content is registered in the prefix
  cache, so a later prompt can reuse it) or *empty*. Cached and empty blocks together form the
  free list, from which allocation takes (evicting a cached block's registration when it takes
  one). There is no second pool for the prefix cache: reusing a prefix never costs memory the
  budget does not have, and allocation is always checked against the free count before anything
  changes (an allocation either succeeds entirely or changes nothing).
* **Prefix cache of full blocks.** A block whose ``block_tokens`` positions are all computed is
  registered under a chained hash of (the previous block's hash, its token ids), so equal hashes
  mean equal prefixes. A new sequence takes the longest run of registered blocks matching its
  prompt (refcount + 1: blocks can be shared by any number of sequences). Only full blocks are
  shared and a sequence writes only past its shared blocks, so no block is ever written while
  shared (no copy-on-write). The match stops a block short of a prompt that is an exact
  multiple of the block size, so the last prompt token is always computed (its logits are
  needed).
* **Eviction order.** The free list is LRU: blocks are taken from its front. A finished
  sequence's blocks go to the back in reverse order (its last block first), so its first blocks,
  the ones most likely shared by the next prompt (a system prompt), are evicted last; blocks
  holding nothing reusable (not full, or a duplicate of a registered block) go to the front.

Sharing a block between sequences is exact because the decoder is batch invariant: a position's
K/V depend only on the sequence's own tokens, never on which step or batch computed them.

Not thread-safe: the scheduler owns one, under the engine's lock.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import ShapeError

__all__ = ["BlockManager", "BlockTable", "block_hashes"]

_ROOT = b"bitnet-kv-root"  # the "parent hash" of a sequence's first block


def _chain(parent: bytes, tokens: Sequence[int]) -> bytes:
    data = np.asarray(tokens, dtype=np.int64).tobytes()
    return hashlib.blake2b(parent + data, digest_size=16).digest()


def block_hashes(tokens: Sequence[int], block_tokens: int, n_blocks: int) -> list[bytes]:
    """Chained hashes of the first n_blocks full blocks of tokens.

    hash[i] = H(hash[i-1], tokens of block i): equal hashes mean equal token prefixes (a 128-bit
    BLAKE2b digest: collisions are not a practical concern, as with vLLM's SHA-256 option).
    """
    out: list[bytes] = []
    parent = _ROOT
    for i in range(n_blocks):
        parent = _chain(parent, tokens[i * block_tokens : (i + 1) * block_tokens])
        out.append(parent)
    return out


@dataclass(eq=False)
class BlockTable:
    """The blocks of one sequence, in position order.

    Attributes:
        blocks: blocks[i] holds positions [i * block_tokens, (i + 1) * block_tokens).
        hashes: Chained hashes of the first len(hashes) blocks, which are full and computed.
    """

    blocks: list[int] = field(default_factory=list)
    hashes: list[bytes] = field(default_factory=list)


@dataclass(frozen=True)
class PrefixMatch:
    """Registered blocks matching the start of a prompt (see BlockManager.match)."""

    blocks: tuple[int, ...]
    hashes: tuple[bytes, ...]

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)


class BlockManager:
    """Reference counts, the free list and the prefix cache of one KV cache's blocks.

    Args:
        n_blocks: Blocks in the cache (the whole KV budget).
        block_tokens: Positions per block.
        prefix_cache: Register full blocks for reuse (False: blocks are forgotten when freed).

    Raises:
        ShapeError: n_blocks or block_tokens below 1.
    """

    def __init__(self, n_blocks: int, block_tokens: int, *, prefix_cache: bool = True) -> None:
        if n_blocks < 1 or block_tokens < 1:
            raise ShapeError(
                f"need n_blocks >= 1 and block_tokens >= 1, got {n_blocks} and {block_tokens}"
            )
        self.n_blocks = n_blocks
        self.block_tokens = block_tokens
        self.prefix_cache = prefix_cache
        self._ref = [0] * n_blocks
        self._hash: list[bytes | None] = [None] * n_blocks
        self._cached: dict[bytes, int] = {}  # registered hash -> block
        self._free: OrderedDict[int, None] = OrderedDict((b, None) for b in range(n_blocks))
        self.evictions_total = 0  # cached blocks whose registration was dropped to reuse them

    # -- counts ------------------------------------------------------------------------------
    @property
    def n_free(self) -> int:
        """Blocks that can be allocated now (empty or cached)."""
        return len(self._free)

    @property
    def n_held(self) -> int:
        """Blocks in some sequence's table."""
        return self.n_blocks - len(self._free)

    @property
    def n_cached(self) -> int:
        """Blocks registered in the prefix cache (held or free)."""
        return len(self._cached)

    @property
    def n_cached_free(self) -> int:
        """Registered blocks that no sequence holds (reusable, and evictable)."""
        return sum(1 for b in self._cached.values() if self._ref[b] == 0)

    def blocks_for(self, n_tokens: int) -> int:
        """Blocks that hold n_tokens positions."""
        return -(-n_tokens // self.block_tokens)

    def refcount(self, block: int) -> int:
        return self._ref[block]

    # -- prefix cache ------------------------------------------------------------------------
    def match(self, tokens: Sequence[int], limit: int) -> PrefixMatch:
        """The registered blocks matching the longest prefix of tokens[:limit], full blocks only.

        Nothing changes: pass the result to :meth:`allocate` to take the blocks.
        """
        if not self.prefix_cache:
            return PrefixMatch((), ())
        blocks: list[int] = []
        hashes: list[bytes] = []
        parent = _ROOT
        for i in range(max(0, limit) // self.block_tokens):
            h = _chain(parent, tokens[i * self.block_tokens : (i + 1) * self.block_tokens])
            block = self._cached.get(h)
            if block is None:
                break
            blocks.append(block)
            hashes.append(h)
            parent = h
        return PrefixMatch(tuple(blocks), tuple(hashes))

    def register(self, table: BlockTable, tokens: Sequence[int], n_computed: int) -> None:
        """Registers the table's blocks that became full and computed (n_computed positions).

        A block whose content is already registered under another block stays unregistered (it
        is freed to the front of the free list); the sequence keeps using it.
        """
        bt = self.block_tokens
        n_full = min(n_computed // bt, len(table.blocks))
        parent = table.hashes[-1] if table.hashes else _ROOT
        for i in range(len(table.hashes), n_full):
            h = _chain(parent, tokens[i * bt : (i + 1) * bt])
            table.hashes.append(h)
            parent = h
            block = table.blocks[i]
            if self.prefix_cache and h not in self._cached and self._hash[block] is None:
                self._cached[h] = block
                self._hash[block] = h

    # -- allocation --------------------------------------------------------------------------
    def can_allocate(self, match: PrefixMatch, n_tokens: int, *, reserve: int = 0) -> bool:
        """Whether :meth:`allocate` would succeed and still leave `reserve` blocks free."""
        return self._shortfall(match, n_tokens) + reserve <= 0

    def _shortfall(self, match: PrefixMatch, n_tokens: int) -> int:
        need = max(0, self.blocks_for(n_tokens) - match.n_blocks)
        # Matched blocks sitting in the free list stop being free when taken.
        taken = sum(1 for b in match.blocks if self._ref[b] == 0)
        return need - (len(self._free) - taken)

    def allocate(
        self, table: BlockTable, match: PrefixMatch, n_tokens: int, *, reserve: int = 0
    ) -> bool:
        """Fills an empty table: the matched blocks, then new blocks up to n_tokens positions.

        Returns False and changes nothing when fewer than the blocks needed plus `reserve`
        are free.
        """
        if table.blocks:
            raise ShapeError("allocate() needs an empty block table")
        if not self.can_allocate(match, n_tokens, reserve=reserve):
            return False
        for b in match.blocks:
            self._take(b)
        table.blocks.extend(match.blocks)
        table.hashes.extend(match.hashes)
        for _ in range(self.blocks_for(n_tokens) - match.n_blocks):
            table.blocks.append(self._pop_free())
        return True

    def grow(self, table: BlockTable, n_tokens: int) -> bool:
        """Adds blocks so that the table holds n_tokens positions; False (no change) when not
        enough blocks are free."""
        need = self.blocks_for(n_tokens) - len(table.blocks)
        if need <= 0:
            return True
        if need > len(self._free):
            return False
        for _ in range(need):
            table.blocks.append(self._pop_free())
        return True

    def free(self, table: BlockTable) -> None:
        """Gives back a table's blocks (the table is emptied); see the module docstring for the
        order they take in the free list."""
        for b in reversed(table.blocks):
            self._ref[b] -= 1
            if self._ref[b] < 0:
                raise ShapeError(f"block {b} freed more often than taken")
            if self._ref[b] == 0:
                self._free[b] = None
                if self._hash[b] is None:
                    self._free.move_to_end(b, last=False)  # nothing reusable: taken first
        table.blocks.clear()
        table.hashes.clear()

    def clear_prefix_cache(self) -> int:
        """Forgets every registered block no sequence holds; returns how many."""
        n = 0
        for h, b in list(self._cached.items()):
            if self._ref[b] == 0:
                del self._cached[h]
                self._hash[b] = None
                self._free.move_to_end(b, last=False)
                n += 1
        return n

    def _take(self, block: int) -> None:
        if self._ref[block] == 0:
            del self._free[block]
        self._ref[block] += 1

    def _pop_free(self) -> int:
        block, _ = self._free.popitem(last=False)
        h = self._hash[block]
        if h is not None:  # evict its registration: the block is about to be overwritten
            del self._cached[h]
            self._hash[block] = None
            self.evictions_total += 1
        self._ref[block] = 1
        return block

    def check(self) -> None:
        """Asserts the invariants (for tests): refcounts, free list and registry agree."""
        for b in range(self.n_blocks):
            assert self._ref[b] >= 0, b
            assert (self._ref[b] == 0) == (b in self._free), b
            h = self._hash[b]
            assert h is None or self._cached.get(h) == b, b
        assert all(self._hash[b] == h for h, b in self._cached.items())
