"""WordLlama: the offline default. Its weights (256 dimensions, 16 MB) ship inside the
PyPI wheel, so nothing is downloaded: the model is loaded with ``disable_download`` from
the package's own directory, once per process (about 0.2 s), on first use.

Options: ``CONFIG`` (the weights' name, default ``l2_supercat``) and ``DIM`` (256; the
model's vectors may be truncated to 64, 128 or 512 where the weights allow).
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chat.embeddings.base import (
    EmbeddingsBackend,
    EmbeddingsFailed,
    EmbeddingsUnavailable,
    Vectors,
    vectors_normalise,
)

_models: dict[tuple[str, int], Any] = {}
_models_lock = threading.Lock()


def _package_dir() -> Path | None:
    spec = importlib.util.find_spec("wordllama")
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent


class WordLlamaBackend(EmbeddingsBackend):
    """Static token embeddings averaged: about a millisecond a question on one core."""

    similarity_floor = 0.15
    similarity_full = 0.5

    def __init__(self, alias: str, options: dict[str, Any]) -> None:
        super().__init__(alias, options)
        self.config = str(options.get("CONFIG", "l2_supercat"))
        self.dim = int(options.get("DIM", 256))
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return f"wordllama:{self.config}_{self.dim}"

    def problem(self) -> str | None:
        package = _package_dir()
        if package is None:
            return "the Python package wordllama is not installed"
        weights = package / "weights" / f"{self.config}_{self.dim}.safetensors"
        if not weights.is_file():
            return f"wordllama has no weights {weights.name} (its wheel ships l2_supercat_256)"
        return None

    def _model(self) -> Any:
        key = (self.config, self.dim)
        model = _models.get(key)
        if model is not None:
            return model
        with _models_lock:
            if key not in _models:
                reason = self.problem()
                if reason:
                    raise EmbeddingsUnavailable(reason)
                from wordllama import WordLlama

                try:
                    _models[key] = WordLlama.load(
                        config=self.config,
                        dim=self.dim,
                        cache_dir=_package_dir(),
                        disable_download=True,
                    )
                except Exception as exc:  # a broken install: say so, never crash search
                    raise EmbeddingsUnavailable(f"wordllama could not load: {exc}") from exc
            return _models[key]

    def embed(self, texts: Sequence[str], *, timeout: float | None = None) -> Vectors:
        model = self._model()
        if not texts:
            return vectors_normalise([[0.0] * self.dim])[:0]
        try:
            with self._lock:  # the tokenizer is shared; embedding is ~1 ms, so no contention
                array = model.embed(list(texts), norm=False)
        except Exception as exc:
            raise EmbeddingsFailed(f"wordllama failed: {exc}") from exc
        return vectors_normalise(array)
