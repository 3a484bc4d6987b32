/** Renders a benchmark run (bench/results.ts) as the Markdown tables printed by `npm run bench`. */
import type { BenchResults, FreezeParts } from "./results.js";
import type { Summary } from "./stats.js";

const ms = (value: number): string =>
  Number.isNaN(value) ? "n/a" : value >= 100 ? value.toFixed(0) : value.toFixed(1);
const ratio = (value: number): string => (Number.isFinite(value) ? `${value.toFixed(2)}x` : "n/a");
const mb = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(0)} MB`;
const yes = (ok: boolean): string => (ok ? "met" : "**missed**");

function table(header: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(" | ")} |`;
  return [line(header), line(header.map(() => "---")), ...rows.map(line)].join("\n");
}

/** name, median, p99, n, then optional ratio columns. */
const row = (name: string, s: Summary, ...extra: string[]): string[] => [
  name,
  ms(s.median),
  ms(s.p99),
  String(s.n),
  ...extra,
];

/** Inside the freeze, command by command (medians): what the driver adds to the raw sequence. */
function freezePartsTable(parts: BenchResults["createSnapshot"]["freezeParts"]): string[] {
  if (!parts) return [];
  const { driver, raw, rawInterleaved } = parts;
  const rawRow = (label: string, p: FreezeParts): string[] => [
    label,
    ms(p.suspend.median),
    ms(p.createSnap.median),
    ms(p.resume.median),
    "-",
    "-",
  ];
  return [
    table(
      ["inside the freeze (median ms)", "suspend", "create_snap", "resume", "between", "of which GC"],
      [
        [
          "thinpool-csi",
          ms(driver.suspend.median),
          ms(driver.createSnap.median),
          ms(driver.resume.median),
          ms(driver.between.median),
          ms(driver.gc.median),
        ],
        ...(rawInterleaved ? [rawRow("raw (bash), between the driver's", rawInterleaved)] : []),
        rawRow("raw (bash), by hand with the driver stopped", raw),
      ],
    ),
    "",
  ];
}

function spawnCostLine(cost: BenchResults["spawnCost"]): string[] {
  if (!cost) return [];
  return [
    `One \`dmsetup version\` under the same load (median of ${cost.bash.n}): ${ms(cost.change.median)} ms from ` +
      `the driver's runner as a change (stdout not piped), ${ms(cost.query.median)} ms as a query, ` +
      `${ms(cost.bash.median)} ms from bash.`,
    "",
  ];
}

export function renderReport(r: BenchResults): string {
  const cv = r.createVolume;
  const snap = r.createSnapshot;
  const st = r.startup;
  const sc = r.scale;
  const out: string[] = [];

  const cvFloor = cv.driver.median / cv.floor.median;
  const cvLvm = cv.lvm.median / cv.driver.median;
  // The raw sequence taken between the driver's snapshots, on the same origin under the same load, when
  // measured; otherwise the one by hand with the driver stopped (another volume, other minutes).
  const rawFreeze = snap.floorFreezeInterleaved ?? snap.floorFreeze;
  const processFreeze = snap.driverFreeze.median / rawFreeze.median;
  // The target is judged on the time the origin's I/O was frozen as the kernel saw it, when traced.
  const kernel = snap.kernelFreeze;
  const freeze = kernel ? kernel.driver.median / kernel.rawInterleaved.median : processFreeze;
  const scale = sc.createAtVolumes.median / sc.createAtStart.median;
  const reboot = st.rebootReconcileMs / st.rebootFloorMs;
  out.push(
    "### Targets",
    "",
    table(
      ["target", "measured", ""],
      [
        ["CreateVolume within 1.5x of the dmsetup floor (median)", ratio(cvFloor), yes(cvFloor <= 1.5)],
        [
          "CreateVolume at least 5x faster than lvcreate --thin (median)",
          `${ratio(cvLvm)} faster`,
          yes(cvLvm >= 5),
        ],
        [
          `snapshot freeze within 1.2x of the raw sequence (median${kernel ? ", I/O frozen in the kernel" : ""})`,
          kernel ? `${ratio(freeze)} (${ratio(processFreeze)} process to process)` : ratio(freeze),
          yes(freeze <= 1.2),
        ],
        [
          `CreateVolume at ${r.sizes.scaleVolumes} volumes within 1.2x of an empty pool (median)`,
          ratio(scale),
          yes(scale <= 1.2),
        ],
        [
          `restart with ${st.restartActive} active devices: reconciliation under 5 s (median)`,
          `${ms(st.restartReconcileMs)} ms`,
          yes(st.restartReconcileMs < 5000),
        ],
        [
          `reboot: reactivating ${st.rebootReactivated} volumes within 1.5x of a dmsetup create loop`,
          ratio(reboot),
          yes(reboot <= 1.5),
        ],
        [
          `resident memory at ${sc.devices} devices under 100 MB`,
          mb(r.memory.scaleRssBytes),
          yes(r.memory.scaleRssBytes < 100 * 1024 * 1024),
        ],
      ],
    ),
    "",
    `### CreateVolume (${r.sizes.volumeBytes / 1024 / 1024} MiB, sequential)`,
    "",
    table(
      ["", "median ms", "p99 ms", "n", "vs floor"],
      [
        row("thinpool-csi CreateVolume over gRPC", cv.driver, ratio(cvFloor)),
        row("floor: create_thin + set_transaction_id by hand", cv.floor, "1.00x"),
        row("LVM: lvcreate --thin --activate n", cv.lvm, ratio(cv.lvm.median / cv.floor.median)),
      ],
    ),
    "",
    `Per CreateVolume the driver spawned ${cv.counts.spawnsPerCall.toFixed(2)} processes and ran ` +
      `${cv.counts.statementsPerCall.toFixed(1)} SQLite statements` +
      (r.syscallsPerCreate
        ? `; strace counted ${r.syscallsPerCreate.fsyncs.toFixed(1)} fsync/fdatasync and ` +
          `${r.syscallsPerCreate.execs.toFixed(1)} execve per call.`
        : "."),
    ...(cv.counts.cpuMsPerCall
      ? [
          "",
          `CPU per CreateVolume in the stream: the driver ${cv.counts.cpuMsPerCall.driver.toFixed(1)} ms, ` +
            `the processes it started ${cv.counts.cpuMsPerCall.children.toFixed(1)} ms, the benchmark's client ` +
            `${cv.counts.cpuMsPerCall.client.toFixed(1)} ms.`,
        ]
      : []),
    ...(cv.stream
      ? [
          "",
          `In the stream the driver sent ${cv.stream.messagesPerCall.toFixed(2)} pool messages (spares' ` +
            `create_thin) and read the status ${cv.stream.statusReadsPerCall.toFixed(2)} times per call; a ` +
            `message took ${ms(cv.stream.messageMs.median)} ms from the runner's call to its result ` +
            `(median), and ${ms(cv.stream.gapMs.median)} ms passed from one message's result to the next ` +
            `one's call.`,
        ]
      : []),
    "",
    "### CreateSnapshot of a mounted volume under write load",
    "",
    table(
      ["", "median ms", "p99 ms", "n", "vs raw"],
      [
        ...(kernel
          ? [
              row("thinpool-csi: I/O frozen (kernel: dm_suspend to dm_resume)", kernel.driver, ratio(freeze)),
              row("raw, between the driver's snapshots: I/O frozen (kernel)", kernel.rawInterleaved, "1.00x"),
              row(
                "LVM: lvcreate -s, I/O frozen (kernel)",
                kernel.lvm,
                ratio(kernel.lvm.median / kernel.rawInterleaved.median),
              ),
            ]
          : []),
        row("thinpool-csi: origin frozen (suspend to resume)", snap.driverFreeze, ratio(processFreeze)),
        ...(snap.floorFreezeInterleaved
          ? [
              row("raw, between the driver's snapshots: origin frozen", snap.floorFreezeInterleaved, "1.00x"),
              row(
                "raw, by hand with the driver stopped: origin frozen",
                snap.floorFreeze,
                ratio(snap.floorFreeze.median / rawFreeze.median),
              ),
            ]
          : [row("raw: origin frozen (suspend to resume)", snap.floorFreeze, "1.00x")]),
        row(
          "thinpool-csi: whole CreateSnapshot call",
          snap.driverCall,
          ratio(snap.driverCall.median / snap.floorCall.median),
        ),
        row("raw: suspend, create_snap, resume, set_transaction_id", snap.floorCall, "1.00x"),
        row(
          "LVM: lvcreate -s (whole call)",
          snap.lvmCall,
          ratio(snap.lvmCall.median / snap.floorCall.median),
        ),
      ],
    ),
    "",
    `Per CreateSnapshot the driver spawned ${snap.counts.spawnsPerCall.toFixed(2)} processes and ran ` +
      `${snap.counts.statementsPerCall.toFixed(1)} SQLite statements.`,
    "",
    ...freezePartsTable(snap.freezeParts),
    ...spawnCostLine(r.spawnCost),
    "### Node side and delete",
    "",
    table(
      ["", "median ms", "p99 ms", "n", "vs by hand"],
      [
        row(
          "first NodeStage (activate, mkfs.ext4, mount)",
          r.nodeStage.driver,
          ratio(r.nodeStage.driver.median / r.nodeStage.byHand.median),
        ),
        row("by hand: dmsetup create, mkfs.ext4, mount", r.nodeStage.byHand, "1.00x"),
        row(
          "restore: CreateVolume from snapshot + NodeStage",
          r.restore.driver,
          ratio(r.restore.driver.median / r.restore.byHand.median),
        ),
        row("by hand: create_snap, set_transaction_id, dmsetup create, mount", r.restore.byHand, "1.00x"),
        row(
          "DeleteVolume, no discard",
          r.deleteVolume.driver,
          ratio(r.deleteVolume.driver.median / r.deleteVolume.floor.median),
        ),
        row("by hand: delete + set_transaction_id", r.deleteVolume.floor, "1.00x"),
        row(
          "LVM: lvremove",
          r.deleteVolume.lvm,
          ratio(r.deleteVolume.lvm.median / r.deleteVolume.floor.median),
        ),
        row(
          "DeleteVolume with discard (loop pool, 8 MiB written)",
          r.deleteVolume.driverDiscard,
          ratio(r.deleteVolume.driverDiscard.median / r.deleteVolume.floorDiscard.median),
        ),
        row(
          "by hand: create, blkdiscard, remove, delete, set_transaction_id",
          r.deleteVolume.floorDiscard,
          "1.00x",
        ),
      ],
    ),
    "",
    `First NodeStage spawned ${r.nodeStage.counts.spawnsPerCall.toFixed(1)} processes per call; ` +
      `DeleteVolume (no discard) ${r.deleteVolume.counts.spawnsPerCall.toFixed(1)}.`,
    "",
    `### Scale: ${sc.devices} devices on one pool`,
    "",
    table(
      ["", "median ms", "p99 ms", "n", "vs start"],
      [
        row("CreateVolume, nearly empty pool", sc.createAtStart, "1.00x"),
        row(`CreateVolume at ${r.sizes.scaleVolumes} volumes`, sc.createAtVolumes, ratio(scale)),
        row(
          `CreateVolume at ${sc.devices} devices (volumes + snapshots)`,
          sc.createAtEnd,
          ratio(sc.createAtEnd.median / sc.createAtStart.median),
        ),
        row("CreateSnapshot (inactive origin), first", sc.snapshotAtStart, "1.00x"),
        row(
          "CreateSnapshot (inactive origin), last",
          sc.snapshotAtEnd,
          ratio(sc.snapshotAtEnd.median / sc.snapshotAtStart.median),
        ),
        row(`ListVolumes page of ${sc.pageSize}, volumes inactive`, sc.listVolumesInactivePage),
        row(`ListVolumes page of ${sc.pageSize}, volumes active`, sc.listVolumesPage),
        row(`ListSnapshots page of ${sc.pageSize}`, sc.listSnapshotsPage),
      ].map((cells) => (cells.length === 4 ? [...cells, ""] : cells)),
    ),
    "",
    "### Start-up and memory",
    "",
    table(
      ["", "value"],
      [
        ["driver process start to Probe ready, empty store (new pool)", `${ms(st.emptyStartToReadyMs)} ms`],
        ["  of which loading the modules", `${ms(st.importsMs)} ms`],
        [
          `restart with ${st.restartActive} devices active: start to Probe ready`,
          `${ms(st.restartStartToReadyMs)} ms`,
        ],
        [
          `restart with ${st.restartActive} devices active: engine reconciliation (median)`,
          `${ms(st.restartReconcileMs)} ms`,
        ],
        ...restartDetail(st),
        [
          `reboot: reconciliation reactivating ${st.rebootReactivated} volumes`,
          `${ms(st.rebootReconcileMs)} ms`,
        ],
        ["reboot: start to Probe ready", `${ms(st.rebootStartToReadyMs)} ms`],
        [`reboot by hand: ${st.rebootReactivated} dmsetup create in a loop`, `${ms(st.rebootFloorMs)} ms`],
        ["resident memory, idle (empty store)", mb(r.memory.idleRssBytes)],
        [`resident memory at ${sc.devices} devices, after listing them all`, mb(r.memory.scaleRssBytes)],
        ["  of which JS heap in use", mb(r.memory.scaleHeapBytes)],
      ],
    ),
    "",
    "### Throughput: concurrent CreateVolume",
    "",
    table(
      ["concurrent calls", "volumes per second"],
      r.throughput.map((t) => [String(t.concurrency), t.volumesPerSecond.toFixed(1)]),
    ),
    "",
    `Kernel ${r.kernel}; ${r.dmsetup ? `dmsetup ${r.dmsetup}; ` : ""}sizes ${JSON.stringify(r.sizes)}.`,
  );
  return out.join("\n");
}

/** Each restart's reconciliation and where the median one's time went (runs since the phases exist). */
function restartDetail(st: BenchResults["startup"]): string[][] {
  const rows: string[][] = [];
  if (st.restartReconcileSamplesMs)
    rows.push(["  each restart", `${st.restartReconcileSamplesMs.map(ms).join(", ")} ms`]);
  if (st.restartPhasesMs) {
    const phases = st.restartPhasesMs;
    rows.push(
      ["  listing devices (one dmsetup listing)", `${ms(phases.listing)} ms`],
      ["  settling each row", `${ms(phases.settling)} ms`],
      ["  reactivation", `${ms(phases.reactivation)} ms`],
      ["  metadata check (snapshot, thin_ls, release)", `${ms(phases.metadataCheck)} ms`],
    );
  }
  return rows;
}
