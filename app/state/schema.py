"""The view state schema: sections (latent, camera, conditioning, render; layers, planes, ray for
the inspection panels), JSON and PNG I/O,
and the one validation of every number that enters from outside (state JSON, PNG metadata, the
viewer's fields).

Conventions
- Angles are degrees, offsets from the frontal pose: `yaw = pitch = 0` is the official frontal
  camera (yaw = pitch = pi/2 in `model.camera`). Positive yaw turns the camera towards the
  subject's left (the official +yaw); positive pitch moves the camera *down*
  (`pitch_official = pi/2 + radians(pitch)`).
- `camera.radius / pivot / fov = None` mean "the model's average camera"
  (`cfg.rendering.avg_camera_radius / avg_camera_pivot / avg_camera_fov`), so a state stays
  valid across models.
- Seeds map to z as the official scripts do: `np.random.RandomState(seed).randn(1, z_dim)`.

Version 2 groups the fields by what they decide, so a panel writes one section and the render
worker keys its ws cache on `latent` alone. Version 1 files (flat keys) still load; the flat
names also work as keywords of `ViewerState(...)` / `copy(...)` and as read-only attributes
(`state.yaw` is `state.camera.yaw`), which is how the exports and the command line spell them.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional, Tuple

STATE_VERSION = 2
RENDER_TYPES = ("final", "raw", "depth", "alpha", "feature")
COND_MODES = ("frontal", "camera", "custom")
NOISE_MODES = ("const", "random", "none")
MAX_SEED = 2 ** 32 - 1            # np.random.RandomState accepts [0, 2**32)
PNG_STATE_KEY = "eg3d_viewer_state"
# Bounds that make sense (anything outside renders garbage or nothing, never a view).
MAX_YAW = 720.0                   # a base yaw plus a turntable offset
MAX_PITCH = 180.0
MAX_LAYERS = 1024                 # ws index bound (a model clamps to its own num_ws)
MAX_PSI = 5.0
MAX_RADIUS = 100.0
FOV_RANGE = (0.1, 170.0)
MAX_PIVOT = 100.0
MAX_DEPTH = 1e4
MAX_FEATURE = 1e6
MAX_FEATURE_CHANNEL = 4095
NEURAL_RES_RANGE = (4, 2048)
MAX_SAMPLE_MULT = 16.0
VIEW_MODES = ("channel", "pca", "grid")     # how a layer or the planes are coloured
MAX_GRID = 64                     # channels in a grid view
MAX_LAYER_NAME = 120
LAYER_NAME_PATTERN = r"[A-Za-z0-9_.]+"
SHA256_HEX = 64


class StateError(ValueError):
    """A bad view state (file, PNG metadata or viewer field); the message names the field."""


def _spec(default, kind: str, lo=None, hi=None, *, optional: bool = False, lo_open: bool = False,
          hi_open: bool = False, choices: Tuple[str, ...] = (), length: Optional[int] = None,
          increasing: bool = False, pattern: Optional[str] = None):
    """A section field with its one check: kind (int, float, bool, str, ints, floats), bounds,
    choices, list length. Lists get a default factory."""
    meta = dict(kind=kind, lo=lo, hi=hi, optional=optional, lo_open=lo_open, hi_open=hi_open,
                choices=choices, length=length, increasing=increasing, pattern=pattern)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def _seed(default: int):
    return _spec(default, "int", 0, MAX_SEED)


def _angle(limit: float):
    return _spec(0.0, "float", -limit, limit)


@dataclass
class LatentSection:
    """What decides ws: the seed (or A -> B / fractional interpolation in w), truncation, mixing."""
    seed: int = _seed(0)
    seed_frac: float = _spec(0.0, "float", 0.0, 1.0, hi_open=True)   # w = lerp(w(seed), w(seed+1), frac)
    trunc_psi: float = _spec(0.7, "float", -MAX_PSI, MAX_PSI)
    trunc_cutoff: Optional[int] = _spec(None, "int", 0, MAX_LAYERS, optional=True)  # None = all layers
    interp_enabled: bool = _spec(False, "bool")                       # overrides seed / seed_frac
    interp_seed_a: int = _seed(0)
    interp_seed_b: int = _seed(1)
    interp_t: float = _spec(0.0, "float", 0.0, 1.0)
    mix_enabled: bool = _spec(False, "bool")                          # ws[:, mix_layers] from mix_seed
    mix_seed: int = _seed(1)
    mix_layers: List[int] = _spec([], "ints", 0, MAX_LAYERS - 1)
    # A projected latent (`model.projection` file, referenced by path and SHA-256 rather than its
    # floats): overrides seed / interpolation; truncation and mixing still apply to it.
    projection: Optional[str] = _spec(None, "str", optional=True)
    projection_sha256: Optional[str] = _spec(None, "str", optional=True, length=SHA256_HEX)

    def key(self) -> tuple:
        """Hashable identity of the section (every field, so a new field is never left out)."""
        return tuple(tuple(v) if isinstance(v, list) else v for v in dataclasses.astuple(self))


@dataclass
class CameraSection:
    """The render camera; None = the model's average camera."""
    yaw: float = _angle(MAX_YAW)
    pitch: float = _angle(MAX_PITCH)
    radius: Optional[float] = _spec(None, "float", 0.0, MAX_RADIUS, optional=True, lo_open=True)
    fov: Optional[float] = _spec(None, "float", *FOV_RANGE, optional=True)   # EG3D "fov" in degrees
    pivot: Optional[List[float]] = _spec(None, "floats", -MAX_PIVOT, MAX_PIVOT, optional=True, length=3)


@dataclass
class ConditioningSection:
    """The pose the mapping network is conditioned on (`custom` uses yaw / pitch)."""
    mode: str = _spec("frontal", "str", choices=COND_MODES)
    yaw: float = _angle(MAX_YAW)
    pitch: float = _angle(MAX_PITCH)


@dataclass
class RenderSection:
    """How the view is rendered and coloured (not which view)."""
    type: str = _spec("final", "str", choices=RENDER_TYPES)
    feature_channel: int = _spec(0, "int", 0, MAX_FEATURE_CHANNEL)
    neural_res: Optional[int] = _spec(None, "int", *NEURAL_RES_RANGE, optional=True)  # None = the model's
    depth_mult: float = _spec(1.0, "float", 0.0, MAX_SAMPLE_MULT, lo_open=True)   # x depth_resolution
    importance_mult: float = _spec(1.0, "float", 0.0, MAX_SAMPLE_MULT, lo_open=True)
    noise_mode: str = _spec("const", "str", choices=NOISE_MODES)
    deterministic: bool = _spec(True, "bool")     # no stratified jitter: same state, same pixels
    depth_range: Optional[List[float]] = _spec(None, "floats", 0.0, MAX_DEPTH, optional=True, length=2,
                                               increasing=True)          # [near, far]; None = auto
    feature_range: Optional[List[float]] = _spec(None, "floats", -MAX_FEATURE, MAX_FEATURE, optional=True,
                                                 length=2, increasing=True)  # [lo, hi]; None = auto


@dataclass
class LayersSection:
    """Which generator layer the viewport shows (the Layers panel; `--render layer:NAME`).
    name None = none; the viewer shows it only while the Layers panel is open."""
    name: Optional[str] = _spec(None, "str", optional=True, pattern=LAYER_NAME_PATTERN)
    channel: int = _spec(0, "int", 0, MAX_FEATURE_CHANNEL)
    mode: str = _spec("channel", "str", choices=VIEW_MODES)
    grid: int = _spec(16, "int", 1, MAX_GRID)                 # the first N channels
    sample: Optional[int] = _spec(None, "int", 0, MAX_FEATURE_CHANNEL, optional=True)  # decoder: coarse sample
    range: Optional[List[float]] = _spec(None, "floats", -MAX_FEATURE, MAX_FEATURE, optional=True, length=2,
                                         increasing=True)     # channel colour range; None = robust auto


@dataclass
class PlanesSection:
    """The tri-planes view (the Tri-planes panel; `--render planes`)."""
    show: bool = _spec(False, "bool")
    channel: int = _spec(0, "int", 0, MAX_FEATURE_CHANNEL)
    mode: str = _spec("channel", "str", choices=VIEW_MODES[:2])
    frustum: bool = _spec(False, "bool")                      # overlay the camera frustum's footprint
    ray: bool = _spec(False, "bool")                          # overlay the inspected ray's projection


@dataclass
class RaySection:
    """The ray the Ray inspector traces: [x, y] in [0, 1] of the image (None = none)."""
    pixel: Optional[List[float]] = _spec(None, "floats", 0.0, 1.0, optional=True, length=2)


SECTION_TYPES = {"latent": LatentSection, "camera": CameraSection, "conditioning": ConditioningSection,
                 "render": RenderSection, "layers": LayersSection, "planes": PlanesSection, "ray": RaySection}
# The flat (version 1) name of each field -> (section, field); the inspection sections are newer
# than version 1 and get prefixed flat names (keywords of copy()).
_RENAMED = {("conditioning", "mode"): "cond_mode", ("conditioning", "yaw"): "cond_yaw",
            ("conditioning", "pitch"): "cond_pitch", ("render", "type"): "render_type",
            ("layers", "name"): "layer", **{("layers", f): f"layer_{f}" for f in
                                            ("channel", "mode", "grid", "sample", "range")},
            **{("planes", f): f"planes_{f}" for f in ("show", "channel", "mode", "frustum", "ray")},
            ("ray", "pixel"): "ray_pixel"}
FLAT_NAMES: Dict[str, Tuple[str, str]] = {
    _RENAMED.get((sec, f.name), f.name): (sec, f.name)
    for sec, cls in SECTION_TYPES.items() for f in dataclasses.fields(cls)}


@dataclass(init=False)
class ViewerState:
    """Everything that decides a rendered view, in sections. Equality is dataclass equality
    (what the viewer's change detection compares). layers / planes / ray say what the inspection
    panels show; files without them load with the defaults (nothing inspected)."""
    latent: LatentSection
    camera: CameraSection
    conditioning: ConditioningSection
    render: RenderSection
    layers: LayersSection
    planes: PlanesSection
    ray: RaySection

    SECTIONS: ClassVar[Tuple[str, ...]] = tuple(SECTION_TYPES)

    def __init__(self, latent: Optional[LatentSection] = None, camera: Optional[CameraSection] = None,
                 conditioning: Optional[ConditioningSection] = None, render: Optional[RenderSection] = None,
                 layers: Optional[LayersSection] = None, planes: Optional[PlanesSection] = None,
                 ray: Optional[RaySection] = None, **flat: Any):
        self.latent = latent if latent is not None else LatentSection()
        self.camera = camera if camera is not None else CameraSection()
        self.conditioning = conditioning if conditioning is not None else ConditioningSection()
        self.render = render if render is not None else RenderSection()
        self.layers = layers if layers is not None else LayersSection()
        self.planes = planes if planes is not None else PlanesSection()
        self.ray = ray if ray is not None else RaySection()
        for name, value in flat.items():
            sec, fname = _flat(name)
            setattr(getattr(self, sec), fname, value)

    # -- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """The JSON object; refuses (StateError) a state that would not load back."""
        self.validate()
        d = {sec: dataclasses.asdict(getattr(self, sec)) for sec in self.SECTIONS}
        d["version"] = STATE_VERSION
        return d

    def to_json(self, indent: Optional[int] = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Any) -> "ViewerState":
        """Version 2 (sections) or version 1 (flat keys); every value checked, unknown keys named."""
        if not isinstance(data, dict):
            raise StateError(f"viewer state: expected a JSON object, got {type(data).__name__}")
        data = dict(data)
        version = data.pop("version", STATE_VERSION)
        if version == 1 or (version == STATE_VERSION and not set(data) & set(cls.SECTIONS) and data):
            return cls._from_flat(data)
        if version != STATE_VERSION:
            raise StateError(f"viewer state: unsupported version {version!r} (expected 1 or {STATE_VERSION})")
        unknown = sorted(set(data) - set(cls.SECTIONS))
        if unknown:
            raise StateError(f"viewer state: unknown key(s) {', '.join(repr(k) for k in unknown)}; "
                             f"sections: {', '.join(cls.SECTIONS)}")
        state = cls()
        for sec, values in data.items():
            if not isinstance(values, dict):
                raise StateError(f"viewer state: {sec} must be an object, got {type(values).__name__}")
            fields = {f.name: f for f in dataclasses.fields(SECTION_TYPES[sec])}
            bad = sorted(set(values) - set(fields))
            if bad:
                raise StateError(f"viewer state: unknown key(s) {', '.join(repr(k) for k in bad)} in {sec}; "
                                 f"known: {', '.join(fields)}")
            for name, value in values.items():
                setattr(getattr(state, sec), name, _coerce(f"{sec}.{name}", value, fields[name]))
        state.validate()
        return state

    @classmethod
    def _from_flat(cls, data: Dict[str, Any]) -> "ViewerState":
        unknown = sorted(set(data) - set(FLAT_NAMES))
        if unknown:
            raise StateError(f"viewer state: unknown key(s) {', '.join(repr(k) for k in unknown)}; "
                             f"known keys: {', '.join(sorted(FLAT_NAMES))}")
        state = cls()
        for name, value in data.items():
            sec, fname = FLAT_NAMES[name]
            f = next(f for f in dataclasses.fields(SECTION_TYPES[sec]) if f.name == fname)
            value = _coerce(name, value, f)
            _check(name, value, f.metadata)              # named as the file spells it
            setattr(getattr(state, sec), fname, value)
        state.validate()
        return state

    @classmethod
    def from_json(cls, text: str) -> "ViewerState":
        try:
            data = json.loads(text)      # NaN / Infinity parse, and are refused by field below
        except (json.JSONDecodeError, RecursionError) as exc:
            raise StateError(f"viewer state: not valid JSON ({exc})") from None
        return cls.from_dict(data)

    def save(self, path) -> None:
        text = self.to_json() + "\n"           # validated before anything is written
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)

    @classmethod
    def load(cls, path) -> "ViewerState":
        """Read a state from a .json file or from a PNG saved by the viewer or the exports.
        Raises StateError (a ValueError) naming the file and the field."""
        path = str(path)
        try:
            if path.lower().endswith(".png"):
                from .display import state_from_png
                state = state_from_png(path)
                if state is None:
                    raise StateError("PNG has no viewer state in its metadata")
                return state
            with open(path, "r", encoding="utf-8") as f:
                return cls.from_json(f.read())
        except StateError as exc:
            raise StateError(f"{path}: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise StateError(f"{path}: cannot read the state ({exc.__class__.__name__}: {exc})") from None

    # -- copies and checks --------------------------------------------------------------------
    def copy(self, **changes) -> "ViewerState":
        """A deep copy; `changes` use section names (latent=LatentSection(...)) or flat names
        (yaw=30.0). Not validated (call validate())."""
        out = ViewerState(**{sec: _copy_section(getattr(self, sec)) for sec in self.SECTIONS})
        for name, value in changes.items():
            if name in self.SECTIONS:
                setattr(out, name, _copy_section(value))
            else:
                sec, fname = _flat(name)
                setattr(getattr(out, sec), fname, list(value) if isinstance(value, (list, tuple)) else value)
        return out

    def validate(self) -> None:
        """Raise StateError naming the first bad field (type, range, choice, list shape)."""
        for sec in self.SECTIONS:
            section = getattr(self, sec)
            if not isinstance(section, SECTION_TYPES[sec]):
                raise StateError(f"viewer state: {sec} must be a {SECTION_TYPES[sec].__name__}")
            for f in dataclasses.fields(section):
                _check(f"{sec}.{f.name}", getattr(section, f.name), f.metadata)
        lat = self.latent
        if (lat.projection is None) != (lat.projection_sha256 is None):
            raise StateError("viewer state: latent.projection and latent.projection_sha256 go together "
                             "(both set, or both null)")


def _flat(name: str) -> Tuple[str, str]:
    try:
        return FLAT_NAMES[name]
    except KeyError:
        raise TypeError(f"ViewerState has no field {name!r}") from None


def _copy_section(section):
    values = {f.name: getattr(section, f.name) for f in dataclasses.fields(section)}
    return type(section)(**{k: list(v) if isinstance(v, list) else v for k, v in values.items()})


for _name, (_sec, _field) in FLAT_NAMES.items():       # read-only flat attributes (state.yaw)
    setattr(ViewerState, _name, property(lambda self, s=_sec, f=_field: getattr(getattr(self, s), f),
                                         doc=f"{_sec}.{_field} (read-only; write the section)"))


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _coerce(name: str, value: Any, f: dataclasses.Field) -> Any:
    """A JSON value -> the field's Python type (3.0 -> 3 for ints, 3 -> 3.0 for floats); the range
    check follows in `_check`."""
    kind = f.metadata["kind"]
    if value is None:
        return None
    if kind == "int" and _is_number(value) and abs(value) <= 2 ** 63 and int(value) == value:
        return int(value)
    if kind == "float" and _is_number(value):
        return float(value)
    if kind == "ints" and isinstance(value, list) and all(
            _is_number(v) and abs(v) <= 2 ** 63 and int(v) == v for v in value):
        return [int(v) for v in value]
    if kind == "floats" and isinstance(value, list) and all(_is_number(v) for v in value):
        return [float(v) for v in value]
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check(name: str, value: Any, m) -> None:
    kind = m["kind"]
    if value is None:
        if m["optional"]:
            return
        raise StateError(f"viewer state: {name} must not be null")
    ok = {"bool": isinstance(value, bool), "str": isinstance(value, str),
          "int": isinstance(value, int) and not isinstance(value, bool),
          "float": _is_number(value),
          "ints": isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value),
          "floats": isinstance(value, list) and all(_is_number(v) for v in value)}[kind]
    if not ok:
        what = {"ints": "list of integers", "floats": "list of numbers"}.get(kind, kind)
        raise StateError(f"viewer state: {name}={_show(value)} is not a valid {what}")
    if m.get("pattern") and (len(value) > MAX_LAYER_NAME or not re.fullmatch(m["pattern"], value)):
        raise StateError(f"viewer state: {name}={_show(value)} is not a layer name (letters, digits, '.', '_')")
    if m["choices"] and value not in m["choices"]:
        raise StateError(f"viewer state: {name}={_show(value)}; one of {', '.join(m['choices'])}")
    if kind == "str" and m["length"] is not None and not (
            len(value) == m["length"] and all(ch in "0123456789abcdef" for ch in value)):
        raise StateError(f"viewer state: {name}={_show(value)} must be {m['length']} lowercase hex digits")
    if kind == "str":
        return
    items = value if isinstance(value, list) else [value] if kind in ("int", "float") else []
    if m["length"] is not None and len(items) != m["length"]:
        raise StateError(f"viewer state: {name}={_show(value)} must have {m['length']} values")
    lo, hi = m["lo"], m["hi"]
    for v in items:
        if not math.isfinite(v):
            raise StateError(f"viewer state: {name}={_show(value)} is not finite")
        if (lo is not None and (v <= lo if m["lo_open"] else v < lo)) or \
                (hi is not None and (v >= hi if m["hi_open"] else v > hi)):
            lb, rb = "(" if m["lo_open"] else "[", ")" if m["hi_open"] else "]"
            raise StateError(f"viewer state: {name}={_show(value)} outside {lb}{lo:g}, {hi:g}{rb}"
                             if isinstance(lo, float) else f"viewer state: {name}={_show(value)} outside {lb}{lo}, {hi}{rb}")
    if m["increasing"] and not items[0] < items[1]:
        raise StateError(f"viewer state: {name}={_show(value)} must be increasing ([low, high] with low < high)")
