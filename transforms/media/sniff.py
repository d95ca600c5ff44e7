"""Tell a file's real type from its first bytes, never from its name."""

from __future__ import annotations

HEAD_BYTES = 4096

_VIDEO_FTYP_AUDIO = {b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "}
_IMAGE_FTYP = {b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1"}


def sniff_kind(head: bytes) -> tuple[str, str]:
    """Return (kind, detail) for a file whose first bytes are `head`.

    kind is one of pdf, image, video, audio, unknown; detail names the format
    (for messages). An empty head is `unknown` with detail `empty`.
    """
    if not head:
        return "unknown", "empty"
    # PDF readers accept junk before the header within the first KiB.
    if b"%PDF-" in head[:1024]:
        return "pdf", "pdf"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image", "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image", "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image", "tiff"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image", "webp"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video", "avi"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _VIDEO_FTYP_AUDIO:
            return "audio", "m4a"
        if brand in _IMAGE_FTYP:
            return "unknown", f"heif/avif image ({brand.decode('latin-1').strip()})"
        return "video", "mp4/mov"
    if head[4:8] in (b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "video", "mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video", "matroska/webm"
    if head.startswith(b"OggS"):
        # Theora/Dirac video streams name themselves in the first page.
        if b"\x80theora" in head or b"BBCD" in head[:256]:
            return "video", "ogg"
        return "audio", "ogg"
    if head.startswith(b"FLV\x01"):
        return "video", "flv"
    if head.startswith(b"\x00\x00\x01\xba") or head.startswith(b"\x00\x00\x01\xb3"):
        return "video", "mpeg-ps"
    if _looks_like_mpegts(head):
        return "video", "mpeg-ts"
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio", "mp3"
    if head.startswith(b"fLaC") or (head[:4] == b"RIFF" and head[8:12] == b"WAVE"):
        return "audio", "flac/wav"
    if head.startswith(b"GIF8"):
        return "unknown", "gif image (not supported)"
    lowered = head[:512].lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html")):
        return "unknown", "html"
    return "unknown", "unrecognized bytes"


def _looks_like_mpegts(head: bytes) -> bool:
    packet = 188
    if len(head) < packet * 3:
        return False
    return all(head[i * packet] == 0x47 for i in range(min(len(head) // packet, 8)))
