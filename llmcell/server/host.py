"""The models one server holds, by served name: one in standalone mode, the admin's assignments
in a cell. Routes look the request's model up here; an unknown model is a 404 naming the ones
served.
"""

from __future__ import annotations

from llmcell.protocol.openai import not_found_model
from llmcell.server.backend import ModelBackend


class ModelHost:
    def __init__(self) -> None:
        self._backends: list[ModelBackend] = []

    @property
    def backends(self) -> dict[str, ModelBackend]:
        """By served name, read now: an external engine learns its name once it answers."""
        return {b.model_name: b for b in self._backends}

    def add(self, backend: ModelBackend) -> None:
        """Serve `backend`, replacing one with the same name (a new checkpoint of a model)."""
        self._backends = [b for b in self._backends if b.model_name != backend.model_name]
        self._backends.append(backend)

    def remove(self, backend: ModelBackend) -> None:
        self._backends = [b for b in self._backends if b is not backend]

    def get(self, name: str) -> ModelBackend:
        backend = self.backends.get(name)
        if backend is None:
            raise not_found_model(name, sorted(self.backends))
        return backend

    def pick(self, name: str | None) -> ModelBackend:
        """The named model, or the only one when the request names none (tokenize/detokenize)."""
        if not name and len(self.backends) == 1:
            return next(iter(self.backends.values()))
        return self.get(name or "")

    @property
    def in_flight(self) -> int:
        return sum(getattr(b, "in_flight", 0) for b in self._backends)

    def ready(self) -> list[ModelBackend]:
        return [b for b in self._backends if b.load().ready]
