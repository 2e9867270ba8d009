// Parse and bind KQL with Microsoft's own parser (Kusto.Language, from @kusto/language-service-next),
// offline. Reads {"tables": {"Name": "(Column:type, ...)"}, "queries": {"id": "kql"}} on stdin and
// writes {"id": [{"severity", "message", "start", "end"}]} on stdout: every diagnostic, parse and
// semantic (an unknown table or column, a type mismatch), of each query against those schemas.
require("@kusto/language-service-next/bridge.min.js");
require("@kusto/language-service-next/Kusto.Language.Bridge.min.js");

const K = Kusto.Language;
const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
const tables = Object.entries(input.tables).map(
  ([name, schema]) => new K.Symbols.TableSymbol.$ctor7(name, schema)
);
const globals = K.GlobalState.Default.WithDatabase(new K.Symbols.DatabaseSymbol.ctor("db", tables));
const out = {};
for (const [id, text] of Object.entries(input.queries)) {
  const found = K.KustoCode.ParseAndAnalyze(text, globals).GetDiagnostics();
  out[id] = [];
  for (let i = 0; i < found.Count; i++) {
    const d = found.getItem(i);
    out[id].push({ severity: d.Severity, message: d.Message, start: d.Start, end: d.End });
  }
}
process.stdout.write(JSON.stringify(out));
