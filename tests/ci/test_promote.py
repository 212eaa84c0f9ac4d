"""tools/promote.sh on a throwaway repository: the promotion branch is the release branch plus the commit
tested in dev, with that commit's image tag in prod's values and nothing else changed."""

import shutil
from pathlib import Path

import pytest
import yaml
from chart_tools import REPO, git, run

PROD = "argocd/environments/prod/values.yaml"
DEV = "argocd/environments/dev/values.yaml"


@pytest.fixture
def repository(tmp_path: Path) -> tuple[Path, str]:
    """A remote with `main` and `release`, and a clone whose main has a commit tested in dev after release."""
    work = tmp_path / "work"
    for name in ("tools/promote.sh", PROD, DEV, "charts/mlops/Chart.yaml"):
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, work / name)
    git(work, "init", "--quiet", "--initial-branch=main")
    git(work, "add", "--all")
    git(work, "commit", "--quiet", "--message", "first")
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "--quiet", "--bare", str(remote))
    git(work, "remote", "add", "origin", str(remote))
    git(work, "push", "--quiet", "origin", "main:main", "main:release")
    chart = work / "charts/mlops/Chart.yaml"
    chart.write_text(chart.read_text() + "# a template change, tested in dev\n")
    git(work, "commit", "--quiet", "--all", "--message", "a change")
    tested = git(work, "rev-parse", "--short=12", "HEAD")
    dev = work / DEV
    dev.write_text(dev.read_text().replace('platformImageTag: ""', f'platformImageTag: "{tested}"'))
    git(work, "commit", "--quiet", "--all", "--message", f"dev: images of {tested}")
    git(work, "push", "--quiet", "origin", "main")
    return work, tested


def test_promotion_branch_merges_the_tested_commit_and_records_its_tag(repository: tuple[Path, str]) -> None:
    work, tested = repository
    result = run([work / "tools/promote.sh"], cwd=work)
    assert result.returncode == 0, result.stderr
    assert git(work, "branch", "--show-current") == f"promote/{tested}"
    assert yaml.safe_load((work / PROD).read_text())["global"]["platformImageTag"] == tested
    assert git(work, "merge-base", "--is-ancestor", tested, "HEAD") == ""
    assert git(work, "merge-base", "--is-ancestor", "origin/release", "HEAD") == ""
    # Against the tested commit, only prod's tag differs: prod gets the chart and values dev tested.
    assert git(work, "diff", "--name-only", tested, "HEAD").splitlines() == [PROD]


def test_a_tag_that_names_no_commit_is_refused(repository: tuple[Path, str]) -> None:
    work, _ = repository
    result = run([work / "tools/promote.sh", "--tag", "0badc0ffee00"], cwd=work)
    assert result.returncode != 0
    assert "names no commit" in result.stderr
