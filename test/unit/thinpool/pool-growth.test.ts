import assert from "node:assert/strict";
import { Dmsetup } from "../../../src/thinpool/dmsetup.js";
import {
  growPoolToDevices,
  MAX_METADATA_BLOCKS,
  partitionSectors,
  sysfsSectors,
} from "../../../src/thinpool/pool-growth.js";
import type { AssembledPool } from "../../../src/thinpool/pool-source.js";
import { parsePoolStatus, type PoolStatus } from "../../../src/thinpool/status.js";
import { FakeKernel } from "./fake-kernel.js";

// The fake pool: table "0 2097152 thin-pool 254:1 254:0 128 0 1 error_if_no_space" (16384 data blocks of
// 64 KiB), 4096 metadata blocks of 4 KiB. Data device 254:0, metadata device 254:1.
const DATA_SECTORS = 2097152;
const META_SECTORS = 4096 * 8;

function setup(sizes: { data?: number; metadata?: number } = {}) {
  const kernel = new FakeKernel();
  const dm = new Dmsetup(kernel, { resumeDeadlineMs: 200 });
  const pool: AssembledPool = {
    name: "p",
    dmName: "pool0",
    devno: "254:2",
    blockBytes: 64 * 1024,
    ownsTransactionId: true,
    devices: { data: "254:0", metadata: "254:1" },
    notes: [],
  };
  const sectors: Record<string, number> = {
    "254:0": sizes.data ?? DATA_SECTORS,
    "254:1": sizes.metadata ?? META_SECTORS,
  };
  const sectorsOf = async (devno: string) => sectors[devno] as number;
  const status = async (): Promise<PoolStatus> => parsePoolStatus(await dm.status("pool0"));
  const grow = async (s?: PoolStatus) => growPoolToDevices(pool, s ?? (await status()), dm, sectorsOf);
  const swaps = () =>
    kernel.calls.filter((c) => c[1] === "reload" || c[1] === "resume").map((c) => c.join(" "));
  return { kernel, pool, sectors, status, grow, swaps };
}

describe("pool growth (fake kernel)", () => {
  it("reloads a longer table and resumes when the data device grew", async () => {
    const t = setup({ data: 2 * DATA_SECTORS });
    t.kernel.poolMode = "out_of_data_space";
    const note = await t.grow();
    assert.match(
      note ?? "",
      /data 16384 -> 32768 blocks, metadata 4096 -> 4096 blocks \(was out_of_data_space\)/,
    );
    assert.deepEqual(t.swaps(), [
      "dmsetup reload pool0 --table 0 4194304 thin-pool 254:1 254:0 128 0 1 error_if_no_space",
      "dmsetup resume pool0",
    ]);
  });

  it("reloads the same length and resumes when only the metadata device grew, even from read-only", async () => {
    const t = setup({ metadata: 2 * META_SECTORS });
    t.kernel.poolMode = "ro";
    assert.match((await t.grow()) ?? "", /metadata 4096 -> 8192 blocks \(was ro\)/);
    assert.deepEqual(t.swaps(), [
      "dmsetup reload pool0 --table 0 2097152 thin-pool 254:1 254:0 128 0 1 error_if_no_space",
      "dmsetup resume pool0",
    ]);
  });

  it("does nothing, without a single dmsetup call, when nothing grew or a device shrank", async () => {
    for (const sizes of [{}, { data: DATA_SECTORS - 128 }, { data: DATA_SECTORS + 127 }, { metadata: 8 }]) {
      const t = setup(sizes);
      const s = await t.status();
      t.kernel.calls = [];
      assert.equal(await t.grow(s), undefined, JSON.stringify(sizes));
      assert.deepEqual(t.kernel.calls, [], "a partial block or a smaller device changes nothing");
    }
  });

  it("leaves a pool that needs a check or failed alone: the kernel refuses to grow it until repaired", async () => {
    const t = setup({ data: 2 * DATA_SECTORS, metadata: 2 * META_SECTORS });
    const s = await t.status();
    assert.equal(await t.grow({ ...s, needsCheck: true }), undefined);
    t.kernel.poolMode = "Fail";
    assert.equal(await t.grow(), undefined);
    assert.deepEqual(t.swaps(), []);
  });

  it("does not put a read-only pool back in write mode for data alone", async () => {
    const t = setup({ data: 2 * DATA_SECTORS });
    t.kernel.poolMode = "ro";
    assert.equal(await t.grow(), undefined, "ro means metadata ran out; more data space does not help");
    t.sectors["254:1"] = 2 * META_SECTORS;
    assert.match((await t.grow()) ?? "", /data 16384 -> 32768 blocks, metadata 4096 -> 8192/);
  });

  it("caps metadata at what dm-thin can use, and does not repeat a reload the kernel did not follow", async () => {
    const t = setup({ metadata: 64 * 1024 * 1024 * 2 * 1024 }); // a 64 GiB metadata device
    t.kernel.metadataTotalBlocks = MAX_METADATA_BLOCKS;
    assert.equal(await t.grow(), undefined, "the kernel already uses all it can");

    const u = setup({ data: 2 * DATA_SECTORS });
    assert.ok(await u.grow());
    // The fake's status still says 16384 blocks, as a kernel that ignored the reload would.
    assert.equal(await u.grow(), undefined, "the same sizes are not tried again");
    u.sectors["254:0"] = 3 * DATA_SECTORS;
    assert.ok(await u.grow(), "a further growth is");
    assert.equal(u.swaps().filter((c) => c.includes("reload")).length, 2);
  });
});

describe("block device sizes from /proc/partitions (this machine's kernel)", () => {
  it("gives every listed device the size sysfs gives it, in sectors", async function () {
    const listed = await partitionSectors();
    if (listed.size === 0) this.skip(); // a kernel with no block device at all
    for (const [devno, sectors] of listed) {
      // /proc/partitions counts KiB: a device of an odd number of sectors reads one sector short.
      const exact = await sysfsSectors(devno);
      assert.equal(sectors, exact - (exact % 2), `size of ${devno}`);
    }
  });
});
