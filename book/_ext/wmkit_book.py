"""Sphinx extension for the World Models book: keep the rendered book fully offline.

1. The ipywidgets HTML manager's CSS refers to its icon fonts with paths relative to the *page*
   (its two webpack runtimes use ``@jupyter-widgets/html-manager/dist/<hash>.woff2`` and
   ``@jupyter-widgets/<hash>.woff2``), not to the script. After the build, the fonts (vendored in
   ``_static/vendor/html-manager/``) are copied to both places beside every page that loads the
   manager, so widget icons render with no network.
2. sphinx-thebe is not loaded (see _config.yml): it would embed a CDN URL in every page.
"""

from __future__ import annotations

import shutil
from pathlib import Path

FONT_SUFFIXES = (".woff2", ".woff", ".ttf", ".eot", ".svg")


def _copy_widget_fonts(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    out = Path(app.outdir)
    src = out / "_static" / "vendor" / "html-manager"
    fonts = [p for p in src.glob("*") if p.suffix in FONT_SUFFIXES]
    if not fonts:
        return
    dirs = {page.parent for page in out.rglob("*.html")
            if "_static" not in page.parts and "html-manager/embed-amd.js" in page.read_text(errors="ignore")}
    for d in dirs:
        for dest in (d / "@jupyter-widgets" / "html-manager" / "dist", d / "@jupyter-widgets"):
            dest.mkdir(parents=True, exist_ok=True)
            for f in fonts:
                if not (dest / f.name).exists():
                    shutil.copy2(f, dest / f.name)


def setup(app):
    app.connect("build-finished", _copy_widget_fonts)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
