"""The interactive EG3D viewer: glfw window + PyOpenGL + Dear ImGui (imgui-bundle) + ImPlot.

    python visualizer.py [MODEL] [--state VIEW.json] [--dataset DATASET.zip] [--device cpu|cuda]

MODEL is a generator (.safetensors or official .pkl) or a fitted scene (`train.py sso`), told
apart by the file header; a scene is orbited like a generator, without the latent panels.

Layout: `window.py` (setup, frame loop, actions), `viewport.py` (texture, zoom/pan, overlays,
mouse orbit), `shortcuts.py`, `tasks.py` (background jobs), `context.py` (what panels see),
`panels/` (one file per side-panel section). The generator renders in a separate process
(`app.renderer_worker`).
"""
from .main import build_parser, main
from .window import Viewer

__all__ = ["Viewer", "build_parser", "main"]
