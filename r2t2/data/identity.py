"""What makes two samples the same question about the same image, however each was sent or stored: the image's
pixels and the question's words. Verified answers are told apart by it, and `r2t2 eval` finds the references an
index holds among the questions it evaluates by it."""
from __future__ import annotations

import hashlib

from PIL import Image


def sample_key(image: Image.Image, question: str) -> str:
    """A digest of the image's RGB pixels (and size) and the question's lower-cased words."""
    digest = hashlib.sha256()
    digest.update(f"{image.width}x{image.height}:".encode())
    digest.update(image.convert("RGB").tobytes())
    digest.update(b"\0" + " ".join(question.lower().split()).encode())
    return digest.hexdigest()
