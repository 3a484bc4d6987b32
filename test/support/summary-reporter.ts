// Mocha reporter: the usual spec output, plus a JSON summary written to the file named by
// $THINPOOL_TEST_SUMMARY_FILE when the run ends, so an orchestrator (scripts/test.ts) can add up several
// mocha runs (host unit tests, the in-VM suites, host scenarios) into one total.
//
// Use: mocha --reporter <abs path>/dist/test/support/summary-reporter.js ...
//
// Mocha loads reporters with require(). This file is an ES module, so it relies on Node's require(esm)
// (unflagged since Node 20.19) and on the `"module.exports"` export name, which makes require() return the
// class itself instead of the module namespace object.

import { renameSync, writeFileSync } from "node:fs";
import Mocha from "mocha";

export const SUMMARY_FILE_ENV = "THINPOOL_TEST_SUMMARY_FILE";

export interface TestSummary {
  passes: number;
  failures: number;
  pending: number;
  tests: number;
  durationMs: number;
  /** Full titles and first error line of failed tests and hooks, for the orchestrator's recap. */
  failed: { title: string; error: string }[];
}

function isCount(value: unknown): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= 0;
}

/** Validates a parsed summary file; throws if it is not one. */
export function parseSummary(value: unknown): TestSummary {
  if (typeof value !== "object" || value === null) throw new Error("summary is not an object");
  const v = value as Record<string, unknown>;
  if (!isCount(v.passes) || !isCount(v.failures) || !isCount(v.pending) || !isCount(v.tests)) {
    throw new Error("summary lacks passes/failures/pending/tests counts");
  }
  const failed: { title: string; error: string }[] = [];
  if (Array.isArray(v.failed)) {
    for (const item of v.failed as unknown[]) {
      if (typeof item === "object" && item !== null) {
        const f = item as Record<string, unknown>;
        failed.push({ title: String(f.title), error: String(f.error) });
      }
    }
  }
  return {
    passes: v.passes,
    failures: v.failures,
    pending: v.pending,
    tests: v.tests,
    durationMs: typeof v.durationMs === "number" ? v.durationMs : 0,
    failed,
  };
}

const { EVENT_RUN_END, EVENT_TEST_FAIL } = Mocha.Runner.constants;

class SummaryReporter extends Mocha.reporters.Spec {
  constructor(runner: Mocha.Runner, options?: Mocha.MochaOptions) {
    super(runner, options);
    const file = process.env[SUMMARY_FILE_ENV];
    if (file === undefined || file === "") return;

    const failed: { title: string; error: string }[] = [];
    runner.on(EVENT_TEST_FAIL, (test: Mocha.Runnable, err: unknown) => {
      const message = err instanceof Error ? err.message : String(err);
      failed.push({ title: test.fullTitle(), error: message.split("\n")[0] ?? "" });
    });
    // Registered after Spec's own listener and mocha's stats collector, so the stats are final here.
    runner.once(EVENT_RUN_END, () => {
      const stats = runner.stats;
      const summary: TestSummary = {
        passes: stats?.passes ?? 0,
        failures: stats?.failures ?? 0,
        pending: stats?.pending ?? 0,
        tests: stats?.tests ?? 0,
        durationMs: stats?.duration ?? 0,
        failed,
      };
      // Write-then-rename: a reader never sees half a file, even if the process dies mid-write.
      const tmp = `${file}.tmp-${process.pid}`;
      writeFileSync(tmp, JSON.stringify(summary, null, 2) + "\n");
      renameSync(tmp, file);
    });
  }
}

export default SummaryReporter;
export { SummaryReporter as "module.exports" };
