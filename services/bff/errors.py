"""Errors the request path turns into precise HTTP answers (never a 500 with a stack trace); those of
Triton and the online store are mlops_common.errors'."""


class EntityNotFoundError(LookupError):
    def __init__(self, entity_ids: list[int]):
        self.entity_ids = entity_ids
        super().__init__(f"SK_ID_CURR {', '.join(map(str, entity_ids))} not found in the online store")
