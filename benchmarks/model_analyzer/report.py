"""The Model Analyzer run's report (markdown) and its throughput-vs-p99 picture."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path

from benchmarks.model_analyzer.results import Candidate, Measurement, measured_at
from benchmarks.model_analyzer.side_by_side import RoundSettings, SideBySide
from mlops_common.triton_config import TritonModelSpec

# Issue #13, item 8: golden ÷ Triton's plain default, and golden ÷ the configuration it replaces.
TARGET_VS_PLAIN = 3.0
TARGET_VS_CURRENT = 1.0
SERVING_FIELDS = ("max_batch_size", "preferred_batch_sizes", "max_queue_delay_us", "instance_count", "intra_op_threads")


@dataclass
class RunFacts:
    command: str
    started: datetime
    machine: dict[str, str]
    load_before: str
    smoke: bool
    model: str = ""
    budget_ms: float = 0.0
    concurrencies: list[int] = field(default_factory=list)
    window_ms: int = 0
    search_s: float = 0.0
    load_after: str = ""
    total_s: float = 0.0


def config_roles(side_by_side: list[SideBySide], golden: SideBySide | None) -> dict[str, str]:
    """variant -> what it stands for; the side-by-side list starts with the plain default and the current spec."""
    roles = {side_by_side[0].candidate.variant: "plain default", side_by_side[1].candidate.variant: "current spec"}
    if golden is not None:
        roles[golden.candidate.variant] = " + ".join(filter(None, [roles.get(golden.candidate.variant), "golden"]))
    return roles


def fastest_others(side_by_side: list[SideBySide], concurrency: int) -> str:
    others = len(side_by_side) - 2
    if not others:
        return ""
    return f" and the {others} fastest other configurations at concurrency {concurrency} within the budget"


def spec_values(spec: TritonModelSpec) -> str:
    return ", ".join(f"{f.name}={getattr(spec, f.name)!r}" for f in fields(spec) if f.name in SERVING_FIELDS)


def verdict(ratio: float, target: float) -> str:
    if ratio >= target:
        return "met"
    return f"**not met** ({(1 - ratio / target) * 100:.0f} % short)"


def render_report(
    facts: RunFacts,
    candidates: list[Candidate],
    measurements: list[Measurement],
    current: TritonModelSpec,
    side_by_side: list[SideBySide],
    side_by_side_command: str,
    golden: SideBySide | None,
    rounds: RoundSettings,
    plot_name: str,
) -> str:
    target_concurrency, low_concurrency = max(facts.concurrencies), min(facts.concurrencies)
    plain, current_result = side_by_side[0], side_by_side[1]
    roles = config_roles(side_by_side, golden)
    machine = facts.machine
    lines = [
        "# Model Analyzer: the serving configuration of `credit_default`" + (" (smoke run)" if facts.smoke else ""),
        "",
        f"- Date: {facts.started:%Y-%m-%d %H:%M} UTC; the whole run took {facts.total_s / 60:.1f} min "
        f"(the Model Analyzer search {facts.search_s / 60:.1f} min)",
        f"- Command: `make analyze`, i.e. `{facts.command}`",
        f"- Machine: {machine['nproc']} CPUs (`nproc`; shared cores: other developers' tests and benchmarks ran "
        f"on them during this run, so figures move between runs and between rounds), {machine['cpu']}, "
        f"Python {machine['python']}, no GPU. Load average (1/5/15 min) before: {facts.load_before}; "
        f"after: {facts.load_after}",
        f"- Model: {facts.model}; served by Triton 2.51's **Python backend** (ONNX Runtime inside `model.py`; "
        "the native onnxruntime backend is only in the NGC image). Absolute figures differ from the cluster's.",
        "- Search: Model Analyzer 1.58, the manual grid of `benchmarks/model_analyzer/config.yaml` (queue delay x "
        "preferred batch sizes x instance count x ONNX Runtime intra-op threads, plus the current "
        "`TritonModelSpec`'s values) and its `config_default`, which is Triton's plain default: no dynamic "
        "batching, one instance. Batch-1 requests over gRPC at concurrency "
        f"{', '.join(map(str, facts.concurrencies))}; "
        f"perf_analyzer windows of {facts.window_ms / 1000:g} s (Model Analyzer's full output: "
        "`benchmarks/results/tmp/model_analyzer/`, "
        "git-ignored).",
        f"- p99 budget: **{facts.budget_ms:g} ms** (Model Analyzer's constraint; a configuration counts only where "
        "its p99 stays within it).",
        f"- Side by side: the plain default, the current spec{fastest_others(side_by_side, target_concurrency)}, "
        "measured again in one tritonserver (each as a model of its own), "
        f"{rounds.rounds} round(s) in alternating order at concurrency {target_concurrency} and {low_concurrency}, "
        f"3 windows of {rounds.measurement_interval_ms / 1000:g} s "
        "each: "
        f"`{side_by_side_command}`. The golden configuration is the fastest of them whose p99 stayed within "
        "the budget in every round; the ratios below are from this side-by-side run.",
        "",
        "## Targets",
        "",
        "| target | measured | result |",
        "|---|---|---|",
    ]
    if golden is None:
        none_within = f"no configuration with dynamic batching stayed within {facts.budget_ms:g} ms"
        lines.append(f"| any | {none_within} | **not met** |")
    else:
        references = (
            (plain, "Triton's plain default", TARGET_VS_PLAIN),
            (current_result, "the current spec", TARGET_VS_CURRENT),
        )
        for reference, name, target in references:
            ratio = golden.throughput(target_concurrency) / reference.throughput(target_concurrency)
            over = ""
            if reference.worst_p99_ms(target_concurrency) > facts.budget_ms:
                over = f" (its p99 {reference.worst_p99_ms(target_concurrency):.1f} ms is over the budget)"
            lines.append(
                f"| golden ÷ {name}{over}, batch 1, c={target_concurrency}, infer/s >= {target:g} | "
                f"{golden.throughput(target_concurrency):,.0f} / {reference.throughput(target_concurrency):,.0f} = "
                f"**{ratio:.2f}** | {verdict(ratio, target)} |"
            )
    lines += ["", "## Golden configuration", ""]
    if golden is None:
        lines.append("None: keep the current `TritonModelSpec`.")
    else:
        golden_spec = golden.candidate.spec(current)
        same = golden_spec == current
        lines += [
            f"- Golden: `{golden.candidate.name}`, {golden.candidate.label}: "
            f"`TritonModelSpec({spec_values(golden_spec)})`",
            f"- `TritonModelSpec` defaults during this run: `{spec_values(current)}`"
            + (" (the same: nothing to change)" if same else ""),
        ]
    lines += [
        "",
        "## Side by side (perf_analyzer, batch 1)",
        "",
        f"c={target_concurrency} decides; c={low_concurrency} shows what a configuration costs a lone request.",
        "",
        "| config | role | settings | "
        + " | ".join(f"c={target_concurrency} round {i + 1} infer/s (p99 ms)" for i in range(rounds.rounds))
        + f" | c={target_concurrency} mean infer/s | c={target_concurrency} worst p99 ms "
        f"| c={low_concurrency} mean infer/s | c={low_concurrency} worst p99 ms |",
        "|---|---|---|" + "---:|" * rounds.rounds + "---:|---:|---:|---:|",
    ]
    for result in side_by_side:
        runs = " | ".join(f"{run.throughput:,.0f} ({run.p99_ms:.1f})" for run in result.at(target_concurrency))
        role = roles.get(result.candidate.variant, "")
        lines.append(
            f"| `{result.candidate.name}` | {role} | {result.candidate.label} | {runs} | "
            f"{result.throughput(target_concurrency):,.0f} | {result.worst_p99_ms(target_concurrency):.1f} | "
            f"{result.throughput(low_concurrency):,.0f} | {result.worst_p99_ms(low_concurrency):.1f} |"
        )
    lines += [
        "",
        f"## Every configuration Model Analyzer tried ({len(candidates)})",
        "",
        "Cells: infer/s (p99 ms) at each concurrency; *italic*: over the p99 budget; -: no stable measurement.",
        "",
        "| config | role | dynamic batching | instances | ORT threads | "
        + " | ".join(f"c={c}" for c in facts.concurrencies)
        + " |",
        "|---|---|---|---:|---:|" + "---:|" * len(facts.concurrencies),
    ]
    for candidate in candidates:
        cells = []
        for concurrency in facts.concurrencies:
            measured = measured_at(measurements, candidate.variant, concurrency)
            if measured is None:
                cells.append("-")
            else:
                cell = f"{measured.throughput:,.0f} ({measured.p99_ms:.1f})"
                cells.append(cell if measured.p99_ms <= facts.budget_ms else f"*{cell}*")
        lines.append(
            f"| `{candidate.name}` | {roles.get(candidate.variant, '')} | {candidate.batching} | "
            f"{candidate.instance_count} | {candidate.intra_op_threads} | " + " | ".join(cells) + " |"
        )
    lines += ["", f"![throughput vs p99 per configuration]({plot_name})", ""]
    return "\n".join(lines)


def plot_throughput_vs_p99(
    candidates: list[Candidate],
    measurements: list[Measurement],
    roles: dict[str, str],
    budget_ms: float,
    concurrencies: list[int],
    out: Path,
) -> None:
    """One line per configuration through its concurrencies (p99 on x, infer/s on y); the plain default,
    the current spec and the golden configuration drawn bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(12, 7))
    others = plt.get_cmap("tab20")
    role_colours = {"plain default": "black", "current spec": "tab:blue"}
    for index, candidate in enumerate(candidates):
        points = sorted((m for m in measurements if m.variant == candidate.variant), key=lambda m: m.concurrency)
        role = roles.get(candidate.variant)
        if role:
            style = {"linewidth": 3.0, "zorder": 3, "color": role_colours.get(role, "tab:red")}
        else:
            style = {"linewidth": 1.0, "alpha": 0.6, "color": others(index % 20)}
        axes.plot(
            [m.p99_ms for m in points],
            [m.throughput for m in points],
            marker="o",
            markersize=3,
            label=f"{candidate.name}{f' ({role})' if role else ''}: {candidate.label}",
            **style,
        )
    axes.axvline(budget_ms, color="red", linestyle="--", linewidth=1, label=f"p99 budget {budget_ms:g} ms")
    axes.set_xlabel("p99 latency (ms), batch-1 requests")
    axes.set_ylabel("throughput (infer/s)")
    axes.set_title(
        "credit_default on Triton (Python backend, CPU): each line runs through concurrency "
        + ", ".join(map(str, concurrencies))
    )
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    out.parent.mkdir(parents=True, exist_ok=True)
    # "tight" makes room for the legend outside the axes.
    figure.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(figure)
