"""What ONNX Runtime executes, and deployed models loaded as attack targets.

:func:`executed_operators` lists the operators of the graph ONNX Runtime actually runs after its
optimisations (its ``optimized_model_filepath``), so a deployment that falls back to float
convolutions is seen, not assumed. :func:`load_deployed` is the verified loader of an exported
``.onnx`` file: an :class:`~annt.models.sources.OnnxClassifier` (forward only) that score- and
decision-based attacks take as their target.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from annt.errors import AnntError
from annt.models.sources import ONNX_INSTALL, OnnxClassifier, load_onnx

#: kernels that compute on integers (ONNX and ONNX Runtime's com.microsoft contrib operators)
INTEGER_OPS = frozenset({
    "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd",
    "QLinearMul", "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat",
    "QLinearLeakyRelu", "QLinearSigmoid", "QLinearSoftmax", "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul", "NhwcQLinearConv", "QAttention", "QEmbedLayerNormalization",
})
#: float kernels that do a layer's multiply-accumulate work (a fallback when quantization was asked)
FLOAT_COMPUTE_OPS = frozenset({
    "Conv", "FusedConv", "NchwcConv", "ConvTranspose", "MatMul", "FusedMatMul", "Gemm", "FusedGemm",
})


def require_onnx() -> tuple[Any, Any]:
    """``(onnx, onnxruntime)``; one line naming the extra when either is missing."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise AnntError(f"ONNX export needs onnx and onnxruntime ({exc.name} is missing): {ONNX_INSTALL}") from None
    return onnx, onnxruntime


def executed_operators(data: bytes) -> dict[str, int]:
    """Operator types (with counts) of the graph ONNX Runtime runs for ``data`` on the CPU."""
    onnx, ort = require_onnx()
    with tempfile.TemporaryDirectory(prefix="annt-ort-") as folder:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        options.log_severity_level = 3  # its note that NCHWc graphs are hardware-specific
        options.intra_op_num_threads = 1
        try:
            ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise AnntError(f"ONNX Runtime cannot run the exported graph: {type(exc).__name__}:"
                            f" {str(exc).splitlines()[0][:200]}") from None
        graph = onnx.load(options.optimized_model_filepath).graph
    return dict(sorted(Counter(node.op_type for node in graph.node).items()))


def operator_summary(ops: dict[str, int]) -> dict[str, Any]:
    """Integer and float multiply-accumulate operators among ``ops`` (from :func:`executed_operators`)."""
    return {
        "executed_operators": ops,
        "integer_operators": {k: v for k, v in ops.items() if k in INTEGER_OPS},
        "float_compute_operators": {k: v for k, v in ops.items() if k in FLOAT_COMPUTE_OPS},
    }


def load_deployed(path: str | Path) -> OnnxClassifier:
    """An exported ``.onnx`` model run by ONNX Runtime, its sidecar checked when it has one.

    With an ANNT export sidecar beside it, the file's sha256 and the sidecar's seal must match
    (else one line; remove the sidecar to load an edited file as an unverified ONNX model);
    the model then carries the source model's dataset and geometry. Any other ``.onnx`` loads
    as it is.
    """
    from annt.deploy.sidecar import verify_sidecar

    path = Path(path).expanduser()
    meta = verify_sidecar(path)
    model = load_onnx(path)
    if meta is not None:
        info = dict(model.annt_meta)
        source = meta.get("source") or {}
        for key in ("dataset", "geometry", "classes"):
            if source.get(key) is not None:
                info[key] = source[key]
        info["deployment"] = {k: meta[k] for k in ("format", "settings", "source") if k in meta}
        model.annt_meta = info  # type: ignore[assignment]
    return model
