// The two e2e stages, shared by run-vm.ts (`npm run test:e2e`) and scripts/test.ts (`npm test`):
//   - VM suites: ONE VM with fresh disks runs mocha on dist/test/e2e/suites/** inside the guest;
//   - host scenarios: mocha on the host runs dist/test/e2e/scenarios/**, which boot VMs themselves.

import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { repoRoot } from "../../support/repo.js";
import { SUMMARY_FILE_ENV } from "../../support/summary-reporter.js";
import {
  checkCollected,
  collectTests,
  interpretMochaRun,
  MOCHA_BIN,
  readSummaryFile,
  REPORTER_PATH,
  runHostMocha,
  ZERO_COUNTS,
  type StageResult,
} from "../../support/test-stages.js";
import { cacheDir } from "./boot-assets.js";
import { guestDiskPath, runInVm, type VmDisk } from "./vm.js";

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

/**
 * Disks of the suite VM, in attach order (so /dev/vda, /dev/vdb, /dev/vdc), and the environment variables
 * through which the suites find them (see test/support/e2e-env.ts).
 */
export const SUITE_DISKS = [
  { role: "data", env: "THINPOOL_E2E_DATA_DEV", sizeBytes: 2 * GiB },
  { role: "meta", env: "THINPOOL_E2E_META_DEV", sizeBytes: 64 * MiB },
  { role: "state", env: "THINPOOL_E2E_STATE_DEV", sizeBytes: 256 * MiB },
] as const;

function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number, got ${raw}`);
  return value;
}

/** Runs dist/test/e2e/suites/**\/*.test.js inside one VM. */
export async function runVmSuites(): Promise<StageResult> {
  const name = "vm suites";
  const startedAt = Date.now();
  const collected = await collectTests("test/e2e/suites");
  const buildProblem = checkCollected(name, collected);
  if (buildProblem !== null) {
    return {
      name,
      counts: ZERO_COUNTS,
      crashed: buildProblem,
      note: null,
      durationMs: Date.now() - startedAt,
    };
  }
  if (collected.files.length === 0) {
    return {
      name,
      counts: ZERO_COUNTS,
      crashed: null,
      note: "no VM suites found, nothing to run",
      durationMs: 0,
    };
  }

  const work = await mkdtemp(path.join(os.tmpdir(), "thinpool-e2e-"));
  try {
    const resultDir = path.join(work, "results");
    const summaryFile = path.join(resultDir, "vm-suites.json");
    const disks: VmDisk[] = SUITE_DISKS.map((d) => ({
      path: path.join(work, `${d.role}.img`),
      sizeBytes: d.sizeBytes,
      serial: d.role,
    }));
    const env: Record<string, string> = { [SUMMARY_FILE_ENV]: summaryFile };
    SUITE_DISKS.forEach((d, i) => (env[d.env] = guestDiskPath(i)));
    const logFile = path.join(cacheDir(), "logs", "vm-suites.log");
    console.log(
      `[e2e] booting the suite VM for ${collected.files.length} file(s); logs: ${path.dirname(logFile)}/vm-suites.{log,dmesg}`,
    );

    const result = await runInVm({
      command: [
        process.execPath,
        MOCHA_BIN,
        "--reporter",
        REPORTER_PATH,
        // Everything runs ~20x slower under TCG; per-test limits written for the host would be meaningless.
        "--timeout",
        String(envNumber("THINPOOL_E2E_MOCHA_TIMEOUT_MS", 300_000)),
        // The guest console is a tty, so mocha would always colour; follow the host's stdout instead.
        process.stdout.isTTY ? "--color" : "--no-color",
        ...collected.files.map((f) => path.relative(repoRoot, f)),
      ],
      env,
      disks,
      resultDir,
      timeoutMs: envNumber("THINPOOL_E2E_VM_TIMEOUT_MS", 40 * 60_000),
      logFile,
      onLine: (line) => process.stdout.write(line + "\n"),
    });
    if (result.kernelLog !== null) await writeFile(logFile.replace(/\.log$/, ".dmesg"), result.kernelLog);
    console.log(
      `[e2e] suite VM: boot ${(result.bootMs / 1000).toFixed(1)} s, mocha ${(result.commandMs / 1000).toFixed(1)} s`,
    );
    return interpretMochaRun(name, result.exitCode, await readSummaryFile(summaryFile), startedAt);
  } finally {
    if (process.env.THINPOOL_E2E_KEEP !== "1") await rm(work, { recursive: true, force: true });
    else console.log(`[e2e] kept disks and results in ${work}`);
  }
}

/** Runs dist/test/e2e/scenarios/**\/*.test.js on the host; each scenario boots its own VMs. */
export async function runHostScenarios(): Promise<StageResult> {
  const name = "host scenarios";
  const collected = await collectTests("test/e2e/scenarios");
  const buildProblem = checkCollected(name, collected);
  if (buildProblem !== null) {
    return { name, counts: ZERO_COUNTS, crashed: buildProblem, note: null, durationMs: 0 };
  }
  if (collected.files.length === 0) {
    return {
      name,
      counts: ZERO_COUNTS,
      crashed: null,
      note: "no scenarios found, nothing to run",
      durationMs: 0,
    };
  }
  return runHostMocha({
    name,
    files: collected.files,
    // A scenario boots several VMs; its own this.timeout() should be set, this is the fallback.
    mochaTimeoutMs: envNumber("THINPOOL_E2E_SCENARIO_TIMEOUT_MS", 15 * 60_000),
  });
}
