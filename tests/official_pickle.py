"""Write snapshots in the official EG3D pickle layout, for tests of the shapes users hold.

The shared fixtures are parsed with our restricted unpickler into inert stand-ins; a test edits
that data (drops a network, removes rendering_kwargs keys, adds an AugmentPipe, strips the
torch-2 hook dictionaries) and `write_snapshot` pickles it back the way the official training
loop does: persistent objects as calls to `torch_utils.persistence._reconstruct_persistent_obj`
with their `meta` dict, other official classes by reference, tensors through torch's own
pickling (legacy storage blobs). The official module names exist only while writing, as empty
stand-in modules in `sys.modules`; nothing official is imported or executed.
"""
from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

from model import pkl_import

PLACEHOLDER_SOURCE = "# source omitted from this test snapshot"
PERSISTENT_VERSION = 6


_MISSING = object()


class _Names:
    """Makes the official globals nameable by pickle while writing, and undoes every change.

    Official classes that exist here (torch's Sequential, Softplus) are written by reference to
    the real class, as real snapshots are; the others get empty stand-in classes in stand-in
    modules. Nothing that existed before is replaced."""

    def __init__(self):
        self.undo = []                                  # (object, attribute, previous value)
        self.classes = {}

        def reconstruct(meta):  # never called: only its name is written
            raise AssertionError("stand-in only")

        reconstruct.__module__, reconstruct.__qualname__ = "torch_utils.persistence", "_reconstruct_persistent_obj"
        self.reconstruct = reconstruct
        self.easydict = type("EasyDict", (dict,), {"__module__": "dnnlib.util"})
        self._set(self.module("torch_utils.persistence"), "_reconstruct_persistent_obj", reconstruct)
        self._set(self.module("dnnlib.util"), "EasyDict", self.easydict)

    def _set(self, obj, name, value):
        self.undo.append((obj, name, getattr(obj, name, _MISSING)))
        setattr(obj, name, value)

    def module(self, name: str) -> types.ModuleType:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):              # parents first: import needs them
            sub = ".".join(parts[:i])
            if sub not in sys.modules:
                self.undo.append((sys.modules, sub, _MISSING))
                sys.modules[sub] = types.ModuleType(sub)
                if i > 1:
                    self._set(sys.modules[".".join(parts[:i - 1])], parts[i - 1], sys.modules[sub])
        return sys.modules[name]

    def cls(self, path: str) -> type:
        if path not in self.classes:
            mod, _, name = path.rpartition(".")
            existing = getattr(sys.modules.get(mod), name, None)
            if isinstance(existing, type):
                self.classes[path] = existing
            else:
                self.classes[path] = type(name, (), {"__module__": mod})
                self._set(self.module(mod), name, self.classes[path])
        return self.classes[path]

    def restore(self):
        for obj, name, old in reversed(self.undo):
            if obj is sys.modules:
                sys.modules.pop(name, None) if old is _MISSING else sys.modules.__setitem__(name, old)
            elif old is _MISSING:
                delattr(obj, name)
            else:
                setattr(obj, name, old)


class _Writer(pickle.Pickler):
    def __init__(self, file, names: _Names):
        super().__init__(file, protocol=4)
        self.names = names

    def reducer_override(self, obj):
        if isinstance(obj, pkl_import._PersistentObject):
            meta = dict(type="class", version=obj.meta_version or PERSISTENT_VERSION,
                        module_src=PLACEHOLDER_SOURCE, class_name=obj.class_name, state=obj.state)
            return self.names.reconstruct, (meta,)
        if isinstance(obj, pkl_import.OfficialObject):
            return self.names.cls(obj.class_path), obj.args, obj.state
        if isinstance(obj, pkl_import._EasyDict):
            return self.names.easydict, (dict(obj),)
        return NotImplemented


def read_raw(path) -> dict:
    """A snapshot's top-level dict with inert stand-ins for the official objects."""
    return pkl_import.restricted_load(path)


def persistent(class_name: str, state: dict) -> pkl_import._PersistentObject:
    """A new persistent-class object (e.g. an AugmentPipe) for a test snapshot."""
    obj = pkl_import._PersistentObject.__new__(pkl_import._PersistentObject)
    obj.class_name, obj.state, obj.meta_version = class_name, state, PERSISTENT_VERSION
    obj.class_path = None
    return obj


def with_state(obj, state: dict):
    """A shallow copy of a stand-in with another state dict (copy.copy would go through the
    stand-in's __setstate__, which records pickle state)."""
    new = object.__new__(type(obj))
    new.__dict__.update(obj.__dict__)
    new.state = state
    return new


def modules(obj):
    """Every official object inside a network (the object itself included), depth first."""
    yield obj
    for child in (obj.state.get("_modules") or {}).values():
        if isinstance(child, pkl_import.OfficialObject):
            yield from modules(child)


def write_snapshot(path: Path, data: dict) -> Path:
    names = _Names()
    try:
        with open(path, "wb") as f:
            _Writer(f, names).dump(data)
    finally:
        names.restore()
    return path
