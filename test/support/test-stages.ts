// Shared plumbing for the test orchestrator (scripts/test.ts) and the e2e runner
// (test/e2e/harness/run-vm.ts): finding compiled test files, running mocha on the host with the summary
// reporter, and turning each run into a StageResult that can be added up.

import { existsSync } from "node:fs";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { execa, type ExecaError } from "execa";

import { repoPath, repoRoot } from "./repo.js";
import { parseSummary, SUMMARY_FILE_ENV, type TestSummary } from "./summary-reporter.js";

export interface TestCounts {
  passed: number;
  failed: number;
  skipped: number;
}

export interface StageResult {
  name: string;
  counts: TestCounts;
  /** Why the stage could not report a trustworthy result (it then counts as one extra failure), or null. */
  crashed: string | null;
  /** Informational remark, e.g. "no tests found". */
  note: string | null;
  durationMs: number;
}

export const ZERO_COUNTS: TestCounts = { passed: 0, failed: 0, skipped: 0 };

export const REPORTER_PATH = repoPath("dist", "test", "support", "summary-reporter.js");
export const MOCHA_BIN = repoPath("node_modules", "mocha", "bin", "mocha.js");
export const C8_BIN = repoPath("node_modules", "c8", "bin", "c8.js");

export function countsFromSummary(summary: TestSummary): TestCounts {
  return { passed: summary.passes, failed: summary.failures, skipped: summary.pending };
}

export function addCounts(a: TestCounts, b: TestCounts): TestCounts {
  return { passed: a.passed + b.passed, failed: a.failed + b.failed, skipped: a.skipped + b.skipped };
}

/** A stage's contribution to the grand total: a crash counts as one failure so it can never add up to green. */
export function stageTotals(stage: StageResult): TestCounts {
  return stage.crashed === null
    ? stage.counts
    : addCounts(stage.counts, { passed: 0, failed: 1, skipped: 0 });
}

/** "N passed, N failed" plus ", N skipped" when there are any. */
export function formatCounts(counts: TestCounts): string {
  const text = `${counts.passed} passed, ${counts.failed} failed`;
  return counts.skipped > 0 ? `${text}, ${counts.skipped} skipped` : text;
}

async function walk(dir: string, suffix: string): Promise<string[]> {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await walk(full, suffix)));
    else if (entry.isFile() && entry.name.endsWith(suffix)) out.push(full);
  }
  return out;
}

export interface CollectedTests {
  /** Compiled test files to run (absolute, sorted). */
  files: string[];
  /** Sources with no compiled counterpart: the build is missing or stale. */
  uncompiled: string[];
  /** Compiled tests whose source is gone (left behind in dist/ by tsc, which never deletes): not run. */
  orphaned: string[];
}

/**
 * Compiled tests for `relDir` (e.g. "test/unit"): every `*.test.ts` under relDir must have its
 * `dist/<relDir>/**.test.js`. Orphaned compiled files are skipped rather than run, because tsc never deletes
 * outputs and a deleted test must not keep failing (or passing) from beyond the grave.
 */
export async function collectTests(relDir: string): Promise<CollectedTests> {
  const srcDir = repoPath(relDir);
  const distDir = repoPath("dist", relDir);
  const sources = new Set(
    (await walk(srcDir, ".test.ts")).map((f) => path.relative(srcDir, f).replace(/\.ts$/, "")),
  );
  const compiled = new Set(
    (await walk(distDir, ".test.js")).map((f) => path.relative(distDir, f).replace(/\.js$/, "")),
  );
  const files: string[] = [];
  const uncompiled: string[] = [];
  const orphaned: string[] = [];
  for (const s of sources) {
    if (compiled.has(s)) files.push(path.join(distDir, `${s}.js`));
    else uncompiled.push(path.join(srcDir, `${s}.ts`));
  }
  for (const c of compiled) if (!sources.has(c)) orphaned.push(path.join(distDir, `${c}.js`));
  // THINPOOL_E2E_ONLY=full-pool,hostile runs only the files whose path contains one of the words (for
  // development; CI leaves it unset and runs everything).
  const only = (process.env.THINPOOL_E2E_ONLY ?? "").split(",").filter((w) => w !== "");
  const selected = only.length === 0 ? files : files.filter((f) => only.some((w) => f.includes(w)));
  return { files: selected.sort(), uncompiled: uncompiled.sort(), orphaned: orphaned.sort() };
}

/** Prints warnings and returns a crash reason when the build is incomplete, else null. */
export function checkCollected(stage: string, collected: CollectedTests): string | null {
  for (const f of collected.orphaned) {
    console.log(`[test] ${stage}: skipping ${path.relative(repoRoot, f)}: its source file no longer exists`);
  }
  if (collected.uncompiled.length > 0) {
    return (
      `not compiled (run npm run build): ` +
      collected.uncompiled.map((f) => path.relative(repoRoot, f)).join(", ")
    );
  }
  return null;
}

/** Reads a summary written by the summary reporter; null if absent or unreadable. */
export async function readSummaryFile(file: string): Promise<TestSummary | null> {
  try {
    return parseSummary(JSON.parse(await readFile(file, "utf8")));
  } catch {
    return null;
  }
}

/**
 * Combines a mocha exit status with its summary file. Mocha exits with the number of failures (capped at
 * 255), so a non-zero status with zero reported failures means something broke outside the tests (an
 * import error, c8, an unhandled rejection after the run).
 */
export function interpretMochaRun(
  name: string,
  exitCode: number | null,
  summary: TestSummary | null,
  startedAt: number,
): StageResult {
  const durationMs = Date.now() - startedAt;
  if (summary === null) {
    return {
      name,
      counts: ZERO_COUNTS,
      crashed: `mocha exited with ${exitCode ?? "a signal"} without writing a test summary (did a test file fail to load?)`,
      note: null,
      durationMs,
    };
  }
  const counts = countsFromSummary(summary);
  if (exitCode === null || (summary.failures === 0 && exitCode !== 0)) {
    return {
      name,
      counts,
      crashed: `mocha exited with ${exitCode ?? "a signal"} although no test failed`,
      note: null,
      durationMs,
    };
  }
  return { name, counts, crashed: null, note: null, durationMs };
}

export interface HostMochaOptions {
  name: string;
  files: readonly string[];
  /** Run under c8 for coverage (text summary + lcov, as `npm run test:unit`). */
  coverage?: boolean;
  /** Mocha per-test timeout in ms (overrides .mocharc.json). */
  mochaTimeoutMs?: number;
  env?: Record<string, string>;
}

/** Runs mocha on the host with output going straight to our stdout/stderr. */
export async function runHostMocha(options: HostMochaOptions): Promise<StageResult> {
  const startedAt = Date.now();
  const tmp = await mkdtemp(path.join(os.tmpdir(), "thinpool-test-"));
  const summaryFile = path.join(tmp, "summary.json");
  try {
    const mochaArgs = [
      MOCHA_BIN,
      "--reporter",
      REPORTER_PATH,
      ...(options.mochaTimeoutMs === undefined ? [] : ["--timeout", String(options.mochaTimeoutMs)]),
      ...options.files,
    ];
    const [file, args] = options.coverage
      ? [
          process.execPath,
          [C8_BIN, "--reporter=text-summary", "--reporter=lcov", process.execPath, ...mochaArgs],
        ]
      : [process.execPath, mochaArgs];
    const result = await execa(file, args, {
      cwd: repoRoot,
      stdio: "inherit",
      reject: false,
      env: { ...options.env, [SUMMARY_FILE_ENV]: summaryFile },
    });
    if (result.failed && result.exitCode === undefined) {
      return {
        name: options.name,
        counts: ZERO_COUNTS,
        crashed: `could not run mocha: ${(result as ExecaError).shortMessage}`,
        note: null,
        durationMs: Date.now() - startedAt,
      };
    }
    return interpretMochaRun(
      options.name,
      result.exitCode ?? null,
      await readSummaryFile(summaryFile),
      startedAt,
    );
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** Runs a stage body, converting any exception into a crashed StageResult. */
export async function guardStage(name: string, body: () => Promise<StageResult>): Promise<StageResult> {
  const startedAt = Date.now();
  try {
    return await body();
  } catch (err) {
    const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    return { name, counts: ZERO_COUNTS, crashed: message, note: null, durationMs: Date.now() - startedAt };
  }
}

/** Human-readable one-line outcome of a stage. */
export function describeStage(stage: StageResult): string {
  const secs = `${(stage.durationMs / 1000).toFixed(1)} s`;
  const parts = [`${stage.name}: ${formatCounts(stage.counts)} (${secs})`];
  if (stage.note !== null) parts.push(stage.note);
  if (stage.crashed !== null) parts.push(`CRASHED: ${stage.crashed}`);
  return parts.join(" - ");
}
