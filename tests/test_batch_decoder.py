"""The batched decoder and the paged KV cache (_core.BatchDecoder, _core.KvCache).

The central claim is batch invariance, bit for bit: a sequence's logits and the K/V it writes
depend only on its own tokens and positions, never on the other sequences of a step, how its
prompt was split into steps, the thread count, the block size, or which blocks it shares. Every
comparison below that says "equal" is exact (np.testing.assert_array_equal on float32).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np
import pytest

import bitnet
from bitnet import _core

MODELS = Path(__file__).resolve().parent.parent / "models"
TERNARY = MODELS / "bitnet-kjv-5m-tq2_0.gguf"
BINARY = MODELS / "bitnet-kjv-binary-tiny-q1_0.gguf"
KJV = (
    "In the beginning God created the heaven and the earth. And the earth was without form, and "
    "void; and darkness was upon the face of the deep. And the Spirit of God moved upon the face "
    "of the waters. And God said, Let there be light: and there was light. And God saw the light, "
    "that it was good: and God divided the light from the darkness. And God called the light Day, "
    "and the darkness he called Night. And the evening and the morning were the first day. And "
    "God said, Let there be a firmament in the midst of the waters, and let it divide the waters "
    "from the waters. And God made the firmament, and divided the waters which were under the "
    "firmament from the waters which were above the firmament: and it was so. And God called the "
    "firmament Heaven. And the evening and the morning were the second day. And God said, Let the "
    "waters under the heaven be gathered together unto one place, and let the dry land appear: "
    "and it was so. And God called the dry land Earth; and the gathering together of the waters "
    "called he Seas: and God saw that it was good. And God said, Let the earth bring forth grass, "
    "the herb yielding seed, and the fruit tree yielding fruit after his kind, whose seed is in "
    "itself, upon the earth: and it was so. And the earth brought forth grass, and herb yielding "
    "seed after his kind, and the tree yielding fruit, whose seed was in itself, after his kind: "
    "and God saw that it was good. And the evening and the morning were the third day."
)


@pytest.fixture(scope="module", params=["ternary", "binary", "hf-2b4t"])
def core_model(request: pytest.FixtureRequest) -> _core.Model:
    """The bundled ternary and binary models, and a converted Hugging Face fixture (GQA)."""
    if request.param == "ternary":
        return _core.Model(str(TERNARY))
    if request.param == "binary":
        return _core.Model(str(BINARY))
    converted = request.getfixturevalue("converted")
    return _core.Model(str(converted("2b4t-bf16")))


def _ids(model: _core.Model, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, model.config["n_vocab"], n).astype(np.int32)


def _alone(
    model: _core.Model, tokens: np.ndarray, kv_type: str = "f16", block_tokens: int = 32
) -> np.ndarray:
    """Every position's logits of one sequence in one step, in a fresh cache, on one thread."""
    n_blocks = (len(tokens) + block_tokens - 1) // block_tokens
    cache = _core.KvCache(model, n_blocks=n_blocks, kv_type=kv_type, block_tokens=block_tokens)
    dec = _core.BatchDecoder(model, cache, n_batch=len(tokens), n_threads=1)
    return dec.step([(np.arange(n_blocks, dtype=np.int32), 0, tokens, 2)])


@dataclass
class _Seq:
    tokens: np.ndarray
    chunks: list[int]  # sizes of its successive feeds, one per step it takes part in
    join: int = 0  # the step it joins at
    table: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    done: int = 0
    rows: list[np.ndarray] = field(default_factory=list)


def _run_mixed(dec: _core.BatchDecoder, seqs: list[_Seq], block_tokens: int, seed: int) -> None:
    """Drives the sequences through shared steps (each with its own blocks, scattered over the
    cache), asking for every row; the rows land in each sequence's .rows."""
    rng = np.random.default_rng(seed)
    free = list(rng.permutation(dec.cache.n_blocks))
    for s in seqs:
        need = (len(s.tokens) + block_tokens - 1) // block_tokens
        s.table = np.array([free.pop() for _ in range(need)], dtype=np.int32)
    step = 0
    while any(s.done < len(s.tokens) for s in seqs):
        batch = []
        active = [s for s in seqs if s.join <= step and s.done < len(s.tokens)]
        for s in active:
            n = s.chunks[len(s.rows)] if len(s.rows) < len(s.chunks) else 1
            n = min(n, len(s.tokens) - s.done)
            batch.append((s, n))
        if batch:
            out = dec.step([(s.table, s.done, s.tokens[s.done : s.done + n], 2) for s, n in batch])
            row = 0
            for s, n in batch:
                s.rows.append(out[row : row + n])
                s.done += n
                row += n
        step += 1


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_sequence_alone_equals_inside_mixed_steps(core_model: _core.Model, n_threads: int) -> None:
    # Sequence 0 prefills in uneven chunks that cross the 256-position attention chunk, while the
    # others join late, decode token by token, or prefill at the same time at other positions.
    n_vocab = core_model.config["n_vocab"]
    lengths = [300, 40, 270, 9]
    seqs = [
        _Seq(_ids(core_model, lengths[0], 1), [7, 1, 33, 100, 120, 31, 1, 1]),
        _Seq(_ids(core_model, lengths[1], 2), [1] * 40, join=1),
        _Seq(_ids(core_model, lengths[2], 3), [250, 1, 1, 5], join=2),
        _Seq(_ids(core_model, lengths[3], 4), [9], join=4),
    ]
    bt = 32
    n_blocks = sum((n + bt - 1) // bt for n in lengths) + 3
    cache = _core.KvCache(core_model, n_blocks=n_blocks, block_tokens=bt)
    dec = _core.BatchDecoder(core_model, cache, n_batch=400, n_threads=n_threads)
    _run_mixed(dec, seqs, bt, seed=n_threads)
    for i, s in enumerate(seqs):
        got = np.concatenate(s.rows)
        assert got.shape == (len(s.tokens), n_vocab)
        np.testing.assert_array_equal(got, _alone(core_model, s.tokens), err_msg=f"sequence {i}")


@pytest.mark.parametrize("kv_type", ["f32", "q8_0"])
def test_invariance_holds_for_every_kv_type(kv_type: str) -> None:
    model = _core.Model(str(TERNARY))
    seqs = [
        _Seq(_ids(model, 280, 5), [3, 250, 1, 1, 1]),
        _Seq(_ids(model, 20, 6), [1] * 20),
        _Seq(_ids(model, 64, 7), [64], join=2),
    ]
    cache = _core.KvCache(model, n_blocks=16, kv_type=kv_type, block_tokens=32)
    dec = _core.BatchDecoder(model, cache, n_batch=512, n_threads=2)
    _run_mixed(dec, seqs, 32, seed=11)
    for s in seqs:
        np.testing.assert_array_equal(np.concatenate(s.rows), _alone(model, s.tokens, kv_type))


@pytest.mark.parametrize("splits", [[1], [5, 31, 33], [255, 1, 1], [256, 2], [257], [100, 200]])
def test_chunked_prefill_equals_one_pass(splits: list[int]) -> None:
    model = _core.Model(str(TERNARY))
    tokens = _ids(model, 320, 8)
    want = _alone(model, tokens)
    cache = _core.KvCache(model, n_blocks=10, block_tokens=32)
    dec = _core.BatchDecoder(model, cache, n_batch=320, n_threads=2)
    table = np.arange(10, dtype=np.int32)
    rows, done, i = [], 0, 0
    while done < len(tokens):
        n = min(splits[i] if i < len(splits) else 64, len(tokens) - done)
        rows.append(dec.step([(table, done, tokens[done : done + n], 2)]))
        done, i = done + n, i + 1
    np.testing.assert_array_equal(np.concatenate(rows), want)
    # logits=1 gives the last row of the same computation.
    cache2 = _core.KvCache(model, n_blocks=10, block_tokens=32)
    dec2 = _core.BatchDecoder(model, cache2, n_batch=320, n_threads=1)
    last = dec2.step([(table, 0, tokens, 1)])
    np.testing.assert_array_equal(last, want[-1:])


@pytest.mark.parametrize("block_tokens", [1, 7, 32, 100, 512])
def test_block_size_does_not_change_logits(block_tokens: int) -> None:
    model = _core.Model(str(TERNARY))
    tokens = _ids(model, 300, 9)
    np.testing.assert_array_equal(
        _alone(model, tokens, block_tokens=block_tokens), _alone(model, tokens)
    )


@pytest.mark.parametrize("kv_type", ["f32", "f16", "q8_0"])
def test_kv_written_by_prefill_equals_token_by_token_decode(kv_type: str) -> None:
    model = _core.Model(str(TERNARY))
    tokens = _ids(model, 70, 10)
    table = np.arange(3, dtype=np.int32)
    a = _core.KvCache(model, n_blocks=3, kv_type=kv_type, block_tokens=32)
    _core.BatchDecoder(model, a, n_batch=70, n_threads=3).step([(table, 0, tokens, 0)])
    b = _core.KvCache(model, n_blocks=3, kv_type=kv_type, block_tokens=32)
    dec = _core.BatchDecoder(model, b, n_batch=1, n_threads=1)
    for i, t in enumerate(tokens):
        dec.step([(table, i, np.array([t], np.int32), 0)])
    for block in range(3):
        np.testing.assert_array_equal(a.block_data(block), b.block_data(block))


def test_shared_prefix_blocks_equal_private_copies() -> None:
    model = _core.Model(str(TERNARY))
    bt = 32
    prefix = _ids(model, 2 * bt + 8, 12)  # two full blocks and 8 positions of a third
    tails = [_ids(model, 30, 13), _ids(model, 5, 14), _ids(model, 1, 15)]
    cache = _core.KvCache(model, n_blocks=16, block_tokens=bt)
    dec = _core.BatchDecoder(model, cache, n_batch=128, n_threads=2)
    dec.step([(np.array([0, 1, 2], np.int32), 0, prefix, 0)])
    # Each continuation shares the two full blocks and gets its own copy of the partial one.
    tables = []
    for i in range(len(tails)):
        cache.copy_block(2, 3 + 2 * i, 8)
        tables.append(np.array([0, 1, 3 + 2 * i, 4 + 2 * i], np.int32))
    out = dec.step([(t, len(prefix), tail, 2) for t, tail in zip(tables, tails, strict=True)])
    row = 0
    for tail in tails:
        want = _alone(model, np.concatenate([prefix, tail]))[len(prefix) :]
        np.testing.assert_array_equal(out[row : row + len(tail)], want)
        row += len(tail)
    # The shared blocks are as the prefix left them.
    fresh = _core.KvCache(model, n_blocks=3, block_tokens=bt)
    _core.BatchDecoder(model, fresh, n_batch=128, n_threads=1).step(
        [(np.arange(3, dtype=np.int32), 0, prefix, 0)]
    )
    for block in (0, 1):
        np.testing.assert_array_equal(cache.block_data(block), fresh.block_data(block))


def test_session_equals_batch_decoder() -> None:
    model = _core.Model(str(TERNARY))
    tokens = _ids(model, 290, 16)
    session = _core.Session(model, 512, 64, 2, kv_type="q8_0")
    got = np.concatenate([session.decode(tokens[:100], True), session.decode(tokens[100:], True)])
    np.testing.assert_array_equal(got, _alone(model, tokens, "q8_0"))
    assert session.kv_type == "q8_0" and not session.kv_f16


def _nll(logits: np.ndarray, tokens: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(tokens) - 1), tokens[1:]].mean())


@pytest.mark.parametrize("path", [TERNARY, BINARY], ids=["ternary", "binary"])
def test_f16_and_q8_0_kv_against_f32(path: Path) -> None:
    # Measured on this text (364 tokens, past the models' 256-token training context), per
    # position max|diff| / std of the f32 logits: f16 0.088 (ternary) and 0.027 (binary), q8_0
    # 0.106 and 0.030; perplexity: f16 +0.008% / -0.0000%, q8_0 +0.08% / +0.004%. The bounds
    # leave about 2x room; the perplexity bounds are the targets (0.1%, 0.5%).
    model = bitnet.load(path)
    tokens = np.asarray(model.tokenize(KJV), dtype=np.int32)
    ref = _alone(model._core, tokens, "f32")
    std = ref.std(axis=1)
    for kv_type, max_bound, mean_bound, ppl_bound in (
        ("f16", 0.2, 0.04, 1e-3),
        ("q8_0", 0.25, 0.06, 5e-3),
    ):
        got = _alone(model._core, tokens, kv_type)
        rel = np.abs(got - ref).max(axis=1) / std
        assert rel.max() <= max_bound, (kv_type, rel.max())
        assert rel.mean() <= mean_bound, (kv_type, rel.mean())
        ratio = np.exp(_nll(got, tokens) - _nll(ref, tokens))
        assert abs(ratio - 1) < ppl_bound, (kv_type, ratio)


# ---- the cache -------------------------------------------------------------------------------


def test_cache_geometry_and_memory_growth() -> None:
    model = _core.Model(str(TERNARY))
    cfg = model.config
    per_row = {
        "f32": 4 * cfg["head_dim"],
        "f16": 2 * cfg["head_dim"],
        "q8_0": cfg["head_dim"] + cfg["head_dim"] // 16,
    }
    for kv_type, row in per_row.items():
        cache = _core.KvCache(model, n_blocks=4000, kv_type=kv_type, block_tokens=32)
        assert (cache.kv_type, cache.block_tokens, cache.n_blocks) == (kv_type, 32, 4000)
        assert cache.bytes_per_token == 2 * cfg["n_layers"] * cfg["n_kv_heads"] * row
        tile = -(-32 * row // 64) * 64
        assert cache.bytes_per_block == 2 * cfg["n_layers"] * cfg["n_kv_heads"] * tile
        assert cache.reserved_bytes == 4000 * cache.bytes_per_block
        before = cache.resident_bytes
        assert before < cache.reserved_bytes // 20  # reserved, not touched
        dec = _core.BatchDecoder(model, cache, n_batch=64, n_threads=1)
        dec.step([(np.array([5, 9], np.int32), 0, _ids(model, 64, 17), 0)])
        after = cache.resident_bytes
        assert after > before
        assert after - before <= 2 * cache.bytes_per_block + (2 << 20)  # two blocks (and a page)


def test_q8_0_needs_head_dim_multiple_of_32(tmp_path: Path) -> None:
    # The ternary model with 16 heads of 16 (q) and 8 kv heads: same tensors, head_dim 16.
    src = gguf.GGUFReader(TERNARY)
    dst = tmp_path / "hd16.gguf"
    w = gguf.GGUFWriter(dst, "bitnet")
    override = {
        "bitnet.attention.head_count": 16,
        "bitnet.attention.head_count_kv": 8,
        "bitnet.rope.dimension_count": 16,
    }
    for key, fld in src.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        if key in override:
            w.add_uint32(key, override[key])
        elif fld.types[0] == gguf.GGUFValueType.ARRAY:
            w.add_key_value(key, fld.contents(), fld.types[0], sub_type=fld.types[-1])
        else:
            w.add_key_value(key, fld.contents(), fld.types[0])
    for t in src.tensors:
        w.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    model = _core.Model(str(dst))
    assert model.config["head_dim"] == 16
    with pytest.raises(bitnet.UnsupportedError, match=r"head_dim.*multiple of 32.*16"):
        _core.KvCache(model, n_blocks=2, kv_type="q8_0")
    with pytest.raises(bitnet.UnsupportedError, match="head_dim"):
        bitnet.load(dst, kv_cache="q8_0")
    # f16 works, and a sequence is still the same alone and in company.
    tokens = _ids(model, 40, 18)
    cache = _core.KvCache(model, n_blocks=8, block_tokens=16)
    dec = _core.BatchDecoder(model, cache, n_batch=64, n_threads=2)
    out = dec.step(
        [(np.array([0, 1, 2], np.int32), 0, tokens, 2), (np.array([3], np.int32), 0, tokens[:5], 2)]
    )
    np.testing.assert_array_equal(out[:40], _alone(model, tokens, block_tokens=16))


def test_cache_argument_errors() -> None:
    model = _core.Model(str(TERNARY))
    with pytest.raises(
        bitnet.ShapeError, match="kv_type must be 'f32', 'f16' or 'q8_0', not 'int4'"
    ):
        _core.KvCache(model, n_blocks=2, kv_type="int4")
    with pytest.raises(bitnet.ShapeError, match="n_blocks must be at least 1, got 0"):
        _core.KvCache(model, n_blocks=0)
    with pytest.raises(bitnet.ShapeError, match="block_tokens"):
        _core.KvCache(model, n_blocks=2, block_tokens=0)
    with pytest.raises(bitnet.ShapeError, match=r"n_blocks 1099511627776 .* exceeds"):
        _core.KvCache(model, n_blocks=2**40)
    cache = _core.KvCache(model, n_blocks=2)
    with pytest.raises(bitnet.ShapeError, match="copy_block: dst 2 is not a block"):
        cache.copy_block(0, 2, 1)
    with pytest.raises(bitnet.ShapeError, match="copy_block: n_tokens 33 is out of range"):
        cache.copy_block(0, 1, 33)
    with pytest.raises(bitnet.ShapeError, match="block -1 is not a block"):
        cache.block_data(-1)
    other = _core.Model(str(BINARY))
    with pytest.raises(bitnet.ShapeError, match="made for 5 layers"):
        _core.BatchDecoder(other, cache)
    with pytest.raises(bitnet.ShapeError, match="n_batch"):
        _core.BatchDecoder(model, cache, n_batch=0)
    with pytest.raises(bitnet.ShapeError, match="n_threads"):
        _core.BatchDecoder(model, cache, n_threads=-1)


def test_session_kv_options() -> None:
    model = _core.Model(str(TERNARY))
    assert _core.Session(model, 64).kv_type == "f16"
    assert _core.Session(model, 64, 8, 1, False).kv_type == "f32"  # the older positional kv_f16
    assert _core.Session(model, 64, 8, 1, True).kv_f16
    assert _core.Session(model, 64, kv_type="q8_0").kv_type == "q8_0"
    with pytest.raises(bitnet.ShapeError, match="kv_f16 contradicts kv_type 'f32'"):
        _core.Session(model, 64, 8, 1, True, kv_type="f32")
    with pytest.raises(bitnet.ShapeError, match="kv_cache must be"):
        bitnet.load(TERNARY, kv_cache="q4_0")
    session = _core.Session(model, 4096)
    assert session.kv_resident_bytes < 4096 * 1024  # nothing written yet


# ---- step() validation -------------------------------------------------------------------------


def _bad_steps(n_vocab: int) -> list[tuple[list[object], str]]:
    t = np.array
    i32 = np.int32
    ok = (t([0, 1], i32), 0, t([1, 2, 3], i32), 1)
    return [
        ([], "a step needs at least one sequence"),
        ([ok, (t([2], i32), 0, t([], i32), 1)], "sequence 1: no tokens"),
        (
            [ok, (t([2], i32), 0, t([1, n_vocab], i32), 1)],
            f"sequence 1: token id {n_vocab} at index 1 is out of range",
        ),
        ([(t([2], i32), 0, t([-1], i32), 1)], "sequence 0: token id -1"),
        ([ok, (t([2], i32), -1, t([1], i32), 1)], "sequence 1: n_past -1"),
        (
            [ok, (t([2], i32), 32, t([1], i32), 1)],
            r"sequence 1: its block table has 1 blocks .32 positions., fewer than n_past \+ tokens = 33",
        ),
        (
            [ok, (t([2, 99], i32), 30, t([1, 2, 3], i32), 1)],
            r"sequence 1: block_table\[1\] = 99 is not a block of the cache",
        ),
        (
            [ok, (t([3, 3], i32), 30, t([1, 2, 3], i32), 1)],
            "sequence 1: block 3 appears more than once",
        ),
        ([ok, (t([0], i32), 5, t([1], i32), 1)], "sequences 0 and 1 both write block 0"),
        (
            [ok, (t([0, 5], i32), 40, t([1], i32), 1)],
            "sequence 1 reads rows of block 0 that sequence 0 writes",
        ),
        (
            [ok, (t([4, 5, 6], i32), 0, np.ones(62, i32), 0)],
            "the step has 65 tokens, more than n_batch = 64",
        ),
        (
            [ok, (t([2], i32), 0, t([1], i32), 3)],
            "sequence 1: logits must be 0 .none., 1 .last token. or 2",
        ),
        ([ok, [t([2], i32), 0, t([1], i32), 1]], "sequence 1: expected a tuple"),
        ([ok, (t([2], i32), 0, t([1.5]), 1)], "sequence 1: tokens must hold integers"),
        ([ok, (t([[2]], i32), 0, t([1], i32), 1)], "sequence 1: block_table must be 1-D"),
        (
            [ok, (t([2], i32), 0.0, t([1], i32), 1)],
            "sequence 1: n_past and logits must be integers",
        ),
        (
            [ok, (t([2], np.int64), 0, t([2**40], np.int64), 1)],
            r"sequence 1: tokens\[0\] = 1099511627776 does not fit in int32",
        ),
    ]


def test_step_validation_names_the_sequence_and_leaves_the_cache_untouched() -> None:
    model = _core.Model(str(TERNARY))
    cache = _core.KvCache(model, n_blocks=8)
    dec = _core.BatchDecoder(model, cache, n_batch=64, n_threads=2)
    dec.step([(np.array([0, 1], np.int32), 0, _ids(model, 40, 19), 0)])
    snapshot = [cache.block_data(b) for b in range(8)]
    for seqs, message in _bad_steps(model.config["n_vocab"]):
        with pytest.raises(bitnet.ShapeError, match=message):
            dec.step(seqs)  # type: ignore[arg-type]
        for b in range(8):
            np.testing.assert_array_equal(cache.block_data(b), snapshot[b], err_msg=message)
    # Lists and other integer arrays are accepted; the decoder still works after the errors.
    out = dec.step([([0, 1], 40, np.array([7], np.int64), 1)])  # type: ignore[list-item]
    assert out.shape == (1, model.config["n_vocab"])


def test_step_returns_rows_in_sequence_order() -> None:
    model = _core.Model(str(TERNARY))
    cache = _core.KvCache(model, n_blocks=8)
    dec = _core.BatchDecoder(model, cache, n_batch=64, n_threads=2)
    a, b, c = _ids(model, 5, 20), _ids(model, 3, 21), _ids(model, 4, 22)
    out = dec.step(
        [
            (np.array([0], np.int32), 0, a, 2),
            (np.array([1], np.int32), 0, b, 0),
            (np.array([2], np.int32), 0, c, 1),
        ]
    )
    assert out.shape == (6, model.config["n_vocab"])
    np.testing.assert_array_equal(out[:5], _alone(model, a))
    np.testing.assert_array_equal(out[5:], _alone(model, c)[-1:])
    assert dec.n_batch == 64 and dec.n_threads == 2 and dec.cache.n_blocks == 8
