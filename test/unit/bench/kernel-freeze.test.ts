/**
 * The benchmark's kernel-side freeze timing: tracefs lines in, suspended time out. The lines are in the
 * format the VM's kernel (6.1) wrote for these probes.
 */
import assert from "node:assert/strict";
import { frozenMs, parseTrace, suspendedIntervals } from "../../../bench/kernel-freeze.js";

const HEADER = `# tracer: nop
#
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
`;
const ORIGIN = "0xffff9e0c81a3c000";
const POOL = "0xffff9e0c81a3d000";
const suspend = (pid: number, at: string, md: string): string =>
  `         dmsetup-${pid}     [001] .....    ${at}: suspend: (dm_suspend+0x0/0xe0 [dm_mod]) md=${md}`;
const resume = (pid: number, at: string, md: string): string =>
  `         dmsetup-${pid}     [000] .....    ${at}: resume: (dm_resume+0x0/0xc0 [dm_mod]) md=${md}`;
const resumed = (pid: number, at: string, ret = "0x0"): string =>
  `         dmsetup-${pid}     [000] .N...    ${at}: resumed: (dev_suspend+0x270/0x390 [dm_mod] <- dm_resume) ret=${ret}`;

describe("bench: kernel freeze probe", () => {
  it("times a freeze from the origin's dm_suspend entry to the return of its dm_resume", () => {
    const trace = [
      HEADER,
      suspend(301, "45.100000", ORIGIN),
      resume(303, "45.350250", ORIGIN),
      resumed(303, "45.352750"),
    ].join("\n");
    const events = parseTrace(trace);
    assert.deepEqual(
      events.map((e) => [e.event, e.pid, e.md]),
      [
        ["suspend", 301, ORIGIN],
        ["resume", 303, ORIGIN],
        ["resumed", 303, undefined],
      ],
    );
    const intervals = suspendedIntervals(events);
    assert.equal(intervals.length, 1);
    assert.equal(frozenMs(intervals), 252.75);
  });

  it("counts a pool suspended inside the origin's freeze once, and separate freezes apart", () => {
    const nested = parseTrace(
      [
        suspend(10, "1.000000", ORIGIN),
        suspend(11, "1.050000", POOL),
        resume(12, "1.080000", POOL),
        resumed(12, "1.090000"),
        resume(13, "1.200000", ORIGIN),
        resumed(13, "1.210000"),
        suspend(14, "2.000000", ORIGIN),
        resume(15, "2.100000", ORIGIN),
        resumed(15, "2.100500"),
      ].join("\n"),
    );
    assert.equal(suspendedIntervals(nested).length, 3);
    assert.equal(frozenMs(suspendedIntervals(nested)), 210 + 100.5);
  });

  it("ignores a suspend never resumed, and a resume of a device it did not see suspended", () => {
    const events = parseTrace(
      [resume(20, "3.000000", POOL), resumed(20, "3.001000"), suspend(21, "3.500000", ORIGIN)].join("\n"),
    );
    assert.deepEqual(suspendedIntervals(events), []);
    assert.equal(frozenMs([]), 0);
  });

  it("keeps a freeze open across a failed resume, until a resume succeeds", () => {
    const events = parseTrace(
      [
        suspend(30, "4.000000", ORIGIN),
        resume(31, "4.100000", ORIGIN),
        resumed(31, "4.101000", "0xffffffffffffffea"),
        resume(32, "4.300000", ORIGIN),
        resumed(32, "4.302000"),
      ].join("\n"),
    );
    assert.equal(events[2]?.ret, -22);
    assert.deepEqual(suspendedIntervals(events), [[4_000_000, 4_302_000]]);
  });
});
