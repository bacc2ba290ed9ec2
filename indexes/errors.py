"""Index errors, placed under r2t2's error classes so the CLI and HTTP layer can map them."""
from __future__ import annotations

from r2t2.errors import NotFoundError, R2T2Error


class ReferenceIndexError(R2T2Error):
    """Base class for problems with a reference index."""


class InvalidIndexNameError(ReferenceIndexError, ValueError):
    """An index name that could escape the index directory or is otherwise unusable."""


class IndexIntegrityError(ReferenceIndexError):
    """Files of an index version are missing, truncated, corrupted or inconsistent."""


class IndexMismatchError(ReferenceIndexError):
    """An index was built with another model or embedder than the one that would serve it."""


class IndexBuildError(ReferenceIndexError):
    """A build could not produce a usable index (bad encoder output, no correct samples...)."""


class IndexInUseError(ReferenceIndexError):
    """Removing the version that CURRENT serves, without force."""


class UnknownIndexError(NotFoundError):
    """No index of that name exists."""


class UnknownVersionError(NotFoundError):
    """The index exists but has no such version."""


class UnknownJobError(NotFoundError):
    """No job with that id is known to this process."""


class RebuildInProgressError(ReferenceIndexError):
    """A rebuild of an index while another rebuild of it is queued or running."""

    def __init__(self, message: str, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id
