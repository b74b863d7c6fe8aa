"""The printable HTML summary: self-contained, every text escaped (a message's <script>
shows as text), images inline as data: URLs equal to what was sent, print CSS."""

from __future__ import annotations

import base64
from html.parser import HTMLParser

from collab.client.export.html import build_html
from tests.client.export.support import HOSTILE, sample


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> _Elements:
    parser = _Elements()
    parser.feed(page)
    parser.close()
    return parser


def test_hostile_text_is_shown_as_text_and_runs_nothing() -> None:
    page = build_html(sample())
    parsed = parse(page)
    tags = [t for t, _ in parsed.tags]
    assert "script" not in tags
    assert not [a for _, attrs in parsed.tags for a in attrs if a.startswith("on")]
    assert HOSTILE in "".join(parsed.text)  # shown, as text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Dr Sam Patel &lt;b&gt;" in page
    csp = next(attrs for t, attrs in parsed.tags
               if t == "meta" and attrs.get("http-equiv") == "Content-Security-Policy")
    assert csp["content"] == "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def test_images_are_inline_and_equal_to_what_was_sent() -> None:
    export = sample()
    parsed = parse(build_html(export))
    sources = [attrs["src"] for t, attrs in parsed.tags if t == "img"]
    sent = [i.data for m in export.messages for i in m.images]
    assert len(sources) == len(sent) == 2
    for src, data in zip(sources, sent, strict=True):
        assert src is not None and src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == data
    # Nothing is loaded from anywhere: no other URL in an attribute.
    assert not [v for _, attrs in parsed.tags for k, v in attrs.items()
                if k in ("href", "src") and v and not v.startswith("data:image/")]


def test_every_message_report_and_time_summary_are_there() -> None:
    export = sample()
    page = build_html(export)
    text = "".join(parse(page).text)
    for m in export.messages:
        assert f"#{m.seq} " in text
    assert "Punch biopsy first." in text and "superseded by the report of message #11" in text
    assert "Cumulative minutes21" in text  # dt + dd
    assert "Patient consent notedyes" in text
    assert "@media print" in page
    assert "Excise, watch, or biopsy first?" in text  # the amended request
    assert "[not available on this device" in text


def test_controls_do_not_reach_the_page() -> None:
    export = sample()
    export.messages[1].body = {"text": "bell\x07 esc\x1b[31m nul\x00 end"}
    page = build_html(export)
    assert "\x07" not in page and "\x1b" not in page and "\x00" not in page
    assert "bell esc[31m nul end" in page
