"""What a Model Analyzer run measured: its configurations, read back from the config.pbtxt files it wrote
into its output repository, and its measurements, from its inference CSV."""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path

from mlops_common.triton_config import TritonModelSpec, parse_config

# Model Analyzer's name for the repository's own config (here: Triton's plain default).
DEFAULT_VARIANT_SUFFIX = "_config_default"


@dataclass(frozen=True)
class Candidate:
    """One configuration Model Analyzer measured."""

    variant: str
    dynamic_batching: bool
    max_queue_delay_us: int
    preferred_batch_sizes: tuple[int, ...]
    instance_count: int
    intra_op_threads: int
    max_batch_size: int
    config_text: str

    @classmethod
    def from_config(cls, variant: str, text: str) -> Candidate:
        config = parse_config(text)
        batching = config.dynamic_batching
        return cls(
            variant=variant,
            dynamic_batching=config.HasField("dynamic_batching"),
            max_queue_delay_us=batching.max_queue_delay_microseconds,
            preferred_batch_sizes=tuple(batching.preferred_batch_size),
            instance_count=sum(group.count for group in config.instance_group),
            intra_op_threads=int(config.parameters["intra_op_thread_count"].string_value or "1"),
            max_batch_size=config.max_batch_size,
            config_text=text,
        )

    @property
    def name(self) -> str:
        """``config_0`` … ``config_default``, as Model Analyzer's reports call it."""
        return "config_" + self.variant.rsplit("_config_", 1)[1]

    @property
    def batching(self) -> str:
        if not self.dynamic_batching:
            return "none"
        sizes = "/".join(map(str, self.preferred_batch_sizes)) or "none"
        return f"{self.max_queue_delay_us:,} µs, preferred {sizes}"

    @property
    def label(self) -> str:
        instances = f"{self.instance_count} instance{'s' if self.instance_count > 1 else ''}"
        threads = f"{self.intra_op_threads} thread{'s' if self.intra_op_threads > 1 else ''}"
        return f"batching {self.batching}; {instances}, {threads}"

    def spec(self, base: TritonModelSpec) -> TritonModelSpec:
        """``base`` with this configuration's serving values (only meaningful with dynamic batching,
        which every ``TritonModelSpec`` config has)."""
        return replace(
            base,
            max_batch_size=self.max_batch_size,
            preferred_batch_sizes=self.preferred_batch_sizes,
            max_queue_delay_us=self.max_queue_delay_us,
            instance_count=self.instance_count,
            intra_op_threads=self.intra_op_threads,
        )

    def is_spec(self, spec: TritonModelSpec) -> bool:
        return self.dynamic_batching and self.spec(spec) == spec


@dataclass(frozen=True)
class Measurement:
    variant: str
    concurrency: int
    throughput: float
    p99_ms: float


def read_candidates(output_repository: Path, model_name: str) -> list[Candidate]:
    """Every configuration in Model Analyzer's output repository: the plain default first, then by number."""
    candidates = [
        Candidate.from_config(path.parent.name, path.read_text())
        for path in output_repository.glob(f"{model_name}_config_*/config.pbtxt")
    ]
    return sorted(candidates, key=lambda c: (c.dynamic_batching, c.name.removeprefix("config_").zfill(6)))


def read_measurements(inference_csv: Path) -> list[Measurement]:
    with inference_csv.open() as handle:
        return [
            Measurement(
                variant=row["Model Config Path"],
                concurrency=int(row["Concurrency"]),
                throughput=float(row["Throughput (infer/sec)"]),
                p99_ms=float(row["p99 Latency (ms)"]),
            )
            for row in csv.DictReader(handle)
        ]


def measured_at(measurements: list[Measurement], variant: str, concurrency: int) -> Measurement | None:
    return next((m for m in measurements if m.variant == variant and m.concurrency == concurrency), None)


def plain_default(candidates: list[Candidate]) -> Candidate:
    return next(c for c in candidates if c.variant.endswith(DEFAULT_VARIANT_SUFFIX))


def current_candidate(candidates: list[Candidate], current: TritonModelSpec) -> Candidate:
    found = next((c for c in candidates if c.is_spec(current)), None)
    if found is None:
        raise LookupError(f"Model Analyzer measured no configuration equal to the current {current}")
    return found


def shortlist(
    candidates: list[Candidate],
    measurements: list[Measurement],
    current: TritonModelSpec,
    concurrency: int,
    budget_ms: float,
    size: int,
) -> list[Candidate]:
    """The plain default, the current spec and the ``size`` fastest dynamic-batching configurations at
    ``concurrency`` within the p99 budget: what the side-by-side check measures again."""
    within_budget = []
    for candidate in candidates:
        measured = measured_at(measurements, candidate.variant, concurrency)
        if candidate.dynamic_batching and measured is not None and measured.p99_ms <= budget_ms:
            within_budget.append((measured.throughput, candidate))
    fastest = [c for _, c in sorted(within_budget, key=lambda pair: -pair[0])[:size]]
    chosen = [plain_default(candidates), current_candidate(candidates, current)]
    return chosen + [c for c in fastest if c not in chosen]
