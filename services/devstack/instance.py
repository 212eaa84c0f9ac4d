"""Which local stack this is: an id, and the names of its state in the machine's shared services.

PostgreSQL, Redis and RabbitMQ are the machine's, and outlive any clone and any ``.stack/``. So the
stack names what it keeps there after an id of its own, chosen once and recorded with those names in
``<stack_dir>/stack.json``: a new ``.stack/`` is a new, empty platform (its own MLflow database, Feast
project, RabbitMQ vhost and jobs database), and ``reset`` knows exactly what to delete. The record wins over later
settings, so a stale ``FEAST_PROJECT`` exported in a shell cannot point a stack at another's state.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from devstack.settings import Settings

STACK_FILE = "stack.json"


class StackRecordError(RuntimeError):
    """``stack.json`` exists but cannot be read: the stack's names are unknown."""


@dataclass(frozen=True)
class StackInstance:
    id: str
    mlflow_db_name: str
    feast_project: str
    rabbitmq_vhost: str
    jobs_db_name: str

    @staticmethod
    def path(stack_dir: Path) -> Path:
        return stack_dir / STACK_FILE

    @classmethod
    def load(cls, stack_dir: Path) -> StackInstance | None:
        """The recorded instance, or None when the stack was never started here."""
        path = cls.path(stack_dir)
        try:
            record = json.loads(path.read_text())
            # A stack recorded before jobs existed gets the jobs database its id would have named.
            record.setdefault("jobs_db_name", f"jobs_{record['id']}")
            return cls(**{name: str(record[name]) for name in cls.__dataclass_fields__})
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise StackRecordError(
                f"{path} is unreadable ({err!r}); run `make stack-reset` (or remove {stack_dir}) to start afresh"
            ) from err

    @classmethod
    def load_or_create(cls, settings: Settings) -> StackInstance:
        """The recorded instance; a first call picks a new id and records the names derived from it
        (a name set explicitly in the settings is kept as given)."""
        found = cls.load(settings.stack_dir)
        if found is not None:
            return found
        stack_id = secrets.token_hex(4)
        instance = cls(
            id=stack_id,
            mlflow_db_name=settings.mlflow_db_name or f"mlflow_{stack_id}",
            feast_project=settings.feast_project or f"credit_default_{stack_id}",
            rabbitmq_vhost=settings.rabbitmq_vhost or f"mlops-{stack_id}",
            jobs_db_name=settings.jobs_db_name or f"jobs_{stack_id}",
        )
        record = {**asdict(instance), "stack_dir": str(settings.stack_dir.resolve()), "created": time.time()}
        settings.stack_dir.mkdir(parents=True, exist_ok=True)
        # Written whole or not at all: a torn record would orphan the state it names.
        partial = cls.path(settings.stack_dir).with_suffix(".json.partial")
        partial.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(partial, cls.path(settings.stack_dir))
        return instance

    def bind(self, settings: Settings) -> Settings:
        """``settings`` with this instance's names filled in."""
        return settings.model_copy(
            update={
                "mlflow_db_name": self.mlflow_db_name,
                "feast_project": self.feast_project,
                "rabbitmq_vhost": self.rabbitmq_vhost,
                "jobs_db_name": self.jobs_db_name,
            }
        )
