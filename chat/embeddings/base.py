"""The contract every embeddings backend implements.

A backend turns texts into vectors whose cosine says how close two texts are in meaning.
Knowledge entries are embedded at ingest and stored with the ``model_id`` of the backend
that embedded them; a search embeds the question once and compares it with the stored
vectors of the same ``model_id``.

Rules for implementers:

- ``embed`` is synchronous (it runs in the pipeline's stage threads and in commands) and
  safe to call from several threads at once; it returns a float32 array of shape
  ``(len(texts), dim)`` whose rows have unit length.
- ``model_id`` names the model and its shape (``"wordllama:l2_supercat_256"``): vectors of
  two ids are never compared. An empty ``model_id`` means "no embeddings" (keyword only).
- A failure raises ``EmbeddingsError`` (a subclass) with a short reason; search then
  answers by keyword alone.
- ``problem()`` is cheap and never raises: a sentence saying why the backend cannot work
  (a missing package), or None. The system check ``chat.E010`` reports it.
- ``similarity_floor`` and ``similarity_full``: the cosines this model gives unrelated
  texts and a clearly matching pair; search maps cosine to a 0..1 relevance between them.
  Each model has its own range, so each backend says its own (OPTIONS may override them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]


class EmbeddingsError(Exception):
    """Texts could not be embedded. Do not raise directly: use a subclass."""


class EmbeddingsUnavailable(EmbeddingsError):
    """The backend cannot embed at all (a missing package, no model, none configured)."""


class EmbeddingsFailed(EmbeddingsError):
    """The backend tried and failed (an upstream error or timeout, a malformed answer)."""


class EmbeddingsBackend:
    """Base class; subclasses implement ``model_id`` and ``embed``."""

    similarity_floor = 0.15
    similarity_full = 0.5

    def __init__(self, alias: str, options: dict[str, Any]) -> None:
        self.alias = alias
        self.options = options
        self.similarity_floor = float(options.get("SIMILARITY_FLOOR", self.similarity_floor))
        self.similarity_full = float(options.get("SIMILARITY_FULL", self.similarity_full))

    @property
    def model_id(self) -> str:
        raise NotImplementedError

    def embed(self, texts: Sequence[str], *, timeout: float | None = None) -> Vectors:
        """Unit-length float32 vectors of ``texts``; ``timeout`` bounds a remote call."""
        raise NotImplementedError

    def problem(self) -> str | None:
        return None

    def close(self) -> None:
        """Release connections; called when the settings change and in tests."""


class NoEmbeddings(EmbeddingsBackend):
    """``GRACE_EMBEDDINGS=none``: knowledge is searched by keyword only."""

    @property
    def model_id(self) -> str:
        return ""

    def embed(self, texts: Sequence[str], *, timeout: float | None = None) -> Vectors:
        raise EmbeddingsUnavailable("no embeddings backend is configured (GRACE_EMBEDDINGS=none)")


def vectors_normalise(array: Any) -> Vectors:
    """``array`` as float32 rows of unit length (a zero row stays zero)."""
    matrix = np.asarray(array, dtype=np.float32)
    if matrix.ndim != 2:
        raise EmbeddingsFailed(f"expected a 2-dimensional array of vectors, got {matrix.shape}")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (matrix / norms).astype(np.float32, copy=False)


def vector_pack(vector: Any) -> bytes:
    """A vector as the bytes stored in ``KnowledgeEntry.embedding`` (float32, little-endian)."""
    return np.asarray(vector, dtype="<f4").tobytes()


def vector_unpack(data: bytes | memoryview) -> Vectors:
    return np.frombuffer(bytes(data), dtype="<f4").astype(np.float32)
