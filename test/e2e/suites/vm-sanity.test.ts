// Runs INSIDE the test VM (see test/e2e/harness/e2e-stages.ts): proves the guest has a working
// device-mapper with the thin targets, and that a thin pool can be built on the harness's disks.

import assert from "node:assert/strict";
import { open, readFile, stat } from "node:fs/promises";
import path from "node:path";
import { execa } from "execa";

import { vmSuiteDisks, type SuiteDisks } from "../../support/e2e-env.js";
import { findOnPath } from "../../support/executables.js";

const POOL = "e2e-sanity-pool";
const THIN = "e2e-sanity-thin";
const ZERO = "e2e-sanity-zero";
/** The `disk` group, which Debian's dmsetup gives the device nodes it makes (--with-device-gid=6). */
const DISK_GID = 6;
/** 128 MiB pool in 64 KiB blocks: tiny, but enough to provision a volume and see blocks get used. */
const POOL_SECTORS = 262144;
const BLOCK_SECTORS = 128;

async function dmsetup(...args: string[]): Promise<string> {
  const { stdout } = await execa("dmsetup", args);
  return stdout;
}

/** "<used>/<total>" data blocks from a thin-pool status line. */
function usedDataBlocks(status: string): number {
  // 0 262144 thin-pool <transaction id> <used meta>/<total meta> <used data>/<total data> ...
  const match = /thin-pool \d+ \d+\/\d+ (\d+)\/\d+/.exec(status);
  assert.ok(match?.[1] !== undefined, `unexpected thin-pool status: ${status}`);
  return Number(match[1]);
}

describe("VM sanity: real device-mapper thin provisioning", function () {
  let disks: SuiteDisks;

  before(async function () {
    disks = vmSuiteDisks();
    // All suites share one VM and its disks; start from a device-mapper with nothing left over by a suite
    // that ran earlier (an active pool would hold the disks open exclusively).
    await execa("dmsetup", ["remove_all"]);
  });

  after(async function () {
    // Best effort, in dependency order, so a failed test does not leave devices behind for later suites.
    for (const name of [ZERO, THIN, POOL]) {
      await execa("dmsetup", ["remove", "--retry", name], { reject: false });
    }
  });

  it("runs the image's dmsetup: built statically from Debian's lvm2 source (scripts/build-dmsetup.sh)", async function () {
    const found = await findOnPath("dmsetup");
    assert.ok(found !== null, `dmsetup is not on PATH (${process.env.PATH ?? ""})`);
    assert.equal(
      path.basename(path.dirname(found)),
      "dmsetup",
      `dmsetup on PATH is ${found}, not the image's`,
    );
    assert.match(
      await readFile(path.join(path.dirname(found), "SOURCE"), "utf8"),
      /^lvm2 \d+\.\d+\.\d+-\S+ recipe [0-9a-f]{16}\n$/,
    );
    const ldd = await execa("ldd", [found], { reject: false });
    assert.notEqual(ldd.exitCode, 0, `${found} loads shared objects:\n${ldd.stdout}`);
    assert.match(ldd.stdout + ldd.stderr, /not a dynamic executable/);
  });

  it("makes device nodes as Debian's dmsetup does without udev: root:disk, mode 0660", async function () {
    await dmsetup("create", ZERO, "--table", "0 8 zero");
    const node = await stat(`/dev/mapper/${ZERO}`);
    assert.ok(node.isBlockDevice(), `/dev/mapper/${ZERO} is not a block device`);
    assert.equal((node.mode & 0o777).toString(8), "660");
    assert.equal(node.uid, 0);
    assert.equal(node.gid, DISK_GID);
    await dmsetup("remove", ZERO);
    await assert.rejects(stat(`/dev/mapper/${ZERO}`), { code: "ENOENT" });
  });

  it("has the device-mapper control node", async function () {
    const control = await stat("/dev/mapper/control");
    assert.ok(control.isCharacterDevice(), "/dev/mapper/control is not a character device");
  });

  it("runs dmsetup version against the kernel driver", async function () {
    const out = await dmsetup("version");
    assert.match(out, /Library version:/);
    assert.match(out, /Driver version:\s+4\.\d+/);
  });

  it("lists the thin-pool and thin targets", async function () {
    const targets = (await dmsetup("targets")).split("\n").map((line) => line.trim().split(/\s+/)[0]);
    assert.ok(targets.includes("thin-pool"), `thin-pool missing from: ${targets.join(", ")}`);
    assert.ok(targets.includes("thin"), `thin missing from: ${targets.join(", ")}`);
  });

  it("creates a thin pool on the data/meta disks, provisions a volume, and tears it down", async function () {
    // A zeroed superblock tells dm-thin to format fresh metadata instead of opening stale ones.
    const meta = await open(disks.meta, "r+");
    try {
      await meta.write(Buffer.alloc(4096), 0, 4096, 0);
      await meta.sync();
    } finally {
      await meta.close();
    }

    await dmsetup(
      "create",
      POOL,
      "--table",
      `0 ${POOL_SECTORS} thin-pool ${disks.meta} ${disks.data} ${BLOCK_SECTORS} 0`,
    );
    assert.equal(usedDataBlocks(await dmsetup("status", POOL)), 0);

    await dmsetup("message", POOL, "0", "create_thin 0");
    await dmsetup("create", THIN, "--table", `0 2048 thin /dev/mapper/${POOL} 0`);

    const pattern = Buffer.alloc(1024 * 1024, 0x5a);
    const thin = await open(`/dev/mapper/${THIN}`, "r+");
    try {
      await thin.write(pattern, 0, pattern.length, 0);
      await thin.sync();
      const back = Buffer.alloc(pattern.length);
      await thin.read(back, 0, back.length, 0);
      assert.ok(back.equals(pattern), "data read back from the thin volume differs from what was written");
    } finally {
      await thin.close();
    }
    // 1 MiB in 64 KiB blocks = 16 blocks provisioned.
    assert.equal(usedDataBlocks(await dmsetup("status", POOL)), 16);

    await dmsetup("remove", THIN);
    await dmsetup("message", POOL, "0", "delete 0");
    await dmsetup("remove", POOL);
    // With the pool gone, the on-disk metadata must be consistent.
    await execa("thin_check", [disks.meta]);
  });
});
