// Parses Mermaid diagrams with Mermaid itself, so a diagram Mermaid rejects never reaches a
// pull request. Input (stdin): a JSON array of diagrams, each a string or {"name", "diagram"}.
// Output: one line per diagram that failed (its name and Mermaid's error), then a summary.
// Exit 0 when every diagram parsed, 1 when any failed, 2 when the input is not usable.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { JSDOM } from "jsdom";

// Mermaid sanitises labels with DOMPurify, which needs a DOM at import time: give it jsdom's.
const { window } = new JSDOM("");
globalThis.window = window;
globalThis.document = window.document;
const { default: mermaid } = await import("mermaid");
// GitHub and Forgejo render with the strict security level: parse under the same rules.
mermaid.initialize({ startOnLoad: false, securityLevel: "strict" });

function readInput() {
  let items;
  try {
    items = JSON.parse(readFileSync(0, "utf8"));
  } catch (err) {
    console.error(`mermaid-check: stdin is not JSON: ${err.message}`);
    process.exit(2);
  }
  if (!Array.isArray(items)) {
    console.error("mermaid-check: stdin must be a JSON array of diagrams");
    process.exit(2);
  }
  return items.map((item, i) =>
    typeof item === "string" ? { name: `#${i}`, diagram: item } : { name: String(item.name ?? `#${i}`), diagram: item.diagram },
  );
}

const diagrams = readInput();
let failed = 0;
for (const { name, diagram } of diagrams) {
  try {
    if (typeof diagram !== "string" || diagram.trim() === "") {
      throw new Error("empty or not a string");
    }
    await mermaid.parse(diagram);
  } catch (err) {
    failed += 1;
    const message = String(err?.message ?? err).replace(/\s+$/, "");
    console.log(`FAILED ${name}: ${message.split("\n").join("\n    ")}`);
  }
}
console.log(`mermaid-check: ${diagrams.length - failed} of ${diagrams.length} diagrams parsed (mermaid ${createRequire(import.meta.url)("mermaid/package.json").version})`);
process.exit(failed ? 1 : 0);
