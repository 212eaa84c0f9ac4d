"""Errors the request path turns into precise HTTP answers (never a 500 with a stack trace)."""


class EntityNotFoundError(LookupError):
    def __init__(self, entity_ids: list[int]):
        self.entity_ids = entity_ids
        super().__init__(f"SK_ID_CURR {', '.join(map(str, entity_ids))} not found in the online store")


class DependencyUnavailableError(RuntimeError):
    """Triton or the online store did not answer in time; the client may retry."""


class ModelOutputError(RuntimeError):
    """The model answered with a probability that is not a finite number in [0, 1]: a broken model
    version, never the client's fault (500, counted with the other 5xx, logged)."""
