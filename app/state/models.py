"""Opening what the viewer and the exports show: a generator or a fitted scene, both
`model.interface.Renderable`."""
from __future__ import annotations

REQUIRED_ATTRIBUTES = ("cfg", "has_latent", "z_dim", "c_dim", "num_ws", "img_resolution",
                       "neural_rendering_resolution")


def load_model(path, device="cpu"):
    """A fitted scene (`model.scene`: scene.safetensors, checkpoint.safetensors or a run folder,
    told apart by the safetensors header) or a generator (`model.load`: our .safetensors or an
    official .pkl), in eval mode without gradients."""
    from model import scene
    if scene.is_scene(path):
        G = scene.load_scene_generator(path, device=device)
    else:
        import model
        G = model.load(path, device=device)
    missing = [name for name in REQUIRED_ATTRIBUTES if not hasattr(G, name)]
    if missing:
        raise ValueError(f"{path}: not a renderable model (no {', '.join(missing)})")
    return G.eval().requires_grad_(False)


SHIPPED_DIR = __import__("pathlib").Path(__file__).resolve().parents[2] / "checkpoints"


def shipped_models(folder=None):
    """The models we ship: every `checkpoints/NAME.safetensors` with its model card
    `checkpoints/NAME.md`, as [(name, path, first card line)], sorted by name. Read on each call
    (a model added while the viewer runs appears)."""
    from pathlib import Path
    folder = Path(folder) if folder is not None else SHIPPED_DIR
    found = []
    for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        card = path.with_suffix(".md")
        if not card.is_file():
            continue
        try:
            with open(card, "r", encoding="utf-8") as f:
                title = f.readline(200).strip().lstrip("#").strip()
        except (OSError, UnicodeDecodeError):
            title = ""
        found.append((path.stem, str(path), title))
    return found
