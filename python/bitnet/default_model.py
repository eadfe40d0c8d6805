"""Where the bundled default model lives (read by ``bitnet.api.default_model_path``).

The model is a 4.7M-parameter BitNet b1.58 trained by us on the King James Bible
(models/README.md, recipe in models/train_default.sh). CMake installs the GGUF file next to this
module; in a source checkout it is read from models/.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_MODEL_FILE", "default_model_path"]

DEFAULT_MODEL_FILE = "bitnet-kjv-5m-tq2_0.gguf"


def default_model_path() -> Path | None:
    """The bundled GGUF file: installed in the package, or in models/ of a source checkout;
    None when neither exists."""
    here = Path(__file__).resolve().parent
    for candidate in (
        here / DEFAULT_MODEL_FILE,
        here.parent.parent / "models" / DEFAULT_MODEL_FILE,
    ):
        if candidate.is_file():
            return candidate
    return None
