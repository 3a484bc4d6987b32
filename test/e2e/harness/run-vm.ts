// `npm run test:e2e` (node dist/test/e2e/harness/run-vm.js [suites|scenarios]): runs the in-VM suites in
// one fresh VM, then the host-side multi-boot scenarios, and prints a total. `npm test` runs the same
// stages through scripts/test.ts, together with the unit tests.

import {
  addCounts,
  describeStage,
  formatCounts,
  guardStage,
  stageTotals,
  ZERO_COUNTS,
  type StageResult,
} from "../../support/test-stages.js";
import { runHostScenarios, runVmSuites } from "./e2e-stages.js";

const STAGES = {
  suites: { title: "vm suites", run: runVmSuites },
  scenarios: { title: "host scenarios", run: runHostScenarios },
} as const;
type StageKey = keyof typeof STAGES;

function selectedStages(argv: readonly string[]): StageKey[] {
  if (argv.length === 0) return ["suites", "scenarios"];
  return argv.map((arg) => {
    if (arg === "suites" || arg === "scenarios") return arg;
    console.error(`usage: run-vm.js [suites] [scenarios]   (unknown argument ${JSON.stringify(arg)})`);
    process.exit(2);
  });
}

async function main(): Promise<void> {
  const results: StageResult[] = [];
  for (const key of selectedStages(process.argv.slice(2))) {
    const stage = STAGES[key];
    console.log(`\n=== ${stage.title} ===`);
    results.push(await guardStage(stage.title, stage.run));
  }
  console.log("");
  let total = ZERO_COUNTS;
  for (const r of results) {
    console.log(`[e2e] ${describeStage(r)}`);
    total = addCounts(total, stageTotals(r));
  }
  const failed = total.failed > 0 || results.some((r) => r.crashed !== null);
  process.exitCode = failed ? 1 : 0;
  console.log(`tests: ${formatCounts(total)}`);
}

await main();
