"""Users' own classifiers: model factories, weights files, TorchScript and ONNX models.

One entry point, :func:`annt.zoo.load_model_ref`, turns any accepted model spec into a ready
``nn.Module`` in eval mode:

* ``zoo:NAME`` or an ANNT checkpoint folder: the verified checkpoint loader;
* a model factory, ``package.module:function`` or ``path/to/file.py:function``, called with
  ``args`` as keyword arguments, optionally filled with a weights file (safetensors or a
  ``torch.save``'d state dict, loaded without unpickling code) and wrapped in the input
  normalisation the model was trained with (:class:`Normalized`);
* an ``.onnx`` file, run by ONNX Runtime (:class:`OnnxClassifier`; forward only, no gradients);
* any other file: TorchScript (``torch.jit.save``).

Every problem a user can cause is one :class:`~annt.errors.AnntError` line.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.util
import io
import math
import os
import re
import sys
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from annt.errors import AnntError
from annt.inputs.files import GiB, regular_file

MAX_MODEL_BYTES = 4 * GiB
FULL_BITS = "32,32,32"
ONNX_INSTALL = 'pip install "annt[onnx]"'

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
ACCEPTED_FORMS = ("an ANNT checkpoint folder, zoo:NAME, a TorchScript file, an .onnx file, or a model"
             " factory package.module:function or path/to/file.py:function")


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    return text[:300]


def _describe(exc: BaseException) -> str:
    text = _first_line(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- model factories -------------------------------------------------------------------------


def _split_ref(text: str) -> tuple[str, str] | None:
    if not isinstance(text, str) or ":" not in text:
        return None
    module, _, attr = text.rpartition(":")
    module = module.strip()
    if not module or not _IDENT.match(attr):
        return None
    if module.endswith(".py"):
        return module, attr
    if _DOTTED.match(module) and module != "zoo":
        return module, attr
    return None


def is_factory_ref(text: str) -> bool:
    """True for ``package.module:function`` and ``path/to/file.py:function`` (never ``zoo:NAME``)."""
    return _split_ref(str(text)) is not None if isinstance(text, (str, Path)) else False


def _factory_file(ref: str) -> Path | None:
    """The ``.py`` file of a file-path factory reference (``None`` for a dotted module)."""
    parts = _split_ref(ref)
    if parts is None or not parts[0].endswith(".py"):
        return None
    return Path(parts[0]).expanduser()


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def factory_fingerprint(ref: str) -> dict[str, str]:
    """``{"factory_sha256": ...}`` of a file-path factory's ``.py`` file; ``{}`` for dotted refs."""
    from annt.inputs.hashing import file_digest

    path = _factory_file(ref)
    if path is None:
        return {}
    return {"factory_sha256": file_digest(regular_file(path, "model factory file", MAX_MODEL_BYTES))}


def _import_file(path: Path, ref: str):
    path = regular_file(path, "model factory file", MAX_MODEL_BYTES)
    resolved = path.resolve()
    data = resolved.read_bytes()
    digest = _sha256_bytes(data)
    name = "_annt_factory_" + hashlib.sha256(str(resolved).encode()).hexdigest()[:16]
    cached = sys.modules.get(name)
    if cached is not None and getattr(cached, "__annt_sha256__", None) == digest:
        return cached
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise AnntError(f"model factory file {path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    module.__annt_sha256__ = digest  # type: ignore[attr-defined]
    folder = str(resolved.parent)
    if folder not in sys.path:  # its sibling modules import like a script's (appended: never shadows)
        sys.path.append(folder)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any failure of user code is one line
        sys.modules.pop(name, None)
        raise AnntError(f"model factory file {path} raised on import: {_describe(exc)}") from None
    return module


def _import_dotted(module_name: str, ref: str):
    def attempt():
        return importlib.import_module(module_name)

    for retry in (False, True):
        try:
            return attempt()
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            own = missing and (module_name == missing or module_name.startswith(missing + "."))
            cwd = os.getcwd()
            if own and not retry and cwd not in sys.path and "" not in sys.path:
                sys.path.append(cwd)  # the console script does not see the working folder
                importlib.invalidate_caches()
                continue
            if own:
                raise AnntError(f"cannot import module {module_name} of model factory {ref}:"
                                f" {_describe(exc)}; check the name and that it is on PYTHONPATH") from None
            raise AnntError(f"module {module_name} of model factory {ref} raised on import: {_describe(exc)}") from None
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - any failure of user code is one line
            raise AnntError(f"module {module_name} of model factory {ref} raised on import: {_describe(exc)}") from None
    raise AssertionError("unreachable")


def import_factory(ref: str) -> Callable[..., Any]:
    """The callable that ``ref`` (``package.module:function`` or ``file.py:function``) names."""
    parts = _split_ref(str(ref))
    if parts is None:
        raise AnntError(f"model factory {ref!r} is not of the form package.module:function"
                        " or path/to/file.py:function")
    module_part, attr = parts
    if module_part.endswith(".py"):
        module = _import_file(Path(module_part).expanduser(), ref)
        where = f"model factory file {module_part}"
    else:
        module = _import_dotted(module_part, ref)
        where = f"module {module_part}"
    if not hasattr(module, attr):
        own = [k for k, v in vars(module).items() if not k.startswith("_") and callable(v)
               and getattr(v, "__module__", None) == module.__name__]
        hint = f"; it defines {', '.join(sorted(own)[:8])}{' ...' if len(own) > 8 else ''}" if own else ""
        raise AnntError(f"{where} has no {attr!r}{hint}")
    factory = getattr(module, attr)
    if not callable(factory):
        raise AnntError(f"model factory {ref} is a value of type {type(factory).__name__}, not a function or class")
    return factory


def check_model_args(args: Any, ref: str) -> dict[str, Any]:
    if args is None:
        return {}
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise AnntError(f"model args of {ref} must be an object of keyword arguments, got {args!r}"[:300])
    return dict(args)


def build_factory(ref: str, args: dict[str, Any] | None = None) -> nn.Module:
    """``factory(**args)`` for the factory ``ref`` names; must return an ``nn.Module``."""
    factory = import_factory(ref)
    kwargs = check_model_args(args, ref)
    try:
        model = factory(**kwargs)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any failure of user code is one line
        raise AnntError(f"model factory {ref} failed: {_describe(exc)}") from None
    if not isinstance(model, nn.Module):
        raise AnntError(f"model factory {ref} returned a value of type {type(model).__name__}, not a torch.nn.Module")
    return model


# -- weights ---------------------------------------------------------------------------------


def _all_tensors(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a ``torch.save``'d file, never unpickling code."""
    path = regular_file(Path(path).expanduser(), "weights file", MAX_MODEL_BYTES)
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise AnntError(f"corrupt weights file {path}: {_describe(exc)}") from None
    import pickle

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        needs = _pickled_global(exc)
        if needs is None:  # not a pickle at all, or a damaged one
            raise AnntError(f"corrupt weights file {path}: neither a torch.save'd state dict nor safetensors"
                            " (name safetensors files *.safetensors)") from None
        raise AnntError(
            f"weights file {path} is a pickled object that needs code to load ({needs}, e.g. torch.save(model));"
            " save model.state_dict() with torch.save, or safetensors, instead") from None
    except RuntimeError as exc:
        if "TorchScript" in str(exc):
            raise AnntError(f"weights file {path} is a TorchScript model, not weights: pass it as the model"
                            " itself") from None
        raise AnntError(f"corrupt weights file {path}: {_describe(exc)}") from None
    except (OSError, EOFError, ValueError, KeyError, IndexError, zipfile.BadZipFile) as exc:
        raise AnntError(f"corrupt weights file {path}: {_describe(exc)}") from None
    if isinstance(obj, dict) and not _all_tensors(obj):
        for key in ("state_dict", "model", "model_state_dict"):
            if _all_tensors(obj.get(key)):
                obj = obj[key]
                break
    if not _all_tensors(obj):
        kind = type(obj).__name__
        if isinstance(obj, dict):
            bad = next((k for k, v in obj.items() if not isinstance(v, torch.Tensor)), None)
            kind = f"dict whose entry {bad!r} is a {type(obj.get(bad)).__name__}" if obj else "empty dict"
        raise AnntError(f"weights file {path} holds a {kind}, not a state dict of tensors"
                        " (save model.state_dict())")
    return dict(obj)


def _pickled_global(exc: BaseException) -> str | None:
    """The class a ``weights_only`` load refused (the file pickles code), else ``None``."""
    match = re.search(r"GLOBAL ([\w.]+)", str(exc))
    if not match:
        return None
    name = match.group(1)
    module, _, attr = name.rpartition(".")
    file = getattr(sys.modules.get(module), "__file__", None) if module.startswith("_annt_factory_") else None
    return f"{Path(file).stem}.{attr}" if file else name  # a class of a factory file: its file's name


_PREFIXES = ("module.", "_orig_mod.", "net.")


def _candidates(state: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """``state`` and its keys with wrapper prefixes (DataParallel, torch.compile, Normalized) removed."""
    out = [state]
    current = state
    for _ in range(4):
        keys = [k for k in current if k not in ("mean", "std")]
        prefix = next((p for p in _PREFIXES if keys and all(k.startswith(p) for k in keys)), None)
        if prefix is None:
            break
        # a Normalized wrapper's own buffers go with its prefix
        current = {k[len(prefix):]: v for k, v in current.items()
                   if k.startswith(prefix) or prefix != "net."}
        out.append(current)
    return out


def _keys_list(keys: list[str]) -> str:
    shown = ", ".join(keys[:3])
    return shown + (f" (and {len(keys) - 3} more)" if len(keys) > 3 else "")


def _shape(t: torch.Tensor) -> str:
    return "[" + ",".join(str(d) for d in t.shape) + "]"


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Strict ``load_state_dict``; a mismatch is one line naming missing/unexpected keys or shapes.

    States saved from a :class:`Normalized` wrapper, ``nn.DataParallel`` (``module.``) or
    ``torch.compile`` (``_orig_mod.``) load after their prefix is stripped.
    """
    target = model.state_dict()
    wanted = set(target)
    cands = _candidates(state)
    chosen = next((c for c in cands if set(c) == wanted), None)
    if chosen is None:
        chosen = max(cands, key=lambda c: len(set(c) & wanted))
    problems = []
    missing = [k for k in target if k not in chosen]
    unexpected = [k for k in chosen if k not in wanted]
    if missing:
        problems.append(f"missing keys {_keys_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_keys_list(unexpected)}")
    sizes = [k for k in target if k in chosen and tuple(chosen[k].shape) != tuple(target[k].shape)]
    if sizes:
        k = sizes[0]
        more = f" (and {len(sizes) - 1} more)" if len(sizes) > 1 else ""
        problems.append(f"size mismatch for {k}: weights {_shape(chosen[k])}, model {_shape(target[k])}{more}")
    if problems:
        raise AnntError(f"{what} does not fit the model: {'; '.join(problems)}")
    try:
        model.load_state_dict(chosen, strict=True)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise AnntError(f"{what} does not fit the model: {_describe(exc)}") from None


# -- input normalisation and checks ----------------------------------------------------------


def _stats(values: Any, name: str) -> list[float]:
    if isinstance(values, torch.Tensor):
        values = values.flatten().tolist()
    elif hasattr(values, "tolist") and not isinstance(values, (str, bytes)):
        values = values.tolist()
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = [values]
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise AnntError(f"normalisation {name} must be a list of numbers, one per channel, got {values!r}"[:300])
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            raise AnntError(f"normalisation {name} must be finite numbers, got {v!r} in {list(values)!r}"[:300])
        out.append(float(v))
    return out


def check_stats(mean: Any, std: Any) -> tuple[list[float], list[float]]:
    """Validated ``(mean, std)`` lists: finite, the same length, every std > 0."""
    m, s = _stats(mean, "mean"), _stats(std, "std")
    if len(m) != len(s):
        raise AnntError(f"normalisation mean has {len(m)} values but std has {len(s)}; give one per channel")
    if any(v <= 0 for v in s):
        raise AnntError(f"normalisation std must be > 0, got {s}")
    return m, s


class Normalized(nn.Module):
    """``net((x - mean) / std)``: a model trained on normalised inputs, fed [0,1] images.

    ``mean`` and ``std`` are persistent buffers ``[1,C,1,1]``, so a checkpoint of the wrapper
    carries them. A single value applies to every channel.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        m, s = check_stats(mean, std)
        self.net = net
        self.train(net.training)  # a wrapper of an eval-mode model is in eval mode too
        self.register_buffer("mean", torch.tensor(m, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(s, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.mean.shape[1]
        if x.dim() != 4 or (c != 1 and x.shape[1] != c):
            raise AnntError(f"normalisation has {c} channel values but the input has shape"
                            f" {list(x.shape)}; expected [N,{c},H,W] images")
        return self.net((x - self.mean) / self.std)

    def preprocess(self) -> dict[str, list[float]]:
        return {"mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}

    def extra_repr(self) -> str:
        p = self.preprocess()
        return f"mean={p['mean']}, std={p['std']}"


def _model_name(model: nn.Module) -> str:
    meta = getattr(model, "annt_meta", None)
    if isinstance(meta, dict) and isinstance(meta.get("model"), str):
        return f"model {meta['model']}"
    return f"model {type(model).__name__}"


def check_logits(model: nn.Module, x: torch.Tensor, num_classes: int | None = None,
                 what: str | None = None) -> torch.Tensor:
    """The logits of ``model`` on ``x`` (eval mode, no grad); one line if it cannot classify ``x``."""
    from annt.models.inference import model_device

    what = what or _model_name(model)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            out = model(x.to(model_device(model)))
    except AnntError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError, AttributeError, AssertionError) as exc:
        geometry = "x".join(str(d) for d in x.shape[1:])
        raise AnntError(f"{what} does not accept {geometry} images: {_describe(exc)}") from None
    finally:
        for m, training in modes:
            m.training = training
    if not isinstance(out, torch.Tensor):
        raise AnntError(f"{what} returns a {type(out).__name__}, not a tensor of logits")
    if out.dim() != 2 or out.shape[0] != x.shape[0]:
        raise AnntError(f"{what} outputs shape {list(out.shape)} for {x.shape[0]} images;"
                        " expected [N, classes] logits")
    if num_classes is not None and out.shape[1] != num_classes:
        raise AnntError(f"{what} outputs {out.shape[1]} logits but the dataset has {num_classes} classes")
    return out


def wrap(model: nn.Module, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
         num_classes: int | None = None, *, sample: torch.Tensor | None = None) -> nn.Module:
    """``model`` fed [0,1] images: :class:`Normalized` when ``mean``/``std`` are given.

    With ``sample`` (``[N,C,H,W]``) also checks that the statistics have C values, that the model
    runs on those images and (given ``num_classes``) outputs that many logits.
    """
    if not isinstance(model, nn.Module):
        raise AnntError(f"wrap needs a torch.nn.Module, got {type(model).__name__}")
    if (mean is None) != (std is None):
        raise AnntError("give both mean and std for the input normalisation, or neither")
    out = model
    if mean is not None:
        m, s = check_stats(mean, std)
        if sample is not None and sample.dim() == 4 and len(m) not in (1, sample.shape[1]):
            c = sample.shape[1]
            raise AnntError(f"normalisation has {len(m)} mean/std values but the images have"
                            f" {c} channel{'' if c == 1 else 's'}")
        out = Normalized(model, m, s)
        meta = dict(getattr(model, "annt_meta", None) or {})
        meta["preprocess"] = {"mean": m, "std": s}
        out.annt_meta = meta  # type: ignore[assignment]
        for attr in ("annt_onnx", "annt_differentiable", "annt_name", "annt_bits"):
            if hasattr(model, attr):
                setattr(out, attr, getattr(model, attr))
        from annt.models.inference import model_device

        out.to(model_device(model))
    if sample is not None:
        if sample.dim() != 4:
            raise AnntError(f"sample images must be [N,C,H,W], got shape {list(sample.shape)}")
        check_logits(out, sample[:2], num_classes, _model_name(model))
    return out


# -- TorchScript -----------------------------------------------------------------------------


class TorchScriptClassifier(nn.Module):
    """A TorchScript module (``torch.jit.load``) in a plain module, so attributes survive copies."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def __deepcopy__(self, memo: dict) -> TorchScriptClassifier:
        """A copy through TorchScript's own serialisation: ``copy.deepcopy`` of a script module
        leaves non-leaf parameters that ``requires_grad_`` (inference copies) refuses."""
        buffer = io.BytesIO()
        torch.jit.save(self.net, buffer)
        buffer.seek(0)
        device = next(self.net.parameters(), torch.empty(0)).device
        copied = TorchScriptClassifier(torch.jit.load(buffer, map_location=device))
        copied.train(self.training)
        copied.__dict__.update({k: copy.deepcopy(v, memo) for k, v in self.__dict__.items()
                                if k.startswith("annt_")})
        memo[id(self)] = copied
        return copied


def _file_kind(path: Path) -> str:
    """What a file that is not TorchScript is, for the error message."""
    with open(path, "rb") as f:
        head = f.read(16)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError):
            return "a damaged zip file, not TorchScript"
        if not any(n.endswith("data.pkl") for n in names):
            return "a zip file but not TorchScript (no data.pkl)"
        if any(n.endswith("constants.pkl") for n in names):
            return "a damaged TorchScript file"
    elif head[:1] != b"\x80":
        if len(head) >= 9 and head[8:9] == b"{":
            return "a safetensors weights file, not TorchScript: pass it with --weights and a --model-factory"
        return "not a TorchScript file (nor a PyTorch pickle)"
    import pickle

    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if _pickled_global(exc) is None:
            return "a damaged PyTorch file, not TorchScript"
        return ("a pickled Python object that needs code to load, not TorchScript: save it with"
                " torch.jit.save(torch.jit.script(model)), or save model.state_dict() and pass it with"
                " --weights and a --model-factory")
    except Exception:  # noqa: BLE001 - damaged either way
        return "a damaged PyTorch file, not TorchScript"
    return "a PyTorch state_dict/pickle, not TorchScript: pass it with --weights and a --model-factory"


def load_torchscript(path: str | Path) -> nn.Module:
    """A TorchScript classifier from ``torch.jit.save``, on the CPU in eval mode."""
    from annt.inputs.hashing import file_digest

    path = regular_file(Path(path).expanduser(), "model file", MAX_MODEL_BYTES)
    try:
        with warnings.catch_warnings():  # deprecated in favour of torch.export, still what users have
            warnings.simplefilter("ignore", DeprecationWarning)
            net = torch.jit.load(str(path), map_location="cpu")
    except Exception:  # noqa: BLE001 - torch.jit.load raises RuntimeError and ValueError alike
        raise AnntError(f"model file {path} is {_file_kind(path)}") from None
    model = TorchScriptClassifier(net).eval()
    model.annt_meta = {"model": f"torchscript:{path}", "bits": FULL_BITS,  # type: ignore[assignment]
                       "source_sha256": file_digest(path)}
    return model


# -- ONNX ------------------------------------------------------------------------------------

_ONNX_FLOATS = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16"}
_ONNX_BATCH = 512


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise AnntError(f"ONNX models need onnxruntime: {ONNX_INSTALL}") from None
    return onnxruntime


class OnnxClassifier(nn.Module):
    """An ONNX classifier run by ONNX Runtime on the CPU: forward only, no autograd graph.

    Holds the model bytes; the session is created on first use (copies and pickles recreate
    it). A zero-size frozen parameter gives ``next(model.parameters())`` a device.
    """

    annt_onnx = True
    annt_differentiable = False

    def __init__(self, data: bytes, path: str | Path = "<onnx>") -> None:
        super().__init__()
        self.path = str(path)
        self._data = bytes(data)
        self._session = None
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)
        session = self.session()
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise AnntError(f"ONNX model {self.path} has {len(inputs)} inputs; ANNT needs one image input")
        inp = inputs[0]
        if inp.type not in _ONNX_FLOATS or len(inp.shape) != 4:
            raise AnntError(f"ONNX model {self.path} input {inp.name!r} is {inp.type} of shape {inp.shape};"
                            " ANNT needs one 4-d float input [N,C,H,W]")
        self.input_name = inp.name
        self._dtype = _ONNX_FLOATS[inp.type]
        dims = list(inp.shape)
        self._batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None
        chw = dims[1:]
        self.input_shape: tuple[int, int, int] | None = (
            tuple(chw) if all(isinstance(d, int) and d > 0 for d in chw) else None)  # type: ignore[assignment]
        outputs = session.get_outputs()
        if not outputs:
            raise AnntError(f"ONNX model {self.path} has no outputs")
        self.output_name = outputs[0].name
        width = outputs[0].shape[-1] if outputs[0].shape else None
        self.num_outputs: int | None = width if isinstance(width, int) and width > 0 else None

    def session(self):
        if self._session is None:
            ort = _ort()
            options = ort.SessionOptions()
            options.intra_op_num_threads = max(1, torch.get_num_threads())
            options.inter_op_num_threads = 1
            options.log_severity_level = 4  # errors reach the user as AnntError lines
            try:
                self._session = ort.InferenceSession(self._data, options, providers=["CPUExecutionProvider"])
            except Exception as exc:  # noqa: BLE001 - InvalidProtobuf, Fail, ... are not RuntimeErrors
                raise AnntError(f"{self.path} is not a valid ONNX model: {_describe(exc)}") from None
        return self._session

    def __deepcopy__(self, memo: dict) -> OnnxClassifier:
        new = OnnxClassifier.__new__(OnnxClassifier)
        memo[id(self)] = new
        state = {k: v for k, v in self.__dict__.items() if k != "_session"}
        new.__dict__.update(copy.deepcopy(state, memo))
        new.__dict__["_session"] = None
        return new

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_session"] = None  # an InferenceSession does not pickle; recreated on first use
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            raise AnntError(
                f"{self.path} is an ONNX model run by ONNX Runtime: it has no gradients; use a score- or"
                " decision-based attack (square, boundary, hop_skip_jump) or export a differentiable model")
        if x.dim() != 4 or (self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape):
            raise AnntError(self._shape_error(x))
        import numpy as np

        data = x.detach().to("cpu", torch.float32).contiguous().numpy().astype(self._dtype, copy=False)
        session = self.session()
        step = self._batch or _ONNX_BATCH
        outs = []
        for i in range(0, len(data), step):
            chunk = data[i:i + step]
            if self._batch is not None and len(chunk) != self._batch:  # fixed batch: pad the tail
                pad = np.zeros((self._batch - len(chunk), *chunk.shape[1:]), dtype=chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            try:
                result = session.run([self.output_name], {self.input_name: chunk})[0]
            except Exception as exc:  # noqa: BLE001 - onnxruntime's InvalidArgument, Fail, ...
                if type(exc).__name__ == "InvalidArgument":
                    raise AnntError(self._shape_error(x, exc)) from None
                raise AnntError(f"ONNX model {self.path} failed on input of shape {list(x.shape)}:"
                                f" {_describe(exc)}") from None
            outs.append(torch.from_numpy(np.asarray(result, dtype=np.float32))[: len(data[i:i + step])])
        if not outs:
            width = self.num_outputs or 0
            return torch.zeros(0, width, device=x.device)
        return torch.cat(outs).to(x.device)

    def _shape_error(self, x: torch.Tensor, exc: BaseException | None = None) -> str:
        want = (f"[N,{','.join(str(d) for d in self.input_shape)}]" if self.input_shape is not None
                else "[N,C,H,W]")
        why = f" ({_describe(exc)})" if exc is not None else ""
        return f"ONNX model {self.path} expects input of shape {want} but got {list(x.shape)}{why}"

    def extra_repr(self) -> str:
        return f"path={self.path!r}, input_shape={self.input_shape}"


def load_onnx(path: str | Path) -> OnnxClassifier:
    """An ``.onnx`` classifier with one ``[N,C,H,W]`` float input, run by ONNX Runtime."""
    _ort()
    path = regular_file(Path(path).expanduser(), "ONNX model", MAX_MODEL_BYTES)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AnntError(f"ONNX model {path} cannot be read: {exc.strerror or exc}") from None
    model = OnnxClassifier(data, path).eval()
    meta: dict[str, Any] = {"model": f"onnx:{path}", "bits": FULL_BITS, "source_sha256": _sha256_bytes(data)}
    shape = model.input_shape
    if shape is not None and shape[1] == shape[2]:
        meta["geometry"] = {"channels": shape[0], "image_size": shape[1]}
    model.annt_meta = meta  # type: ignore[assignment]
    return model


# -- one entry point -------------------------------------------------------------------------
