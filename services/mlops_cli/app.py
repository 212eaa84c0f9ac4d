"""``mlops``: one command for the platform's operators.

Each area delegates to the service that owns it (``devstack``, ``feature_store``, ``trainer``,
``dashboards``), so ``python -m <service>`` and ``mlops`` do the same thing; model lifecycle and log
queries live in ``mlops_cli.lifecycle`` and ``mlops_cli.logs``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from pydantic import ValidationError
from typer.core import TyperGroup

from bff.schemas import FEATURES_EXAMPLE
from mlops_cli.errors import CliError
from mlops_cli.settings import Settings
from mlops_common.features import ENTITY_KEY


class _OneLineErrors(TyperGroup):
    """Every failure is one line on stderr: ``CliError`` and invalid settings exit 2, anything else 1."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):  # help, usage errors, Ctrl-C
            raise
        except CliError as err:
            typer.echo(f"mlops: {err}", err=True)
            raise typer.Exit(err.exit_code) from None
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in err.errors())
            typer.echo(f"mlops: invalid settings: {problems}", err=True)
            raise typer.Exit(2) from None
        except Exception as err:
            if ctx.meta.get("mlops.debug"):
                raise
            first = str(err).splitlines()[0] if str(err) else ""
            typer.echo(f"mlops: unexpected {type(err).__name__}: {first} (--debug shows the traceback)", err=True)
            raise typer.Exit(1) from None


def _typer(help_text: str) -> typer.Typer:
    return typer.Typer(help=help_text, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


app = typer.Typer(
    name="mlops",
    cls=_OneLineErrors,
    help="Operate the MLOps platform: local stack, features, training, model lifecycle, predictions, logs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stack_app = _typer("The local stack (SeaweedFS, PostgreSQL, Redis, RabbitMQ, MLflow, Triton, Prometheus).")
model_app = _typer("Model lifecycle: champion/challenger in MLflow, what Triton serves, promote, roll back.")
logs_app = _typer("Inference logs (the Delta table in S3).")
labels_app = _typer("Ground truth: observed outcomes of applicants (the Delta table beside the logs).")
rollout_app = _typer("Progressive delivery of the challenger: shadow, canary, the analysis' figures, promote or abort.")
jobs_app = _typer("Jobs queued through the API (POST /jobs/score, POST /jobs/train): list, show, wait for one.")
app.add_typer(stack_app, name="stack")
app.add_typer(model_app, name="model")
app.add_typer(logs_app, name="logs")
app.add_typer(labels_app, name="labels")
app.add_typer(rollout_app, name="rollout")
app.add_typer(jobs_app, name="jobs")


@app.callback()
def _root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks of unexpected errors")] = False,
) -> None:
    ctx.meta["mlops.debug"] = debug


def _settings() -> Settings:
    return Settings()


def _delegate(main: Callable[[list[str]], int | None], argv: Sequence[str]) -> None:
    """Run a service's ``__main__.main(argv)``; its exit code becomes ours."""
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        if isinstance(exit_.code, str):
            raise CliError(exit_.code) from None
        code = exit_.code
    if code:
        raise typer.Exit(int(code))


# -- stack -----------------------------------------------------------------------------------------
def _devstack(*argv: str) -> None:
    from devstack.__main__ import main

    _delegate(main, argv)


@stack_app.command("up")
def stack_up(
    components: Annotated[list[str] | None, typer.Argument(help="only these components (default: all)")] = None,
) -> None:
    """Start the stack (idempotent, health-checked; logs in .stack/logs)."""
    _devstack("up", *(components or []))


@stack_app.command("down")
def stack_down() -> None:
    """Stop what `stack up` started; the machine's services and all data stay."""
    _devstack("down")


@stack_app.command("reset")
def stack_reset() -> None:
    """Stop the stack and delete its state: .stack/, its MLflow database, vhost and Redis keys."""
    _devstack("reset")


@stack_app.command("status")
def stack_status() -> None:
    """One line per component; exit code 1 if any is down."""
    _devstack("status")


@stack_app.command("env")
def stack_env() -> None:
    """The platform's environment for this stack as shell exports (`mlops` itself does not need them)."""
    _devstack("env")


# -- data, features, training ----------------------------------------------------------------------
@app.command("data")
def data(
    applicants: Annotated[int, typer.Option(help="synthetic applicants (train + test)", min=10)] = 20_000,
    out: Annotated[Path | None, typer.Option(help="folder for the CSVs (default: data/)")] = None,
    force: Annotated[bool, typer.Option(help="overwrite existing CSVs (real Kaggle files included)")] = False,
) -> None:
    """Synthetic Home Credit CSVs (kept if present: real Kaggle files win)."""
    from synthetic_home_credit import main

    argv = ["--applicants", str(applicants), *(["--out", str(out)] if out else []), *(["--force"] if force else [])]
    _delegate(main, argv)


@app.command("features")
def features(
    data_dir: Annotated[Path | None, typer.Option(help="folder of the raw CSVs (default: data/)")] = None,
    applicants: Annotated[int, typer.Option(help="synthetic applicants if the folder has no CSVs", min=10)] = 20_000,
) -> None:
    """Raw CSVs -> S3 -> Parquet offline store -> feast apply -> Redis online store (`make features`)."""
    from feature_store.__main__ import main as feature_store
    from mlops_common.settings import REPO_ROOT
    from synthetic_home_credit import main as synthesize

    folder = data_dir or REPO_ROOT / "data"
    _delegate(synthesize, ["--applicants", str(applicants), "--out", str(folder)])
    Settings.export_local_stack_env()
    _delegate(feature_store, ["upload", "--data-dir", str(folder)])
    _delegate(feature_store, ["run"])


@app.command("train")
def train(
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="hyperparameter override name=value (repeatable)")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML/JSON file of HistGradientBoosting hyperparameters", exists=True)
    ] = None,
    no_promote: Annotated[
        bool, typer.Option("--no-promote", help="register as challenger only; the champion stays where it is")
    ] = False,
    profile: Annotated[
        str,
        typer.Option(help="training profile of services/trainer/profiles.yaml (`python -m trainer --list-profiles`)"),
    ] = "default",
    seed: Annotated[int | None, typer.Option(help="split and model seed (default: the profile's)")] = None,
    holdout_fraction: Annotated[float | None, typer.Option(min=0.01, max=0.9, help="(default: the profile's)")] = None,
) -> None:
    """Train, export to ONNX, register in MLflow and gate the champion alias."""
    from trainer.__main__ import main as trainer

    argv = ["--profile", profile, *(f"--param={p}" for p in param or [])]
    argv += [*(["--config", str(config)] if config else []), *(["--no-promote"] if no_promote else [])]
    argv += [*(["--seed", str(seed)] if seed is not None else [])]
    argv += [*(["--holdout-fraction", str(holdout_fraction)] if holdout_fraction is not None else [])]
    Settings.export_local_stack_env()
    _delegate(trainer, argv)


# -- model lifecycle -------------------------------------------------------------------------------
def _registry():
    from mlops_cli.lifecycle import Registry

    return Registry(_settings())


def _version_line(role: str, info) -> str:
    if info is None:
        return f"  {role:<11} none"
    auc = "n/a" if info.auc is None else f"{info.auc:.4f}"
    gate = info.gate_tags
    line = f"  {role:<11} version {info.version:<4} holdout AUC {auc}"
    if gate:
        line += f"  gate: {gate.get('gate.decision', '?')} ({gate.get('gate.reason', '')})"
    if "champion.by" in info.tags:
        line += (
            f"  {info.tags.get('champion.action', 'promote')}d by {info.tags['champion.by']} at "
            f"{info.tags.get('champion.at', '?')}: {info.tags.get('champion.reason', '')}"
            f" (previous champion {info.tags.get('champion.previous', 'none')})"
        )
    return line


@model_app.command("status")
def model_status(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Champion and challenger in MLflow (version, AUC, gate) beside the version Triton serves."""
    status = _registry().status()
    champion = status.champion.version if status.champion else None
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "registered_model": status.registered_model,
                    "triton_model": status.triton_model,
                    "champion": status.champion.__dict__ if status.champion else None,
                    "challenger": status.challenger.__dict__ if status.challenger else None,
                    "triton_serves": status.served,
                    "triton_error": status.triton_error,
                    "in_sync": status.served == [champion] if champion and status.served is not None else None,
                },
                indent=2,
            )
        )
        return
    typer.echo(f"MLflow registry: {status.registered_model}")
    typer.echo(_version_line("champion", status.champion))
    typer.echo(_version_line("challenger", status.challenger))
    if status.served is None:
        served = f"unknown ({status.triton_error})"
    elif not status.served:
        served = "nothing (no version ready)"
    else:
        served = "version " + ", ".join(status.served)
        challenger = status.challenger.version if status.challenger else None
        if status.served == [champion]:
            served += "  = champion"
        elif challenger and sorted(status.served, key=int) == sorted({champion, challenger}, key=int):
            served += "  = champion + challenger (a rollout: `mlops rollout status`)"
        else:
            served += "  != champion (model sync switches within its interval)"
    typer.echo(f"Triton serves {status.triton_model}: {served}")


def _after_move(registry, version: str, previous: str | None, action: str, wait: bool, timeout: float | None) -> None:
    from mlops_cli.lifecycle import wait_until_served

    typer.echo(
        f"{action}: champion of {registry.name} is now version {version} (was {previous or 'none'}); "
        "recorded in the version's champion.* tags and the model's audit/ tags"
    )
    if wait:
        settings = registry.settings
        limit = timeout if timeout is not None else 4 * settings.sync_interval_s + 60
        waited = wait_until_served(settings, version, limit)
        typer.echo(f"Triton serves version {version} of {settings.triton_model_name} (after {waited:.1f} s)")


WaitOption = Annotated[bool, typer.Option("--wait", help="wait until Triton serves the new champion")]
TimeoutOption = Annotated[
    float | None, typer.Option(help="seconds --wait allows (default: 4 sync intervals + 60)", min=0)
]
ReasonOption = Annotated[str, typer.Option("--reason", "-r", help="why (recorded in the audit trail)")]


@model_app.command("promote")
def model_promote(
    version: Annotated[str, typer.Argument(help="the registered model's version to make champion")],
    reason: ReasonOption,
    wait: WaitOption = False,
    timeout: TimeoutOption = None,
) -> None:
    """Move the champion alias to VERSION (model sync then loads it into Triton)."""
    registry = _registry()
    previous, event = registry.move_champion(version, action="promote", reason=reason)
    _after_move(registry, event.version, previous, "promoted", wait, timeout)


@model_app.command("rollback")
def model_rollback(reason: ReasonOption, wait: WaitOption = False, timeout: TimeoutOption = None) -> None:
    """Move the champion alias back to the version recorded as the previous champion."""
    registry = _registry()
    target = registry.rollback_target()
    previous, event = registry.move_champion(target, action="rollback", reason=reason)
    _after_move(registry, event.version, previous, "rolled back", wait, timeout)


@model_app.command("history")
def model_history(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """Every change of the champion: the trainer's gate promotions and every promote/rollback."""
    registry = _registry()
    events = registry.history()
    if as_json:
        typer.echo(json.dumps([e.__dict__ for e in events], indent=2))
        return
    typer.echo(f"champion history of {registry.name} ({len(events)} changes)")
    for e in events:
        typer.echo(f"  {e.at}  {e.action:<15} version {e.version:<4} (was {e.previous:<4}) by {e.by}: {e.reason}")


# -- rollouts ---------------------------------------------------------------------------------------
def _policy_line(policy) -> str:
    if policy.mode.value == "canary":
        return f"canary: the challenger answers {policy.canary_percent:g} % of the applicants"
    if policy.mode.value == "shadow":
        return f"shadow: the challenger also scores {policy.shadow_sample:.0%} of the requests, off the request path"
    return "off: only the champion is served"


@rollout_app.command("status")
def rollout_status() -> None:
    """Champion, challenger, the policy in force, the routing Triton publishes and the last analysis."""
    from mlops_cli.lifecycle import triton_routing

    registry = _registry()
    champion, challenger = registry.by_alias("champion"), registry.by_alias("challenger")
    policy, tags = registry.policy()
    typer.echo(f"MLflow registry: {registry.name}")
    typer.echo(f"  champion    {champion.version if champion else 'none'}")
    typer.echo(f"  challenger  {challenger.version if challenger else 'none'}")
    source = ", ".join(f"{k}={v}" for k, v in sorted(tags.items())) or "the ROLLOUT_* settings"
    typer.echo(f"policy: {_policy_line(policy)} (from {source})")
    try:
        routing = triton_routing(registry.settings)
    except CliError as err:
        typer.echo(f"Triton routing: unknown ({err})")
    else:
        if routing is None:
            typer.echo("Triton routing: none published (model not loaded, or an older model sync)")
        else:
            typer.echo(
                f"Triton routing: champion {routing.champion}, challenger {routing.challenger or 'none'}, "
                f"{_policy_line(routing.policy) if routing.challenger else 'off'}"
            )
    if challenger is not None:
        figures = {k: v for k, v in sorted((challenger.tags or {}).items()) if k.startswith("rollout.")}
        typer.echo("analysis: " + (", ".join(f"{k}={v}" for k, v in figures.items()) or "not started"))


@rollout_app.command("shadow")
def rollout_shadow(
    sample: Annotated[float, typer.Option(help="share of requests the challenger also scores", min=0, max=1)] = 1.0,
) -> None:
    """The challenger scores (a share of) the requests off the request path; clients get the champion's answer."""
    from mlops_common.rollout import RolloutMode

    policy = _registry().set_policy(RolloutMode.SHADOW, shadow_sample=sample)
    typer.echo(f"rollout policy: {_policy_line(policy)} (model sync applies it within its interval)")


@rollout_app.command("canary")
def rollout_canary(
    weight: Annotated[float, typer.Option("--weight", "-w", help="percent of applicants (0-100)", min=0, max=100)],
) -> None:
    """The challenger answers WEIGHT % of the applicants (sticky: an applicant always meets the same version)."""
    from mlops_common.rollout import RolloutMode

    policy = _registry().set_policy(RolloutMode.CANARY, canary_percent=weight)
    typer.echo(f"rollout policy: {_policy_line(policy)} (model sync applies it within its interval)")


@rollout_app.command("off")
def rollout_off() -> None:
    """Serve the champion only (the challenger alias stays; `abort` removes it)."""
    from mlops_common.rollout import RolloutMode

    policy = _registry().set_policy(RolloutMode.OFF)
    typer.echo(f"rollout policy: {_policy_line(policy)}")


@rollout_app.command("promote")
def rollout_promote(reason: ReasonOption) -> None:
    """Make the challenger champion now (the old champion stays the target of `mlops model rollback`)."""
    challenger, before = _registry().end_rollout("promoted", reason)
    typer.echo(f"promoted: challenger version {challenger} is champion (was {before or 'none'})")


@rollout_app.command("abort")
def rollout_abort(reason: ReasonOption) -> None:
    """Roll the challenger back: remove its alias (model sync unloads it); the champion stays."""
    challenger, before = _registry().end_rollout("rolled_back", reason)
    typer.echo(f"rolled back: challenger version {challenger} removed; champion stays {before or 'none'}")


# -- predictions -----------------------------------------------------------------------------------
@app.command("predict")
def predict(
    body: Annotated[
        str | None,
        typer.Option("--json", help="request body: JSON text or @file (an object, or a list for a batch)"),
    ] = None,
    applicant: Annotated[int | None, typer.Option(help="an applicant id: features from the online store")] = None,
) -> None:
    """POST to the prediction API (the README's example body unless --json/--applicant)."""
    settings = _settings()
    if body is not None and applicant is not None:
        raise CliError("give --json or --applicant, not both")
    if body is not None:
        text = Path(body[1:]).read_text() if body.startswith("@") else body
        try:
            payload = json.loads(text)
        except (OSError, json.JSONDecodeError) as err:
            raise CliError(f"--json: not valid JSON ({err})") from None
    else:
        payload = {ENTITY_KEY: applicant} if applicant is not None else FEATURES_EXAMPLE
    path = "/predict/batch" if isinstance(payload, list) else "/predict"
    url = settings.prediction_api_url + path
    try:
        response = httpx.post(url, json=payload, timeout=settings.http_timeout_s)
    except httpx.HTTPError as err:
        raise CliError(f"cannot reach the prediction API at {url}: {type(err).__name__}; is it up?") from None
    if response.status_code >= 400:
        raise CliError(f"prediction API answered {response.status_code}: {response.text[:500]}")
    typer.echo(json.dumps(response.json(), indent=2))


def _jobs_api(path: str, params: dict | None = None) -> dict:
    settings = _settings()
    url = settings.prediction_api_url + path
    key = settings.mlops_api_key
    headers = {"X-API-Key": key.get_secret_value()} if key else {}
    try:
        response = httpx.get(url, params=params, headers=headers, timeout=settings.http_timeout_s)
    except httpx.HTTPError as err:
        raise CliError(f"cannot reach the jobs API at {url}: {type(err).__name__}; is the BFF up?") from None
    if response.status_code == 404 and path == "/jobs":
        raise CliError(f"{url}: no jobs API (the BFF mounts it only where JOBS_DATABASE_URL is set)")
    if response.status_code >= 400:
        raise CliError(f"jobs API answered {response.status_code}: {response.text[:500]}")
    return response.json()


def _job_line(job: dict) -> str:
    outcome = job["error"] if job["state"] == "failed" else json.dumps(job["result"] or job["progress"] or {})
    when = job["created_at"]
    return f"{job['id']}  {job['kind']:<5}  {job['state']:<9}  attempts {job['attempts']}  {when}  {outcome}"


@jobs_app.command("list")
def jobs_list(
    kind: Annotated[str | None, typer.Option(help="score or train")] = None,
    state: Annotated[str | None, typer.Option(help="queued, running, succeeded or failed")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
) -> None:
    """Recent jobs, newest first."""
    params = {"limit": limit, **({"kind": kind} if kind else {}), **({"state": state} if state else {})}
    for job in _jobs_api("/jobs", params)["jobs"]:
        typer.echo(_job_line(job))


@jobs_app.command("show")
def jobs_show(job_id: Annotated[str, typer.Argument(help="as POST /jobs/... answered it")]) -> None:
    """One job, as JSON."""
    typer.echo(json.dumps(_jobs_api(f"/jobs/{job_id}"), indent=2))


@jobs_app.command("wait")
def jobs_wait(
    job_id: Annotated[str, typer.Argument(help="as POST /jobs/... answered it")],
    timeout: Annotated[float, typer.Option(help="seconds")] = 600.0,
) -> None:
    """Wait until the job has succeeded (exit 0) or failed (exit 1, its reason printed)."""
    deadline = time.monotonic() + timeout
    while (job := _jobs_api(f"/jobs/{job_id}"))["state"] not in ("succeeded", "failed"):
        if time.monotonic() > deadline:
            raise CliError(f"job {job_id} is still {job['state']} after {timeout:g} s")
        time.sleep(1)
    typer.echo(_job_line(job))
    if job["state"] == "failed":
        raise typer.Exit(1)


@app.command("score")
def score(
    output: Annotated[str, typer.Option(help="s3://bucket/prefix or a local folder: <output>/<job id>.parquet")],
    input_: Annotated[
        str | None,
        typer.Option(
            "--input",
            help="s3://bucket/key or a local .parquet/.csv: feature rows; with --as-of, the applicants' ids",
        ),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(help="features from the offline store as of this ISO time or `now`; alone: every applicant"),
    ] = None,
    job_id: Annotated[str | None, typer.Option(help="names the output; a rerun with the same id replaces it")] = None,
    model_version: Annotated[
        str | None, typer.Option(help="a version loaded in Triton (default: the champion)")
    ] = None,
    in_flight: Annotated[int | None, typer.Option(min=1, help="Triton calls under way at once")] = None,
) -> None:
    """Score a whole table through the served model into one Parquet file (`python -m batch_scoring`)."""
    from batch_scoring.__main__ import main as batch_scoring

    argv = ["--output", output]
    for flag, value in (
        ("--input", input_),
        ("--as-of", as_of),
        ("--job-id", job_id),
        ("--model-version", model_version),
        ("--in-flight", in_flight),
    ):
        argv += [flag, str(value)] if value is not None else []
    Settings.export_local_stack_env()
    _delegate(batch_scoring, argv)


# -- logs ------------------------------------------------------------------------------------------
class Format(StrEnum):
    TABLE = "table"
    JSON = "json"
    PARQUET = "parquet"


@logs_app.command("query")
def logs_query(
    request_id: Annotated[str | None, typer.Option(help="only this request id")] = None,
    applicant: Annotated[int | None, typer.Option(help="only this applicant (SK_ID_CURR)")] = None,
    model_version: Annotated[str | None, typer.Option(help="only this model version")] = None,
    since: Annotated[str, typer.Option(help="start: now, 90s, 15m, 2h, 7d or ISO-8601")] = "1h",
    until: Annotated[str, typer.Option(help="end (exclusive), same forms")] = "now",
    limit: Annotated[int | None, typer.Option(min=1, help="at most this many rows")] = None,
    output_format: Annotated[Format, typer.Option("--format", help="table, json or parquet")] = Format.TABLE,
    output: Annotated[Path | None, typer.Option(help="write to this file (required for parquet)")] = None,
) -> None:
    """Logged predictions (features, probability, model version, latency), one row per request, and a summary."""
    from mlops_cli.logs import LogQuery, query_logs

    if output_format is Format.PARQUET and output is None:
        raise CliError("--format parquet needs --output FILE")
    result = query_logs(
        _settings(),
        LogQuery(
            since=since,
            until=until,
            request_id=request_id,
            applicant=applicant,
            model_version=model_version,
            limit=limit,
        ),
    )
    summary = result.summary()
    if output_format is Format.PARQUET:
        import pyarrow.parquet as pq

        pq.write_table(result.table, output)
        typer.echo(f"{summary}\nwritten to {output}")
        return
    if output_format is Format.JSON:
        text = json.dumps(_json_rows(result.table), indent=2)
        if output:
            output.write_text(text + "\n")
            typer.echo(f"{summary}\nwritten to {output}")
        else:
            typer.echo(text)
            typer.echo(summary, err=True)
        return
    _print_table(result.table, output)
    typer.echo(summary)


class DlqAction(StrEnum):
    LIST = "list"
    REPLAY = "replay"
    PURGE = "purge"


@logs_app.command("dlq")
def logs_dlq(
    action: Annotated[DlqAction, typer.Argument(help="list: counts by reason; replay: to the worker again; purge")],
    limit: Annotated[int | None, typer.Option(min=0, help="list: records shown; replay: at most this many")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="purge: confirm")] = False,
) -> None:
    """The dead-letter queue of the inference logs (`python -m log_worker.dlq` in a pod)."""
    from log_worker.dlq import main

    Settings.export_local_stack_env()
    argv = [action.value, *(["--limit", str(limit)] if limit is not None and action is not DlqAction.PURGE else [])]
    _delegate(main, [*argv, *(["--yes"] if yes and action is DlqAction.PURGE else [])])


@logs_app.command("maintain")
def logs_maintain(
    retention_days: Annotated[float | None, typer.Option(help="keep unreferenced files this long (default 7)")] = None,
    unsafe_retention: Annotated[bool, typer.Option(help="allow under 1 day (every writer stopped)")] = False,
) -> None:
    """Compact, checkpoint and vacuum the log and ground-truth tables (the chart's CronJob runs the same)."""
    from log_worker.maintenance import main

    Settings.export_local_stack_env()
    argv = [*(["--retention-days", str(retention_days)] if retention_days is not None else [])]
    _delegate(main, [*argv, *(["--unsafe-retention"] if unsafe_retention else [])])


# -- labels ----------------------------------------------------------------------------------------
@labels_app.command("import")
def labels_import(
    file: Annotated[
        Path, typer.Argument(help="CSV or Parquet with applicant_id, outcome (0/1), observed_at (ISO-8601)")
    ],
) -> None:
    """Import observed outcomes; an applicant's label is replaced only by a newer observation."""
    from mlops_common.ground_truth import MAX_LABELS_PER_WRITE, LabelFileError, read_label_file, write_labels

    settings = _settings()
    try:
        labels = read_label_file(file)
    except LabelFileError as err:
        raise CliError(str(err)) from None
    totals = {"inserted": 0, "updated": 0, "unchanged": 0}
    for start in range(0, len(labels), MAX_LABELS_PER_WRITE):
        try:
            counts = write_labels(settings, labels[start : start + MAX_LABELS_PER_WRITE])
        except Exception as err:  # object store down, bad credentials
            raise CliError(
                f"cannot write to {settings.ground_truth_table_uri} after {start} labels: "
                f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            ) from None
        totals = {key: totals[key] + counts[key] for key in totals}
    typer.echo(
        f"{len(labels)} labels from {file} into {settings.ground_truth_table_uri}: "
        f"{totals['inserted']} new, {totals['updated']} updated, {totals['unchanged']} kept (a newer one is stored)"
    )


def _json_rows(table) -> list[dict[str, Any]]:
    from mlops_common.features import FEATURE_NAMES

    rows = []
    for row in table.to_pylist():
        features = {name: row.pop(name) for name in FEATURE_NAMES}
        row["timestamp"] = row["timestamp"].isoformat()
        row["features"] = features
        rows.append(row)
    return rows


def _print_table(table, output: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    from mlops_common.features import FEATURE_NAMES

    view = Table(show_lines=False)
    for column in ("time (UTC)", "request id", "applicant", "version", "probability", "decision", "latency ms"):
        view.add_column(column, no_wrap=column != "request id")
    view.add_column("features")
    for row in table.to_pylist():
        features = " ".join(f"{n}={row[n]:g}" if row[n] is not None else f"{n}=null" for n in FEATURE_NAMES)
        view.add_row(
            f"{row['timestamp']:%Y-%m-%d %H:%M:%S}",
            row["request_id"],
            "" if row["applicant_id"] is None else str(row["applicant_id"]),
            row["model_version"],
            f"{row['probability']:.4f}",
            row["decision"],
            f"{row['latency_ms']:.1f}",
            features,
        )
    if output:
        with output.open("w") as handle:
            Console(file=handle, width=200).print(view)
    elif table.num_rows:
        Console(file=sys.stdout, width=max(160, Console().width)).print(view)


# -- dashboards ------------------------------------------------------------------------------------
@app.command("dashboards")
def dashboards(
    range_: Annotated[str, typer.Option("--range", help="time range drawn, e.g. 15m, 1h")] = "15m",
    out: Annotated[Path | None, typer.Option(help="folder for the PNGs (default .stack/dashboards)")] = None,
) -> None:
    """Draw every Grafana dashboard from the local Prometheus into PNG files."""
    from dashboards.__main__ import main

    Settings.export_local_stack_env()
    _delegate(main, ["render", "--range", range_, *(["--out", str(out)] if out else [])])


# -- benchmarks ------------------------------------------------------------------------------------
class Benchmark(StrEnum):
    serving = "serving"
    logging = "logging"
    scoring = "scoring"


BENCHMARK_SCRIPTS = {
    Benchmark.serving: "serving/run.py",
    Benchmark.logging: "inference_logging/run.py",
    Benchmark.scoring: "batch_scoring/run.py",
}


@app.command("bench")
def bench(
    which: Annotated[
        Benchmark,
        typer.Argument(help="serving: in-process vs Triton vs the API; logging: its cost; scoring: the batch job"),
    ],
    out: Annotated[Path | None, typer.Option(help="write the report here (e.g. benchmarks/results/serving.md)")] = None,
) -> None:
    """Run a benchmark of benchmarks/ on its own private stack (minutes; see benchmarks/README.md)."""
    from mlops_common.settings import REPO_ROOT

    script = REPO_ROOT / "benchmarks" / BENCHMARK_SCRIPTS[which]
    command = [sys.executable, str(script), *(["--out", str(out)] if out else [])]
    code = subprocess.run(command, cwd=REPO_ROOT, check=False).returncode
    if code:
        raise typer.Exit(code)
