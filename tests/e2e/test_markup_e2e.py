"""Marked images through a real daphne process with the SDK and the CLI: the receiver
decrypts the marked copy, whose blurred box lost its detail while the original (sent
only on request) kept it; neither carries EXIF or GPS; a plain image has no marking
fields; the CLI's marking flags, history line and fetch-image --original."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageStat

from collab.cases import models as m
from collab.client.markup import Arrow, Blur, Label, Mark, Pixelate
from collab.client.sdk import CollabClient
from collab.crypto.envelope import Header
from tests.client.images import assert_no_metadata, jpeg_with_gps
from tests.e2e.test_client_e2e import PASS, new_member, run_cli
from tests.support.live import daphne_servers

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

BOX = (20, 30, 140, 110)  # the blurred region, x1, y1, x2, y2
INNER = (30, 40, 130, 100)
CLEAR = (200, 150, 300, 220)  # no mark comes near it


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker) -> Iterator[str]:
    with django_db_blocker.unblock(), daphne_servers(1) as urls:
        yield urls[0]


def detailed(width: int = 320, height: int = 240) -> Image.Image:
    """8-px blocks of random colours (JPEG's own grid): a region full of detail that
    survives the re-encode."""
    rng = random.Random(4711)
    small = Image.frombytes("RGB", (width // 8, height // 8),
                            bytes(rng.randrange(256) for _ in range(width * height * 3 // 64)))
    return small.resize((width, height), Image.Resampling.NEAREST)


def variance(img: Image.Image, box: tuple[int, int, int, int]) -> float:
    return max(ImageStat.Stat(img.convert("RGB").crop(box)).var)


def mean_diff(a: Image.Image, b: Image.Image, box: tuple[int, int, int, int]) -> float:
    """Mean brightness difference (JPEG keeps brightness; it subsamples colour)."""
    diff = ImageChops.difference(a.convert("L").crop(box), b.convert("L").crop(box))
    return float(ImageStat.Stat(diff).mean[0])


def test_receiver_decrypts_the_marked_image_and_the_original_sent_with_it(
        server: str, tmp_path: Path) -> None:
    pcp = new_member(server, "pcp", tmp_path)
    derm = new_member(server, "derm", tmp_path, specialty="Dermatology")
    case_id = pcp.open_case(specialty="Dermatology")
    pcp.add_member(case_id, derm.user_id)
    source = detailed()
    photo = tmp_path / "cheek.jpg"
    photo.write_bytes(jpeg_with_gps(source, orientation=1))
    marks: list[Mark] = [Blur(BOX[0], BOX[1], BOX[2] - BOX[0], BOX[3] - BOX[1]),
             Arrow(250, 30, 180, 60), Label(170, 100, "lesion")]
    asyncio.run(pcp.send_image(case_id, photo, caption="cheek", marks=marks,
                               send_original=True, note="lesion 12 x 8 mm"))
    asyncio.run(pcp.send_image(case_id, photo, caption="plain"))

    marked_msg, plain_msg = derm.history(case_id)
    assert marked_msg.text == "cheek" and marked_msg.image_marked
    assert marked_msg.image_note == "lesion 12 x 8 mm"
    assert marked_msg.body["image"] == {"full": 0, "thumbnail": 1, "original": 2,
                                        "marked": True, "note": "lesion 12 x 8 mm"}
    assert len(marked_msg.attachments) == len(marked_msg.header.attachments) == 3
    full, original = marked_msg.image(), marked_msg.image(original=True)
    thumb = marked_msg.image(thumbnail=True)
    assert full is not None and original is not None and thumb is not None
    assert len({full.blob_id, original.blob_id, thumb.blob_id}) == 3
    marked = assert_no_metadata(derm.download_bytes(full))
    unmarked = assert_no_metadata(derm.download_bytes(original))
    assert_no_metadata(derm.download_bytes(thumb))
    assert marked.size == unmarked.size == source.size

    # The blurred box: its detail is gone in the marked copy, kept in the original.
    assert variance(source, INNER) > 4000
    assert variance(marked, INNER) < variance(source, INNER) / 10
    assert mean_diff(marked, source, INNER) > 15
    assert mean_diff(unmarked, source, INNER) < 8
    # Away from every mark the two copies are the same picture (JPEG tolerance).
    assert mean_diff(marked, unmarked, CLEAR) < 8
    # The arrow is drawn: yellow on its shaft.
    r, g, b = marked.convert("RGB").getpixel((215, 45))  # type: ignore[misc]
    assert r > 200 and g > 170 and b < 140  # yellow (255, 214, 0) after JPEG

    # A plain image: two blobs, no marking fields, no original.
    assert plain_msg.body["image"] == {"full": 0, "thumbnail": 1}
    assert not plain_msg.image_marked and plain_msg.image_note == ""
    assert plain_msg.image(original=True) is None and len(plain_msg.attachments) == 2


def test_cli_marks_lists_and_fetches_the_original(server: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pcp = new_member(server, "pcp2", tmp_path)
    derm: CollabClient = new_member(server, "derm2", tmp_path, specialty="Dermatology")
    case_id = pcp.open_case(specialty="Dermatology")
    pcp.add_member(case_id, derm.user_id)
    assert derm.sync(case_id).head.epoch == 1
    derm.save()
    monkeypatch.setenv("COLLAB_PASSPHRASE", PASS)
    home = str(tmp_path / "derm2")
    photo = tmp_path / "arm.jpg"
    photo.write_bytes(jpeg_with_gps(detailed(), orientation=1))

    # Bad coordinates: refused before anything is uploaded or sent.
    code, _, err = run_cli("--home", home, "send-image", str(case_id), str(photo),
                           "--pixelate", "300,200,40,60")
    assert code == 1 and "(bad_mark)" in err and "320x240" in err, err
    code, out, err = run_cli("--home", home, "send-image", str(case_id), str(photo),
                             "--pixelate", "20,30,120,80", "--circle", "250,60,30",
                             "--note", "ruler at the bottom", "--with-original")
    assert code == 0 and "sent image #1" in out, err

    code, out, err = run_cli("--home", home, "history", str(case_id))
    assert code == 0, err
    assert "marked; note: ruler at the bottom; original: fetch-image --original" in out, out
    target = tmp_path / "original.jpg"
    code, out, err = run_cli("--home", home, "fetch-image", str(case_id), "1",
                             "--original", "--out", str(target))
    assert code == 0 and "verified" in out, err
    original = assert_no_metadata(target.read_bytes())
    assert variance(original, INNER) > 4000
    marked_path = tmp_path / "marked.jpg"
    code, out, err = run_cli("--home", home, "fetch-image", str(case_id), "1",
                             "--out", str(marked_path))
    assert code == 0, err
    marked = assert_no_metadata(marked_path.read_bytes())
    # Pixelated (14-px blocks of the region's averages): less variance than the original;
    # exact block uniformity is checked without JPEG in tests/client.
    assert variance(marked, INNER) < variance(original, INNER) / 3
    assert mean_diff(marked, original, CLEAR) < 8

    # Sent with its original: the stored header names three blobs.
    row = m.Message.objects.get(case_id=case_id, seq=1)
    assert len(Header.decode(bytes(row.header)).attachments) == 3
    # fetch-image --original on a message sent without one is a clear error.
    asyncio.run(pcp.send_image(case_id, photo, caption="plain", marks=[Pixelate(0, 0, 8, 8)]))
    code, _, err = run_cli("--home", home, "fetch-image", str(case_id), "2", "--original")
    assert code == 1 and "(no_original)" in err, err
