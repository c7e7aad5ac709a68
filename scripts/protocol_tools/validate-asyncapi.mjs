// Validate an AsyncAPI document with the official parser, as `asyncapi validate` does.
//
//   node scripts/protocol_tools/validate-asyncapi.mjs NODE_MODULES docs/asyncapi.yaml
//
// The AsyncAPI CLI's `validate` command is this parser's `parse()` with its default ruleset
// (the AsyncAPI JSON Schema of the spec plus the Spectral rules of @asyncapi/parser); the CLI
// adds schema parsers for Avro, RAML, OpenAPI and Protobuf payloads, which this document does
// not use, and 1.5 GB of other commands. Stricter than the CLI's default (which fails on errors
// only): warnings fail too, so the document stays free of them. Prints every diagnostic;
// exits 0 when there is no error or warning, 1 otherwise.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { resolve } from "node:path";

const [modules, file] = process.argv.slice(2);
if (!modules || !file) {
  console.error("usage: validate-asyncapi.mjs NODE_MODULES ASYNCAPI_FILE");
  process.exit(2);
}
const require = createRequire(`${resolve(modules)}/`);
const { Parser, DiagnosticSeverity } = require("@asyncapi/parser");

const source = resolve(file);
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(source, "utf8"), { source });
const names = Object.fromEntries(Object.entries(DiagnosticSeverity).map(([k, v]) => [v, k]));
let failing = 0;
for (const d of diagnostics) {
  const where = d.path.join(".") || "(document)";
  const line = d.range?.start ? `:${d.range.start.line + 1}` : "";
  console.log(`${names[d.severity] ?? d.severity} ${d.code} ${file}${line} ${where}: ${d.message}`);
  if (d.severity <= DiagnosticSeverity.Warning) failing += 1;
}
if (document === undefined || failing) {
  console.log(`${file}: invalid (${failing} error(s) or warning(s))`);
  process.exit(1);
}
console.log(`${file}: valid AsyncAPI ${document.version()} (${diagnostics.length} hint(s))`);
