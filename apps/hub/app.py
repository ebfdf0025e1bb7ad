"""geo_models demo hub: every app as a tab. ``python apps/hub/app.py --port 7860`` (``--help`` for model flags).

Add an app with one line in ``TABS``: its title and the module whose ``create_demo(store)`` builds it. API names
stay those of the apps (``geolocate``, ``text_query``; ``generate`` with the generation tab; ``views``, ``lift`` with
the 3D tab).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:  # run as a script (`python apps/hub/app.py`) from any directory
    sys.path.insert(0, str(_ROOT))

from apps.common.settings import parse_settings  # noqa: E402  (light: `--help` answers before gradio is imported)

if TYPE_CHECKING:
    import gradio as gr

    from apps.common.models import ModelStore

TITLE = "geo_models demo hub"
TABS: list[tuple[str, str]] = [
    ("Geolocate a photo", "apps.geolocate.app"),
    ("Generate from a map", "apps.generate.app"),
    ("A landmark in 3D", "apps.landmark3d.app"),
]


def create_demo(store: ModelStore, tabs: list[tuple[str, str]] | None = None) -> gr.Blocks:
    """All apps of ``tabs`` (default ``TABS``) as tabs of one Blocks."""
    import gradio as gr

    apps = [(title, importlib.import_module(module).create_demo(store)) for title, module in tabs or TABS]
    with gr.Blocks(title=TITLE) as demo:  # apps are built outside this context, then rendered once in their tab
        gr.Markdown(f"# {TITLE}\nModels that connect GPS and images.")
        for title, app in apps:
            with gr.Tab(title):
                app.render()
    return demo


def main(argv=None) -> int:
    settings = parse_settings(argv, TITLE)
    from apps.common.launch import serve

    return serve(create_demo, settings)


if __name__ == "__main__":
    raise SystemExit(main())
