"""How the key enters a row hash (schema v3). Frozen: stored row hashes depend on every detail.

Migration 0003 imports this module to rewrite the hashes stored before v3, so changing anything
here would silently change what that migration computes. A new definition needs a new module and
a migration of its own.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

COLUMN_MIX = np.uint64(0x100000001B3)  # combines column hashes in staging.row_hashes, and the key here
_MIX_INVERSE = np.uint64(pow(0x100000001B3, -1, 1 << 64))
_KEY_MIX = np.uint64(0x87C37B91114253D5)
_SLICE = 8192  # keys hashed together: eight shifted copies of their bytes, a few MB
_BYTE_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [(1 << 64) - 1], dtype=np.uint64)


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: every input bit affects every output bit."""
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


def key_hashes(keys: pa.Array) -> np.ndarray:
    """uint64 hash of each key's UTF-8 bytes (see ``_key_hashes``), a slice of keys at a time so
    that its working arrays stay small whatever the batch size."""
    if len(keys) <= _SLICE:
        return _key_hashes(keys)
    return np.concatenate([_key_hashes(keys.slice(start, _SLICE)) for start in range(0, len(keys), _SLICE)])


def _key_hashes(keys: pa.Array) -> np.ndarray:
    """uint64 hash of each key's UTF-8 bytes, vectorised over 8-byte words.

    Keys are nearly all distinct, so hashing them as Python strings would cost a reload more than
    everything else it does on the client. Here the i-th word of every key is read at once (from
    eight byte-shifted views of the data, so unaligned words are plain array lookups), with the
    bytes past a key's end masked off; keys stop mixing after their last word. Keys are never null
    (records without one are rejected upstream).
    """
    keys = keys if pa.types.is_large_string(keys.type) else keys.cast(pa.large_string())
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    offsets = np.frombuffer(keys.buffers()[1], dtype=np.int64)[keys.offset:keys.offset + n + 1]
    data = keys.buffers()[2]
    used = np.frombuffer(data, dtype=np.uint8)[offsets[0]:offsets[-1]] if data is not None else np.zeros(0, np.uint8)
    padded = np.zeros(len(used) + 16, dtype=np.uint8)
    padded[:len(used)] = used
    count = (len(padded) - 8) // 8
    shifted = np.stack([np.frombuffer(padded, dtype="<u8", count=count, offset=k) for k in range(8)])
    starts, lengths = offsets[:-1] - offsets[0], np.diff(offsets)
    words = (lengths + 7) // 8
    order = None if words.min() == words.max() else np.argsort(-words, kind="stable")
    if order is not None:  # longest first: the keys still mixing at word j are a prefix
        starts, lengths, words = starts[order], lengths[order], words[order]
    active = np.searchsorted(-words, -np.arange(int(words.max())), side="left")
    with np.errstate(over="ignore"):
        h = _fmix64(lengths.astype(np.uint64) ^ np.uint64(0x9E3779B97F4A7C15))
        for j in range(int(words.max())):
            a = int(active[j]) if order is not None else n  # keys with more than j words
            at = starts[:a] + 8 * j
            word = shifted[at & 7, at >> 3] & _BYTE_MASKS[np.minimum(lengths[:a] - 8 * j, 8)]
            mixed = (h[:a] ^ word) * _KEY_MIX
            h[:a] = mixed ^ (mixed >> np.uint64(31))
        h = _fmix64(h)
    if order is None:
        return h
    out = np.empty(n, dtype=np.uint64)
    out[order] = h
    return out


def fold_key(content_hashes: np.ndarray, keys: pa.Array) -> np.ndarray:
    """Signed row hashes from the hashes of the content columns and the keys (hashed last)."""
    with np.errstate(over="ignore"):
        return ((content_hashes.view(np.uint64) ^ key_hashes(keys)) * COLUMN_MIX).view(np.int64)


def unfold_key(row_hashes: np.ndarray, keys: pa.Array) -> np.ndarray:
    """The content hashes back from row hashes (the multiplier is odd, hence invertible)."""
    with np.errstate(over="ignore"):
        return ((row_hashes.view(np.uint64) * _MIX_INVERSE) ^ key_hashes(keys)).view(np.int64)
