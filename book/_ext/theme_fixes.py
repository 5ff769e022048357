"""Sphinx extension: three fixes for jupyter-book 1.x's theme stack, found by the browser check
(tests/browser). The first two each log a console error on every page; the third shows on every page.

- sphinx-thebe's configuration script is added twice, so the second ``const THEBE_JS_URL`` is a
  SyntaxError: drop repeated inline/linked scripts from each page.
- pydata-sphinx-theme's page template starts from ``localStorage.mode || "{{ default_mode }}"``, and
  nothing sets ``default_mode`` under sphinx-book-theme, so a first visit logs "Got invalid theme
  mode" before falling back to "auto": say "auto".
- pydata-sphinx-theme 0.17 adds a search field in a header bar across the top unless
  ``navbar_persistent`` is among the user's theme options (sphinx-book-theme's own empty default in
  its theme.conf no longer counts), so every page had two search boxes, that bar's and the
  sidebar's: set it to nothing. The header bar then has no items and is not rendered at all, as
  sphinx-book-theme intends; the sidebar's field, the article header's search icon and Ctrl+K stay.
"""

from __future__ import annotations


def no_header_search(app, config) -> None:
    config.html_theme_options.setdefault("navbar_persistent", [])


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
    app.connect("config-inited", no_header_search)
    app.connect("html-page-context", fix_page, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
