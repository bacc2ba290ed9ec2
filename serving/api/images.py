"""Turn a chat `image_url` into a checked RGB image.

Limits are enforced in the cheapest order: the encoded length before base64 decoding, the header's
pixel count before any pixel is decoded (PIL's decompression-bomb guard, set to the same limit by
`limit_decoded_pixels`, is the second line),
and the real format against the declared mime type. Every failure is an ApiError with a 4xx status.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import io
import re

import httpx
from PIL import Image, UnidentifiedImageError

from serving.config import ImageLimits
from serving.api.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType

ACCEPTED_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP", "gif": "GIF", "bmp": "BMP"}
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,")
_PARAM = "messages.content.image_url.url"


def limit_decoded_pixels(max_pixels: int) -> None:
    """Set PIL's process-wide decompression-bomb limit; called once per replica at start-up."""
    Image.MAX_IMAGE_PIXELS = max_pixels


def _format_from_mime(mime: str | None, param: str) -> str:
    if mime is None or not mime.startswith("image/"):
        raise UnsupportedMediaType(f"image data must have an image/* mime type, got {mime!r}", param=param)
    subtype = mime.split("/", 1)[1].lower()
    if subtype not in ACCEPTED_FORMATS:
        raise UnsupportedMediaType(
            f"unsupported image type {mime!r}; accepted: {', '.join(sorted(set(ACCEPTED_FORMATS)))}",
            param=param,
        )
    return ACCEPTED_FORMATS[subtype]


def decode_image_bytes(data: bytes, limits: ImageLimits, expected_format: str | None = None,
                       param: str = _PARAM) -> Image.Image:
    """Open, check and fully decode image bytes; returns an RGB image."""
    if len(data) > limits.max_encoded_bytes:
        raise PayloadTooLarge(f"image is {len(data)} bytes; the limit is {limits.max_encoded_bytes}", param=param)
    try:
        # Only the accepted decoders ever see user bytes.
        image = Image.open(io.BytesIO(data), formats=sorted(set(ACCEPTED_FORMATS.values())))
        width, height = image.size
        if width * height > limits.max_pixels:
            raise PayloadTooLarge(
                f"image is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels}",
                param=param,
            )
        if expected_format is not None and image.format != expected_format:
            raise UnsupportedMediaType(
                f"image data is {image.format} but was declared as {expected_format}", param=param
            )
        image.load()
        return image.convert("RGB")
    except Image.DecompressionBombError as err:
        raise PayloadTooLarge(f"image exceeds the pixel limit: {err}", param=param) from None
    except UnidentifiedImageError:
        accepted = ", ".join(sorted(set(ACCEPTED_FORMATS.values())))
        raise InvalidRequest(f"image data is not a readable image ({accepted})", param=param) from None
    except (OSError, SyntaxError, ValueError) as err:  # truncated or corrupt files surface as these
        raise InvalidRequest(f"image data is corrupt: {err}", param=param) from None


def decode_data_url(url: str, limits: ImageLimits, param: str = _PARAM) -> Image.Image:
    """Decode a `data:image/<type>;base64,<payload>` URL."""
    match = _DATA_URL.match(url)
    if match is None or match.group("b64") is None:
        raise InvalidRequest("image data URLs must look like data:image/<type>;base64,<data>", param=param)
    expected = _format_from_mime(match.group("mime"), param)
    data = _from_base64(url[match.end():], limits, param, "image data is not valid base64")
    return decode_image_bytes(data, limits, expected, param)


def _from_base64(text: str, limits: ImageLimits, param: str, invalid: str) -> bytes:
    """The bytes of a base64 image; its size is checked before any is decoded (base64 inflates by 4/3)."""
    if len(text) * 3 // 4 > limits.max_encoded_bytes + 3:
        raise PayloadTooLarge(f"image is over the {limits.max_encoded_bytes}-byte limit", param=param)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(invalid, param=param) from None


async def fetch_remote_image(url: str, limits: ImageLimits, param: str = _PARAM) -> Image.Image:
    """Download an http(s) image with a size cap and a timeout (only when the config allows it)."""
    if not limits.allow_remote_urls:
        raise InvalidRequest(
            "remote image URLs are disabled on this server; send the image as a base64 data URL", param=param
        )
    chunks: list[bytes] = []
    size = 0
    try:
        async with httpx.AsyncClient(timeout=limits.remote_timeout_s, follow_redirects=False) as client:
            async with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise InvalidRequest(f"fetching the image returned HTTP {response.status_code}", param=param)
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limits.max_encoded_bytes:
                        raise PayloadTooLarge(
                            f"remote image is over the {limits.max_encoded_bytes}-byte limit", param=param
                        )
                    chunks.append(chunk)
    except httpx.HTTPError as err:
        raise InvalidRequest(f"could not fetch the image: {type(err).__name__}", param=param) from None
    return await asyncio.to_thread(decode_image_bytes, b"".join(chunks), limits, None, param)


def decode_bare_base64(text: str, limits: ImageLimits, param: str) -> Image.Image:
    """Image bytes in base64 with no data: prefix (as a JSONL line may hold them); the format is read from them."""
    data = _from_base64(text, limits, param, "image must be a data: URL, an http(s) URL or base64 image bytes")
    return decode_image_bytes(data, limits, None, param)


async def load_image(url: str, limits: ImageLimits, param: str = _PARAM, bare_base64: bool = False) -> Image.Image:
    """Any accepted image URL to an RGB image (with `bare_base64`, also base64 bytes without a data: prefix)."""
    if url.startswith("data:"):
        # Decoding a large image takes long enough to stall every other request on the event loop.
        return await asyncio.to_thread(decode_data_url, url, limits, param)
    if url.startswith(("http://", "https://")):
        return await fetch_remote_image(url, limits, param)
    if bare_base64:
        return await asyncio.to_thread(decode_bare_base64, url, limits, param)
    raise InvalidRequest("image_url.url must be a data: URL (or http(s) when enabled)", param=param)
