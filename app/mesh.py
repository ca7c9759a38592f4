"""Shape extraction: the generator's density on an N^3 grid -> marching cubes -> coloured mesh.

- The grid spans the tri-plane box (side `cfg.rendering.box_warp`, centred on the origin) in
  world coordinates, N samples per axis including both faces (spacing box / (N - 1)), as the
  official gen_samples.py samples it. Density is evaluated through `G.sample_density` in chunks
  of `chunk` points, so memory beyond the N^3 float32 grid itself stays bounded.
- Marching cubes (scikit-image) runs on the raw density (before the softplus) at `level`
  (official: 10). Vertices are in world units, in the same frame as the cameras (+y up, the
  frontal camera on +z), so a mesh lines up with renders; faces are oriented outwards.
- `trim` clears a border of the box (a fraction of N per face, official: 30/256) to drop the
  background "walls" EG3D models put near the box faces; `close=True` always clears at least
  the outermost layer so the surface is closed (watertight where the field allows).
- Vertex colours are the decoder's RGB (its first three feature channels, sigmoid range
  [0, 1]) evaluated at the vertices.
- Writers are atomic (temporary file + rename): PLY (binary, vertex colours), OBJ (vertex
  colours as `v x y z r g b`), and the grid as .mrc in the official layout (array [x', y, z]
  with x flipped, as gen_samples.py writes it, so its shape_utils.py and ChimeraX behave the
  same), with the voxel size set to the grid spacing.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from model.output import SIGNATURE, AtomicOutput
from model.device import module_device

from . import state as S
from .export import (ExportCancelled, ExportError, Progress, ProgressFn, check_output, parse_seeds, provenance,
                     seed_state)

OFFICIAL_TRIM = 30 / 256
MESH_FORMATS = ("ply", "obj", "mrc")
MAX_RES = 4096
# Memory model of an export (measured with tracemalloc): the float32 grid, a second copy for the
# .mrc (flipped), and marching cubes' output, which grows with the surface (~N^2).
GRID_BYTES_PER_VOXEL = 4
SURFACE_BYTES_PER_N2 = 200
MEMORY_HEADROOM = 0.8                # use at most this fraction of the memory available now
DensityFn = Callable[[torch.Tensor], Dict[str, torch.Tensor]]   # points [1, M, 3] -> sigma, rgb


@dataclass
class GridSpec:
    """An N^3 lattice over the cube [center - side/2, center + side/2]^3 (both faces included)."""
    res: int
    side: float
    center: Tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def spacing(self) -> float:
        return self.side / (self.res - 1)

    @property
    def origin(self) -> np.ndarray:
        return np.asarray(self.center, dtype=np.float64) - self.side / 2

    def points(self, start: int, stop: int, device="cpu") -> torch.Tensor:
        """World coordinates [stop - start, 3] of flat indices start..stop-1 (x slowest, z fastest)."""
        n = self.res
        idx = torch.arange(start, stop, device=device, dtype=torch.int64)
        ijk = torch.stack([idx // (n * n), (idx // n) % n, idx % n], dim=-1).to(torch.float64)
        origin = torch.as_tensor(self.origin, dtype=torch.float64, device=device)
        return (origin + ijk * self.spacing).to(torch.float32)


def model_density_fn(G, planes: torch.Tensor) -> DensityFn:
    """The field of one set of planes [1, ...] through the model's own sampling + decoder."""
    def fn(points: torch.Tensor) -> Dict[str, torch.Tensor]:
        return G.sample_density(planes, points)
    return fn


@torch.no_grad()
def sample_grid(density_fn: DensityFn, spec: GridSpec, chunk: int = 1 << 18, device="cpu",
                progress: Optional[ProgressFn] = None, cancel: Optional[threading.Event] = None,
                bar: bool = True, desc: str = "density") -> np.ndarray:
    """Raw density on the lattice as float32 [N, N, N], indexed [ix, iy, iz] (world x, y, z).
    Points are generated per chunk, so peak extra memory is O(chunk)."""
    if spec.res < 2:
        raise ExportError(f"grid resolution must be at least 2, got {spec.res}")
    if chunk < 1:
        raise ExportError("chunk must be >= 1")
    total = spec.res ** 3
    grid = np.empty(total, dtype=np.float32)
    steps = math.ceil(total / chunk)
    with Progress(steps, desc, progress, cancel, bar, unit="chunk") as prog:
        for start in range(0, total, chunk):
            stop = min(start + chunk, total)
            pts = spec.points(start, stop, device=device)[None]
            sigma = density_fn(pts)["sigma"]
            grid[start:stop] = sigma.reshape(-1).float().cpu().numpy()
            prog.update()
    return grid.reshape(spec.res, spec.res, spec.res)


def clear_border(grid: np.ndarray, voxels: int, value: float) -> np.ndarray:
    """Set `voxels` layers on every face of the cube to `value` (in place; returns grid)."""
    if voxels <= 0:
        return grid
    v = min(voxels, grid.shape[0] // 2)
    for axis in range(3):
        index = [slice(None)] * 3
        index[axis] = slice(0, v)
        grid[tuple(index)] = value
        index[axis] = slice(grid.shape[axis] - v, None)
        grid[tuple(index)] = value
    return grid


def marching_cubes(grid: np.ndarray, spec: GridSpec, level: float) -> Tuple[np.ndarray, np.ndarray]:
    """Surface of {density = level}: vertices [V, 3] (world, float32), faces [F, 3] (int64),
    oriented with normals pointing out of the high-density region."""
    import skimage.measure
    lo, hi = float(np.min(grid)), float(np.max(grid))
    if not lo < level < hi:
        raise ExportError(f"level {level:g} is outside the density range [{lo:.4g}, {hi:.4g}] of the grid; "
                          "choose a level inside it (the official scripts use 10 for FFHQ/AFHQ models)")
    verts, faces, _normals, _values = skimage.measure.marching_cubes(
        grid, level=level, spacing=(spec.spacing,) * 3, allow_degenerate=False)
    verts = verts + spec.origin[None]
    faces = faces.astype(np.int64)
    if signed_volume(verts, faces) < 0:         # density is high inside: make normals point out
        faces = faces[:, ::-1].copy()
    return verts.astype(np.float32), faces


def signed_volume(verts: np.ndarray, faces: np.ndarray) -> float:
    """Volume enclosed by a triangle mesh (positive when faces are counter-clockwise seen from
    outside); exact for closed meshes."""
    v = verts.astype(np.float64)
    a, b, c = v[faces[:, 0]], v[faces[:, 1]], v[faces[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


@torch.no_grad()
def vertex_colors(density_fn: DensityFn, verts: np.ndarray, chunk: int = 1 << 18, device="cpu") -> np.ndarray:
    """uint8 [V, 3] from the decoder's first three feature channels (sigmoid RGB in [0, 1])."""
    out = np.empty((len(verts), 3), dtype=np.uint8)
    for start in range(0, len(verts), chunk):
        pts = torch.from_numpy(np.ascontiguousarray(verts[start:start + chunk], dtype=np.float32)).to(device)[None]
        rgb = density_fn(pts)["rgb"][0, :, :3].float().clamp(0, 1)
        out[start:start + chunk] = (rgb * 255 + 0.5).to(torch.uint8).cpu().numpy()
    return out


def keep_largest_component(verts: np.ndarray, faces: np.ndarray, colors: Optional[np.ndarray]):
    """Drop floaters: keep the connected component with the most faces."""
    import trimesh
    mesh = trimesh.Trimesh(verts, faces, vertex_colors=colors, process=False)
    parts = mesh.split(only_watertight=False)
    if len(parts) <= 1:
        return verts, faces, colors
    best = max(parts, key=lambda m: len(m.faces))
    cols = None if colors is None else np.asarray(best.visual.vertex_colors)[:, :3]
    return np.asarray(best.vertices, np.float32), np.asarray(best.faces, np.int64), cols


def write_mesh(path, verts: np.ndarray, faces: np.ndarray, colors: Optional[np.ndarray] = None,
               comments: Sequence[str] = ()) -> Path:
    """Write .ply (binary little-endian; float x y z, uchar red green blue, int face indices) or
    .obj (`v x y z r g b` with colours in [0, 1]) atomically. `comments` go into the header."""
    path = Path(path)
    kind = path.suffix.lower().lstrip(".")
    if kind not in ("ply", "obj"):
        raise ExportError(f"mesh files must end in .ply or .obj, got {path.name!r}")
    verts = np.asarray(verts, dtype=np.float32)
    faces = np.asarray(faces, dtype=np.int64)
    comments = [c.replace("\n", " ").replace("\r", " ") for c in comments]
    if not any(SIGNATURE.decode() in c for c in comments):
        comments.insert(0, f"written by {SIGNATURE.decode()}")     # lets the overwrite rule recognise it
    with AtomicOutput(path) as out:
        with open(out.tmp, "wb") as f:
            if kind == "ply":
                _write_ply(f, verts, faces, colors, comments)
            else:
                _write_obj(f, verts, faces, colors, comments)
    return path


def _write_ply(f, verts, faces, colors, comments) -> None:
    header = ["ply", "format binary_little_endian 1.0"]
    header += [f"comment {c}" for c in comments]
    header += [f"element vertex {len(verts)}", "property float x", "property float y", "property float z"]
    vdtype = [("xyz", "<f4", (3,))]
    if colors is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
        vdtype.append(("rgb", "u1", (3,)))
    header += [f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    f.write(("\n".join(header) + "\n").encode("ascii"))
    vert_rec = np.empty(len(verts), dtype=vdtype)
    vert_rec["xyz"] = verts
    if colors is not None:
        vert_rec["rgb"] = np.asarray(colors, dtype=np.uint8)[:, :3]
    f.write(vert_rec.tobytes())
    face_rec = np.empty(len(faces), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    face_rec["n"] = 3
    face_rec["idx"] = faces
    f.write(face_rec.tobytes())


def _write_obj(f, verts, faces, colors, comments, block: int = 200_000) -> None:
    f.write("".join(f"# {c}\n" for c in comments).encode())
    for start in range(0, len(verts), block):
        v = verts[start:start + block].astype(np.float64)
        if colors is not None:
            rows = np.concatenate([v, np.asarray(colors[start:start + block], np.float64)[:, :3] / 255.0], axis=1)
            lines = "\n".join("v %.6f %.6f %.6f %.4f %.4f %.4f" % tuple(r) for r in rows)
        else:
            lines = "\n".join("v %.6f %.6f %.6f" % tuple(r) for r in v)
        f.write((lines + "\n").encode())
    for start in range(0, len(faces), block):
        fc = faces[start:start + block] + 1
        f.write(("\n".join("f %d %d %d" % tuple(r) for r in fc) + "\n").encode())


def write_mrc(path, grid: np.ndarray, spec: GridSpec) -> Path:
    """The density grid as .mrc (float32) in the official gen_samples layout: array index
    [N-1-ix, iy, iz]; voxel size = grid spacing (world units)."""
    import mrcfile
    path = Path(path)
    data = np.ascontiguousarray(np.flip(grid, 0), dtype=np.float32)
    with AtomicOutput(path) as out:
        with mrcfile.new(out.tmp, overwrite=True) as mrc:
            mrc.set_data(data)
            mrc.voxel_size = spec.spacing
            mrc.header.label[0] = SIGNATURE + b" (visualizer.py mesh)"
            mrc.header.nlabl = 1
    return path


@dataclass
class MeshResult:
    verts: np.ndarray
    faces: np.ndarray
    colors: Optional[np.ndarray]
    grid: np.ndarray                 # [N, N, N] raw density, [ix, iy, iz], border cleared
    spec: GridSpec


def extract_mesh(density_fn: DensityFn, spec: GridSpec, *, level: float = 10.0, trim: float = 0.0,
                 close: bool = True, color: bool = True, largest: bool = False, chunk: int = 1 << 18,
                 device="cpu", progress: Optional[ProgressFn] = None,
                 cancel: Optional[threading.Event] = None, bar: bool = True) -> MeshResult:
    """Grid -> border trim -> marching cubes -> colours (the whole pipeline, no files)."""
    grid = sample_grid(density_fn, spec, chunk=chunk, device=device, progress=progress, cancel=cancel, bar=bar)
    border = int(trim * spec.res)
    if close:
        border = max(border, 1)
    if 2 * border >= spec.res - 1:
        raise ExportError(f"trim {trim:g} leaves nothing of a {spec.res}^3 grid")
    inner = grid[border:spec.res - border, border:spec.res - border, border:spec.res - border]
    lo, hi = float(inner.min()), float(inner.max())
    if not lo < level < hi:
        raise ExportError(f"level {level:g} is outside the density range [{lo:.4g}, {hi:.4g}] inside the "
                          "trimmed box; choose a --level inside it (the official scripts use 10 for "
                          "FFHQ/AFHQ models)")
    if border:
        clear_border(grid, border, value=min(-1000.0, level - 1000.0))
    if cancel is not None and cancel.is_set():
        raise ExportCancelled("export cancelled")
    verts, faces = marching_cubes(grid, spec, level)
    colors = vertex_colors(density_fn, verts, chunk=chunk, device=device) if color else None
    if largest:
        verts, faces, colors = keep_largest_component(verts, faces, colors)
    return MeshResult(verts, faces, colors, grid, spec)


def output_paths(out, formats: Optional[Sequence[str]] = None) -> List[Path]:
    """`out` plus siblings with the other requested formats (e.g. m.ply + m.obj + m.mrc)."""
    out = Path(out)
    main = out.suffix.lower().lstrip(".")
    if main not in MESH_FORMATS:
        raise ExportError(f"--out must end in .ply, .obj or .mrc, got {out.name!r}")
    fmts = [main] + [f.lower().lstrip(".") for f in (formats or []) if f.lower().lstrip(".") != main]
    for f in fmts:
        if f not in MESH_FORMATS:
            raise ExportError(f"unknown mesh format {f!r}; choose from {', '.join(MESH_FORMATS)}")
    return [out.with_suffix("." + f) for f in dict.fromkeys(fmts)]


def estimate_memory(res: int, formats: Sequence[str]) -> int:
    """Bytes an export of an res^3 grid needs at its peak (see the memory model above)."""
    grid = GRID_BYTES_PER_VOXEL * res ** 3
    return grid * (2 if "mrc" in formats else 1) + SURFACE_BYTES_PER_N2 * res ** 2


def available_memory() -> Optional[int]:
    """Bytes of memory available now (Linux MemAvailable, capped by a cgroup limit); None if unknown."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
        if limit != "max":
            found.append(int(limit) - used)
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def check_memory(res: int, formats: Sequence[str]) -> None:
    """Refuse, before sampling anything, a grid that does not fit in the memory available."""
    if not 2 <= res <= MAX_RES:
        raise ExportError(f"--res must be in [2, {MAX_RES}], got {res}")
    need, have = estimate_memory(res, formats), available_memory()
    if have is not None and need > MEMORY_HEADROOM * have:
        fits = max(r for r in range(2, res) if estimate_memory(r, formats) <= MEMORY_HEADROOM * have) \
            if estimate_memory(2, formats) <= MEMORY_HEADROOM * have else None
        hint = f"; use --res {fits} or less" if fits else ""
        raise ExportError(f"--res {res} needs about {need / 2**30:.1f} GiB ({res}^3 density grid) but only "
                          f"{have / 2**30:.1f} GiB of memory is available{hint}")


def default_level(G) -> float:
    """The model's iso-level: a fitted scene's `surface_level`, else the official 10."""
    return float(getattr(G, "surface_level", 10.0))


def default_trim(G) -> float:
    """0 for a fitted scene (its box is the scene's), else the official 30/256 border."""
    return OFFICIAL_TRIM if G.has_latent else 0.0


def export_mesh(G, out, state: Optional[S.ViewerState] = None, seeds=None, *, res: int = 256,
                level: Optional[float] = None, trim: Optional[float] = None, close: bool = True,
                color: bool = True, largest: bool = False, formats: Optional[Sequence[str]] = None,
                chunk: int = 1 << 18, network=None, progress: Optional[ProgressFn] = None,
                cancel: Optional[threading.Event] = None, bar: bool = True,
                overwrite: bool = False, protect=None) -> List[Path]:
    """Mesh(es) of the state's latent for each seed (None = the state's own latent). With more
    than one seed the files get a _seed0000 suffix. Returns every path written. level None: the
    model's (`default_level`: a fitted scene's surface_level, else 10); trim None: `default_trim`.
    G may be a fitted scene (`model.scene.SceneGenerator`): its density, over its box. The memory
    the grid needs is checked first; existing files are replaced only if we wrote them (or
    overwrite), never `network` / `protect`."""
    base = state or S.ViewerState()
    level = default_level(G) if level is None else float(level)
    trim = default_trim(G) if trim is None else float(trim)
    cell_seeds = [None] if seeds is None else list(parse_seeds(seeds))
    targets = output_paths(out, formats)
    if not (math.isfinite(level) and math.isfinite(trim) and 0 <= trim < 0.5):
        raise ExportError(f"need a finite --level and a --trim in [0, 0.5), got level {level}, trim {trim}")
    check_memory(res, [t.suffix.lower().lstrip(".") for t in targets])
    for t in targets:
        if not t.parent.exists():
            raise ExportError(f"output folder {t.parent} does not exist")
        for seed in cell_seeds:
            check_output(_seed_path(t, seed, len(cell_seeds)), overwrite, (network, protect))
    device = module_device(G)
    spec = GridSpec(res, float(G.cfg.rendering.box_warp))
    written: List[Path] = []
    for seed in cell_seeds:
        st = seed_state(base, seed)
        with torch.no_grad():
            ws = S.compute_ws(G, st)
            planes = G.planes(ws, noise_mode=st.noise_mode)
        fn = model_density_fn(G, planes)
        needs_mesh = any(t.suffix.lower() != ".mrc" for t in targets)
        if needs_mesh:
            result = extract_mesh(fn, spec, level=level, trim=trim, close=close, color=color, largest=largest,
                                  chunk=chunk, device=device, progress=progress, cancel=cancel, bar=bar)
            grid = result.grid
        else:
            grid = sample_grid(fn, spec, chunk=chunk, device=device, progress=progress, cancel=cancel, bar=bar)
            if trim > 0:
                clear_border(grid, int(trim * spec.res), value=min(-1000.0, level - 1000.0))
        prov = provenance(network)
        what = (f"fitted scene ({G.repr})" if not G.has_latent
                else f"seed {st.seed}, psi {st.trunc_psi:g}, cond {st.cond_mode}")
        comments = [f"eg3d toolkit mesh: {what}",
                    f"network {prov['network']} sha256 {prov['network_sha256']}",
                    f"grid {res}^3 over a {spec.side:g} cube, level {level:g} (raw density), trim {trim:g}",
                    "units: world (cameras' frame, +y up, frontal camera on +z)"]
        for t in targets:
            path = _seed_path(t, st.seed, len(cell_seeds))
            if t.suffix.lower() == ".mrc":
                written.append(write_mrc(path, grid, spec))
            else:
                written.append(write_mesh(path, result.verts, result.faces, result.colors, comments))
    return written


def _seed_path(target: Path, seed: Optional[int], count: int) -> Path:
    return target if count == 1 else target.with_name(f"{target.stem}_seed{seed:04d}{target.suffix}")
