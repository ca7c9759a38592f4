"""The desktop viewer (`app.viewer`), its state (`app.state`) and the exports (`app.export`).

`DEFAULT_MODEL_PATH` is the generator `python visualizer.py` opens when no model is given.
"""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_PATH = REPO_ROOT / "checkpoints" / "portrait.safetensors"

__all__ = ["DEFAULT_MODEL_PATH", "REPO_ROOT"]
