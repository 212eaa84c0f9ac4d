"""Runs in the kubernetes-validate venv (.tools/k8s-venv): reads {"kubernetes_version", "documents":
{label: [object, ...]}} as JSON on stdin, prints a JSON list of problems. Only built-in API groups are
validated here; custom resources go to validate_crds.mjs."""

import json
import sys

import kubernetes_validate

BUILTIN_GROUPS = {"", "apps", "batch", "autoscaling", "policy", "networking.k8s.io", "rbac.authorization.k8s.io"}


def main() -> None:
    request = json.load(sys.stdin)
    problems = []
    for label, documents in request["documents"].items():
        for doc in documents:
            group = doc["apiVersion"].rpartition("/")[0]
            if group not in BUILTIN_GROUPS:
                continue
            where = f"{label}: {doc['kind']}/{doc['metadata']['name']}"
            try:
                kubernetes_validate.validate(doc, request["kubernetes_version"], strict=True)
            except kubernetes_validate.ValidationError as err:
                path = "/".join(str(p) for p in err.path)
                problems.append(f"{where}: {path}: {err.message}")
            except kubernetes_validate.SchemaNotFoundError as err:
                problems.append(f"{where}: {err.message}")
    json.dump(problems, sys.stdout)


if __name__ == "__main__":
    main()
