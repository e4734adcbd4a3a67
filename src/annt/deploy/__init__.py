"""Deployment: export a model to the ONNX file that ships, and load that file as an attack target.

``export_model(model, "m.onnx", "fp32" | "int8" | "dorefa", images)`` writes the graph and a
sealed sidecar (``m.json``); ``load_deployed("m.onnx")`` checks the sidecar and returns an
ONNX Runtime classifier (forward only) that ANNT's score- and decision-based attacks take as
their target. onnx and onnxruntime are an optional extra (``pip install "annt[onnx]"``),
imported only when a function here needs them.
"""

from annt.deploy.export import FORMATS, INT8_FORMATS, build_onnx, export_model
from annt.deploy.runtime import executed_operators, load_deployed
from annt.deploy.sidecar import sidecar_path, verify_sidecar

__all__ = ["FORMATS", "INT8_FORMATS", "build_onnx", "executed_operators", "export_model",
           "load_deployed", "sidecar_path", "verify_sidecar"]
