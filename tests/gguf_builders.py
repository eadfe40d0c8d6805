"""Small GGUF model files written with gguf-py's own writer and quantizers (independent of
bitnet's converter), for interoperability and corruption tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np


def write_gguf_copy(
    path: Path,
    source: Path,
    *,
    linear_type: gguf.GGMLQuantizationType = gguf.GGMLQuantizationType.TQ2_0,
    drop_keys: tuple[str, ...] = (),
    drop_tensors: tuple[str, ...] = (),
    retype: dict[str, gguf.GGMLQuantizationType] | None = None,
    replace: dict[str, np.ndarray] | None = None,
) -> Path:
    """Rewrites the model in `source` (a GGUF file) with gguf-py: every metadata key is copied,
    BitLinear weights are dequantized to floats (codes * scale) and requantized with gguf-py's
    quantizer for `linear_type`, other tensors are copied as floats. `replace` gives the raw
    bytes of tensors to write instead, in their original type."""
    reader = gguf.GGUFReader(source)
    arch = str(reader.fields["general.architecture"].contents())
    w = gguf.GGUFWriter(path, arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in drop_keys:
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(key, field.contents(), vtype, sub_type=field.types[-1])
        else:
            w.add_key_value(key, field.contents(), vtype)
    scales = {
        t.name: float(np.asarray(t.data).reshape(-1)[0])
        for t in reader.tensors
        if t.name.endswith(".scale")
    }
    for t in reader.tensors:
        if t.name in drop_tensors or t.name.endswith(".scale"):
            continue
        if replace and t.name in replace:
            w.add_tensor(t.name, replace[t.name], raw_dtype=t.tensor_type)
            continue
        values = gguf.quants.dequantize(t.data, t.tensor_type)
        shape = tuple(int(d) for d in reversed(t.shape))
        values = values.reshape(shape).astype(np.float32)
        scale_name = t.name.removesuffix(".weight") + ".scale"
        if scale_name in scales:  # fold llama.cpp's per-tensor scale into the values
            values = values * np.float32(scales[scale_name])
        qtype = (retype or {}).get(t.name)
        if qtype is None:
            is_linear = t.name.startswith("blk.") and len(shape) == 2
            qtype = linear_type if is_linear else gguf.GGMLQuantizationType.F32
        if qtype == gguf.GGMLQuantizationType.F32:
            w.add_tensor(t.name, values)
        elif qtype == gguf.GGMLQuantizationType.F16:
            w.add_tensor(t.name, values.astype(np.float16))
        else:
            w.add_tensor(t.name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def field_value(path: Path, key: str) -> Any:
    return gguf.GGUFReader(path).fields[key].contents()
