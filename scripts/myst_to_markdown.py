"""MyST Markdown -> the Markdown (and a little HTML) that Colab renders, for scripts/colab_edition.py.

Colab's Markdown knows no MyST: roles (``{glue:text}`key:.2f` ``, ``{cite:t}`key` ``, ``{doc}`page` ``)
show as source text and directives (```` ```{literalinclude} ````, ```` ```{admonition} ````) as code or
nothing. `convert` rewrites one cell's source; what a construct becomes is decided by the `Renderer`
passed in (the chapter's glued values, the bibliography, the published book's addresses), which also
counts what it rendered. A construct with no rendering raises `ValueError` instead of slipping through.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# A fence opens with 3+ backticks, tildes or (MyST's colon_fence) colons; a directive names itself in braces.
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,}|:{3,})(?P<info>.*)$")
DIRECTIVE_INFO = re.compile(r"^\{(?P<name>[\w:-]+)\}\s*(?P<argument>.*)$")
OPTION = re.compile(r"^:(?P<key>[\w-]+):\s*(?P<value>.*)$")
TARGET = re.compile(r"^\s*\((?P<label>[^()\s]+)\)=\s*$")  # (label)= above a heading
MATH_LABEL = re.compile(
    r"^(?P<close>.*\$\$)\s*\((?P<label>[^()\s]+)\)\s*$", re.MULTILINE
)  # $$ ... $$ (label)
# a role `{name}` followed by a code span; a plain code span, which is left alone; a substitution
# {{ name }} (myst_substitutions); the target of a Markdown link or image, ](target)
INLINE = re.compile(
    r"\{(?P<role>[a-z][\w:-]*)\}(?P<ticks>`+)(?P<content>.+?)(?P=ticks)"
    r"|(?P<code>(?P<cticks>`+).+?(?P=cticks))"
    r"|\{\{\s*(?P<substitution>[\w.]+)\s*\}\}"
    r"|\]\((?P<target>[^()\s]+)\)",
    re.DOTALL,
)
ABSOLUTE = re.compile(r"^([a-z][\w+.-]*:|#|<)", re.IGNORECASE)  # https:, mailto:, data:, #anchor, <url>

ADMONITIONS = {
    "note", "tip", "hint", "important", "warning", "caution", "attention", "danger", "error", "seealso",
}  # fmt: skip


class Renderer:
    """What each construct becomes; `scripts/colab_edition.py` implements it for one chapter."""

    def role(self, name: str, content: str) -> str:
        raise NotImplementedError

    def literalinclude(self, argument: str, options: dict[str, str]) -> str:
        raise NotImplementedError

    def glue_block(self, name: str, key: str, options: dict[str, str]) -> str:
        raise NotImplementedError

    def substitution(self, name: str) -> str:
        raise NotImplementedError

    def relative_link(self, target: str) -> str:
        """The address a link or image relative to the notebook's folder has outside the book."""
        raise NotImplementedError

    def count(self, construct: str) -> None:
        raise NotImplementedError


def convert(source: str, renderer: Renderer) -> str:
    """A Markdown cell's MyST source as Colab-renderable Markdown."""
    lines = source.split("\n")
    out: list[str] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            out.append(convert_inline("\n".join(paragraph), renderer))
            paragraph.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        fence = FENCE.match(line)
        if fence:
            flush()
            char, width = fence["fence"][0], len(fence["fence"])
            closing = re.compile(rf"^ {{0,3}}{re.escape(char)}{{{width},}}\s*$")
            end = next((j for j in range(i + 1, len(lines)) if closing.match(lines[j])), len(lines))
            directive = DIRECTIVE_INFO.match(fence["info"].strip())
            if directive:
                if end == len(lines):
                    raise ValueError(f"unclosed MyST directive {line.strip()!r}")
                body = lines[i + 1 : end]
                out.append(render_directive(directive["name"], directive["argument"].strip(), body, renderer))
            elif char == ":":
                raise ValueError(f"a colon fence that is not a directive: {line.strip()!r}")
            else:  # a plain code block, verbatim
                out.extend(lines[i : end + 1])
            i = end + 1
            continue
        if TARGET.match(line):
            renderer.count("target")  # the published book keeps the anchor; Colab has no use for it
        elif line.startswith("%"):
            renderer.count("comment")  # a MyST comment line
        else:
            paragraph.append(line)
        i += 1
    flush()
    return "\n".join(out)


def convert_inline(text: str, renderer: Renderer) -> str:
    """Replace the roles in running text; code spans stay as they are."""

    def replace(match: re.Match) -> str:
        if match["code"]:
            return match["code"]
        if match["substitution"]:
            return renderer.substitution(match["substitution"])
        if match["target"]:
            target = match["target"]
            return match[0] if ABSOLUTE.match(target) else f"]({renderer.relative_link(target)})"
        return renderer.role(match["role"], match["content"])

    def drop_label(match: re.Match) -> str:
        renderer.count("target")
        return match["close"]

    return INLINE.sub(replace, MATH_LABEL.sub(drop_label, text))


def split_options(body: list[str]) -> tuple[dict[str, str], list[str]]:
    """A directive's ``:key: value`` lines (or a ``---`` YAML block of ``key: value``) and its content."""
    options: dict[str, str] = {}
    rest = list(body)
    if rest and rest[0].strip() == "---":
        end = rest.index("---", 1) if "---" in rest[1:] else None
        if end is None:
            raise ValueError("a directive's option block opened with --- is not closed")
        for line in rest[1:end]:
            key, _, value = line.partition(":")
            options[key.strip()] = value.strip()
        rest = rest[end + 1 :]
    else:
        while rest and OPTION.match(rest[0]):
            option = OPTION.match(rest[0])
            options[option["key"]] = option["value"].strip()
            rest = rest[1:]
    while rest and not rest[0].strip():
        rest = rest[1:]
    return options, rest


def render_directive(name: str, argument: str, body: list[str], renderer: Renderer) -> str:
    options, content = split_options(body)
    text = "\n".join(content).strip("\n")
    handlers: dict[str, Callable[[], str]] = {
        "literalinclude": lambda: renderer.literalinclude(argument, options),
        "math": lambda: f"$$\n{text}\n$$",
        "code-block": lambda: code_fence(text, argument or options.get("language", "")),
        "code": lambda: code_fence(text, argument or options.get("language", "")),
        "dropdown": lambda: details(convert_inline(argument, renderer), convert(text, renderer)),
        "toggle": lambda: details("Show", convert(text, renderer)),
    }
    for glue in ("glue", "glue:", "glue:any", "glue:text", "glue:figure", "glue:math"):
        handlers[glue] = lambda glue=glue: renderer.glue_block(glue, argument, options)
    if name == "admonition" or name in ADMONITIONS:
        title = argument if name == "admonition" else argument or name.capitalize()
        title = convert_inline(title, renderer)
        inner = convert(text, renderer)
        if "dropdown" in options.get("class", "").split():
            renderer.count("dropdown")
            return details(title, inner)
        renderer.count("admonition")
        return blockquote(f"**{title}**" if title else "", inner)
    if name not in handlers:
        raise ValueError(f"no Colab rendering for the MyST directive {{{name}}}: add one to {__file__}")
    renderer.count({"code": "code-block", "toggle": "dropdown"}.get(name, name.rstrip(":")))
    return handlers[name]()


def code_fence(code: str, language: str) -> str:
    """A fenced code block that no backtick run in the code can close early."""
    longest = max((len(run) for run in re.findall(r"`{3,}", code)), default=2)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{code.rstrip()}\n{fence}"


def details(summary: str, body: str) -> str:
    """A collapsed section: Colab renders HTML ``<details>`` and Markdown between blank lines inside."""
    return f"<details>\n<summary><b>{summary}</b></summary>\n\n{body.strip()}\n\n</details>"


def blockquote(title: str, body: str) -> str:
    lines = ([title, ""] if title else []) + body.strip().split("\n")
    return "\n".join(f"> {line}".rstrip() for line in lines)


def link(text: str, url: str) -> str:
    """A Markdown link; an address with spaces or parentheses goes in angle brackets."""
    return f"[{text}](<{url}>)" if re.search(r"[\s()<>]", url) else f"[{text}]({url})"
