"""Checksums of what the chart's one-off Jobs compute from, shipped in the chart (charts/mlops/files/job-inputs/).

The feature-pipeline and trainer Jobs are named by a hash of their inputs, not of their pod spec, so a
new image of another service leaves them alone. What the images carry but the values cannot see (the
feature definitions and transformations, the training code) enters that hash through these files:

    .venv/bin/python tools/job_input_checksums.py          # rewrite them
    .venv/bin/python tools/job_input_checksums.py --check  # exit 1 if one is stale (tests/charts runs this)
"""

import argparse
import hashlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "charts" / "mlops" / "files" / "job-inputs"

# Job -> the files (glob patterns, relative to the repository) whose content decides what it computes.
INPUTS: dict[str, tuple[str, ...]] = {
    # The feature definitions (Feast repository and its configurations), the transformations and the raw-table readers.
    "feature-pipeline": (
        "feature_repo/*.py",
        "feature_repo/feature_store.yaml",
        "feature_repo/environments/*.yaml",
        "services/feature_store/*.py",
        "services/mlops_common/features.py",
        "services/mlops_common/raw_tables.py",
    ),
    # The training code: the model, its dataset split, the quality gate and what is registered, and how a
    # training profile becomes hyperparameters (the selected profile itself is an input in the chart).
    "trainer": (
        "services/trainer/*.py",
        "services/mlops_common/reference_profile.py",
        "services/mlops_common/training_profiles.py",
    ),
}


def files_of(job: str) -> list[Path]:
    paths = {path for pattern in INPUTS[job] for path in REPO.glob(pattern) if path.is_file()}
    if not paths:
        raise SystemExit(f"{job}: no input files matched {INPUTS[job]}")
    return sorted(paths)


def checksum(job: str) -> str:
    """sha256 over the sorted (path, sha256 of content) pairs: a renamed, added or edited file changes it."""
    digest = hashlib.sha256()
    for path in files_of(job):
        digest.update(
            f"{path.relative_to(REPO).as_posix()}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode()
        )
    return digest.hexdigest()


def expected() -> dict[Path, str]:
    return {OUTPUT / f"{job}.sha256": checksum(job) + "\n" for job in INPUTS}


def stale() -> list[str]:
    """The checksum files whose content is not that of the repository's current inputs."""
    return [
        str(path.relative_to(REPO))
        for path, text in expected().items()
        if not path.exists() or path.read_text() != text
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="report stale checksum files instead of writing them")
    args = parser.parse_args(argv)
    if args.check:
        for path in stale():
            print(f"stale: {path} (run: .venv/bin/python tools/job_input_checksums.py)", file=sys.stderr)
        return 1 if stale() else 0
    OUTPUT.mkdir(parents=True, exist_ok=True)
    for path, text in expected().items():
        path.write_text(text)
        print(f"{path.relative_to(REPO)}: {text.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
