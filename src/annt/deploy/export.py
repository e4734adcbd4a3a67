"""Export a model to the ONNX file that ships: ``fp32``, ``int8`` (ONNX Runtime PTQ) or ``dorefa``.

* ``fp32``: ``torch.onnx.export`` (TorchScript-based exporter, opset 17, dynamic batch); a
  DoReFa model's quantized weights are computed once and stored, its activations stay
  ``Clip``/``Round`` float ops.
* ``int8``: ONNX Runtime's static post-training quantization of the fp32 graph
  (``quantize_static``: MinMax calibration on training images, per-channel int8 weights,
  uint8 activations). ``int8_format="qdq"`` (default) stores QuantizeLinear/DequantizeLinear
  pairs that ONNX Runtime fuses into QLinearConv/QGemm; ``"qoperator"`` stores the integer
  operators themselves. ORT's QOperator path drops a ReLU that follows a MaxPool (it moves the
  ReLU's range onto the pool's output, which keeps the conv's range, then removes the ReLU):
  Mnist A fell to 0.098 test accuracy. Such ReLUs are moved before the pool first (the two
  commute), which ONNX Runtime then fuses correctly.
* ``dorefa``: the DoReFa model on its own integer grid (:mod:`annt.deploy.dorefa_onnx`).

Every export is checked against the PyTorch model on the given images, and records the
operators ONNX Runtime executes (integer kernels, and any float conv/matmul fallback).
"""

from __future__ import annotations

import copy
import io
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from annt.deploy.runtime import executed_operators, operator_summary, require_onnx
from annt.deploy.sidecar import check_sidecar_target, verify_sidecar, write_sidecar
from annt.errors import AnntError
from annt.inputs.files import output_file
from annt.quant.bits import FULL
from annt.quant.layers import QConv2d, QLinear
from annt.store.atomic import atomic_write_bytes

FORMATS = ("fp32", "int8", "dorefa")
INT8_FORMATS = ("qdq", "qoperator")
OPSET = 17
INPUT, OUTPUT = "input", "logits"


def frozen_copy(model: nn.Module) -> nn.Module:
    """An eval copy on the CPU with each DoReFa layer's quantized weights stored once."""
    fast = copy.deepcopy(model).eval().requires_grad_(False).cpu()
    for m in fast.modules():
        if isinstance(m, (QConv2d, QLinear)) and m.w_bits < FULL:
            m.weight.copy_(m.quantized_weight())
            m.w_bits = FULL
    return fast


def torch_to_onnx(model: nn.Module, sample: torch.Tensor) -> bytes:
    """``model`` as ONNX bytes: input ``input`` [N,C,H,W] with a dynamic batch, output ``logits``."""
    require_onnx()
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (sample[:1].cpu(),), buffer, dynamo=False, opset_version=OPSET,
                              input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types for unsupported code
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise AnntError(f"torch.onnx.export cannot export this model: {type(exc).__name__}: {first}") from None
    return buffer.getvalue()


def relu_before_maxpool(data: bytes) -> tuple[bytes, int]:
    """Swap every ``MaxPool -> Relu`` (the Relu the pool's only consumer) into ``Relu -> MaxPool``.

    Equal values (max-pooling commutes with a monotone function); returns the graph and the
    number of pairs swapped.
    """
    onnx, _ = require_onnx()
    model = onnx.load_from_string(data)
    graph = model.graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    nodes = list(graph.node)
    position = {id(node): i for i, node in enumerate(nodes)}
    swapped = 0
    for pool in list(nodes):
        if pool.op_type != "MaxPool" or len(pool.output) != 1 or pool.output[0] in outputs:
            continue
        users = consumers.get(pool.output[0], [])
        if len(users) != 1 or users[0].op_type != "Relu":
            continue
        relu = users[0]
        x, mid, out = pool.input[0], pool.output[0], relu.output[0]
        relu.input[0], relu.output[0] = x, mid
        pool.input[0], pool.output[0] = mid, out
        i, j = position[id(pool)], position[id(relu)]
        nodes[i], nodes[j] = relu, pool  # the Relu now runs first
        swapped += 1
    if not swapped:
        return data, 0
    order = [copy.deepcopy(node) for node in nodes]
    del graph.node[:]
    graph.node.extend(order)
    return model.SerializeToString(), swapped


def quantize_int8(data: bytes, calibration: torch.Tensor, int8_format: str = "qdq",
                  batch_size: int = 100, relu_first: bool = True) -> tuple[bytes, dict[str, Any]]:
    """ONNX Runtime static PTQ of the fp32 graph ``data``, calibrated on ``calibration`` images.

    ``relu_first=False`` skips :func:`relu_before_maxpool` (only to show ORT's QOperator bug).
    """
    require_onnx()
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if int8_format not in INT8_FORMATS:
        raise AnntError(f"unknown int8 format {int8_format!r}: choose one of {', '.join(INT8_FORMATS)}")
    if len(calibration) == 0:
        raise AnntError("int8 export needs calibration images")
    data, swapped = relu_before_maxpool(data) if relu_first else (data, 0)
    chunks = [{INPUT: c.cpu().float().numpy()} for c in calibration.split(batch_size)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(chunks)

        def get_next(self):
            return next(self.items, None)

    settings = {
        "quant_format": int8_format, "per_channel": True, "activation_type": "uint8",
        "weight_type": "int8", "reduce_range": False, "calibrate_method": "minmax",
        "calibration_images": len(calibration), "relu_moved_before_maxpool": swapped,
    }
    fmt = QuantFormat.QDQ if int8_format == "qdq" else QuantFormat.QOperator
    with tempfile.TemporaryDirectory(prefix="annt-quant-") as folder:
        src, dst = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        src.write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _quiet_quantizer_log()
            try:
                quantize_static(str(src), str(dst), Reader(), quant_format=fmt, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                reduce_range=False, calibrate_method=CalibrationMethod.MinMax)
            except Exception as exc:  # noqa: BLE001 - the quantizer raises many types
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                raise AnntError(f"ONNX Runtime quantization failed: {type(exc).__name__}: {first}") from None
        return dst.read_bytes(), settings


def _quiet_quantizer_log() -> None:
    """ORT's quantizer logs a pre-processing hint on the root logger at WARNING; keep it off stderr."""
    import logging

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))


def run_onnx(data: bytes, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Logits of the ONNX graph ``data`` on ``x`` (one thread, CPU)."""
    _, ort = require_onnx()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    outs = [session.run([OUTPUT], {INPUT: c.cpu().float().numpy()})[0] for c in x.split(batch_size)]
    return torch.from_numpy(np.concatenate(outs)) if outs else torch.empty(0)


def compare(reference: torch.Tensor, logits: torch.Tensor) -> dict[str, Any]:
    """Share of equal labels and the largest logit difference between two sets of logits."""
    return {"images": len(reference),
            "label_agreement": round((reference.argmax(1) == logits.argmax(1)).float().mean().item(), 6),
            "max_logit_diff": float((reference - logits).abs().max()) if len(reference) else 0.0}


def build_onnx(model: nn.Module, fmt: str, images: torch.Tensor, *,
               int8_format: str = "qdq") -> tuple[bytes, dict[str, Any]]:
    """ONNX bytes of ``model`` in format ``fmt`` and the sidecar fields that describe them.

    ``images`` ([N,C,H,W] in [0,1], training images) calibrate ``int8``, decide ``dorefa``'s
    integer layers, and check every format against the PyTorch model.
    """
    if fmt not in FORMATS:
        raise AnntError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if images.dim() != 4 or len(images) == 0:
        raise AnntError(f"export needs [N,C,H,W] sample images, got shape {list(images.shape)}")
    onnx, ort = require_onnx()
    images = images.cpu().float()
    settings: dict[str, Any] = {"opset": OPSET}
    layers: list[dict[str, Any]] | None = None
    if fmt == "dorefa":
        from annt.deploy.dorefa_onnx import integer_model

        exported, layers = integer_model(model, images)
        data = torch_to_onnx(exported, images)
        settings["activation_grid"] = "uint8 multiples of 1/(2^k-1), zero point 0"
    else:
        data = torch_to_onnx(frozen_copy(model), images)
        if fmt == "int8":
            data, quant = quantize_int8(data, images, int8_format)
            settings.update(quant)
    with torch.no_grad():
        reference = frozen_copy(model)(images)
    meta: dict[str, Any] = {
        "format": fmt, "settings": settings,
        "versions": {"onnx": onnx.__version__, "onnxruntime": ort.__version__, "torch": torch.__version__},
        **operator_summary(executed_operators(data)),
        "check": {"on": "the export's sample images", **compare(reference, run_onnx(data, images))},
    }
    if layers is not None:
        meta["layers"] = layers
    return data, meta


def source_record(model: nn.Module, label: str) -> dict[str, Any]:
    """What the sidecar says about the source model (reference, hashes, bits, data geometry)."""
    meta = getattr(model, "annt_meta", None) or {}
    keep = ("zoo", "model", "bits", "dataset", "geometry", "classes", "checkpoint_sha256",
            "weights_sha256", "source_sha256", "factory_sha256", "weights")
    record = {k: meta[k] for k in keep if k in meta}
    record["reference"] = label
    return record


def export_model(model: nn.Module, out: str | Path, fmt: str, images: torch.Tensor, *,
                 label: str = "", int8_format: str = "qdq") -> dict[str, Any]:
    """Write ``model`` as ``out`` (``.onnx``) in format ``fmt`` plus its sealed sidecar; returns it.

    Everything is computed before anything is written: an error leaves no file behind.
    """
    out = output_file(out, "--out", ".onnx")
    check_sidecar_target(out)
    data, meta = build_onnx(model, fmt, images, int8_format=int8_format)
    meta["source"] = source_record(model, label or str(getattr(model, "annt_meta", {}).get("model", "")))
    atomic_write_bytes(out, data)
    write_sidecar(out, meta)
    return verify_sidecar(out) or {}
