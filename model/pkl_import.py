"""Read official EG3D training snapshots (`.pkl`) as plain data, without running any of their code.

An official snapshot is a pickle of `dict(training_set_kwargs, G, D, G_ema, augment_pipe)`. Its
networks are "persistent" objects: each one embeds the full source of the module that defined
its class, and the official loader `exec`s that source. Plain `pickle.load` is therefore
arbitrary code execution. This module instead:

* unpickles with `RestrictedUnpickler`, whose `find_class` resolves only an explicit allow-list
  of globals; official classes become inert `OfficialObject` stand-ins that merely record their
  constructor arguments and state, and the embedded module sources are never looked at;
* decodes the tensor storages (legacy `torch.save` blobs) with our own parser, because torch's
  `torch.storage._load_from_bytes` would run a second, unrestricted unpickler;
* flattens each network into an `OfficialModule` (init kwargs, attributes, a state dict keyed
  by the official dotted names) and rebuilds our `GeneratorConfig` / `DiscriminatorConfig`.
"""
from __future__ import annotations

import collections
import copy
import io
import math
import os
import pickle
import reprlib
import struct
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from model.presets import SHAPENET_FOV_DEG
from model.config import (
    SR_MODULES,
    BackboneConfig,
    DecoderConfig,
    DiscriminatorConfig,
    GeneratorConfig,
    MappingConfig,
    RegularizationConfig,
    RenderingConfig,
    SuperResConfig,
)

try:  # numpy >= 2 moved numpy.core to numpy._core; old pickles still say numpy.core.
    from numpy._core.multiarray import scalar as _np_scalar
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import scalar as _np_scalar

__all__ = [
    "PklImportError",
    "UnsafePickleError",
    "OfficialObject",
    "OfficialModule",
    "RestrictedUnpickler",
    "restricted_load",
    "restricted_loads",
    "read_snapshot",
    "read_network",
    "generator_config_from_official",
    "discriminator_config_from_official",
]

NETWORK_NAMES = ("G", "D", "G_ema")


class PklImportError(ValueError):
    """The file is not a readable official EG3D snapshot (empty, truncated, wrong layout...)."""


class UnsafePickleError(PklImportError):
    """The pickle names a global outside the allow-list; nothing from it was executed."""


class _Malformed(PklImportError):
    """Raised while unpickling, before the file name is known to the raiser; re-raised with it."""


# ------------------------------------------------------------------------------------------------
# Bounds against hostile files: the work and memory of reading a file follow from its own size.
#
# * The unpickler is the pure-Python one (`pickle._Unpickler`): the C unpickler sizes its memo
#   table from the index a PUT opcode names, so ten bytes can make it allocate tens of GB.
# * Reads are capped at what the file holds (a FRAME or BINBYTES length is only a claim).
# * Walking the result (`_plain`, `_walk`) counts every node it visits, shared references
#   included, against `_Budget`: x = [x, x] forty times is a few hundred bytes of pickle but 2^40
#   nodes once expanded. Nesting depth is capped too.

BUDGET_BASE = 50_000               # nodes any file may expand to (a real snapshot walks ~6000)
BUDGET_BYTES_PER_NODE = 256        # plus one node per this many bytes of the file
MAX_DEPTH = 100                    # nesting of plain data / modules (real snapshots: < 20)
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 80
_short.maxlevel = 3


def _safe_repr(value) -> str:
    """A bounded repr for error messages (a hostile value's full repr could be exponential)."""
    return _short.repr(value)


class _Budget:
    """Counts the nodes visited while walking unpickled data; too many = a hostile file."""

    def __init__(self, file_size: int):
        self.left = BUDGET_BASE + file_size // BUDGET_BYTES_PER_NODE
        self.file_size = file_size

    def spend(self, n: int = 1) -> None:
        self.left -= n
        if self.left < 0:
            raise _Malformed(f"its data expands far beyond what {self.file_size} bytes of pickle can hold "
                             "(shared or self-referencing structures); refusing to walk it")


class _CappedReader:
    """File wrapper for the unpickler: reads never ask for more than the file has left."""

    def __init__(self, f, size: int):
        self._f, self._left = f, size

    def read(self, n: int = -1) -> bytes:
        n = self._left if n is None or n < 0 else min(n, self._left)
        data = self._f.read(n)
        self._left -= len(data)
        return data

    def readline(self, limit: int = -1) -> bytes:
        limit = self._left if limit is None or limit < 0 else min(limit, self._left)
        data = self._f.readline(limit)
        self._left -= len(data)
        return data

    @property
    def exhausted(self) -> bool:
        return self._left <= 0

    def readinto(self, buf) -> int:
        view = memoryview(buf)[:self._left]
        n = self._f.readinto(view)
        self._left -= n
        return n


# ------------------------------------------------------------------------------------------------
# Inert stand-ins for the official classes.


class OfficialObject:
    """Inert stand-in for an instance of an official class.

    It only records what the pickle said: the class name, the constructor/`__new__` arguments and
    the state dict that the real class would have received. It has no behaviour, so whatever a
    pickle does with it cannot run anything.
    """

    class_path: Optional[str] = None  # 'module.Class' of classes pickled by reference

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.class_name = cls.__name__
        obj.args = args
        obj.kwargs = kwargs
        obj.state = {}
        obj.meta_version = None
        return obj

    def __init__(self, *args, **kwargs):
        pass  # arguments were recorded by __new__ (REDUCE calls cls(*args), NEWOBJ only __new__)

    def __setstate__(self, state):
        # pickle's BUILD: keep the state as data instead of applying it to a real object.
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            merged = {}
            for part in state:
                if isinstance(part, dict):
                    merged.update(part)
            state = merged
        if not isinstance(state, dict):
            raise _Malformed(f"the state of a {self.class_name} object is a "
                             f"{type(state).__name__}, expected a dict")
        self.state = dict(state)

    def __deepcopy__(self, memo):
        # copy.deepcopy would go through __setstate__, which records *pickle* state.
        new = object.__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new

    def __repr__(self):
        return f"<OfficialObject {self.class_path or self.class_name}>"


class _PersistentObject(OfficialObject):
    """Stand-in for an object of a `@persistent_class`; its class name comes from the pickle."""


class _EasyDict(dict):
    """Stand-in for `dnnlib.util.EasyDict`: a plain dict (converted to `dict` after loading)."""


# Official classes that may appear in snapshots, by the module that defines them. Those pickled
# by reference (not persistent) are resolved through find_class and become OfficialObject
# subclasses; persistent ones are named inside the pickle and only this table's names are known.
_OFFICIAL_CLASSES = {
    "training.triplane": ("TriPlaneGenerator", "OSGDecoder"),
    "training.volumetric_rendering.renderer": ("ImportanceRenderer",),
    "training.volumetric_rendering.ray_marcher": ("MipRayMarcher2",),
    "training.volumetric_rendering.ray_sampler": ("RaySampler",),
    "training.superresolution": (
        "SuperresolutionHybrid2X", "SuperresolutionHybrid4X", "SuperresolutionHybrid8X",
        "SuperresolutionHybrid8XDC", "SuperresolutionHybridDeepfp32", "SynthesisBlockNoUp"),
    "training.networks_stylegan2": (
        "FullyConnectedLayer", "Conv2dLayer", "MappingNetwork", "SynthesisLayer", "ToRGBLayer",
        "SynthesisBlock", "SynthesisNetwork", "Generator", "DiscriminatorBlock",
        "MinibatchStdLayer", "DiscriminatorEpilogue", "Discriminator"),
    "training.dual_discriminator": ("SingleDiscriminator", "DualDiscriminator", "DummyDualDiscriminator"),
    "training.augment": ("AugmentPipe",),
    # Plain torch containers/activations inside the decoder: replaced too, they need no behaviour.
    "torch.nn.modules.container": ("Sequential",),
    "torch.nn.modules.activation": ("Softplus",),
}
_CLASS_MODULE = {name: mod for mod, names in _OFFICIAL_CLASSES.items() for name in names}
_STAND_IN_CACHE: Dict[str, type] = {}


def _stand_in_class(module: str, name: str) -> type:
    """One OfficialObject subclass per official class, so repeated references are the same type."""
    path = f"{module}.{name}"
    if path not in _STAND_IN_CACHE:
        _STAND_IN_CACHE[path] = type(name, (OfficialObject,), {"class_path": path, "__module__": __name__})
    return _STAND_IN_CACHE[path]


# ------------------------------------------------------------------------------------------------
# Safe replacements for the torch / numpy helpers that real snapshots call.


class _Storage:
    """A decoded tensor storage: a flat 1-D tensor holding the raw elements."""

    def __init__(self, flat: torch.Tensor):
        self.flat = flat


def _int_tuple(value, what: str) -> Tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or len(value) > 64 or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise _Malformed(f"tensor {what} must be a tuple of non-negative ints, got {_safe_repr(value)}")
    return tuple(value)


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                    metadata=None):
    """Our `torch._utils._rebuild_tensor_v2`: a bounds-checked strided view, hooks dropped."""
    if not isinstance(storage, _Storage):
        raise _Malformed(f"a tensor is built from a {type(storage).__name__}, not an embedded storage")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(size) != len(stride) or not isinstance(storage_offset, int) or storage_offset < 0:
        raise _Malformed(f"inconsistent tensor layout: size {size}, stride {stride}, "
                         f"offset {_safe_repr(storage_offset)}")
    numel = storage.flat.numel()
    if all(s > 0 for s in size):
        last = storage_offset + sum((s - 1) * st for s, st in zip(size, stride))
        if last >= numel:
            raise _Malformed(f"tensor of size {size} reads past the end of its storage ({numel} elements)")
    if math.prod(size) > numel:                  # e.g. stride-0 views that would expand on copy
        raise _Malformed(f"tensor of size {size} holds more elements than its storage ({numel})")
    return storage.flat.as_strided(size, stride, storage_offset)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    """Our `torch._utils._rebuild_parameter(_with_state)`: parameters are kept as plain tensors."""
    if not isinstance(data, torch.Tensor):
        raise _Malformed(f"a parameter wraps a {type(data).__name__}, not a tensor")
    return data


def _numpy_dtype(obj, align=False, copy=False):
    """`numpy.dtype` restricted to dtype strings such as 'f8' (what real snapshots contain)."""
    if not isinstance(obj, str):
        raise _Malformed(f"numpy.dtype called with a {type(obj).__name__}; only dtype strings are accepted")
    dtype = np.dtype(obj, bool(align), bool(copy))
    if dtype.hasobject:
        raise _Malformed(f"numpy object dtype {obj!r} is not accepted")
    return dtype


def _numpy_scalar(dtype, data=None):
    """`numpy.core.multiarray.scalar` for plain numeric dtypes (object dtypes could carry anything)."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise _Malformed("numpy scalar with an unsupported dtype or payload")
    return _np_scalar(dtype, data)


# Storage classes named inside the legacy torch.save blobs -> element dtype.
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128, "UntypedStorage": torch.uint8,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first record of a legacy (non-zip) torch.save stream
_LEGACY_PROTOCOL = 1001


class _StorageType:
    """Stand-in for a `torch.<X>Storage` class named inside a storage blob."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _BlobUnpickler(pickle._Unpickler):
    """Unpickler for one legacy `torch.save` storage blob: only storage types, nothing callable."""

    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source
        self.storages: Dict[str, Tuple[torch.dtype, int, Any]] = {}

    def find_class(self, module, name):
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafePickleError(
            f"refusing to load {self.source}: an embedded torch storage blob references the global "
            f"'{module}.{name}', which is not on the allow-list (a storage blob may only name "
            f"torch storage types)")

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, numel, view metadata)
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise _Malformed(f"unsupported persistent id in a storage blob: {_safe_repr(pid)}")
        _, stype, key, _location, numel, view = pid
        if not isinstance(stype, _StorageType) or not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise _Malformed(f"malformed storage record in a storage blob: {_safe_repr(pid)}")
        if key in self.storages and self.storages[key][:2] != (stype.dtype, numel):
            raise _Malformed(f"storage {key!r} is declared twice with different layouts")
        self.storages[key] = (stype.dtype, numel, view)
        return ("__storage__", key)


def _decode_storage_blob(blob: bytes, source: str) -> _Storage:
    """Decode the bytes of a legacy `torch.save(storage)` without torch.load.

    Layout: pickled magic number, protocol version, sys-info dict, the object pickle (whose
    persistent ids describe the storages), the pickled list of storage keys, then per key an
    int64 element count followed by the raw little-endian elements.
    """
    if not isinstance(blob, (bytes, bytearray)):
        raise _Malformed(f"torch.storage._load_from_bytes called with a {type(blob).__name__}")
    try:
        return _parse_storage_blob(io.BytesIO(blob), source)
    except (UnsafePickleError, _Malformed):
        raise
    except Exception as e:  # bad bytes inside an otherwise well-formed outer pickle
        raise _Malformed(f"an embedded storage blob is corrupt: {type(e).__name__}: {e}") from e


def _parse_storage_blob(f, source: str) -> _Storage:
    unpickler = _BlobUnpickler(f, source)
    if unpickler.load() != _LEGACY_MAGIC:
        raise _Malformed("an embedded storage blob is not a legacy torch.save stream (bad magic number)")
    if unpickler.load() != _LEGACY_PROTOCOL:
        raise _Malformed("an embedded storage blob has an unsupported torch.save protocol version")
    sys_info = unpickler.load()
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise _Malformed("an embedded storage blob is big-endian or lacks its sys-info record")
    result = unpickler.load()
    keys = unpickler.load()
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        raise _Malformed("an embedded storage blob has a malformed storage key list")
    data: Dict[str, torch.Tensor] = {}
    for key in keys:
        if key not in unpickler.storages:
            raise _Malformed(f"an embedded storage blob lists an undeclared storage {key!r}")
        dtype, numel, _ = unpickler.storages[key]
        header = f.read(8)
        if len(header) != 8 or struct.unpack("<q", header)[0] != numel:
            raise _Malformed(f"storage {key!r} in an embedded blob has a wrong or missing element count")
        nbytes = numel * torch.empty((), dtype=dtype).element_size()
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise _Malformed(f"storage {key!r} in an embedded blob is truncated")
        data[key] = torch.frombuffer(bytearray(raw), dtype=dtype) if numel else torch.empty(0, dtype=dtype)
    if not (isinstance(result, tuple) and len(result) == 2 and result[0] == "__storage__"):
        raise _Malformed("an embedded storage blob does not hold a single storage")
    key = result[1]
    dtype, numel, view = unpickler.storages[key]
    if key not in data:
        raise _Malformed(f"an embedded storage blob has no data for storage {key!r}")
    if view is None:
        return _Storage(data[key])
    # Very old torch versions saved views: (root key, offset, size) into another storage.
    if not (isinstance(view, tuple) and len(view) == 3):
        raise _Malformed("malformed storage view record in an embedded blob")
    view_key, offset, size = view
    if view_key not in data or not isinstance(offset, int) or not isinstance(size, int) or \
            offset < 0 or size < 0 or offset + size > data[view_key].numel():
        raise _Malformed("storage view out of range in an embedded blob")
    return _Storage(data[view_key][offset:offset + size])


# ------------------------------------------------------------------------------------------------
# The restricted unpickler.


def _reconstruct_persistent_obj(meta):
    """Our `torch_utils.persistence._reconstruct_persistent_obj`.

    The official one execs `meta['module_src']`; we only keep the class name and state.
    """
    if not isinstance(meta, dict):
        raise _Malformed(f"persistent object metadata is a {type(meta).__name__}, expected a dict")
    if meta.get("type") != "class":
        raise _Malformed(f"unsupported persistent object type {_safe_repr(meta.get('type'))}")
    class_name, state = meta.get("class_name"), meta.get("state")
    if not isinstance(class_name, str) or not class_name.isidentifier():
        raise _Malformed(f"persistent object with an invalid class name {_safe_repr(class_name)}")
    if not isinstance(state, dict):
        raise _Malformed(f"persistent {class_name} object has no state dict")
    obj = _PersistentObject.__new__(_PersistentObject)
    obj.class_name = class_name
    module = _CLASS_MODULE.get(class_name)
    obj.class_path = f"{module}.{class_name}" if module else None
    obj.state = dict(state)
    obj.meta_version = meta.get("version")
    return obj


# Allowed globals -> the object the pickle gets instead. Anything else is refused.
_ALLOWED_GLOBALS: Dict[str, Any] = {
    "collections.OrderedDict": collections.OrderedDict,
    "dnnlib.util.EasyDict": _EasyDict,
    "dnnlib.EasyDict": _EasyDict,
    "numpy.core.multiarray.scalar": _numpy_scalar,
    "numpy._core.multiarray.scalar": _numpy_scalar,
    "numpy.dtype": _numpy_dtype,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch.Size": torch.Size,
    "torch.device": torch.device,
    "torch_utils.persistence._reconstruct_persistent_obj": _reconstruct_persistent_obj,
    # "torch.storage._load_from_bytes" is bound per unpickler (it needs the file name).
}


class RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler (see "Bounds" above), resolving only the allow-listed globals.

    Official classes become inert `OfficialObject`s; storage blobs go through our own parser.
    Any other global raises `UnsafePickleError` before anything is called.
    """

    def __init__(self, file, source: str = "<pickle>"):
        super().__init__(file)
        self.source = source

    def find_class(self, module, name):
        path = f"{module}.{name}"
        if path == "torch.storage._load_from_bytes":
            return self._load_from_bytes
        if path in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[path]
        if name in _OFFICIAL_CLASSES.get(module, ()):
            return _stand_in_class(module, name)
        raise UnsafePickleError(
            f"refusing to load {self.source}: it references the global '{path}', "
            f"which is not on the allow-list")

    def persistent_load(self, pid):
        raise _Malformed("unexpected persistent id; official snapshots are plain pickles")

    def _load_from_bytes(self, blob):
        return _decode_storage_blob(blob, self.source)


def restricted_loads(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle bytes with `RestrictedUnpickler`; errors name `source`."""
    return _restricted_load_stream(_CappedReader(io.BytesIO(data), len(data)), source, bytes(data[:16]))


def restricted_load(path) -> Any:
    """Unpickle a file with `RestrictedUnpickler`, turning every failure into a clear error."""
    source = os.fspath(path)
    if os.path.isdir(source):
        raise PklImportError(f"{source} is a directory, not an EG3D .pkl snapshot")
    if os.path.getsize(source) == 0:
        raise PklImportError(f"{source} is empty (0 bytes); expected an official EG3D .pkl snapshot")
    with open(source, "rb") as f:
        head = f.read(16)
        f.seek(0)
        return _restricted_load_stream(_CappedReader(f, os.fstat(f.fileno()).st_size), source, head)


def _restricted_load_stream(f, source: str, head: bytes) -> Any:
    if not head:
        raise PklImportError(f"{source} is empty (0 bytes); expected an official EG3D .pkl snapshot")
    try:
        return RestrictedUnpickler(f, source).load()
    except UnsafePickleError:
        raise  # even in a file that does not look like a pickle: say what it tried to call
    except Exception as e:  # the pickle machinery raises many types for bad input
        ended = isinstance(f, _CappedReader) and f.exhausted
        raise _describe_failure(source, head, e, ended) from e


def _describe_failure(source: str, head: bytes, error: Exception, ended: bool = False) -> PklImportError:
    """Say whether a file is not a pickle at all, a truncated one, or a corrupt one."""
    if head.startswith(b"PK\x03\x04"):
        return PklImportError(f"{source} is a zip archive (e.g. a torch.save file), not an official "
                              f"EG3D .pkl snapshot")
    # Snapshots start with the PROTO opcode (0x80) and a protocol number of 2..5.
    if not (head[:1] == b"\x80" and (len(head) == 1 or 2 <= head[1] <= 5)):
        return PklImportError(f"{source} is not a pickle file (it starts with {head[:8]!r}); "
                              f"expected an official EG3D .pkl snapshot")
    if isinstance(error, _Malformed):
        return PklImportError(f"cannot load {source}: {error}")
    if isinstance(error, (MemoryError, RecursionError)):
        return PklImportError(f"cannot load {source}: its pickle asks for more memory or nesting than a "
                              f"snapshot has ({type(error).__name__}); the file is corrupt or hostile")
    if isinstance(error, EOFError) or "truncated" in str(error) or (ended and not isinstance(error, UnsafePickleError)):
        detail = f" ({error})" if str(error) else ""
        return PklImportError(f"{source} is truncated: the pickle data ends early{detail}; "
                              f"the file is probably an incomplete download or copy, or corrupt")
    return PklImportError(f"{source} is corrupt or not an EG3D snapshot: "
                          f"{type(error).__name__}: {error}")


# ------------------------------------------------------------------------------------------------
# Flattening the stand-ins into plain data.

# nn.Module bookkeeping fields that are not attributes of the network itself.
_TORCH_INTERNALS = {"training", "_parameters", "_buffers", "_non_persistent_buffers_set", "_modules",
                    "_version", "_init_args", "_init_kwargs"}


def _is_torch_internal(name: str) -> bool:
    return name in _TORCH_INTERNALS or (name.startswith("_") and "hook" in name)


@dataclass(eq=False)
class OfficialModule:
    """One official network as plain data.

    `state_dict` uses the official dotted names and order (as `module.state_dict()` would);
    `tensor_attrs` holds tensors that are plain attributes or non-persistent buffers (e.g.
    `renderer.plane_axes`); `module_classes` maps each submodule path to its class name.
    """
    class_name: str
    init_args: list
    init_kwargs: dict
    attrs: dict
    state_dict: Dict[str, torch.Tensor]
    tensor_attrs: Dict[str, torch.Tensor] = field(default_factory=dict)
    buffer_names: List[str] = field(default_factory=list)
    module_classes: Dict[str, str] = field(default_factory=dict)
    class_path: Optional[str] = None

    def __repr__(self):
        return (f"OfficialModule({self.class_name}, {len(self.state_dict)} tensors, "
                f"init_kwargs keys {sorted(self.init_kwargs)})")


def _plain(value, budget: Optional[_Budget] = None, depth: int = 0):
    """Convert EasyDicts/OrderedDicts to dicts and numpy scalars to Python numbers, recursively,
    visiting at most `budget` nodes (shared references count each time)."""
    if budget is None:
        budget = _Budget(0)
    budget.spend()
    if depth > MAX_DEPTH:
        raise _Malformed("data nested too deeply")
    if isinstance(value, dict):
        return {k: _plain(v, budget, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, budget, depth + 1) for v in value]
    if isinstance(value, tuple) and not isinstance(value, torch.Size):
        return tuple(_plain(v, budget, depth + 1) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.dtype):
        return str(value)
    return value


def _to_module(obj, what: str, budget: Optional[_Budget] = None) -> OfficialModule:
    if not isinstance(obj, OfficialObject):
        raise _Malformed(f"{what} is a {type(obj).__name__}, not an official network")
    budget = budget or _Budget(0)
    state_dict: Dict[str, torch.Tensor] = {}
    tensor_attrs: Dict[str, torch.Tensor] = {}
    buffers: List[str] = []
    classes: Dict[str, str] = {}
    _walk(obj, "", state_dict, tensor_attrs, buffers, classes, set(), budget)
    state = obj.state
    init_args = state.get("_init_args", ())
    init_kwargs = state.get("_init_kwargs", {})
    if not isinstance(init_args, (tuple, list)) or not isinstance(init_kwargs, dict):
        raise _Malformed(f"{what} has malformed constructor arguments")
    attrs = {k: _plain(v, budget) for k, v in state.items()
             if not _is_torch_internal(k) and not isinstance(v, torch.Tensor)}
    return OfficialModule(class_name=obj.class_name, init_args=list(_plain(tuple(init_args), budget)),
                          init_kwargs=_plain(init_kwargs, budget), attrs=attrs, state_dict=state_dict,
                          tensor_attrs=tensor_attrs, buffer_names=buffers, module_classes=classes,
                          class_path=obj.class_path)


def _walk(obj: OfficialObject, prefix: str, state_dict, tensor_attrs, buffers, classes, active, budget: _Budget):
    """Collect tensors in `nn.Module.state_dict()` order: parameters, buffers, then children."""
    if id(obj) in active:
        raise _Malformed(f"module graph has a cycle at '{prefix.rstrip('.')[:200]}'")
    if len(active) >= MAX_DEPTH:
        raise _Malformed("modules nested too deeply")
    active.add(id(obj))
    state = obj.state
    if not isinstance(state, dict):
        raise _Malformed(f"'{prefix[:200]}' has no state dict")
    budget.spend(1 + len(state))

    def entries(name):
        value = state.get(name)
        value = {} if value is None else value
        if not isinstance(value, dict):
            raise _Malformed(f"'{prefix}{name}' is a {type(value).__name__}, expected a dict")
        budget.spend(len(value))
        return value.items()

    def tensor(name, value):
        if not isinstance(value, torch.Tensor):
            raise _Malformed(f"'{prefix}{name}' is a {type(value).__name__}, expected a tensor")
        return value.detach()  # a fresh tensor object: no hooks or flags from the pickle

    non_persistent = state.get("_non_persistent_buffers_set")
    non_persistent = non_persistent if isinstance(non_persistent, (set, frozenset)) else set()
    for name, value in entries("_parameters"):
        if value is not None:
            state_dict[prefix + name] = tensor(name, value)
    for name, value in entries("_buffers"):
        if value is None:
            continue
        if name in non_persistent:
            tensor_attrs[prefix + name] = tensor(name, value)
        else:
            state_dict[prefix + name] = tensor(name, value)
            buffers.append(prefix + name)
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and not _is_torch_internal(name):
            tensor_attrs[prefix + name] = value.detach()
    for name, child in entries("_modules"):
        if child is None:
            continue
        if not isinstance(child, OfficialObject):
            raise _Malformed(f"submodule '{prefix}{name}' is a {type(child).__name__}")
        classes[prefix + name] = child.class_name
        _walk(child, f"{prefix}{name}.", state_dict, tensor_attrs, buffers, classes, active, budget)
    active.discard(id(obj))


def read_snapshot(path, nets: Optional[Tuple[str, ...]] = None) -> dict:
    """Read an official snapshot into {'G', 'D', 'G_ema': OfficialModule, 'training_set_kwargs',
    'augment_pipe'}. Networks absent from the file are absent from the result, unless listed in
    `nets`, which makes them required. Nothing in the file is executed."""
    source = os.fspath(path)
    nets = () if nets is None else tuple(nets)
    data = restricted_load(source)
    if not isinstance(data, dict) or not any(k in data for k in NETWORK_NAMES):
        if isinstance(data, dict):
            kind = f"a dict with keys {sorted(map(str, data))[:8]}"
        else:
            kind = f"a {type(data).__name__}"
        raise PklImportError(f"{source} is not an EG3D training snapshot: its top level is {kind}, "
                             f"expected a dict with 'G', 'D', 'G_ema'")
    for net in nets:
        if data.get(net) is None:
            raise PklImportError(f"{source} has no network '{net}' (present: "
                                 f"{[k for k in NETWORK_NAMES if data.get(k) is not None]})")
    out: Dict[str, Any] = {}
    budget = _Budget(os.path.getsize(source))
    try:
        for net in NETWORK_NAMES:
            if data.get(net) is not None:
                out[net] = _to_module(data[net], f"'{net}'", budget)
        aug = data.get("augment_pipe")
        out["augment_pipe"] = None if aug is None else _to_module(aug, "'augment_pipe'", budget)
        out["training_set_kwargs"] = _plain(data.get("training_set_kwargs"), budget)
    except _Malformed as e:
        raise PklImportError(f"cannot read {source}: {e}") from e
    except (TypeError, AttributeError, ValueError, KeyError, RecursionError) as e:  # hostile layouts
        if isinstance(e, PklImportError):
            raise
        raise PklImportError(f"cannot read {source}: malformed network data ({type(e).__name__}: {e})") from e
    return out


def read_network(path, net: str = "G_ema") -> OfficialModule:
    """Read one network ('G', 'G_ema' or 'D') of an official snapshot."""
    if net not in NETWORK_NAMES:
        raise ValueError(f"net must be one of {NETWORK_NAMES}, got {net!r}")
    return read_snapshot(path, nets=(net,))[net]


# ------------------------------------------------------------------------------------------------
# Rebuilding our configs from the official constructor arguments.

_MISSING = object()


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class _Options:
    """Reads an official kwargs dict key by key, so unsupported leftovers can be reported."""

    def __init__(self, data, where: str):
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ValueError(f"{where} must be a dict, got {type(data).__name__}")
        self.data, self.where, self.used = data, where, set()
        self.filled: List[str] = []      # "key = default" for each absent key given its default

    def name(self, key):
        return f"{self.where}[{key!r}]"

    def get(self, key, default=_MISSING, check=None, expected="", choices=None):
        self.used.add(key)
        if key not in self.data:
            if default is _MISSING:
                raise ValueError(f"missing official option {self.name(key)}")
            note = f"{self.name(key)} = {default!r}"
            if note not in self.filled:
                self.filled.append(note)
            return default
        value = self.data[key]
        if choices is not None and not any(value == c and type(value) is type(c) for c in choices):
            raise ValueError(f"unsupported value {value!r} for official option {self.name(key)}; "
                             f"supported: {list(choices)}")
        if check is not None and not check(value):
            raise ValueError(f"official option {self.name(key)} = {value!r} must be {expected}")
        return value

    def ignore(self, *keys):
        self.used.update(keys)

    def finish(self):
        unknown = [k for k in self.data if k not in self.used]
        if unknown:
            raise ValueError(f"unsupported official option(s) {[self.name(k) for k in unknown]}")


def _int_at_least(n):
    return lambda v: _is_int(v) and v >= n


def _merged_kwargs(module: OfficialModule, params: Tuple[str, ...]) -> dict:
    """Constructor kwargs with positional `_init_args` folded in by the official signature."""
    kwargs = copy.deepcopy(module.init_kwargs)
    if len(module.init_args) > len(params):
        raise ValueError(f"{module.class_name}: too many positional constructor arguments")
    for name, value in zip(params, module.init_args):
        if name in kwargs:
            raise ValueError(f"{module.class_name}: argument {name!r} given positionally and by keyword")
        kwargs[name] = copy.deepcopy(value)
    return kwargs


def _fused_modconv(value, where: str) -> str:
    """Official fused_modconv_default (True / False / 'inference_only') -> our names."""
    if value is True:
        return "always"
    if value is False:
        return "never"
    if value == "inference_only":
        return "inference_only"
    raise ValueError(f"unsupported value {value!r} for official option {where}")


# What the official code uses when a snapshot lacks a key: `.get(..., default)` in its renderer,
# generator, loss and scripts (gen_samples / the visualizer read the camera keys that way).
OFFICIAL_DEFAULT_PIVOT = (0, 0, 0)
OFFICIAL_DEFAULT_RADIUS = 2.7
OFFICIAL_DEFAULT_NRR = 64            # TriPlaneGenerator.__init__'s neural_rendering_resolution

_G_PARAMS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "sr_num_fp16_res",
             "mapping_kwargs", "rendering_kwargs", "sr_kwargs")
_SR_PREFIX = "training.superresolution."
_REG_TYPES = ("l1", "l1-alt", "monotonic-detach", "monotonic-fixed", "total-variation")


def generator_config_from_official(module: OfficialModule) -> GeneratorConfig:
    """Rebuild a `GeneratorConfig` from an official `TriPlaneGenerator`'s init kwargs/attributes.

    Absent options take the official code's defaults (e.g. c_scale 0, sr_antialias True);
    unsupported values raise ValueError naming the option.
    """
    if module.class_name != "TriPlaneGenerator":
        raise ValueError(f"expected an official TriPlaneGenerator, got {module.class_name}")
    g = _Options(_merged_kwargs(module, _G_PARAMS), "TriPlaneGenerator")
    pos_int = _int_at_least(1)
    z_dim = g.get("z_dim", check=pos_int, expected="a positive int")
    c_dim = g.get("c_dim", check=_int_at_least(0), expected="a non-negative int")
    w_dim = g.get("w_dim", check=pos_int, expected="a positive int")
    img_resolution = g.get("img_resolution", check=pos_int, expected="a positive int")
    img_channels = g.get("img_channels", choices=(3,))
    sr_num_fp16_res = g.get("sr_num_fp16_res", 0, _int_at_least(0), "a non-negative int")

    m = _Options(g.get("mapping_kwargs", {}), "mapping_kwargs")
    optional_int = lambda v: v is None or (_is_int(v) and v > 0)
    mapping = MappingConfig(
        num_layers=m.get("num_layers", 8, pos_int, "a positive int"),
        embed_features=m.get("embed_features", None, optional_int, "None or a positive int"),
        layer_features=m.get("layer_features", None, optional_int, "None or a positive int"),
        lr_multiplier=m.get("lr_multiplier", 0.01, _is_number, "a number"),
        w_avg_beta=m.get("w_avg_beta", 0.998, _is_number, "a number (w_avg tracking is required)"),
    )
    m.get("activation", "lrelu", choices=("lrelu",))
    m.finish()

    # The remaining top-level kwargs are the backbone's SynthesisNetwork/SynthesisBlock options.
    fused = _fused_modconv(g.get("fused_modconv_default", True), "TriPlaneGenerator['fused_modconv_default']")
    backbone = BackboneConfig(
        resolution=256, num_planes=3, plane_channels=32,  # fixed by the official TriPlaneGenerator
        channel_base=g.get("channel_base", 32768, pos_int, "a positive int"),
        channel_max=g.get("channel_max", 512, pos_int, "a positive int"),
        num_fp16_res=g.get("num_fp16_res", 4, _int_at_least(0), "a non-negative int"),
        conv_clamp=g.get("conv_clamp", 256, lambda v: v is None or _is_number(v), "None or a number"),
        fused_modconv=fused,
    )

    # The SR classes ignore channel_base/channel_max/num_fp16_res/conv_clamp in sr_kwargs.
    s = _Options(g.get("sr_kwargs", {}), "sr_kwargs")
    s.ignore("channel_base", "channel_max", "num_fp16_res", "conv_clamp")
    sr_fused = _fused_modconv(s.get("fused_modconv_default", True), "sr_kwargs['fused_modconv_default']")
    # SuperResConfig has no fused_modconv of its own (the SR uses the backbone's); 'always' and
    # 'inference_only' are identical at inference and differ only by rounding in training.
    if sr_fused != fused and {sr_fused, fused} != {"always", "inference_only"}:
        raise ValueError(f"unsupported official option sr_kwargs['fused_modconv_default'] = "
                         f"{s.data.get('fused_modconv_default', True)!r}: it must match the backbone's "
                         f"fused_modconv_default ({fused!r})")
    s.finish()

    r = _Options(g.get("rendering_kwargs"), "rendering_kwargs")
    r.get("image_resolution", img_resolution, lambda v: v == img_resolution,
          f"equal to img_resolution ({img_resolution})")
    sr_path = r.get("superresolution_module", check=lambda v: isinstance(v, str), expected="a class path")
    sr_name = sr_path[len(_SR_PREFIX):] if sr_path.startswith(_SR_PREFIX) else None
    if sr_name not in SR_MODULES:
        raise ValueError(f"unsupported value {sr_path!r} for official option "
                         f"rendering_kwargs['superresolution_module']; supported: "
                         f"{[_SR_PREFIX + n for n in SR_MODULES]}")
    sr_out = SR_MODULES[sr_name]["official_resolution"]
    if sr_out is not None and sr_out != img_resolution:
        raise ValueError(f"rendering_kwargs['superresolution_module'] = {sr_path!r} outputs "
                         f"{sr_out} px but img_resolution is {img_resolution}")
    is_bool = lambda v: isinstance(v, bool)
    channels, filter_buffer = _sr_structure(module, sr_name)
    superres = SuperResConfig(
        module=sr_name,
        num_fp16_res=sr_num_fp16_res,
        antialias=r.get("sr_antialias", True, is_bool, "a bool"),
        noise_mode=r.get("superresolution_noise_mode", choices=("none", "random", "const")),
        w_dim=512,  # fixed by the official SR classes
        channels=channels,
        filter_buffer=filter_buffer,
    )
    if w_dim != 512:
        raise ValueError(f"unsupported official option TriPlaneGenerator['w_dim'] = {w_dim}: the "
                         f"official super-resolution classes require w_dim 512")

    limit = lambda v: v == "auto" or _is_number(v)
    ray_start = r.get("ray_start", check=limit, expected="a number or 'auto'")
    ray_end = r.get("ray_end", check=limit, expected="a number or 'auto'")
    if (ray_start == "auto") != (ray_end == "auto"):
        raise ValueError(f"official options rendering_kwargs['ray_start'] = {ray_start!r} and "
                         f"['ray_end'] = {ray_end!r}: 'auto' must be used for both or neither")
    default_render = RenderingConfig()
    pivot = r.get("avg_camera_pivot", list(OFFICIAL_DEFAULT_PIVOT),
                  lambda v: isinstance(v, (list, tuple)) and len(v) == 3 and all(map(_is_number, v)),
                  "a list of 3 numbers")
    rendering = RenderingConfig(
        ray_start=ray_start,
        ray_end=ray_end,
        depth_resolution=r.get("depth_resolution", check=pos_int, expected="a positive int"),
        depth_resolution_importance=r.get("depth_resolution_importance", check=_int_at_least(0),
                                          expected="a non-negative int"),
        disparity_space_sampling=r.get("disparity_space_sampling", check=is_bool, expected="a bool"),
        clamp_mode=r.get("clamp_mode", choices=("softplus",)),
        white_back=r.get("white_back", False, is_bool, "a bool"),
        box_warp=r.get("box_warp", check=lambda v: _is_number(v) and v > 0, expected="a positive number"),
        density_noise=r.get("density_noise", 0, lambda v: _is_number(v) and v >= 0, "a non-negative number"),
        avg_camera_radius=r.get("avg_camera_radius", OFFICIAL_DEFAULT_RADIUS, _is_number, "a number"),
        avg_camera_pivot=list(pivot),
        # Not stored by the official code: white-background (ShapeNet-style) snapshots get the
        # ShapeNet focal, the others FFHQ's.
        avg_camera_fov=(SHAPENET_FOV_DEG if r.get("white_back", False, is_bool, "a bool")
                        else default_render.avg_camera_fov),
        plane_axes="official",
        official_compat=True,
    )
    decoder = DecoderConfig(hidden_dim=64, output_features=32,  # fixed by the official OSGDecoder
                            lr_multiplier=r.get("decoder_lr_mul", 1, _is_number, "a number"))
    default_reg = RegularizationConfig()
    regularization = RegularizationConfig(
        # Informational in official snapshots (the loss takes it from its own options, default
        # None = no generator pose conditioning regularisation).
        gpc_reg_prob=r.get("gpc_reg_prob", None, lambda v: v is None or _is_number(v), "None or a number"),
        density_reg=r.get("density_reg", 0, _is_number, "a number"),  # official: absent = off
        density_reg_p_dist=r.get("density_reg_p_dist", default_reg.density_reg_p_dist, _is_number, "a number"),
        reg_type=r.get("reg_type", default_reg.reg_type, choices=_REG_TYPES),
    )
    c_gen_conditioning_zero = r.get("c_gen_conditioning_zero", check=is_bool, expected="a bool")
    c_scale = r.get("c_scale", 0, _is_number, "a number")  # the official mapping uses .get(.., 0)
    r.finish()
    g.finish()

    # The attribute (what training last rendered at) wins over the constructor's default of 64:
    # the 512-128 models carry 128.
    nrr = module.attrs.get("neural_rendering_resolution", OFFICIAL_DEFAULT_NRR)
    if not (_is_int(nrr) and nrr > 0):
        raise ValueError(f"attribute neural_rendering_resolution = {nrr!r} must be a positive int")

    cfg = GeneratorConfig(
        z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
        neural_rendering_resolution=nrr, c_gen_conditioning_zero=c_gen_conditioning_zero, c_scale=c_scale,
        mapping=mapping, backbone=backbone, decoder=decoder, rendering=rendering, superres=superres,
        regularization=regularization, official_keys=list(r.data), filled_defaults=r.filled,
    )
    _check_generator_tensors(cfg, module)
    return cfg


def _sr_structure(module: OfficialModule, sr_name: str) -> Tuple[Optional[list], Optional[bool]]:
    """(block widths, has its own resample_filter) of the stored SR module, read from its tensors.

    Without tensors (a config-only rebuild) the official class's layout.
    """
    sd = module.state_dict
    if not sd:
        return None, SR_MODULES[sr_name]["filter_buffer"]
    widths = []
    for block in ("block0", "block1"):
        bias = sd.get(f"superresolution.{block}.conv1.bias")
        if bias is None or bias.ndim != 1:
            raise ValueError(f"{sr_name}: state dict entry 'superresolution.{block}.conv1.bias' is missing")
        widths.append(int(bias.shape[0]))
    official = list(SR_MODULES[sr_name]["channels"])
    return (None if widths == official else widths), "superresolution.resample_filter" in sd


def _expect_shape(module: OfficialModule, key: str, shape: tuple, option: str):
    t = module.state_dict.get(key)
    if t is None or tuple(t.shape) != shape:
        got = "missing" if t is None else f"shape {list(t.shape)}"
        raise ValueError(f"{module.class_name}: state dict entry '{key}' is {got}, but {option} "
                         f"implies shape {list(shape)}")


def _check_generator_tensors(cfg: GeneratorConfig, module: OfficialModule):
    """Cross-check the rebuilt config against the tensors actually stored (skipped if none)."""
    if not module.state_dict:
        return
    L, bb = cfg.mapping.num_layers, cfg.backbone
    _expect_shape(module, f"backbone.mapping.fc{L - 1}.bias", (cfg.w_dim,), "mapping_kwargs['num_layers']")
    if f"backbone.mapping.fc{L}.weight" in module.state_dict:
        raise ValueError(f"state dict has more mapping layers than mapping_kwargs['num_layers'] = {L}")
    _expect_shape(module, "backbone.mapping.w_avg", (cfg.w_dim,), "w_dim")
    _expect_shape(module, f"backbone.synthesis.b{bb.resolution}.torgb.bias", (bb.out_channels,),
                  "the official tri-plane layout (3 x 32 channels at 256 px)")
    _expect_shape(module, "decoder.net.0.weight", (cfg.decoder.hidden_dim, bb.plane_channels), "the decoder")
    _expect_shape(module, "decoder.net.2.weight", (1 + cfg.decoder.output_features, cfg.decoder.hidden_dim),
                  "the decoder")
    stored_sr = module.module_classes.get("superresolution")
    if stored_sr != cfg.superres.module:
        raise ValueError(f"rendering_kwargs['superresolution_module'] names {cfg.superres.module} but the "
                         f"stored superresolution module is {stored_sr}")


_D_PARAMS = ("c_dim", "img_resolution", "img_channels", "architecture", "channel_base", "channel_max",
             "num_fp16_res", "conv_clamp", "cmap_dim", "disc_c_noise", "block_kwargs", "mapping_kwargs",
             "epilogue_kwargs")


def discriminator_config_from_official(module: OfficialModule) -> DiscriminatorConfig:
    """Rebuild a `DiscriminatorConfig` from an official `DualDiscriminator`'s init kwargs."""
    if module.class_name != "DualDiscriminator":
        raise ValueError(f"expected an official DualDiscriminator, got {module.class_name}")
    d = _Options(_merged_kwargs(module, _D_PARAMS), "DualDiscriminator")
    pos_int, nonneg_int = _int_at_least(1), _int_at_least(0)
    b = _Options(d.get("block_kwargs", {}), "block_kwargs")
    freeze_layers = b.get("freeze_layers", 0, nonneg_int, "a non-negative int")
    b.finish()
    m = _Options(d.get("mapping_kwargs", {}), "D mapping_kwargs")
    mapping_layers = m.get("num_layers", 8, pos_int, "a positive int")
    m.finish()
    e = _Options(d.get("epilogue_kwargs", {}), "epilogue_kwargs")
    mbstd_group_size = e.get("mbstd_group_size", 4, lambda v: v is None or (_is_int(v) and v > 0),
                             "None or a positive int")
    mbstd_num_channels = e.get("mbstd_num_channels", 1, nonneg_int, "a non-negative int")
    e.finish()
    cfg = DiscriminatorConfig(
        c_dim=d.get("c_dim", check=nonneg_int, expected="a non-negative int"),
        img_resolution=d.get("img_resolution", check=pos_int, expected="a positive int"),
        img_channels=d.get("img_channels", check=pos_int, expected="a positive int"),
        architecture=d.get("architecture", "resnet", choices=("resnet", "skip", "orig")),
        channel_base=d.get("channel_base", 32768, pos_int, "a positive int"),
        channel_max=d.get("channel_max", 512, pos_int, "a positive int"),
        num_fp16_res=d.get("num_fp16_res", 4, nonneg_int, "a non-negative int"),
        conv_clamp=d.get("conv_clamp", 256, lambda v: v is None or _is_number(v), "None or a number"),
        cmap_dim=d.get("cmap_dim", None, lambda v: v is None or (_is_int(v) and v > 0),
                       "None or a positive int"),
        disc_c_noise=d.get("disc_c_noise", 0, lambda v: _is_number(v) and v >= 0, "a non-negative number"),
        mbstd_group_size=mbstd_group_size,
        mbstd_num_channels=mbstd_num_channels,
        mapping_layers=mapping_layers,
        freeze_layers=freeze_layers,
    )
    d.finish()
    if module.state_dict:
        res = cfg.img_resolution
        w = module.state_dict.get(f"b{res}.fromrgb.weight")
        if w is None or w.shape[1] != 2 * cfg.img_channels:
            raise ValueError(f"DualDiscriminator: state dict entry 'b{res}.fromrgb.weight' does not take "
                             f"2 x img_channels = {2 * cfg.img_channels} input channels")
        layers = [k for k in module.state_dict if k.startswith("mapping.fc") and k.endswith(".weight")]
        if cfg.c_dim > 0 and len(layers) != mapping_layers:
            raise ValueError(f"DualDiscriminator: the state dict has {len(layers)} label-mapping layers but "
                             f"mapping_kwargs['num_layers'] is {mapping_layers}")
    return cfg
