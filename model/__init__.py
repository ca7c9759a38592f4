"""EG3D tri-plane generator and dual discriminator: our own implementation, official-compatible.

    import model
    G = model.load("checkpoints/portrait.safetensors")        # or an official .pkl snapshot
    ws = G.mapping(z, c, truncation_psi=0.7)
    planes = G.planes(ws)
    out = G.render(planes, ws, c)                              # image, image_raw, image_depth, ...
"""
from . import camera, config, device, presets
from .checkpoint import (CheckpointError, build_discriminator, build_generator, copy_state_dict, load, load_all,
                         load_extra_tensors, read_metadata, save)
from .config import DiscriminatorConfig, GeneratorConfig
from .discriminator import DualDiscriminator
from .generator import TriPlaneGenerator
from .output import atomic_write

__all__ = [
    "camera", "config", "device", "presets", "CheckpointError", "copy_state_dict", "build_discriminator", "build_generator",
    "atomic_write", "load", "load_all", "load_extra_tensors", "read_metadata", "save", "DiscriminatorConfig", "GeneratorConfig",
    "DualDiscriminator", "TriPlaneGenerator",
]
