"""Demo hub entry point: ``python apps/hub/app.py --port 7860``.

The Gradio tabs (map-driven generation, globe geolocation) arrive with the apps issue; until then this prints what
the library offers so far and exits successfully, so the README's first command stays true.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    return parser.parse_args(argv)


def available_components() -> list[str]:
    """Sub-packages of geo_models that import cleanly, with the first line of their docstring."""
    import geo_models

    lines = []
    for info in sorted(pkgutil.iter_modules(geo_models.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"geo_models.{info.name}")
        summary = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""
        lines.append(f"  geo_models.{info.name:<10} {summary}")
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    print(f"geo_models demo hub (would serve on http://{args.host}:{args.port}).")
    print("The Gradio apps are not built yet (see the apps issue). Available so far:")
    print("\n".join(available_components()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
