/**
 * One boot of a power-loss cycle (runs inside the VM; the host pulls the plug at a marker).
 *   load <cycle>:   open the engine (reconciling whatever the last cut left), make sure volume "pl" exists,
 *                   is mounted, and holds one synced file per earlier cycle; write and fsync this cycle's
 *                   file, record its checksum (fsynced) on the state disk, then keep writing and taking
 *                   (and deleting) snapshots; after a few it prints CUT-HERE and the power goes.
 *   verify:         open the engine, check every recorded file's checksum and that no device is half-done,
 *                   print the figures as a JSON line.
 */
import { mkdirSync, readFileSync, existsSync, openSync, writeSync, fsyncSync, closeSync } from "node:fs";
import { execa } from "execa";
import { StateStore } from "../../../src/state/store.js";
import { DeviceState } from "../../../src/state/types.js";
import { ThinPoolEngine } from "../../../src/thinpool/engine.js";
import {
  E2E_DATA_DEV,
  E2E_META_DEV,
  E2E_STATE_DEV,
  sh,
  sha256File,
  silentLogger,
  zeroHead,
} from "./vm-env.js";

const MiB = 1024 * 1024;
const [phase, cycleText] = process.argv.slice(2);
const sumsPath = "/mnt/state/sums.json";

function writeSynced(path: string, data: string | Buffer): void {
  const fd = openSync(path, "w");
  writeSync(fd, typeof data === "string" ? Buffer.from(data) : data);
  fsyncSync(fd);
  closeSync(fd);
}

mkdirSync("/mnt/state", { recursive: true });
if (phase === "load" && cycleText === "0") {
  await zeroHead(E2E_META_DEV);
  await sh("mkfs.ext4", ["-q", "-F", E2E_STATE_DEV]);
}
await sh("mount", [E2E_STATE_DEV, "/mnt/state"]);
const engine = await ThinPoolEngine.open({
  store: StateStore.open("/mnt/state/state.db"),
  logger: silentLogger,
  pools: [{ name: "pl", source: { type: "devices", data: E2E_DATA_DEV, metadata: E2E_META_DEV } }],
});
const sums: Record<string, string> = existsSync(sumsPath)
  ? (JSON.parse(readFileSync(sumsPath, "utf8")) as Record<string, string>)
  : {};

if (!engine.getDevice("pl")) {
  const path = await engine.activate((await engine.createVolume({ name: "pl", sizeBytes: 256 * MiB })).name);
  await sh("mkfs.ext4", ["-q", path]);
}
const path = await engine.activate("pl");
mkdirSync("/mnt/pl", { recursive: true });
// After a cut the journal is replayed at mount: that is ext4's job, and what we rely on.
await sh("mount", [path, "/mnt/pl"]);

if (phase === "load") {
  const cycle = Number(cycleText);
  const file = `/mnt/pl/synced-${cycle}`;
  writeSynced(file, Buffer.alloc(4 * MiB, cycle + 1));
  sums[file] = await sha256File(file);
  writeSynced(`${sumsPath}.tmp`, JSON.stringify(sums));
  await sh("mv", [`${sumsPath}.tmp`, sumsPath]);
  await sh("sync", ["-f", sumsPath]);
  const writer = execa(
    "sh",
    ["-c", "while :; do dd if=/dev/urandom of=/mnt/pl/unsynced bs=64k count=64 2>/dev/null; done"],
    { reject: false },
  );
  for (let i = 0; ; i++) {
    // The plug is pulled when this line reaches the host: in the middle of the next snapshot or delete.
    if (i === 3) process.stdout.write("CUT-HERE\n");
    await engine.createSnapshot({ name: `pl-c${cycle}-s${i}`, source: "pl", kind: "snapshot" });
    if (i % 2 === 1) await engine.deleteDevice(`pl-c${cycle}-s${i - 1}`);
  }
  void writer;
} else {
  const bad: string[] = [];
  let bytes = 0;
  for (const [file, sum] of Object.entries(sums)) {
    if ((await sha256File(file)) !== sum) bad.push(file);
    bytes += 4 * MiB;
  }
  const devices = engine.listDevices();
  const halfDone = devices.filter(
    (d) => d.pending !== null || ![DeviceState.Active, DeviceState.Inactive].includes(d.state),
  );
  const report = engine.lastReconcile;
  process.stdout.write(
    `POWER-LOSS-RESULT ${JSON.stringify({ files: Object.keys(sums).length, bytes, bad, halfDone: halfDone.map((d) => `${d.name}:${d.state}`), devices: devices.length, reconcile: report })}\n`,
  );
  await sh("umount", ["/mnt/pl"]);
  engine.close();
  await sh("umount", ["/mnt/state"]);
}
