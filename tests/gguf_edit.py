"""Byte-exact edits of GGUF files for bad-input tests: metadata set, retyped or dropped, tensors
copied raw (no requantization), written with gguf-py's own writer."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gguf
import numpy as np

T = gguf.GGUFValueType

# A value for set_keys: (value, type) or (list, T.ARRAY, element type).
Value = tuple[Any, gguf.GGUFValueType] | tuple[Any, gguf.GGUFValueType, gguf.GGUFValueType]


def edit_gguf(
    src: Path,
    dst: Path,
    *,
    set_keys: Mapping[str, Value] | None = None,
    drop_keys: tuple[str, ...] = (),
) -> Path:
    """Copies src to dst with keys replaced (or added) and dropped; tensors byte for byte."""
    reader = gguf.GGUFReader(src)
    arch = str(reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(dst, arch)
    new = dict(set_keys or {})
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in drop_keys:
            continue
        if key in new:
            _add(writer, key, new.pop(key))
            continue
        vtype = field.types[0]
        if vtype == T.ARRAY:
            writer.add_key_value(key, field.contents(), vtype, sub_type=field.types[-1])
        else:
            writer.add_key_value(key, field.contents(), vtype)
    for key, value in new.items():
        _add(writer, key, value)
    for t in reader.tensors:
        writer.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def _add(writer: gguf.GGUFWriter, key: str, value: Value) -> None:
    if len(value) == 3:
        writer.add_key_value(key, value[0], value[1], sub_type=value[2])
    else:
        writer.add_key_value(key, value[0], value[1])


def read_field(path: Path, key: str) -> Any:
    """The value of a key as gguf-py reads it."""
    return gguf.GGUFReader(path).fields[key].contents()
