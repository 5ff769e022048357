"""The book's BibTeX file as plain Markdown: author-year citations linked to the work, full entries.

What `sphinxcontrib-bibtex` renders in the HTML book (``bibtex_reference_style: author_year``),
written out for places that have no Sphinx, the Colab edition (scripts/colab_edition.py) among them.
"""

from __future__ import annotations

import functools
import pathlib
import re

from myst_to_markdown import link


@functools.cache
def plain(latex: str) -> str:
    """BibTeX's LaTeX as plain text (``R{\\'e}`` -> ``Ré``); cached: pybtex looks up plugins each call."""
    from pybtex.richtext import Text

    return Text.from_latex(latex).render_as("text")


class Bibliography:
    def __init__(self, path: pathlib.Path, fallback_url: str) -> None:
        """``fallback_url``: where an entry with no URL or DOI of its own links to."""
        from pybtex.database import parse_file

        self.entries = parse_file(str(path)).entries
        self.fallback_url = fallback_url

    def url(self, key: str) -> str:
        fields = self.entries[key].fields
        if "url" in fields:
            return fields["url"]
        found = re.search(r"\\url\{([^}]+)\}", fields.get("howpublished", ""))
        if found:
            return found.group(1)
        if "doi" in fields:
            return f"https://doi.org/{fields['doi']}"
        return self.fallback_url

    def _people(self, key: str, name_parts: str) -> list[str]:
        return [
            plain(" ".join(part for attribute in name_parts.split() for part in getattr(person, attribute)))
            for person in self.entries[key].persons.get("author", [])
        ]

    def authors(self, key: str) -> str:
        """The author part of a label: ``Dao``, ``Loshchilov and Hutter``, ``Dosovitskiy et al.``"""
        names = self._people(key, "last_names")
        if not names:
            return key
        if len(names) > 2 or names[-1] == "others":  # BibTeX's "and others"
            return f"{names[0]} et al."
        return " and ".join(names)

    def year(self, key: str) -> str:
        return self.entries[key].fields.get("year", "n.d.")

    def cite(self, keys: list[str], textual: bool) -> str:
        """``{cite:t}`` as "Dao (2024)", ``{cite}``/``{cite:p}`` as "(Dao, 2024; ...)", each linked."""
        if textual:
            return ", ".join(link(f"{self.authors(k)} ({self.year(k)})", self.url(k)) for k in keys)
        return "(" + "; ".join(link(f"{self.authors(k)}, {self.year(k)}", self.url(k)) for k in keys) + ")"

    def full_entry(self, key: str) -> str:
        """Authors (year). Linked title. *Venue volume(number), pp. pages*."""
        people = self._people(key, "first_names middle_names prelast_names last_names")
        if people and people[-1] == "others":
            authors = ", ".join(people[:-1]) + " et al."
        elif len(people) > 1:
            authors = ", ".join(people[:-1]) + " and " + people[-1]
        else:
            authors = people[0] if people else plain(self.entries[key].fields.get("organization", key))
        fields = self.entries[key].fields
        venue = fields.get("booktitle") or fields.get("journal") or fields.get("institution") or ""
        if venue and "volume" in fields:
            venue += f" {fields['volume']}" + (f"({fields['number']})" if "number" in fields else "")
        if venue and "pages" in fields:
            venue += ", pp. " + fields["pages"].replace("--", "\u2013")  # BibTeX's -- is an en dash
        title = link(plain(fields.get("title", key)), self.url(key))
        return f"{authors} ({self.year(key)}). {title}." + (f" *{plain(venue)}*." if venue else "")

    def full_entries(self, keys: list[str]) -> list[str]:
        """The entries of ``keys``, sorted by author label and year as a reference list is."""
        ordered = sorted(keys, key=lambda k: (self.authors(k).lower(), self.year(k)))
        return [self.full_entry(k) for k in ordered]
