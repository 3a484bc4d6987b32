/**
 * `npm run bench`: boots the test VM with three virtio disks, runs bench/vm-bench.ts in it against the
 * real kernel, and prints the tables (docs/PERFORMANCE.md explains them). Sizes come from BENCH_* variables
 * (see bench/vm-bench.ts, defaults = the targets' numbers). `node dist/bench/run.js --report <results.json>`
 * only re-renders a saved run.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { guestDiskPath, runInVm } from "../test/e2e/harness/vm.js";
import { repoPath } from "../test/support/repo.js";
import { renderReport } from "./report.js";
import type { BenchResults } from "./results.js";

const GiB = 1024 ** 3;
const OUT_DIR = repoPath(".vm-cache", "bench");

async function main(argv: string[]): Promise<number> {
  if (argv[0] === "--report" && argv[1]) {
    console.log(renderReport(JSON.parse(await readFile(argv[1], "utf8")) as BenchResults));
    return 0;
  }
  const disksDir = await mkdtemp(join(tmpdir(), "thinpool-bench-"));
  await mkdir(OUT_DIR, { recursive: true });
  const env = Object.fromEntries(
    Object.entries(process.env).filter(
      (e): e is [string, string] => e[0].startsWith("BENCH_") && e[1] !== undefined,
    ),
  );
  try {
    const started = Date.now();
    const result = await runInVm({
      command: ["node", "dist/bench/vm-bench.js"],
      env: {
        ...env,
        BENCH_DATA_DEV: guestDiskPath(0),
        BENCH_META_DEV: guestDiskPath(1),
        BENCH_STATE_DEV: guestDiskPath(2),
      },
      disks: [
        { path: join(disksDir, "data.img"), sizeBytes: 4 * GiB, serial: "bench-data" },
        { path: join(disksDir, "meta.img"), sizeBytes: GiB / 4, serial: "bench-meta" },
        { path: join(disksDir, "state.img"), sizeBytes: 2 * GiB, serial: "bench-state" },
      ],
      resultDir: OUT_DIR,
      timeoutMs: Number(process.env.BENCH_TIMEOUT_MS ?? 45 * 60_000),
      logFile: join(OUT_DIR, "console.log"),
      onLine: (line) => console.log(line),
    });
    if (result.exitCode !== 0) {
      console.error(
        `benchmark failed in the VM (exit ${result.exitCode}); console in ${OUT_DIR}/console.log`,
      );
      return 1;
    }
    const results = JSON.parse(await readFile(join(OUT_DIR, "results.json"), "utf8")) as BenchResults;
    const report = renderReport(results);
    await writeFile(join(OUT_DIR, "report.md"), `${report}\n`);
    console.log(`\n${report}\n`);
    console.log(`(whole run ${((Date.now() - started) / 60_000).toFixed(1)} min; saved in ${OUT_DIR})`);
    return 0;
  } finally {
    await rm(disksDir, { recursive: true, force: true });
  }
}

main(process.argv.slice(2)).then(
  (code) => (process.exitCode = code),
  (err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  },
);
