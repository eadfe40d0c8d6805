"""Lazy, memory-mapped reading of (sharded) safetensors checkpoints, including BF16.

The ``safetensors`` package cannot hand BF16 tensors to numpy, and BitNet checkpoints are mostly
BF16, so this module parses the (simple, documented) safetensors header itself and maps each tensor
with ``numpy.memmap``: nothing is read until a tensor is asked for, and then only that tensor.
Every offset is checked against the file size, so a truncated shard raises FormatError.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FormatError

__all__ = ["Checkpoint", "TensorRef"]

_DTYPES: dict[str, tuple[np.dtype, int]] = {
    "F64": (np.dtype("<f8"), 8),
    "F32": (np.dtype("<f4"), 4),
    "F16": (np.dtype("<f2"), 2),
    "BF16": (np.dtype("<u2"), 2),  # widened to float32 by bit shifting
    "I64": (np.dtype("<i8"), 8),
    "I32": (np.dtype("<i4"), 4),
    "I16": (np.dtype("<i2"), 2),
    "I8": (np.dtype("i1"), 1),
    "U8": (np.dtype("u1"), 1),
    "BOOL": (np.dtype("?"), 1),
}

_MAX_HEADER_BYTES = 100 * 1024 * 1024


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
        count = int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1
        if count == 0:
            return np.zeros(self.shape, dtype=dtype)
        arr = np.memmap(self.path, dtype=dtype, mode="r", offset=self.offset, shape=(count,))
        return arr.reshape(self.shape)

    def float32(self, rows: slice | None = None) -> np.ndarray:
        """The values as float32 (optionally only a slice of the first axis)."""
        raw = self.raw()
        if rows is not None:
            raw = raw[rows]
        if self.dtype == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32)
        if not self.is_float:
            raise FormatError(
                f"{self.path}: tensor '{self.name}' is {self.dtype}, not a float type"
            )
        return np.asarray(raw, dtype=np.float32)


class Checkpoint:
    """All tensors of a Hugging Face checkpoint directory (model.safetensors or sharded)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        index = self.directory / "model.safetensors.index.json"
        if index.exists():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (KeyError, ValueError, TypeError) as e:
                raise FormatError(f"{index}: not a valid safetensors index ({e})") from e
            if not isinstance(weight_map, dict):
                raise FormatError(f"{index}: 'weight_map' must be an object")
            shards = sorted(set(weight_map.values()))
        else:
            shards = sorted(p.name for p in self.directory.glob("*.safetensors"))
        if not shards:
            raise FormatError(f"{self.directory}: no *.safetensors files found")
        self.tensors: dict[str, TensorRef] = {}
        for shard in shards:
            path = self.directory / shard
            if not path.is_file():
                raise FormatError(f"{index}: lists shard '{shard}', which does not exist")
            for ref in _read_header(path):
                if ref.name in self.tensors:
                    raise FormatError(
                        f"{path}: tensor '{ref.name}' also appears in "
                        f"{self.tensors[ref.name].path.name}"
                    )
                self.tensors[ref.name] = ref

    def __contains__(self, name: object) -> bool:
        return name in self.tensors

    def __getitem__(self, name: str) -> TensorRef:
        try:
            return self.tensors[name]
        except KeyError:
            raise FormatError(f"{self.directory}: missing tensor '{name}'") from None

    def names(self) -> list[str]:
        return list(self.tensors)


def _read_header(path: Path) -> list[TensorRef]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise FormatError(f"{path}: truncated safetensors file ({size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, _MAX_HEADER_BYTES):
            raise FormatError(f"{path}: safetensors header length {n} exceeds the file size {size}")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise FormatError(f"{path}: safetensors header is not valid JSON ({e})") from e
    if not isinstance(header, dict):
        raise FormatError(f"{path}: safetensors header is not a JSON object")
    data_start = 8 + n
    refs = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = info["dtype"]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"{path}: malformed entry for tensor '{name}' ({e})") from e
        if dtype not in _DTYPES:
            raise FormatError(f"{path}: tensor '{name}' has unsupported dtype {dtype}")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        expected = count * _DTYPES[dtype][1]
        if any(d < 0 for d in shape) or end - begin != expected or begin < 0:
            raise FormatError(
                f"{path}: tensor '{name}' ({dtype}, shape {list(shape)}) should "
                f"take {expected} bytes, header says [{begin}, {end})"
            )
        if data_start + end > size:
            raise FormatError(
                f"{path}: tensor '{name}' ends at byte {data_start + end} but the "
                f"file has {size} bytes (truncated?)"
            )
        refs.append(TensorRef(name, path, dtype, shape, data_start + begin, expected))
    return refs
