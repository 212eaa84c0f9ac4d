"""checkov on the rendered output of every scenario: zero findings beyond the ones explained here."""

import json
from pathlib import Path

import yaml
from chart_tools import Doc, run, tool

# Every accepted finding, with the reason it is accepted. A check listed here that stops firing
# fails the test too, so the list cannot go stale.
EXPLAINED = {
    "CKV_K8S_15": "Image pull policy IfNotPresent, not Always: every tag is immutable (the git commit for the "
    "platform's images, a release for third-party ones), so re-pulling adds registry load and no safety. "
    "Set <component>.image.pullPolicy where wanted.",
    "CKV_K8S_35": "Secrets as environment variables: the services read their configuration only from the "
    "environment (pydantic-settings, services/*/settings.py). The manifests hold secretKeyRefs, never values.",
    "CKV_K8S_43": "Images by tag, not digest: tags are immutable by convention and readable in Argo CD; every "
    "image accepts image.digest, which then replaces the tag (ci/06 does that for Triton).",
}
# Findings accepted for one resource only (check, checkov's resource id), with the reason.
EXPLAINED_FOR = {
    ("CKV_K8S_38", "Deployment.mlops.mlops-monitor"): "The model monitor with `monitor.retraining.enabled` "
    "creates retraining Jobs through the Kubernetes API, so its pod (and only its pod) mounts a token of its own "
    "ServiceAccount, whose Role allows get on the retrain CronJob and list/create on Jobs (test_monitor_chart).",
}


def test_rendered_chart_has_no_unexplained_findings(rendered: dict[str, list[Doc]], tmp_path: Path) -> None:
    for name, docs in rendered.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump_all(docs))
    # One run over a folder of all scenarios: checkov's start-up dominates its run time.
    result = run(
        [
            tool("checkov"),
            "--directory",
            tmp_path,
            "--framework",
            "kubernetes",
            "--skip-download",
            "--quiet",
            "--compact",
            "--output",
            "json",
        ]
    )
    assert result.returncode in (0, 1), result.stderr
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [check for report in reports for check in report["results"]["failed_checks"]]
    assert failed, "checkov reported nothing at all: is it scanning the files?"
    unexplained = sorted(
        {
            f"{c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']})"
            for c in failed
            if c["check_id"] not in EXPLAINED and (c["check_id"], c["resource"]) not in EXPLAINED_FOR
        }
    )
    assert unexplained == []
    per_resource = {(c["check_id"], c["resource"]) for c in failed} & EXPLAINED_FOR.keys()
    assert {c["check_id"] for c in failed if (c["check_id"], c["resource"]) not in per_resource} == set(EXPLAINED), (
        "an explained check no longer fires: remove it"
    )
    assert per_resource == EXPLAINED_FOR.keys(), "an explained finding no longer fires: remove it"
