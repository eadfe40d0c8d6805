"""Training tools for BitNet models (needs the optional extra ``bitnet[train]``: PyTorch).

* :class:`BitLinear` -- quantization-aware linear layer (ternary b1.58, binary, or full precision)
* :class:`BitNetLM` / :class:`ModelConfig` -- the 2B4T-style decoder
* :func:`train` -- the training loop; :func:`bitdistill` -- BitDistill from a full-precision teacher
* :func:`export_hf` -- writes a Hugging Face ``BitNetForCausalLM`` checkpoint for ``bitnet.convert``

Command line: ``python -m bitnet.train --help``; recipe of the bundled model:
``models/train_default.sh``.
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("bitnet.train needs PyTorch: pip install 'bitnet[train]'") from e

from .bitlinear import BitLinear, activation_quant, binary_weight_quant, ternary_weight_quant
from .model import BitNetLM, ModelConfig

__all__ = [
    "BitLinear",
    "BitNetLM",
    "ModelConfig",
    "activation_quant",
    "binary_weight_quant",
    "ternary_weight_quant",
]
