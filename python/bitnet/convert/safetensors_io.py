"""Lazy, memory-mapped reading of (sharded) safetensors checkpoints, including BF16.

Why a reader of our own rather than the ``safetensors`` package (a dependency, used by
``bitnet.train`` to *write* checkpoints): BitNet checkpoints are mostly BF16, and the package's
numpy API cannot return BF16 tensors (``safe_open(path, framework="numpy").get_tensor`` and
``get_slice`` both raise ``TypeError: data type 'bfloat16' not understood`` with safetensors
0.4-0.8, numpy having no bfloat16); its torch API can, but torch is not a runtime dependency.
The format is small and documented (an 8-byte length, a JSON header, raw little-endian data), so
this module parses the header and maps each tensor with ``numpy.memmap``: nothing is read until
a tensor is asked for, and then only that tensor (or a slice of its rows). Every field of the
header is checked for type and every offset against the file size before anything is mapped, so
a corrupt or hostile file raises :class:`~bitnet.errors.FormatError` naming the file and tensor.
tests/test_convert_errors.py compares it with ``safetensors.torch`` on every dtype.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError

__all__ = ["Checkpoint", "TensorRef"]

_DTYPES: dict[str, tuple[np.dtype[Any], int]] = {
    "F64": (np.dtype("<f8"), 8),
    "F32": (np.dtype("<f4"), 4),
    "F16": (np.dtype("<f2"), 2),
    "BF16": (np.dtype("<u2"), 2),  # widened to float32 by bit shifting
    "I64": (np.dtype("<i8"), 8),
    "I32": (np.dtype("<i4"), 4),
    "I16": (np.dtype("<i2"), 2),
    "I8": (np.dtype("i1"), 1),
    "U64": (np.dtype("<u8"), 8),
    "U32": (np.dtype("<u4"), 4),
    "U16": (np.dtype("<u2"), 2),
    "U8": (np.dtype("u1"), 1),
    "BOOL": (np.dtype("?"), 1),
}

_MAX_HEADER_BYTES = 100 * 1024 * 1024  # the limit the safetensors package itself enforces
_MAX_DIMS = 8


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor lives: file, dtype name, shape and byte range."""

    name: str
    path: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int  # absolute byte offset in the file
    nbytes: int

    @property
    def is_float(self) -> bool:
        return self.dtype in ("F64", "F32", "F16", "BF16")

    def raw(self) -> np.ndarray:
        """The stored values, memory-mapped, in the stored dtype (BF16 as uint16 bits)."""
        dtype, _ = _DTYPES[self.dtype]
        count = math.prod(self.shape)
        if count == 0:
            return np.zeros(self.shape, dtype=dtype)
        arr = np.memmap(self.path, dtype=dtype, mode="r", offset=self.offset, shape=(count,))
        return arr.reshape(self.shape)

    def float32(self, rows: slice | None = None) -> np.ndarray:
        """The values as float32 (optionally only a slice of the first axis)."""
        if not self.is_float:
            raise FormatError(
                f"{self.path}: tensor '{self.name}' is {self.dtype}, expected a float type"
            )
        raw = self.raw()
        if rows is not None:
            raw = raw[rows]
        if self.dtype == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32)
        return np.asarray(raw, dtype=np.float32)


class Checkpoint:
    """All tensors of a Hugging Face checkpoint directory (model.safetensors or sharded).

    Shards named by ``model.safetensors.index.json`` must be plain ``.safetensors`` file names:
    a name with a directory part (``../other/x.safetensors``, ``/etc/passwd``) is refused, so a
    downloaded index cannot make the converter open files outside the checkpoint. (The files
    themselves may be symlinks: huggingface_hub's cache links snapshot files to its blobs.)
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        index = self.directory / "model.safetensors.index.json"
        placement: dict[str, str] = {}  # tensor -> the shard the index says holds it
        if index.exists():
            placement = _read_index(index)
            shards = sorted(set(placement.values()))
        else:
            shards = sorted(p.name for p in self.directory.glob("*.safetensors"))
        if not shards:
            raise FormatError(f"{self.directory}: no *.safetensors files found")
        self.tensors: dict[str, TensorRef] = {}
        for shard in shards:
            path = _confined(self.directory, shard, index if placement else self.directory)
            for ref in _read_header(path):
                if ref.name in self.tensors:
                    raise FormatError(
                        f"{path}: tensor '{ref.name}' also appears in "
                        f"{self.tensors[ref.name].path.name}"
                    )
                expected = placement.get(ref.name, shard)
                if expected != shard:
                    raise FormatError(
                        f"{index}: weight_map puts tensor '{ref.name}' in '{expected}', "
                        f"found in '{shard}'"
                    )
                self.tensors[ref.name] = ref
        for name, shard in placement.items():
            if name not in self.tensors:
                raise FormatError(
                    f"{index}: weight_map lists tensor '{name}' in '{shard}', which lacks it"
                )

    def __contains__(self, name: object) -> bool:
        return name in self.tensors

    def __getitem__(self, name: str) -> TensorRef:
        try:
            return self.tensors[name]
        except KeyError:
            raise FormatError(f"{self.directory}: missing tensor '{name}'") from None

    def names(self) -> list[str]:
        return list(self.tensors)


def _load_json(path: Path, text: bytes | str, what: str) -> Any:
    try:
        return json.loads(text)
    except (UnicodeDecodeError, ValueError) as e:
        raise FormatError(f"{path}: {what} is not valid JSON ({e})") from None
    except RecursionError:
        raise FormatError(f"{path}: {what} nests too deeply to be a {what}") from None


def _read_index(index: Path) -> dict[str, str]:
    try:
        data = index.read_bytes()
    except IsADirectoryError:
        raise FormatError(f"{index}: is a directory, expected a JSON file") from None
    parsed = _load_json(index, data, "safetensors index")
    weight_map = parsed.get("weight_map") if isinstance(parsed, dict) else None
    if not isinstance(weight_map, dict):
        raise FormatError(
            f"{index}: expected an object with a 'weight_map' object, found "
            f"{_short(parsed if not isinstance(parsed, dict) else weight_map)}"
        )
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or not shard:
            raise FormatError(
                f"{index}: weight_map['{name}'] must be a shard file name, found {_short(shard)}"
            )
    return weight_map


def _confined(directory: Path, shard: str, index: Path) -> Path:
    """The path of a shard named by the index (or found in directory), refused unless it is a
    file name in directory."""
    if (
        Path(shard).name != shard
        or shard in (".", "..")
        or "\\" in shard
        or "\0" in shard
        or not shard.endswith(".safetensors")
    ):
        raise FormatError(
            f"{index}: shard '{shard}' must be a .safetensors file name in {directory}, "
            "without a directory part"
        )
    path = directory / shard
    if not path.is_file():
        raise FormatError(f"{index}: lists shard '{shard}', which is not a file in {directory}")
    return path


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_header(path: Path) -> list[TensorRef]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise FormatError(f"{path}: truncated safetensors file ({size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, _MAX_HEADER_BYTES):
            raise FormatError(
                f"{path}: safetensors header length {n} exceeds the file size {size} "
                f"(or the {_MAX_HEADER_BYTES}-byte limit)"
            )
        header = _load_json(path, f.read(n), "safetensors header")
    if not isinstance(header, dict):
        raise FormatError(f"{path}: safetensors header is not a JSON object")
    data_start = 8 + n
    refs = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        refs.append(_tensor_ref(path, name, info, data_start, size))
    return refs


def _tensor_ref(path: Path, name: str, info: object, data_start: int, size: int) -> TensorRef:
    def bad(what: str, found: object) -> FormatError:
        return FormatError(f"{path}: tensor '{name}': {what}, found {_short(found)}")

    if not isinstance(info, dict):
        raise bad("expected an object with dtype, shape and data_offsets", info)
    dtype = info.get("dtype")
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise bad(f"dtype must be one of {', '.join(_DTYPES)}", dtype)
    shape = info.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) > _MAX_DIMS
        or not all(_is_int(d) and 0 <= d < 1 << 40 for d in shape)
    ):
        raise bad(f"shape must be a list of at most {_MAX_DIMS} non-negative integers", shape)
    offsets = info.get("data_offsets")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(x) for x in offsets):
        raise bad("data_offsets must be two integers [begin, end]", offsets)
    begin, end = offsets
    expected = math.prod(shape) * _DTYPES[dtype][1]
    if begin < 0 or end - begin != expected:
        raise FormatError(
            f"{path}: tensor '{name}' ({dtype}, shape {shape}) should take {expected} bytes, "
            f"header says [{begin}, {end})"
        )
    if data_start + end > size:
        raise FormatError(
            f"{path}: tensor '{name}' ends at byte {data_start + end} but the file has "
            f"{size} bytes (truncated?)"
        )
    return TensorRef(name, path, dtype, tuple(shape), data_start + begin, expected)
