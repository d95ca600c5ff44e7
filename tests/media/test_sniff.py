"""sniff_kind: a file's kind from its first bytes, on synthetic headers and on the real corpus."""

from __future__ import annotations

import csv
import struct
from pathlib import Path

import pytest

from vlbeam.transforms.ingest import identify_file
from vlbeam.transforms.media.sniff import HEAD_BYTES, sniff_kind


def _ftyp(brand: bytes) -> bytes:
    return struct.pack(">I", 24) + b"ftyp" + brand + b"\x00\x00\x02\x00isomiso2" + b"\x00" * 64


def _riff(fourcc: bytes) -> bytes:
    return b"RIFF" + struct.pack("<I", 1000) + fourcc + b"\x00" * 64


def _ogg(first_packet: bytes) -> bytes:
    # OggS page header (27 bytes), one segment, then the stream's first packet.
    header = b"OggS\x00\x02" + b"\x00" * 8 + b"\x01\x00\x00\x00" + b"\x00" * 8 + b"\x01"
    return header + bytes([len(first_packet)]) + first_packet + b"\x00" * 64


def _ts(packets: int, broken_at: int | None = None) -> bytes:
    out = bytearray()
    for i in range(packets):
        packet = bytearray(b"\x47\x40\x00\x10" + b"\xff" * 184)
        if i == broken_at:
            packet[0] = 0x00
        out += packet
    return bytes(out)


SYNTHETIC = {
    "pdf": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "pdf", "pdf"),
    "pdf-junk-before-header": (b"Some junk before\r\n" * 20 + b"%PDF-1.4\n", "pdf", "pdf"),
    "pdf-header-ends-at-1KiB": (b"x" * 1019 + b"%PDF-1.4\n", "pdf", "pdf"),
    "pdf-header-past-1KiB": (b"x" * 1020 + b"%PDF-1.4\n", "unknown", "unrecognized bytes"),
    "png": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image", "png"),
    "jpeg-jfif": (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image", "jpeg"),
    "jpeg-exif": (b"\xff\xd8\xff\xe1\x00\x10Exif\x00", "image", "jpeg"),
    "tiff-little-endian": (b"II*\x00\x08\x00\x00\x00", "image", "tiff"),
    "tiff-big-endian": (b"MM\x00*\x00\x00\x00\x08", "image", "tiff"),
    "webp": (_riff(b"WEBPVP8 "), "image", "webp"),
    "avi": (_riff(b"AVI LIST"), "video", "avi"),
    "wav": (_riff(b"WAVEfmt "), "audio", "flac/wav"),
    "riff-other": (_riff(b"ACONanih"), "unknown", "unrecognized bytes"),
    "mp4-isom": (_ftyp(b"isom"), "video", "mp4/mov"),
    "mp4-mp42": (_ftyp(b"mp42"), "video", "mp4/mov"),
    "mov-qt": (_ftyp(b"qt  "), "video", "mp4/mov"),
    "m4a": (_ftyp(b"M4A "), "audio", "m4a"),
    "m4b": (_ftyp(b"M4B "), "audio", "m4a"),
    "avif": (_ftyp(b"avif"), "unknown", "heif/avif image (avif)"),
    "heic": (_ftyp(b"heic"), "unknown", "heif/avif image (heic)"),
    "heif-mif1": (_ftyp(b"mif1"), "unknown", "heif/avif image (mif1)"),
    "mov-no-ftyp-mdat": (b"\x00\x0b\x2a\x00mdat" + b"\x00" * 32, "video", "mov"),
    "mov-no-ftyp-wide": (b"\x00\x00\x00\x08wide\x00\x00\x00\x00mdat", "video", "mov"),
    "mov-no-ftyp-moov": (b"\x00\x00\x01\x00moov\x00\x00\x00\x6cmvhd", "video", "mov"),
    "matroska": (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01webm", "video", "matroska/webm"),
    "ogg-theora": (_ogg(b"\x80theora\x03\x02\x01"), "video", "ogg"),
    "ogg-dirac": (_ogg(b"BBCD\x00\x00\x00\x00"), "video", "ogg"),
    "ogg-vorbis": (_ogg(b"\x01vorbis\x00\x00\x00\x00"), "audio", "ogg"),
    "ogg-opus": (_ogg(b"OpusHead\x01\x02"), "audio", "ogg"),
    "flv": (b"FLV\x01\x05\x00\x00\x00\x09", "video", "flv"),
    "mpeg-ps-pack": (b"\x00\x00\x01\xba\x44\x00\x04\x00", "video", "mpeg-ps"),
    "mpeg-1-sequence": (b"\x00\x00\x01\xb3\x14\x00\xf0\x13", "video", "mpeg-ps"),
    "mpeg-ts": (_ts(8), "video", "mpeg-ts"),
    "mpeg-ts-three-packets": (_ts(3), "video", "mpeg-ts"),
    "mpeg-ts-two-packets": (_ts(2), "unknown", "unrecognized bytes"),
    "mpeg-ts-lost-sync": (_ts(8, broken_at=5), "unknown", "unrecognized bytes"),
    "mp3-id3": (b"ID3\x04\x00\x00\x00\x00\x00\x5a", "audio", "mp3"),
    "mp3-mpeg1-frame": (b"\xff\xfb\x90\x64\x00", "audio", "mp3"),
    "mp3-mpeg2-frame": (b"\xff\xf3\x48\xc4\x00", "audio", "mp3"),
    "flac": (b"fLaC\x00\x00\x00\x22", "audio", "flac/wav"),
    "gif87": (b"GIF87a\x01\x00\x01\x00", "unknown", "gif image (not supported)"),
    "gif89": (b"GIF89a\x01\x00\x01\x00", "unknown", "gif image (not supported)"),
    "html-doctype": (b"\n  <!DOCTYPE html>\n<html><body>", "unknown", "html"),
    "html-uppercase": (b"<HTML><HEAD><TITLE>x</TITLE>", "unknown", "html"),
    "empty": (b"", "unknown", "empty"),
    "text": (b"hello, world\n", "unknown", "unrecognized bytes"),
    "garbage": (bytes(range(256)) * 4, "unknown", "unrecognized bytes"),
    "zeros": (b"\x00" * 4096, "unknown", "unrecognized bytes"),
}


@pytest.mark.parametrize(("head", "kind", "detail"), SYNTHETIC.values(), ids=SYNTHETIC.keys())
def test_sniff_synthetic_headers(head: bytes, kind: str, detail: str) -> None:
    assert sniff_kind(head) == (kind, detail)


def test_pdf_header_is_found_anywhere_in_the_first_kib_only() -> None:
    for offset in (0, 1, 512, 1019):
        assert sniff_kind(b"\x00" * offset + b"%PDF-2.0")[0] == "pdf", offset
    for offset in (1020, 2048, HEAD_BYTES - 8):
        assert sniff_kind(b"\x00" * offset + b"%PDF-2.0")[0] != "pdf", offset


def test_html_named_pdf_is_not_a_pdf(tmp_path: Path) -> None:
    # A download that saved an error page under a .pdf name: the name must not matter.
    fake = tmp_path / "report.pdf"
    fake.write_bytes(b"<!doctype html>\n<html><head><title>404 Not Found</title></head></html>")
    source, detail = identify_file(str(fake))
    assert (source.kind, detail) == ("unknown", "html")


# Every corpus file, from its real head bytes (checked by hand with xxd):
#   pdf/*            25 50 44 46 2d ("%PDF-") at offset 0, except issue6069 ("Some junk before")
#   zero-byte files  no bytes at all
#   *.mp4            .... 66 74 79 70 ("ftyp") + brand isom / iso5 / mp42
#   *.mov (mjpeg)    000b2a00 "mdat" (no ftyp)
#   *.mkv / *.webm   1a 45 df a3 (EBML)
#   *.ogv            "OggS" with a Theora first packet
#   *.ts             0x47 sync byte every 188 bytes
#   *.mp3            "ID3"
CORPUS_KINDS = {
    "pdf/good/ocrmypdf_c02-22.pdf": ("pdf", "pdf"),
    "pdf/good/ocrmypdf_enormous.pdf": ("pdf", "pdf"),
    "pdf/good/ocrmypdf_linn.pdf": ("pdf", "pdf"),
    "pdf/good/ocrmypdf_poster.pdf": ("pdf", "pdf"),
    "pdf/good/ocrmypdf_rotated_skew.pdf": ("pdf", "pdf"),
    "pdf/good/pdfjs_XiaoBiaoSong.pdf": ("pdf", "pdf"),
    "pdf/good/pdfjs_freeculture.pdf": ("pdf", "pdf"),
    "pdf/good/pdfjs_prefilled_f1040.pdf": ("pdf", "pdf"),
    "pdf/good/pdfjs_tracemonkey.pdf": ("pdf", "pdf"),
    "pdf/good/pdfjs_vertical.pdf": ("pdf", "pdf"),
    "pdf/good/pypdf_SF424_page2.pdf": ("pdf", "pdf"),
    "pdf/good/pypdf_Seige_of_Vicksburg_Sample_OCR.pdf": ("pdf", "pdf"),
    "pdf/good/samplefiles_GeoTopo-komprimiert.pdf": ("pdf", "pdf"),
    "pdf/good/samplefiles_habibi-rotated.pdf": ("pdf", "pdf"),
    "pdf/good/samplefiles_multicolumn.pdf": ("pdf", "pdf"),
    "pdf/bad/ocrmypdf_hugemono.pdf": ("pdf", "pdf"),
    "pdf/bad/ocrmypdf_invalid.pdf": ("pdf", "pdf"),
    "pdf/bad/pdfjs_Brotli-Prototype-FileA.pdf": ("pdf", "pdf"),
    "pdf/bad/pdfjs_GHOSTSCRIPT-698804-1-fuzzed.pdf": ("pdf", "pdf"),
    "pdf/bad/pdfjs_Pages-tree-refs.pdf": ("pdf", "pdf"),
    "pdf/bad/pdfjs_autoprint.pdf": ("pdf", "pdf"),
    "pdf/bad/pdfjs_bomb_giant.pdf": ("pdf", "pdf"),
    "pdf/bad/pdfjs_empty_protected.pdf": ("pdf", "pdf"),
    "pdf/bad/pdfjs_issue6069.pdf": ("pdf", "pdf"),  # junk before %PDF-
    "pdf/bad/pdfjs_js-buttons.pdf": ("pdf", "pdf"),
    "pdf/bad/pdfjs_poppler-67295-0.pdf": ("pdf", "pdf"),
    "pdf/bad/pdfjs_poppler-85140-0.pdf": ("pdf", "pdf"),
    "pdf/bad/pdfjs_saslprep-r6.pdf": ("pdf", "pdf"),
    "pdf/bad/pdfjs_xfa_filled_imm1344e.pdf": ("pdf", "pdf"),
    "pdf/bad/qpdf_empty_zero_pages.pdf": ("pdf", "pdf"),
    "pdf/bad/samplefiles_libreoffice-writer-password.pdf": ("pdf", "pdf"),
    "pdf/bad/samplefiles_unreadablemetadata.pdf": ("pdf", "pdf"),
    "pdf/bad/tracemonkey_truncated_50pct.pdf": ("pdf", "pdf"),
    "pdf/bad/zero_bytes.pdf": ("unknown", "empty"),
    "video/good/filetype_fixture-mjpeg.mov": ("video", "mov"),
    "video/good/gnome_gs_task-switching.webm": ("video", "matroska/webm"),
    "video/good/love2d_sample.ogv": ("video", "ogg"),
    "video/good/mediabunny_cursed-vfr.mp4": ("video", "mp4/mov"),
    # ftyp isom: looks like video here; probing rejects it later (no video stream).
    "video/good/mediabunny_multiple-aac-tracks_audio-only.mp4": ("video", "mp4/mov"),
    "video/good/mediabunny_rotate-buck-bunny.mp4": ("video", "mp4/mov"),
    "video/good/mediabunny_transparency.webm": ("video", "matroska/webm"),
    "video/good/mediabunny_video-h265.mp4": ("video", "mp4/mov"),
    "video/good/moviepy_fire2.mp4": ("video", "mp4/mov"),
    "video/good/moviepy_smpte-2997.mp4": ("video", "mp4/mov"),
    "video/good/mp4parse_tiny_av1.mp4": ("video", "mp4/mov"),
    "video/good/pitivi_one_fps_numeroted_blue.mkv": ("video", "matroska/webm"),
    "video/bad/cockatoo_truncated_50pct.mp4": ("video", "mp4/mov"),
    "video/bad/filetype_fixture-corrupt.mkv": ("video", "matroska/webm"),
    "video/bad/filetype_fixture2_truncated.mkv": ("video", "matroska/webm"),
    "video/bad/imageio_test_h264_in.webm": ("video", "matroska/webm"),
    "video/bad/mediabunny_no-initial-keyframe.ts": ("video", "mpeg-ts"),
    "video/bad/moviepy_no_duration.webm": ("video", "matroska/webm"),
    "video/bad/moviepy_result_zero_bytes.webm": ("unknown", "empty"),
    # Its only "video" stream is an attached cover picture: audio.
    "video/bad/moviepy_with-attached-pic.mp3": ("audio", "mp3"),
    "video/bad/mp4parse_av1-clearkey-cbcs-video.mp4": ("video", "mp4/mov"),
    "video/bad/mp4parse_chunk_out_of_range.mp4": ("video", "mp4/mov"),
    "video/bad/video_corrupt_middle.mp4": ("video", "mp4/mov"),
}


def _manifest(corpus: Path) -> dict[str, dict[str, str]]:
    with open(corpus / "MANIFEST.tsv", newline="") as handle:
        return {row["path"]: row for row in csv.DictReader(handle, delimiter="\t")}


def test_corpus_expectations_cover_every_file(corpus: Path) -> None:
    on_disk = {
        p.relative_to(corpus).as_posix()
        for p in [*corpus.glob("pdf/*/*"), *corpus.glob("video/*/*")]
        if p.is_file()
    }
    assert on_disk == set(CORPUS_KINDS)


@pytest.mark.parametrize("rel", sorted(CORPUS_KINDS))
def test_sniff_corpus_file(corpus: Path, rel: str) -> None:
    path = corpus / rel
    with open(path, "rb") as handle:
        head = handle.read(HEAD_BYTES)
    assert sniff_kind(head) == CORPUS_KINDS[rel]

    # identify_file streams the whole file: same kind, and the manifest's hash and size.
    source, detail = identify_file(str(path))
    assert (source.kind, detail) == CORPUS_KINDS[rel]
    row = _manifest(corpus)[rel]
    assert source.doc_id == row["sha256"]
    assert source.size_bytes == int(row["size_bytes"])
