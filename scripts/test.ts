// `npm test` = `npm run build && node dist/scripts/test.js`.
//
// Runs, in order and always all of them: the unit tests on the host (under c8), the real-kernel suites in
// one qemu VM, and the host-side multi-boot scenarios. Output streams live. The very last line is
//   tests: N passed, N failed[, N skipped]
// summed over all runs (a stage that crashed, i.e. could not report trustworthy numbers, adds one failure),
// and the exit status is non-zero if anything failed or crashed.
//
// THINPOOL_TEST_STAGES=unit,vm,scenarios selects stages (default: all three); skipped stages are named in
// the recap so a partial run can never pass for a full one.

import { runHostScenarios, runVmSuites } from "../test/e2e/harness/e2e-stages.js";
import {
  addCounts,
  checkCollected,
  collectTests,
  describeStage,
  formatCounts,
  guardStage,
  runHostMocha,
  stageTotals,
  ZERO_COUNTS,
  type StageResult,
} from "../test/support/test-stages.js";

async function runUnit(): Promise<StageResult> {
  const name = "unit";
  const collected = await collectTests("test/unit");
  const buildProblem = checkCollected(name, collected);
  if (buildProblem !== null)
    return { name, counts: ZERO_COUNTS, crashed: buildProblem, note: null, durationMs: 0 };
  if (collected.files.length === 0) {
    return {
      name,
      counts: ZERO_COUNTS,
      crashed: null,
      note: "no unit tests found, nothing to run",
      durationMs: 0,
    };
  }
  return runHostMocha({ name, files: collected.files, coverage: true });
}

const STAGES = [
  { key: "unit", title: "unit", heading: "unit tests (host)", run: runUnit },
  { key: "vm", title: "vm suites", heading: "real-kernel suites (inside one VM)", run: runVmSuites },
  {
    key: "scenarios",
    title: "host scenarios",
    heading: "multi-boot scenarios (host)",
    run: runHostScenarios,
  },
] as const;

function selectedKeys(): Set<string> {
  const raw = process.env.THINPOOL_TEST_STAGES;
  const known = STAGES.map((s) => s.key as string);
  if (raw === undefined || raw.trim() === "") return new Set(known);
  const keys = raw
    .split(",")
    .map((k) => k.trim())
    .filter(Boolean);
  const unknown = keys.filter((k) => !known.includes(k));
  if (unknown.length > 0)
    throw new Error(`THINPOOL_TEST_STAGES: unknown stage(s) ${unknown.join(", ")}; use ${known.join(",")}`);
  return new Set(keys);
}

async function main(): Promise<void> {
  const started = Date.now();
  const results: StageResult[] = [];
  const skipped: string[] = [];
  let keys: Set<string>;
  try {
    keys = selectedKeys();
  } catch (err) {
    // stdout, not stderr: keeps the message ordered before the final verdict line.
    console.log(`[test] ${(err as Error).message}`);
    process.exitCode = 1;
    console.log(`tests: ${formatCounts({ passed: 0, failed: 1, skipped: 0 })}`);
    return;
  }
  for (const stage of STAGES) {
    if (!keys.has(stage.key)) {
      skipped.push(stage.title);
      continue;
    }
    console.log(`\n=== ${stage.heading} ===`);
    results.push(await guardStage(stage.title, stage.run));
  }

  console.log(`\n=== summary (${((Date.now() - started) / 1000).toFixed(1)} s) ===`);
  let total = ZERO_COUNTS;
  for (const r of results) {
    console.log(`[test] ${describeStage(r)}`);
    total = addCounts(total, stageTotals(r));
  }
  for (const s of skipped) console.log(`[test] ${s}: not run (THINPOOL_TEST_STAGES)`);
  const failed = total.failed > 0 || results.some((r) => r.crashed !== null);
  process.exitCode = failed ? 1 : 0;
  // Must stay the very last line of output: CI and humans read the verdict from it.
  console.log(`tests: ${formatCounts(total)}`);
}

await main();
