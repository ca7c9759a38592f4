#!/usr/bin/env python3
"""Screenshots for the docs (docs/viewer.png, the README's first picture, and the inspection
panels: panel_layers.png, panel_planes.png, panel_rays.png): the real viewer on the shipped
checkpoint, under a private Xvfb when there is no display.

    python docs/panel_screenshots.py [--network checkpoints/portrait.safetensors] [--out docs]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from app import DEFAULT_MODEL_PATH  # noqa: E402
from bench.viewer_fps import Xvfb  # noqa: E402

SHOTS = {   # file: (panels open, view state changes)
    "viewer.png": (("Model", "Latent", "Camera", "Conditioning pose"), dict()),
    "panel_layers.png": (("Layers",), dict(layer="backbone.synthesis.b32.conv1", layer_mode="pca")),
    "panel_planes.png": (("Tri-planes",), dict(planes_show=True, planes_channel=0, planes_frustum=True,
                                               planes_ray=True, ray_pixel=[0.5, 0.45])),
    "panel_rays.png": (("Ray inspector",), dict(ray_pixel=[0.5, 0.45])),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--network", default=str(DEFAULT_MODEL_PATH))
    p.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = p.parse_args(argv)
    with Xvfb():
        from app import state as S
        from app.viewer import Viewer
        v = Viewer(model_path=args.network, size=(1280, 800), vsync=False, config_dir=tempfile.mkdtemp())
        try:
            v.settings.show_perf = False
            v.run_until_idle(300)
            for name, (panels, changes) in SHOTS.items():
                v.messages.clear()
                v.set_state(S.ViewerState(seed=1, yaw=20.0).copy(**changes))
                v.open_panels(panels)
                for _ in range(3):
                    v.step()
                v.run_until_idle(300)
                path = v.save_window(os.path.join(args.out, name))
                v.step()
                print(path)
        finally:
            v.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
