"""Sphinx extension: two fixes for jupyter-book 1.x's theme stack, found by the browser check
(tests/browser), each of which logs a console error on every page.

- sphinx-thebe's configuration script is added twice, so the second ``const THEBE_JS_URL`` is a
  SyntaxError: drop repeated inline/linked scripts from each page.
- pydata-sphinx-theme's page template starts from ``localStorage.mode || "{{ default_mode }}"``, and
  nothing sets ``default_mode`` under sphinx-book-theme, so a first visit logs "Got invalid theme
  mode" before falling back to "auto": say "auto".
"""

from __future__ import annotations


def fix_page(app, pagename, templatename, context, doctree) -> None:
    context.setdefault(
        "default_mode", "auto"
    )  # read by the theme's first inline script
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[str] = set()
    unique = []
    for script in scripts:
        # an inline script's filename is None or "" depending on who added it; its body is an attribute
        attributes = getattr(script, "attributes", {})
        key = (
            f"{getattr(script, 'filename', script) or ''}|{sorted(attributes.items())}"
        )
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", fix_page, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
