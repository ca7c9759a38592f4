"""The side panel's sections, one file each, drawn in this order.

To add a panel: write `panels/NAME.py` with a `Panel` subclass (`title`, `section` = the one
state section it writes or None, `available(model)`, `draw(ctx)`), and add it to `make_panels`.
"""
from __future__ import annotations

from typing import List

from .base import Panel
from .camera import CameraPanel
from .capture import CapturePanel
from .conditioning import ConditioningPanel
from .invert import InvertPanel
from .latent import LatentPanel
from .layers import LayersPanel
from .mesh import MeshPanel
from .mixing import MixingPanel
from .model import ModelPanel
from .perf import PerfPanel
from .planes import PlanesPanel
from .rays import RayPanel
from .render import RenderPanel
from .turntable import TurntablePanel


def make_panels(recent=None) -> List[Panel]:
    return [ModelPanel(recent), LatentPanel(), MixingPanel(), CameraPanel(), ConditioningPanel(),
            RenderPanel(), LayersPanel(), PlanesPanel(), RayPanel(), PerfPanel(), CapturePanel(),
            TurntablePanel(), MeshPanel(), InvertPanel()]


__all__ = ["Panel", "make_panels", "CameraPanel", "CapturePanel", "ConditioningPanel", "InvertPanel",
           "LatentPanel", "LayersPanel", "MeshPanel", "MixingPanel", "ModelPanel", "PerfPanel", "PlanesPanel",
           "RayPanel", "RenderPanel", "TurntablePanel"]
