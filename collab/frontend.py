"""Script and stylesheet tags for the browser client, with Subresource Integrity.

Every script Chromium loads carries an ``integrity`` attribute: the classic tweetnacl
script, the entry module, and, through ``<link rel="modulepreload" integrity=...>``, every
module of the entry's static import graph (a preloaded module is fetched once, checked
against its hash, and the later ``import`` reuses it from the module map).

Module URLs are the unhashed static names on purpose: the modules import each other by
relative URL, so a module must be preloaded under the exact URL its importers resolve.
Hashes are computed from the files served at those URLs, and recomputed when a file
changes (its modification time and size are part of the cache key).
"""

from __future__ import annotations

import base64
import hashlib
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.staticfiles import finders
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

# Static imports and re-exports with a relative specifier: `import x from './a.js'`,
# `import './a.js'`, `export { y } from '../b.js'`. Dynamic import() is not followed.
_IMPORT = re.compile(
    r"""^\s*(?:import|export)\b[^'"`;]*?(?:\bfrom\s*)?['"](\.{1,2}/[^'"]+)['"]""",
    re.MULTILINE,
)

_cache: dict[str, tuple[tuple[int, int], str, tuple[str, ...]]] = {}


@dataclass(frozen=True)
class Asset:
    name: str  # static name, e.g. "collab/app/main.js"
    url: str
    integrity: str


def _path(name: str) -> Path:
    """The file served for a static name: collected (production) or found (development)."""
    root = Path(str(settings.STATIC_ROOT))
    collected = root / name
    if not settings.WHITENOISE_USE_FINDERS and collected.is_file():
        return collected
    found = finders.find(name)
    if isinstance(found, list):
        found = found[0] if found else None
    if found:
        return Path(found)
    if collected.is_file():
        return collected
    raise FileNotFoundError(f"static file {name!r} not found")


def _read(name: str) -> tuple[str, tuple[str, ...]]:
    """(sha384 integrity value, relative module imports) of one static file, cached."""
    path = _path(name)
    stat = path.stat()
    key = (stat.st_mtime_ns, stat.st_size)
    hit = _cache.get(name)
    if hit is not None and hit[0] == key:
        return hit[1], hit[2]
    data = path.read_bytes()
    integrity = "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode("ascii")
    imports: tuple[str, ...] = ()
    if name.endswith((".js", ".mjs")):
        base = posixpath.dirname(name)
        text = data.decode("utf-8", errors="replace")
        imports = tuple(
            posixpath.normpath(posixpath.join(base, spec)) for spec in _IMPORT.findall(text)
        )
    _cache[name] = (key, integrity, imports)
    return integrity, imports


def asset(name: str) -> Asset:
    integrity, _ = _read(name)
    return Asset(name, settings.STATIC_URL + name, integrity)


def module_graph(entry: str) -> list[Asset]:
    """The entry module and every module it imports statically, dependencies first."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for dep in _read(name)[1]:
            visit(dep)
        order.append(name)

    visit(entry)
    return [asset(name) for name in order]


def stylesheet_tag(name: str) -> SafeString:
    a = asset(name)
    return format_html(
        '<link rel="stylesheet" href="{}" integrity="{}" crossorigin="anonymous">',
        a.url,
        a.integrity,
    )


def script_tag(name: str) -> SafeString:
    """A classic script (blocking, runs before any module)."""
    a = asset(name)
    return format_html(
        '<script src="{}" integrity="{}" crossorigin="anonymous"></script>', a.url, a.integrity
    )


def module_tags(entry: str) -> SafeString:
    """modulepreload links with integrity for the whole graph, then the entry script."""
    graph = module_graph(entry)
    preloads = format_html_join(
        "\n",
        '<link rel="modulepreload" href="{}" integrity="{}" crossorigin="anonymous">',
        ((a.url, a.integrity) for a in graph),
    )
    main = graph[-1]
    script = format_html(
        '<script type="module" src="{}" integrity="{}" crossorigin="anonymous"></script>',
        main.url,
        main.integrity,
    )
    return format_html("{}\n{}", preloads, script)


def page_assets() -> dict[str, SafeString]:
    """Template context for an app page."""
    return {
        "sri_css": stylesheet_tag("collab/app.css"),
        "sri_scripts": format_html(
            "{}\n{}\n{}",
            script_tag("collab/vendor/nacl-fast.min.js"),
            script_tag("collab/vendor/qrcode.js"),
            module_tags("collab/app/main.js"),
        ),
    }


def invite_assets() -> dict[str, SafeString]:
    """Template context for the patient's invitation pages: the module that keeps the
    link's secret (its URL fragment) on this browser before the form posts."""
    return {
        "sri_scripts": format_html(
            "{}\n{}",
            script_tag("collab/vendor/nacl-fast.min.js"),
            module_tags("collab/app/invite-page.js"),
        ),
    }
