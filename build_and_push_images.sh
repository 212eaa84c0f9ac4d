#!/usr/bin/env bash
# Builds every image of the platform, tags it with the current git commit, pushes it, and writes
# that tag into an Argo CD environment's values file (global.platformImageTag). Committing and
# pushing that file is what makes Argo CD roll the new images out: a tag that never changes
# (`latest`) would leave the manifests, and so the cluster, as they were.
#
#   ./build_and_push_images.sh [--env dev|prod|...] [--registry REGISTRY] [--platform PLATFORMS] [--dry-run]
#
# --dry-run prints every build and push it would run and edits the values file, without Docker.
# --platform builds for several architectures with buildx (e.g. linux/amd64,linux/arm64) and pushes as it
# builds (a multi-architecture image exists only in a registry); without it, `docker build` for this machine.
# The registry defaults to global.imageRegistry of the environment's values file.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

# repository | Dockerfile | build context | build arguments of services/Dockerfile (SERVICE, ALSO_COPY), space-separated
IMAGES=(
  "mlops-feature-store|services/Dockerfile|.|SERVICE=feature_store"
  "mlops-trainer|services/Dockerfile|.|SERVICE=trainer ALSO_COPY=feature_store"
  "mlops-model-sync|services/Dockerfile|.|SERVICE=model_sync"
  "mlops-bff|services/Dockerfile|.|SERVICE=bff"
  "mlops-log-worker|services/Dockerfile|.|SERVICE=log_worker"
  "mlops-monitor|services/Dockerfile|.|SERVICE=monitor"
  "mlops-batch-scoring|services/Dockerfile|.|SERVICE=batch_scoring"
  "mlops-job-worker|services/Dockerfile|.|SERVICE=job_worker"
  "mlops-mlflow-server|charts/mlflow/docker/Dockerfile|charts/mlflow/docker|"
)

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "build_and_push_images.sh: $*" >&2; exit 1; }

environment=dev
registry=""
platform=""
dry_run=false
while (($#)); do
  case "$1" in
    --env) environment="${2:?--env needs a value}"; shift 2 ;;
    --registry) registry="${2:?--registry needs a value}"; shift 2 ;;
    --platform) platform="${2:?--platform needs a value, e.g. linux/amd64,linux/arm64}"; shift 2 ;;
    --dry-run) dry_run=true; shift ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage 1 ;;
  esac
done

values_file="argocd/environments/$environment/values.yaml"
[[ -f "$values_file" ]] || die "no values file for environment '$environment' ($values_file)"
# The values file keeps these two keys on lines of their own under `global:` (two-space indent).
[[ $(grep -c '^  platformImageTag:' "$values_file") -eq 1 ]] ||
  die "$values_file must have exactly one '  platformImageTag:' line under 'global:'"
if [[ -z "$registry" ]]; then
  registry="$(sed -n 's/^  imageRegistry: *"\{0,1\}\([^"# ]*\)"\{0,1\} *\(#.*\)\{0,1\}$/\1/p' "$values_file" | head -1)"
fi
[[ -n "$registry" ]] || die "no registry: pass --registry or set global.imageRegistry in $values_file"

tag="$(git rev-parse --short=12 HEAD 2>/dev/null)" || die "no git commit yet: the image tag is the commit"
if [[ -n "$(git status --porcelain)" ]]; then
  # An image built from uncommitted files would carry a commit tag that does not describe it.
  $dry_run || die "the working tree has uncommitted changes; commit first (the tag is the commit)"
  echo "warning: uncommitted changes; a real run would refuse" >&2
fi

run() {
  echo "+ $*"
  $dry_run || "$@"
}

if ! $dry_run; then
  command -v docker >/dev/null || die "docker is not installed"
  if [[ -n "$platform" ]]; then
    docker buildx version >/dev/null 2>&1 || die "--platform needs docker buildx"
  fi
fi

echo "Images for commit $tag -> $registry (environment $environment)"
$dry_run && echo "(dry run: nothing is built or pushed)"
for entry in "${IMAGES[@]}"; do
  IFS='|' read -r repository dockerfile context arguments <<<"$entry"
  reference="$registry/$repository:$tag"
  build_args=()
  for argument in $arguments; do
    build_args+=(--build-arg "$argument")
  done
  if [[ -n "$platform" ]]; then
    run docker buildx build --platform "$platform" --file "$dockerfile" "${build_args[@]}" --tag "$reference" --push "$context"
  else
    run docker build --file "$dockerfile" "${build_args[@]}" --tag "$reference" "$context"
    run docker push "$reference"
  fi
done

previous="$(sed -n 's/^  platformImageTag: *//p' "$values_file")"
sed -i "s/^  platformImageTag:.*/  platformImageTag: \"$tag\"/" "$values_file"
echo "$values_file: global.platformImageTag $previous -> \"$tag\""
echo "Next: git commit $values_file && git push  (Argo CD syncs the new tag)"
