import assert from "node:assert/strict";
import { createStream } from "../../../bench/create-stream.js";

describe("bench: where a stream of CreateVolume calls went", () => {
  it("counts messages and status reads per call and times each message and the gaps between them", () => {
    const message = (startMs: number, endMs: number) => ({
      file: "dmsetup",
      args: ["message", "pool"],
      startMs,
      endMs,
    });
    const stream = createStream(
      [
        message(200, 290),
        message(0, 100),
        { file: "dmsetup", args: ["status", "pool"], startMs: 120, endMs: 230 },
        message(120, 210),
        { file: "blockdev", args: ["--getsize64", "/dev/x"], startMs: 300, endMs: 310 },
      ],
      4,
    );
    assert.equal(stream.messagesPerCall, 0.75);
    assert.equal(stream.statusReadsPerCall, 0.25);
    assert.deepEqual([stream.messageMs.min, stream.messageMs.median, stream.messageMs.max], [90, 90, 100]);
    // Messages in start order: 0-100, 120-210, 200-290: gaps of 20 and -10 (the third overlapped).
    assert.deepEqual([stream.gapMs.min, stream.gapMs.max, stream.gapMs.n], [-10, 20, 2]);
  });
});
