import assert from "node:assert/strict";
import { errnoFromMessage } from "../../../src/thinpool/errors.js";
import { trimDmNoise } from "../../../src/thinpool/command.js";
import {
  parseDmColumns,
  parseDmInfo,
  parseNamedLines,
  parsePoolStatus,
  parsePoolTable,
  parseThinStatus,
  parseThinTable,
} from "../../../src/thinpool/status.js";

describe("dmsetup output parsers", () => {
  it("parses a healthy thin-pool status line", () => {
    const s = parsePoolStatus(
      "0 4194304 thin-pool 7 121/16384 33/32768 - rw discard_passdown queue_if_no_space - 1024",
    );
    assert.equal(s.transactionId, 7n);
    assert.deepEqual(
      [s.metadataUsedBlocks, s.metadataTotalBlocks, s.dataUsedBlocks, s.dataTotalBlocks],
      [121, 16384, 33, 32768],
    );
    assert.equal(s.mode, "rw");
    assert.equal(s.discardPassdown, true);
    assert.equal(s.noSpaceMode, "queue_if_no_space");
    assert.equal(s.needsCheck, false);
    assert.equal(s.healthy, true);
  });

  it("parses out-of-space, error_if_no_space and needs_check", () => {
    const s = parsePoolStatus(
      "0 20480 thin-pool 3 11/1024 160/160 - out_of_data_space no_discard_passdown error_if_no_space needs_check 16",
    );
    assert.equal(s.mode, "out_of_data_space");
    assert.equal(s.discardPassdown, false);
    assert.equal(s.noSpaceMode, "error_if_no_space");
    assert.equal(s.needsCheck, true);
  });

  it("reports a failed pool as unhealthy", () => {
    assert.equal(parsePoolStatus("0 20480 thin-pool Fail").healthy, false);
  });

  it("rejects lines of other targets with the line in the message", () => {
    assert.throws(
      () => parsePoolStatus("0 20480 linear 8:0 0"),
      /not a thin-pool status line: '0 20480 linear/,
    );
  });

  it("parses thin status with and without mappings", () => {
    assert.deepEqual(parseThinStatus("0 2097152 thin 20480 20479"), { healthy: true, mappedSectors: 20480 });
    assert.deepEqual(parseThinStatus("0 2097152 thin 0 -"), { healthy: true, mappedSectors: 0 });
    assert.equal(parseThinStatus("0 2097152 thin Fail").healthy, false);
  });

  it("parses pool and thin tables", () => {
    const pool = parsePoolTable("0 4194304 thin-pool 254:1 254:0 128 0 1 error_if_no_space");
    assert.deepEqual(pool, {
      lengthSectors: 4194304,
      metadataDevice: "254:1",
      dataDevice: "254:0",
      blockSizeSectors: 128,
      lowWaterMark: 0,
      features: ["error_if_no_space"],
    });
    assert.deepEqual(parseThinTable("0 2097152 thin 254:2 7"), {
      lengthSectors: 2097152,
      poolDevice: "254:2",
      deviceId: 7,
    });
  });

  it("parses dmsetup info blocks, suspension and deferred removal", () => {
    const text = [
      "Name:              tpcsi-a",
      "State:             SUSPENDED",
      "Read Ahead:        256",
      "Tables present:    LIVE",
      "Open count:        2",
      "Event number:      0",
      "Major, minor:      254, 3",
      "Number of targets: 1",
      "UUID: THINPOOL-CSI-a",
      "",
      "Name:              tpcsi-b",
      "State:             ACTIVE (DEFERRED REMOVE)",
      "Tables present:    LIVE",
      "Open count:        1",
      "Major, minor:      254, 4",
    ].join("\n");
    const [a, b] = parseDmInfo(text);
    assert.deepEqual(a, {
      name: "tpcsi-a",
      devno: "254:3",
      suspended: true,
      deferredRemove: false,
      liveTable: true,
      openCount: 2,
      uuid: "THINPOOL-CSI-a",
    });
    assert.equal(b?.deferredRemove, true);
    assert.equal(b?.suspended, false);
  });

  it("parses dmsetup info columns: live table, suspension, open count, devno; skips what is not a row", () => {
    const text = [
      "tpcsi-a|THINPOOL-CSI-a|L--w|0|253|4",
      "tpcsi-b|THINPOOL-CSI-b|L-sw|2|253|5",
      "thinpool-csi-p0||L--w|1|253|0",
      "odd\\x7cname|uuid\\x7cx|L--r|0|253|9",
      "tpcsi-c|THINPOOL-CSI-c|---w|0|253|6",
      "No devices found",
      "",
    ].join("\n");
    const [a, b, pool, odd, c, ...rest] = parseDmColumns(text);
    assert.deepEqual(a, {
      name: "tpcsi-a",
      devno: "253:4",
      suspended: false,
      deferredRemove: false,
      liveTable: true,
      openCount: 0,
      uuid: "THINPOOL-CSI-a",
    });
    assert.equal(b?.suspended, true);
    assert.equal(b?.openCount, 2);
    assert.equal(pool?.uuid, "");
    assert.equal(odd?.name, "odd\\x7cname", "a mangled separator stays inside its field");
    assert.equal(c?.liveTable, false);
    assert.deepEqual(rest, []);
  });

  it("splits multi-device table output by name", () => {
    const lines = parseNamedLines("pool0: 0 2048 thin-pool 7:1 7:0 128 0 0\ntpcsi-v1: 0 2048 thin 254:0 1\n");
    assert.equal(lines.get("tpcsi-v1"), "0 2048 thin 254:0 1");
    assert.equal(lines.size, 2);
  });

  it("maps dmsetup stderr to errno names", () => {
    assert.equal(errnoFromMessage("device-mapper: message ioctl on pool  failed: File exists"), "EEXIST");
    assert.equal(
      errnoFromMessage("device-mapper: message ioctl on pool  failed: No data available"),
      "ENODATA",
    );
    assert.equal(
      errnoFromMessage("device-mapper: remove ioctl on x  failed: Device or resource busy"),
      "EBUSY",
    );
    assert.equal(errnoFromMessage("Device tpcsi-x not found"), "ENXIO");
    assert.equal(
      errnoFromMessage("device-mapper: reload ioctl on x  failed: No space left on device"),
      "ENOSPC",
    );
    assert.equal(errnoFromMessage("something else entirely"), "UNKNOWN");
  });

  it("drops dmsetup's boilerplate from error text", () => {
    assert.equal(
      trimDmNoise("device-mapper: remove ioctl on x  failed: Device or resource busy\nCommand failed.\n"),
      "device-mapper: remove ioctl on x  failed: Device or resource busy",
    );
  });

  describe("on output captured from a real 6.1 kernel (dmsetup 1.02.185)", () => {
    // Verbatim, trailing spaces included: a 256MiB pool, thin id 7 with three 64KiB blocks written.
    const poolStatus =
      "0 524288 thin-pool 0 1649/16384 3/4096 - rw discard_passdown error_if_no_space - 1024 ";
    const thinStatus = "0 204800 thin 384 383";
    const poolTable = "0 524288 thin-pool 254:16 254:0 128 0 1 error_if_no_space ";
    const info = [
      "Name:              thin7",
      "State:             SUSPENDED",
      "Read Ahead:        256",
      "Tables present:    LIVE",
      "Open count:        0",
      "Event number:      0",
      "Major, minor:      253, 1",
      "Number of targets: 1",
      "",
    ].join("\n");

    it("parses pool and thin status", () => {
      const pool = parsePoolStatus(poolStatus);
      assert.deepEqual([pool.transactionId, pool.dataUsedBlocks, pool.dataTotalBlocks], [0n, 3, 4096]);
      assert.deepEqual([pool.metadataUsedBlocks, pool.metadataTotalBlocks], [1649, 16384]);
      assert.equal(pool.noSpaceMode, "error_if_no_space");
      assert.equal(parseThinStatus(thinStatus).mappedSectors, 3 * 128);
    });

    it("parses the pool table and a suspended device's info", () => {
      assert.deepEqual(parsePoolTable(poolTable).features, ["error_if_no_space"]);
      assert.deepEqual(parseDmInfo(info), [
        {
          name: "thin7",
          devno: "253:1",
          suspended: true,
          deferredRemove: false,
          liveTable: true,
          openCount: 0,
          uuid: "",
        },
      ]);
    });

    it("keys multi-device output by name, even when only one device matches a target", () => {
      assert.equal(parseNamedLines("thin7: 0 204800 thin 384 383\n").get("thin7"), thinStatus);
      const all = parseNamedLines("pool: " + poolTable + "\nthin7: 0 204800 thin 253:0 7\n");
      assert.deepEqual(parseThinTable(all.get("thin7") ?? ""), {
        lengthSectors: 204800,
        poolDevice: "253:0",
        deviceId: 7,
      });
    });

    it("maps the kernel's error texts", () => {
      assert.equal(
        errnoFromMessage("device-mapper: message ioctl on pool  failed: No data available"),
        "ENODATA",
      );
      assert.equal(errnoFromMessage("device-mapper: message ioctl on pool  failed: File exists"), "EEXIST");
      assert.equal(
        errnoFromMessage("device-mapper: remove ioctl on nosuch  failed: No such device or address"),
        "ENXIO",
      );
    });
  });
});
