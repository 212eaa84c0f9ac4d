// Validates custom resources against the schemas of their CRDs, using the classes that
// @kubernetes-models generates from those CRDs (installed by tools/install-k8s-tools.sh).
// stdin: {"nodeModules": "...", "documents": {label: [object, ...]}}; stdout: JSON list of problems.
// Objects of built-in API groups are skipped (validate_builtin_kinds.py covers them); any other
// kind without a known schema is a problem, so a new CRD cannot slip through unvalidated.
import { readFileSync } from "node:fs";
import { join } from "node:path";

const request = JSON.parse(readFileSync(0, "utf8"));
const models = {
  "monitoring.coreos.com/v1": ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1", ["ServiceMonitor", "PodMonitor", "PrometheusRule"]],
  "argoproj.io/v1alpha1": ["@kubernetes-models/argo-cd/argoproj.io/v1alpha1", ["Application", "AppProject", "ApplicationSet"]],
  "keda.sh/v1alpha1": ["@kubernetes-models/keda/keda.sh/v1alpha1", ["ScaledObject", "ScaledJob", "TriggerAuthentication"]],
};
const builtinGroups = new Set(["", "apps", "batch", "autoscaling", "policy", "networking.k8s.io", "rbac.authorization.k8s.io"]);

const problems = [];
for (const [label, documents] of Object.entries(request.documents)) {
  for (const doc of documents) {
    const group = doc.apiVersion.includes("/") ? doc.apiVersion.split("/")[0] : "";
    if (builtinGroups.has(group)) continue;
    const where = `${label}: ${doc.kind}/${doc.metadata?.name}`;
    const [module, kinds] = models[doc.apiVersion] ?? [];
    if (!module || !kinds.includes(doc.kind)) {
      problems.push(`${where}: no CRD schema known for ${doc.apiVersion} ${doc.kind}`);
      continue;
    }
    const cls = (await import(join(request.nodeModules, module, `${doc.kind}.js`)))[doc.kind];
    try {
      new cls(doc).validate();
    } catch (err) {
      problems.push(`${where}: ${err.message}`);
    }
  }
}
process.stdout.write(JSON.stringify(problems));
