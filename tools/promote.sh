#!/usr/bin/env bash
# Prepares the promotion of a tested commit to prod: a branch `promote/<tag>` off the release branch (the
# one prod's Argo CD Application tracks) that merges that commit (its chart and values as tested in dev)
# and records its image tag in argocd/environments/prod/values.yaml. With --push it pushes the branch and
# opens the pull request into the release branch (gh CLI); without, it stops with the branch checked out.
#
#   tools/promote.sh [--tag TAG] [--release-branch release] [--remote origin] [--push]
#
# TAG defaults to global.platformImageTag of argocd/environments/dev/values.yaml on the current checkout;
# it must name a commit of this repository (the build script tags images with the commit).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { echo "promote.sh: $*" >&2; exit 1; }
value_of() { sed -n 's/^  platformImageTag: *"\{0,1\}\([^"# ]*\)"\{0,1\} *$/\1/p' "$1"; }

tag=""
release=release
remote=origin
push=false
while (($#)); do
  case "$1" in
    --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
    --release-branch) release="${2:?--release-branch needs a value}"; shift 2 ;;
    --remote) remote="${2:?--remote needs a value}"; shift 2 ;;
    --push) push=true; shift ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
done

[[ -z "$(git status --porcelain)" ]] || die "the working tree has uncommitted changes"
[[ -n "$tag" ]] || tag="$(value_of argocd/environments/dev/values.yaml)"
[[ -n "$tag" ]] || die "no tag: dev's values record none; pass --tag"
commit="$(git rev-parse --verify --quiet "$tag^{commit}")" || die "tag $tag names no commit of this repository"

git fetch --quiet "$remote" "$release"
git switch --quiet --create "promote/$tag" "$remote/$release"
git merge --quiet --no-ff --no-edit --message "Promote $tag: merge the commit tested in dev" "$commit"
prod=argocd/environments/prod/values.yaml
[[ $(grep -c '^  platformImageTag:' "$prod") -eq 1 ]] || die "$prod must have exactly one '  platformImageTag:' line"
sed -i "s/^  platformImageTag:.*/  platformImageTag: \"$tag\"/" "$prod"
git commit --quiet --message "prod: images of $tag" -- "$prod"
echo "promote/$tag: $release + $commit, prod's platformImageTag \"$tag\""

if $push; then
  git push --quiet "$remote" "promote/$tag"
  gh pr create --base "$release" --head "promote/$tag" --title "prod: promote $tag" \
    --body "Merges $commit (tested in dev) into \`$release\` and records its images in $prod."
fi
