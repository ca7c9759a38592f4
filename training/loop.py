"""The EG3D training loop: phases, EMA, ADA, ticks, sample grids, snapshots, exact resume, multi-process.

One process per GPU (or CPU process), data-parallel through torch.distributed (NCCL on CUDA,
gloo on CPU). As in the official loop, every rank draws its own real images (a disjoint shard of
a per-epoch permutation), latents and cameras; after each phase the gradients are averaged with
one all_reduce of the flattened gradients, so all ranks take identical optimiser steps (torch's
DistributedDataParallel wrapper is not used: R1 needs double backward and the phases switch
requires_grad per network, neither of which DDP supports).

    Trainer          networks, optimisers, loss and one step (no files)
    training_loop    setup, then per step: Trainer.step; per tick: stats line, sample grid,
                     snapshot, metrics; every file goes through `RunDir` (run_dir.py)

Snapshots are written atomically and `latest` only after the snapshot is complete, so a run
killed at any moment resumes from its last snapshot with nothing corrupted.
"""
from __future__ import annotations

import base64
import copy
import datetime
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch

import model

from .augment import AdaController, AugmentPipe
from .config import TrainingConfig
from .loss import EG3DLoss, lazy_regularization
from .run_dir import RunDir, distributed_backend

SNAPSHOT_FORMAT = "eg3d-train-state/1"
STAT_NAMES = ("Loss/scores/fake", "Loss/signs/fake", "Loss/G/loss", "Loss/G/density_reg",
              "Loss/G/view_consistency", "Loss/scores/real", "Loss/signs/real", "Loss/D/loss",
              "Loss/r1_penalty", "Loss/D/reg")


class TrainingError(RuntimeError):
    """Training stopped for a reason the user must act on; the message says what to do."""


class NonFiniteError(TrainingError):
    pass


# ------------------------------------------------------------------------------------ helpers
class Stats:
    """Accumulates (count, sum, sum of squares) per name on the device; reduced across ranks."""

    def __init__(self, device, names=STAT_NAMES):
        self.device = device
        self.names = list(names)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.acc = torch.zeros(len(self.names), 3, dtype=torch.float64, device=device)

    def report(self, name: str, value: torch.Tensor) -> None:
        """Add the finite elements of value (no device sync)."""
        if name not in self.index:
            return
        v = value.detach().flatten().to(torch.float64)
        finite = torch.isfinite(v)
        v = torch.where(finite, v, torch.zeros_like(v))
        self.acc[self.index[name]] += torch.stack([finite.sum().to(torch.float64), v.sum(), v.square().sum()])

    def collect(self, world_size: int) -> Dict[str, Dict[str, float]]:
        acc = self.acc.clone()
        if world_size > 1:
            torch.distributed.all_reduce(acc)
        self.acc.zero_()
        out = {}
        for name, (num, total, sq) in zip(self.names, acc.tolist()):
            if num > 0:
                mean = total / num
                out[name] = dict(num=num, mean=mean, std=math.sqrt(max(sq / num - mean * mean, 0.0)))
        return out


class InfiniteSampler(torch.utils.data.Sampler):
    """Endless per-epoch permutations; rank r takes items r, r + W, r + 2W, ... of the stream.

    `start` = how many items this rank has already consumed (resume continues the same stream).
    """

    def __init__(self, size: int, rank: int = 0, world_size: int = 1, seed: int = 0, start: int = 0):
        if size < 1:
            raise ValueError("empty dataset")
        self.size, self.rank, self.world_size, self.seed, self.start = size, rank, world_size, seed, start

    def __iter__(self) -> Iterator[int]:
        k = self.rank + self.start * self.world_size
        epoch, perm = -1, None
        while True:
            e, i = divmod(k, self.size)
            if e != epoch:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + e)
                perm = torch.randperm(self.size, generator=g).tolist()
                epoch = e
            yield perm[i]
            k += self.world_size


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(s), dtype=np.uint8).copy())


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`model.device.resolve_device` (a bare cuda picks the rank's GPU), as a TrainingError."""
    try:
        return model.device.resolve_device(name, local_rank)
    except model.device.DeviceError as exc:
        raise TrainingError(f"--device={name}: {exc}") from None


# ------------------------------------------------------------------------------------ trainer
@dataclass
class Phase:
    name: str
    module: torch.nn.Module
    opt: torch.optim.Optimizer
    interval: int
    scaler: Any


class Trainer:
    """Networks, optimisers, loss and one training step; no files, no data loading.

    `step(real_img, real_c)` runs the official phase schedule (Gmain, Greg every G_reg_interval,
    Dmain, Dreg every D_reg_interval) on this rank's share of the batch, then the EMA, counters
    and ADA. Used by the loop and by bench/train_speed.py.
    """

    def __init__(self, config: TrainingConfig, G, D, G_ema, labels: torch.Tensor, device: torch.device,
                 rank: int = 0, world_size: int = 1):
        self.config, self.G, self.D, self.G_ema = config, G, D, G_ema
        self.device, self.rank, self.world_size = device, rank, world_size
        self.labels = labels.to(device)
        self.batch_size = config.batch_size
        self.batch_per_rank = config.batch_size // world_size
        self.batch_gpu = min(config.batch_gpu, self.batch_per_rank)
        self.num_rounds = self.batch_per_rank // self.batch_gpu
        self.stats = Stats(device)
        self.augment_pipe = None
        self.ada = None
        aug = config.augment
        if aug is not None and (aug.p > 0 or aug.target is not None):
            self.augment_pipe = AugmentPipe.from_spec(aug.spec, p=aug.p).to(device)
            if aug.target is not None:
                self.ada = AdaController(aug.target, aug.ada_interval, aug.ada_kimg)
        self.loss = EG3DLoss(G, D, copy.deepcopy(config.loss), augment_pipe=self.augment_pipe, stats=self.stats)
        self.phases: List[Phase] = []
        self.scalers = {}
        for name, module, opt_cfg, interval in (("G", G, config.G_opt, config.G_reg_interval),
                                                 ("D", D, config.D_opt, config.D_reg_interval)):
            lr, betas = lazy_regularization(opt_cfg.lr, opt_cfg.betas, interval)
            opt = torch.optim.Adam(module.parameters(), lr=lr, betas=betas, eps=opt_cfg.eps)
            scaler = torch.amp.GradScaler(device.type, enabled=self._uses_fp16(name))
            self.scalers[name] = scaler
            if interval is None:
                self.phases.append(Phase(name + "both", module, opt, 1, scaler))
            else:
                self.phases.append(Phase(name + "main", module, opt, 1, scaler))
                self.phases.append(Phase(name + "reg", module, opt, interval, scaler))
        self.opts = {"G": self.phases[0].opt, "D": self.phases[-1].opt}
        self.cur_nimg = 0
        self.batch_idx = 0
        self.sampler_pos = 0                      # real images consumed by this rank
        self.nonfinite = torch.zeros((), device=device)
        self.last_losses: Dict[str, torch.Tensor] = {}
        self._ada_signs = torch.zeros(2, device=device)      # (sum of signs, count) not yet reduced

    def _uses_fp16(self, name: str) -> bool:
        if not (self.config.grad_scaler and self.device.type == "cuda"):
            return False
        if name == "G":
            return self.G.cfg.backbone.num_fp16_res > 0 or self.G.cfg.superres.num_fp16_res > 0
        return self.D.cfg.num_fp16_res > 0

    @property
    def augment_p(self) -> float:
        return float(self.augment_pipe.p) if self.augment_pipe is not None else 0.0

    def _sync_and_step(self, phase: Phase) -> None:
        params = [p for p in phase.module.parameters() if p.numel() > 0 and p.grad is not None]
        if not params:                # e.g. Dreg with --gamma=0: nothing to apply (same on every rank)
            return
        flat = torch.cat([p.grad.flatten() for p in params])
        if self.world_size > 1:
            torch.distributed.all_reduce(flat)
            flat /= self.world_size
        if not phase.scaler.is_enabled():
            # As official: a stray non-finite gradient element must not poison the weights.
            torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
        for p, g in zip(params, flat.split([p.numel() for p in params])):
            p.grad = g.reshape(p.shape)
        phase.scaler.step(phase.opt)
        phase.scaler.update()

    @torch.enable_grad()
    def step(self, real_img: torch.Tensor, real_c: torch.Tensor) -> None:
        """One iteration on this rank's real images [b, 3, H, W] in [-1, 1] and cameras [b, 25]."""
        sched = self.loss.schedule(self.cur_nimg)
        self.G.neural_rendering_resolution = sched["neural_rendering_resolution"]
        imgs, cs = real_img.split(self.batch_gpu), real_c.split(self.batch_gpu)
        losses: Dict[str, torch.Tensor] = {}
        for phase in self.phases:
            if self.batch_idx % phase.interval != 0:
                continue
            gen_z = torch.randn(self.batch_per_rank, self.G.z_dim, device=self.device).split(self.batch_gpu)
            idx = torch.randint(self.labels.shape[0], (self.batch_per_rank,), device=self.device)
            gen_c = self.labels[idx].split(self.batch_gpu)
            phase.opt.zero_grad(set_to_none=True)
            phase.module.requires_grad_(True)
            for ri, rc, gz, gc in zip(imgs, cs, gen_z, gen_c):
                out = self.loss.accumulate_gradients(phase.name, ri, rc, gz, gc, gain=phase.interval / self.num_rounds,
                                                     cur_nimg=self.cur_nimg, scaler=phase.scaler)
                signs = out.pop("signs_real", None)
                if signs is not None and self.ada is not None:      # E[sign(D(real))] of every D phase
                    self._ada_signs += torch.stack([signs.sum(), torch.tensor(float(signs.numel()), device=self.device)])
                for name, value in out.items():
                    losses[name] = value
                    # With loss scaling an infinite R1 term is an fp16 overflow of the scaled input
                    # gradients: the scaler skips that step and lowers the scale; not a divergence.
                    if not (name == "Loss/D/reg" and phase.scaler.is_enabled()):
                        self.nonfinite += (~torch.isfinite(value)).sum()
            phase.module.requires_grad_(False)
            self._sync_and_step(phase)
        self.last_losses = losses
        self._update_ema()
        self.cur_nimg += self.batch_size
        self.batch_idx += 1
        self.sampler_pos += self.batch_per_rank
        if self.ada is not None and self.batch_idx % self.ada.interval == 0:
            signs = self._ada_signs.clone()
            if self.world_size > 1:
                torch.distributed.all_reduce(signs)
            self._ada_signs.zero_()
            s, n = signs.tolist()
            self.ada.accumulate(s, n)
            self.ada.adjust(self.augment_pipe, self.batch_size)

    @torch.no_grad()
    def _update_ema(self) -> None:
        ema_nimg = self.config.ema_kimg * 1000
        if self.config.ema_rampup is not None:
            ema_nimg = min(ema_nimg, self.cur_nimg * self.config.ema_rampup)
        beta = 0.5 ** (self.batch_size / max(ema_nimg, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.copy_(p.lerp(p_ema, beta))
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)
        self.G_ema.neural_rendering_resolution = self.G.neural_rendering_resolution

    # -------------------------------------------------------------- state
    def optimizer_tensors(self) -> Dict[str, torch.Tensor]:
        out = {}
        for name, opt in self.opts.items():
            for idx, state in opt.state_dict()["state"].items():
                for key, value in state.items():
                    if torch.is_tensor(value):
                        out[f"optim.{name}.{idx}.{key}"] = value.detach().cpu()
        return out

    def load_optimizer_tensors(self, tensors: Dict[str, torch.Tensor]) -> None:
        for name, opt in self.opts.items():
            sd = opt.state_dict()
            state: Dict[int, Dict[str, torch.Tensor]] = {}
            prefix = f"optim.{name}."
            for key, value in tensors.items():
                if key.startswith(prefix):
                    idx, field = key[len(prefix):].split(".", 1)
                    state.setdefault(int(idx), {})[field] = value
            num_params = sum(len(g["params"]) for g in sd["param_groups"])
            if state and max(state) >= num_params:
                raise TrainingError(f"optimiser state for {name} does not match the network "
                                    f"({max(state) + 1} > {num_params} parameters)")
            sd["state"] = state                  # the hyper-parameters stay the configured ones
            opt.load_state_dict(sd)

    def state(self) -> Dict[str, Any]:
        return dict(cur_nimg=self.cur_nimg, batch_idx=self.batch_idx, sampler_pos=self.sampler_pos,
                    batch_size=self.batch_size, world_size=self.world_size,
                    augment_p=self.augment_p if self.augment_pipe is not None else None,
                    ada=self.ada.state_dict() if self.ada is not None else None,
                    scalers={k: s.state_dict() for k, s in self.scalers.items() if s.is_enabled()})

    def load_state(self, state: Dict[str, Any]) -> None:
        self.cur_nimg = int(state["cur_nimg"])
        self.batch_idx = int(state["batch_idx"])
        same_layout = state.get("world_size") == self.world_size and state.get("batch_size") == self.batch_size
        self.sampler_pos = int(state["sampler_pos"]) if same_layout else self.cur_nimg // self.world_size
        if self.augment_pipe is not None and state.get("augment_p") is not None:
            self.augment_pipe.p.fill_(float(state["augment_p"]))
        if self.ada is not None and state.get("ada"):
            self.ada.load_state_dict(state["ada"])
        for name, sd in (state.get("scalers") or {}).items():
            if name in self.scalers and self.scalers[name].is_enabled():
                self.scalers[name].load_state_dict(sd)

    def rank_state(self) -> Dict[str, Any]:
        """Per-rank state: RNG streams and the ADA signs not yet reduced."""
        st = dict(torch=_b64(torch.get_rng_state()), ada_acc=self._ada_signs.tolist())
        if self.device.type == "cuda":
            st["cuda"] = _b64(torch.cuda.get_rng_state(self.device))
        return st

    def load_rank_state(self, st: Dict[str, Any]) -> None:
        torch.set_rng_state(_unb64(st["torch"]))
        if self.device.type == "cuda" and "cuda" in st:
            torch.cuda.set_rng_state(_unb64(st["cuda"]), self.device)
        self._ada_signs = torch.tensor(st.get("ada_acc", [0.0, 0.0]), device=self.device)


# ------------------------------------------------------------------------------------ networks
def build_networks(config: TrainingConfig, device: torch.device, label_std: Optional[np.ndarray] = None):
    G = model.build_generator(copy.deepcopy(config.G))
    # Training renders run under autograd, where path='auto' keeps the reference unless told.
    G.fast_renderer.cfg.auto_under_autograd = config.render_path == "fast"
    D = model.build_discriminator(copy.deepcopy(config.D))
    if label_std is not None:
        G.dataset_label_std.copy_(torch.as_tensor(label_std, dtype=torch.float32))
    G_ema = copy.deepcopy(G)
    for net in (G, D):
        net.train().requires_grad_(False)
    G_ema.eval().requires_grad_(False)
    return G.to(device), D.to(device), G_ema.to(device)


def _copy_state(dst: torch.nn.Module, src: torch.nn.Module, what: str, path: str) -> None:
    try:
        model.copy_state_dict(dst, src.state_dict(), what)
    except model.CheckpointError as exc:
        raise TrainingError(f"--resume={path}: {exc} (--cfg/--cbase/--cmax/--map-depth and the dataset "
                            f"resolution must match the snapshot)") from None


def load_networks(path: str, kind: str, G, D, G_ema, log=print) -> None:
    """Copy G / G_ema / D from our snapshot or an official pickle into the configured networks."""
    if kind == "ours":
        nets = model.load_all(path)
    else:
        from model.pkl_import import PklImportError

        nets, errors = {}, []
        for name in ("G", "G_ema", "D"):
            try:
                nets[name] = model.load(path, net=name)
            except (model.CheckpointError, PklImportError) as exc:     # e.g. a global not on the allow-list
                errors.append(str(exc))
        if "G_ema" not in nets and "G" not in nets:   # a bad file: its first error says why
            raise model.CheckpointError(errors[0] if errors else f"{path}: the file holds no generator")
        for message in errors:
            log(f"note: {message}")
    if "G_ema" not in nets and "G" not in nets:
        raise TrainingError(f"--resume={path}: the file holds no generator")
    nets.setdefault("G", nets.get("G_ema"))
    nets.setdefault("G_ema", nets.get("G"))
    for name, dst in (("G", G), ("G_ema", G_ema), ("D", D)):
        if name in nets and nets[name] is not None:
            _copy_state(dst, nets[name], name, path)
        else:
            log(f"note: {path} has no {name}; it keeps its fresh initialisation")
    if "G" in nets:
        r_src, r_dst = nets["G"].cfg.rendering, G.cfg.rendering
        diff = [k for k in vars(r_dst) if getattr(r_dst, k) != getattr(r_src, k)]
        if diff:
            log(f"note: rendering settings differ from the resumed file in {diff}; the configured ones are used")


# ------------------------------------------------------------------------------------ grids
def setup_grid(dataset, grid, seed: int, z_dim: int):
    """Fixed real images, fixed latents (seeded) and one fixed camera per row."""
    gw, gh = grid
    rnd = np.random.RandomState(seed)
    n = len(dataset)
    real_idx = rnd.choice(n, gw * gh, replace=n < gw * gh)
    row_idx = rnd.choice(n, gh, replace=n < gh)
    reals = np.stack([dataset[int(i)][0] for i in real_idx])
    labels = np.stack([dataset.get_label(int(i)) for i in row_idx])
    grid_c = torch.from_numpy(np.repeat(labels, gw, axis=0))
    grid_z = torch.randn(gw * gh, z_dim, generator=torch.Generator().manual_seed(seed))
    return reals, grid_z, grid_c


@torch.no_grad()
def render_grid(G_ema, grid_z, grid_c, batch: int, device, seed: int, progress: bool = False):
    """G_ema on the fixed grid, in a forked RNG so training randomness is untouched.

    Returns images, raws [N, 3, H, W] / [N, 3, h, w] in [-1, 1] and negated depth [N, 1, h, w].
    """
    from tqdm import tqdm

    devices = [device] if device.type == "cuda" else []
    # mininterval=0: a grid is a handful of batches, each worth showing
    bar = tqdm(total=len(grid_z), unit="img", desc="sample grid", leave=False, dynamic_ncols=True,
               mininterval=0, miniters=1, disable=None if progress else True)
    with torch.random.fork_rng(devices=devices), bar:
        torch.manual_seed(seed)
        images, raws, depths = [], [], []
        for z, c in zip(grid_z.split(batch), grid_c.split(batch)):
            out = G_ema(z.to(device), c.to(device), noise_mode="const")
            images.append(out["image"].float().cpu())
            raws.append(out["image_raw"].float().cpu())
            depths.append(out["image_depth"].float().cpu())
            bar.update(len(z))
    return torch.cat(images).numpy(), torch.cat(raws).numpy(), -torch.cat(depths).numpy()


# ------------------------------------------------------------------------------------ the loop
class _StopFlag:
    """SIGINT / SIGTERM: finish the step, write a snapshot, exit (a second Ctrl-C stops at once)."""

    def __init__(self):
        self.requested = False
        self.signum: Optional[int] = None          # the first signal received
        self.count = 0
        self._old = {}

    def install(self):
        def handler(signum, frame):
            self.count += 1
            self.requested = True
            self.signum = self.signum or signum
            if self.count >= 2 and signum == signal.SIGINT:
                raise KeyboardInterrupt
            print(f"\n{signal.Signals(signum).name}: stopping after this step and writing a snapshot "
                  "(press Ctrl-C again to stop at once)", file=sys.stderr, flush=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, handler)
            except ValueError:                    # not the main thread
                pass

    def restore(self):
        for sig, old in self._old.items():
            try:
                signal.signal(sig, old)
            except ValueError:
                pass
        self._old = {}


def _format_time(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {(s // 60) % 60:02d}m"
    return f"{s // 86400}d {(s // 3600) % 24:02d}h"


def _cpu_mem_gb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 30
    except (OSError, ValueError, IndexError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def _setup_device(config: TrainingConfig, device: torch.device, world_size: int) -> None:
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = config.cudnn_benchmark
        torch.backends.cuda.matmul.allow_tf32 = config.tf32
        torch.backends.cudnn.allow_tf32 = config.tf32
    else:
        torch.set_num_threads(config.threads or max(1, (os.cpu_count() or 1) // world_size))


def training_loop(config: TrainingConfig, rank: int = 0, world_size: int = 1, local_rank: Optional[int] = None,
                  abort_fn=None) -> Dict[str, Any]:
    """Train as configured; returns a summary (run_dir, cur_nimg, last snapshot, last stats, aborted,
    signal: the number of the signal that stopped it, if any).

    config.run_dir None: train without writing any file (benchmarks, tests).
    """
    start_time = time.time()
    device = resolve_device(config.device, rank if local_rank is None else local_rank)
    threads_before = torch.get_num_threads()
    _setup_device(config, device, world_size)
    torch.manual_seed(config.random_seed * world_size + rank)
    np.random.seed((config.random_seed * world_size + rank) % 2 ** 32)
    run = RunDir.for_config(config, is_main=rank == 0)
    run.capture_output()
    stop = _StopFlag()
    stop.install()
    try:
        return _train(config, rank, world_size, device, run, stop, abort_fn, start_time)
    finally:
        stop.restore()
        torch.set_num_threads(threads_before)
        run.close()


def _prepare(config: TrainingConfig, rank: int, world_size: int, device, log):
    """Dataset, networks (fresh or resumed), Trainer, and the real-image iterator."""
    from .dataset import ImageFolderDataset

    log("Loading training set...")
    dataset = ImageFolderDataset(config.data, xflip=config.mirror, random_seed=config.random_seed)
    if dataset.resolution != config.resolution:
        raise TrainingError(f"--data={config.data}: resolution {dataset.resolution} differs from the configured "
                            f"{config.resolution}")
    log(f"Num images:  {len(dataset)}\nImage shape: {dataset.image_shape}\nLabel shape: {dataset.label_shape}")

    log("Constructing networks...")
    G, D, G_ema = build_networks(config, device, dataset.get_label_std())
    trainer = Trainer(config, G, D, G_ema, torch.from_numpy(dataset.labels), device, rank, world_size)
    meta = None
    if config.resume is not None:
        log(f"Resuming from \"{config.resume.path}\" ({config.resume.mode})")
        load_networks(config.resume.path, config.resume.kind, G, D, G_ema, log=log)
    if config.continuing:
        meta = model.read_metadata(config.resume.path)
        trainer.load_state(json.loads(meta["training_state"]))
        trainer.load_optimizer_tensors(model.load_extra_tensors(config.resume.path))
    if world_size > 1:
        for module in (G, D, G_ema, trainer.augment_pipe):
            if module is not None:
                for t in list(module.parameters()) + list(module.buffers()):
                    if t.numel() > 0:
                        torch.distributed.broadcast(t.data, src=0)
    log(f"G: {sum(p.numel() for p in G.parameters()):,} parameters, D: {sum(p.numel() for p in D.parameters()):,}; "
        f"device {device}, {world_size} process(es), batch {config.batch_size} "
        f"({trainer.batch_per_rank} per process in {trainer.num_rounds} micro-batch(es) of {trainer.batch_gpu})")

    # The loader after the networks: a resumed run then restores the RNG streams below.
    sampler = InfiniteSampler(len(dataset), rank, world_size, config.random_seed, start=trainer.sampler_pos)
    kwargs = dict(num_workers=config.workers, pin_memory=device.type == "cuda")
    if config.workers > 0:
        kwargs.update(prefetch_factor=2, persistent_workers=True)
    data_iter = iter(torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=trainer.batch_per_rank, **kwargs))
    cur_tick = 0
    if meta is not None:
        states = json.loads(meta.get("rank_states", "[]"))
        if len(states) == world_size:
            trainer.load_rank_state(states[rank])
        else:
            log(f"note: the snapshot was written by {len(states)} process(es), this run has {world_size}; "
                "random streams are reseeded (training continues, but not bit-for-bit)")
        cur_tick = int(json.loads(meta["training_state"]).get("cur_tick", 0))
    return dataset, trainer, data_iter, cur_tick


def _step(trainer: Trainer, data_iter, device, config: TrainingConfig) -> None:
    real_img, real_c = next(data_iter)
    real_img = real_img.to(device, non_blocking=True).to(torch.float32) / 127.5 - 1
    try:
        trainer.step(real_img, real_c.to(device, non_blocking=True))
    except torch.cuda.OutOfMemoryError as exc:
        suggestion = max(trainer.batch_gpu // 2, 1)
        raise TrainingError(
            f"CUDA out of memory with {trainer.batch_gpu} images per micro-batch on {device}: try "
            f"--batch-gpu={suggestion} (the total --batch={config.batch_size} is kept through gradient "
            f"accumulation{'; lower --mbstd-group too' if suggestion < config.options.mbstd_group else ''})"
            f", or a smaller --neural_rendering_resolution_initial. ({str(exc).splitlines()[0]})") from None


def _tick_record(trainer: Trainer, device, cur_tick: int, start_time: float, tick_start_time: float,
                 tick_start_nimg: int, maintenance_time: float, world_size: int) -> Dict[str, Any]:
    """One stats.jsonl line: losses {num, mean, std} and the progress / schedule / resource values."""
    now = time.time()
    record = {k: dict(v) for k, v in trainer.stats.collect(world_size).items()}
    sched = trainer.loss.schedule(trainer.cur_nimg)
    progress = {
        "Progress/tick": cur_tick, "Progress/kimg": trainer.cur_nimg / 1000, "Progress/augment": trainer.augment_p,
        "Progress/neural_rendering_resolution": trainer.G.neural_rendering_resolution,
        "Progress/blur_sigma": sched["blur_sigma"], "Progress/gpc_swap_prob": sched["swap_prob"] or 0.0,
        "Timing/total_sec": now - start_time, "Timing/sec_per_tick": now - tick_start_time,
        "Timing/sec_per_kimg": (now - tick_start_time) / max(trainer.cur_nimg - tick_start_nimg, 1) * 1e3,
        "Timing/maintenance_sec": maintenance_time, "Resources/cpu_mem_gb": _cpu_mem_gb(),
    }
    if device.type == "cuda":
        progress["Resources/peak_gpu_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
        progress["Resources/peak_gpu_mem_reserved_gb"] = torch.cuda.max_memory_reserved(device) / 2 ** 30
        torch.cuda.reset_peak_memory_stats(device)
    record.update({k: dict(num=1, mean=float(v), std=0.0) for k, v in progress.items()})
    record["timestamp"] = now
    return record


def _tick_line(record: Dict[str, Any]) -> str:
    v = {k: e["mean"] for k, e in record.items() if isinstance(e, dict)}
    line = (f"tick {int(v['Progress/tick']):<5d} kimg {v['Progress/kimg']:<8.3f} "
            f"time {_format_time(v['Timing/total_sec']):<12s} sec/tick {v['Timing/sec_per_tick']:<7.1f} "
            f"sec/kimg {v['Timing/sec_per_kimg']:<7.2f} maintenance {v['Timing/maintenance_sec']:<6.1f} "
            f"cpumem {v['Resources/cpu_mem_gb']:<6.2f} gpumem {v.get('Resources/peak_gpu_mem_gb', 0):<6.2f} "
            f"augment {v['Progress/augment']:.3f}")
    losses = " ".join(f"{k.split('/', 1)[1]} {v[k]:.3f}" for k in
                      ("Loss/G/loss", "Loss/D/loss", "Loss/r1_penalty", "Loss/G/density_reg",
                       "Loss/G/view_consistency") if k in v)
    return line + (f"  [{losses}]" if losses else "")


def _progress_bar(config: TrainingConfig, cur_nimg: int):
    from tqdm import tqdm
    digits = 3 if config.total_kimg < 10 else 2           # short (CPU) runs: show the batches move
    return tqdm(total=config.total_kimg, initial=cur_nimg / 1000, unit="kimg", dynamic_ncols=True, disable=None,
                leave=False, smoothing=0.1, bar_format=f"kimg {{n:.{digits}f}}/{{total:.{digits}f}} |{{bar}}| "
                                                       "{percentage:3.0f}% [{elapsed}<{remaining}{postfix}]")


def _train(config: TrainingConfig, rank: int, world_size: int, device, run: RunDir, stop: _StopFlag, abort_fn,
           start_time: float) -> Dict[str, Any]:
    from .options import format_config

    is_main = rank == 0
    log = print if is_main else (lambda *a, **k: None)
    log(format_config(config))
    dataset, trainer, data_iter, cur_tick = _prepare(config, rank, world_size, device, log)
    run.open(config, trainer.cur_nimg if config.continuing else None, log)   # only now: a failed start leaves nothing
    grid = None
    if run.writes and config.image_snapshot_ticks:
        reals, grid_z, grid_c = setup_grid(dataset, config.grid, config.random_seed, trainer.G.z_dim)
        run.write_reals(reals, config.grid)
        grid = (grid_z, grid_c)
    metrics = _metric_runner(config, run, log)

    total_nimg = int(round(config.total_kimg * 1000))
    summary = dict(run_dir=run.path if run.active else None, cur_nimg=trainer.cur_nimg, snapshot=None, stats=None,
                   aborted=False, signal=None, trainer=trainer)
    if trainer.cur_nimg >= total_nimg:
        log(f"Already trained {trainer.cur_nimg / 1000:g} kimg >= --kimg={config.total_kimg:g}; nothing to do "
            "(pass a larger --kimg to train longer, or --resume-mode=finetune to start a new run from these weights)")
        return summary
    log(f"Training for {config.total_kimg:g} kimg (from {trainer.cur_nimg / 1000:g})...")
    bar = _progress_bar(config, trainer.cur_nimg) if is_main and config.progress else None
    tick_start_nimg, tick_start_time = trainer.cur_nimg, time.time()
    maintenance_time = tick_start_time - start_time
    world_flags = torch.zeros(2, device=device)
    try:
        while True:
            _step(trainer, data_iter, device, config)
            if bar is not None:
                bar.update(config.batch_size / 1000)

            # -- stop conditions, agreed by all ranks (one sync per step)
            world_flags[0] = trainer.nonfinite
            world_flags[1] = 1.0 if (stop.requested or (abort_fn is not None and abort_fn(trainer))) else 0.0
            flags = world_flags.clone()
            if world_size > 1:
                torch.distributed.all_reduce(flags)
            nonfinite, abort = flags.tolist()
            if nonfinite > 0:
                bad = [k for k, v in trainer.last_losses.items() if not bool(torch.isfinite(v).all())]
                raise NonFiniteError(f"non-finite loss ({', '.join(bad) or 'on another process'}) at kimg "
                                     f"{trainer.cur_nimg / 1000:.3f}: training stopped, no snapshot written; last "
                                     f"good snapshot: {summary['snapshot'] or run.latest() or 'none'}. Try a larger "
                                     "--gamma, a lower --glr/--dlr, or --resume from that snapshot.")
            done = trainer.cur_nimg >= total_nimg or abort > 0
            if not done and cur_tick != 0 and trainer.cur_nimg < tick_start_nimg + config.kimg_per_tick * 1000:
                continue

            # -- tick: log line, sample grid, snapshot, metrics, stats
            tick_end_time = time.time()
            record = _tick_record(trainer, device, cur_tick, start_time, tick_start_time, tick_start_nimg,
                                  maintenance_time, world_size)
            if bar is not None:
                bar.set_postfix_str(f"sec/kimg {record['Timing/sec_per_kimg']['mean']:.1f}", refresh=False)
                bar.clear()
            log(_tick_line(record))
            if abort:
                log("Stop requested: writing a snapshot and exiting...")
            if grid is not None and (done or cur_tick % config.image_snapshot_ticks == 0):
                images = render_grid(trainer.G_ema, *grid, trainer.batch_gpu, device, config.random_seed,
                                     progress=config.progress)
                run.write_samples(trainer.cur_nimg, *images, config.grid)
            snapshot = None
            if run.active and (done or cur_tick % config.network_snapshot_ticks == 0):
                snapshot = _save_snapshot(config, trainer, run, cur_tick, world_size, log)
                summary["snapshot"] = snapshot or summary["snapshot"]
            metric_results = {}
            if snapshot is not None and metrics is not None:
                metric_results = metrics(trainer.G_ema, snapshot, rank, device)
            run.append_stats(record, metric_results, step=int(trainer.cur_nimg / 1e3))
            summary.update(cur_nimg=trainer.cur_nimg, stats=record, aborted=bool(abort), signal=stop.signum)

            cur_tick += 1
            tick_start_nimg, tick_start_time = trainer.cur_nimg, time.time()
            maintenance_time = tick_start_time - tick_end_time
            if done:
                break
    finally:
        if bar is not None:
            bar.close()
    log("Exiting...")
    return summary


def check_consistency(modules: Dict[str, torch.nn.Module], world_size: int) -> None:
    """Raise if the parameters differ between processes (they must be bit-identical).

    Compares a hash of each module's parameter bytes (buffers such as w_avg are per-process
    running averages and may differ, as in the official code).
    """
    if world_size <= 1:
        return
    import hashlib

    digests = {}
    for name, module in modules.items():
        h = hashlib.sha1()
        for p in module.parameters():
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
        digests[name] = h.hexdigest()
    gathered = [None] * world_size
    torch.distributed.all_gather_object(gathered, digests)
    for r, other in enumerate(gathered[1:], start=1):
        bad = [name for name in digests if other[name] != gathered[0][name]]
        if bad:
            raise TrainingError(f"processes out of sync: {', '.join(bad)} parameters of rank {r} differ from rank 0")


def _save_snapshot(config: TrainingConfig, trainer: Trainer, run: RunDir, cur_tick: int, world_size: int,
                   log=print) -> Optional[str]:
    """Every rank: consistency check and RNG states; rank 0 writes the file, then `latest`."""
    check_consistency({"G": trainer.G, "D": trainer.D, "G_ema": trainer.G_ema}, world_size)
    if world_size > 1:
        log(f"Process consistency: G, D and G_ema parameters identical across {world_size} processes")
    rank_state = trainer.rank_state()
    if world_size > 1:
        gathered = [None] * world_size
        torch.distributed.all_gather_object(gathered, rank_state)
    else:
        gathered = [rank_state]
    if not run.writes:
        return None
    for name, net in (("G", trainer.G), ("G_ema", trainer.G_ema), ("D", trainer.D)):
        for key, t in net.state_dict().items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise NonFiniteError(f"{name}.{key} has non-finite values at kimg {trainer.cur_nimg / 1000:.3f}; "
                                     f"snapshot not written (last good: {run.latest() or 'none'})")
    state = dict(trainer.state(), cur_tick=cur_tick + 1, format=SNAPSHOT_FORMAT)
    path = run.snapshot_path(trainer.cur_nimg)
    metadata = {
        "training_state": json.dumps(state),
        "rank_states": json.dumps(gathered),
        "training_options": json.dumps(model.config.to_dict(config.options)),
        "training_config": config.to_json(),
        "kimg": f"{trainer.cur_nimg / 1000:g}",
    }
    model.save(path, {"G": trainer.G, "G_ema": trainer.G_ema, "D": trainer.D}, metadata=metadata,
               extra_tensors=trainer.optimizer_tensors())
    run.mark_latest(path)
    log(f"Saved {os.path.basename(path)}")
    return path


def _metric_runner(config: TrainingConfig, run: RunDir, log):
    """The --metrics callback (training/metrics.py, computed on rank 0), or None."""
    if not config.metrics:
        return None
    try:
        from . import metrics as metrics_module
    except ImportError as exc:
        raise TrainingError(f"--metrics: training/metrics.py is not available ({exc}); use --metrics=none") from None

    def run_metrics(G_ema, snapshot, rank, device):
        if rank != 0:
            return {}
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):       # metrics never touch the training RNG
            results = metrics_module.compute_metrics(
                G_ema, config.data, config.metrics, num_images=config.metrics_images, device=device,
                inception_path=config.inception, progress=False, batch_size=max(config.batch_gpu, 1),
                seed=config.random_seed, xflip=config.mirror)
        for name, entry in results.items():
            run.append_metric(name, dict(entry, snapshot=os.path.basename(snapshot), timestamp=time.time()))
            log(f"{name}: {json.dumps(entry.get('results', {}), default=float)}")
        return {k: float(v) for k, v in metrics_module.flatten(results).items()}
    return run_metrics


# ------------------------------------------------------------------------------------ processes
def init_distributed(rank: int, world_size: int, init_method: str, device_name: str,
                     local_rank: Optional[int] = None) -> None:
    """Join the process group (spawned workers and torchrun alike)."""
    backend = distributed_backend(device_name)
    if backend == "nccl":
        torch.cuda.set_device((rank if local_rank is None else local_rank) % torch.cuda.device_count())
    # Metrics run on rank 0 while the others wait in the next collective: allow a long wait.
    torch.distributed.init_process_group(backend=backend, init_method=init_method, rank=rank,
                                         world_size=world_size, timeout=datetime.timedelta(hours=6))


def spawn_worker(rank: int, config_dict: Dict[str, Any], world_size: int, init_method: str) -> None:
    """Entry point of each process started by `torch.multiprocessing.spawn`."""
    config = TrainingConfig.from_dict(config_dict)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    init_distributed(rank, world_size, init_method, config.device)
    clean = False
    try:
        training_loop(config, rank=rank, world_size=world_size)
        clean = True
    except (TrainingError, model.CheckpointError, OSError) as exc:
        print(f"error (rank {rank}): {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1)
    finally:
        leave_distributed(clean)


def leave_distributed(clean: bool) -> None:
    """Leave the process group; after a clean finish, all ranks together.

    Rank 0 still writes the last snapshot when the others finish. A rank that tears down its gloo
    group while a peer is busy can abort in gloo's threads ("terminate called without an active
    exception", exit -6), so a clean exit waits at a barrier first. After an error the peers may be
    gone, so there is no barrier then.
    """
    if not torch.distributed.is_initialized():
        return
    if clean:
        torch.distributed.barrier()
    torch.distributed.destroy_process_group()


__all__ = ["Trainer", "TrainingError", "NonFiniteError", "InfiniteSampler", "Stats", "training_loop",
           "build_networks", "load_networks", "spawn_worker", "init_distributed", "leave_distributed", "render_grid"]
