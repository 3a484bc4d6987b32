// Tests of src/util/ helpers used by the configuration (size and duration parsing) and of the endpoint parser.
import assert from "node:assert/strict";

import { EndpointError, parseUnixEndpoint } from "../../../src/server/endpoint.js";
import { DurationParseError, parseDuration } from "../../../src/util/duration.js";
import { formatSize, parseSize, SizeParseError } from "../../../src/util/size.js";

describe("parseSize", () => {
  it("parses binary and decimal suffixes exactly", () => {
    const cases: Array<[string, number]> = [
      ["0", 0],
      ["1048576", 1048576],
      ["64Ki", 65536],
      ["256Mi", 268435456],
      ["20Gi", 21474836480],
      ["1Ti", 2 ** 40],
      ["2Pi", 2 * 2 ** 50],
      ["1k", 1000],
      ["500M", 500_000_000],
      ["1G", 1_000_000_000],
      ["3T", 3e12],
      ["1P", 1e15],
      ["1.5Gi", 1610612736],
      ["0.5Ki", 512],
      [" 1Mi ", 1048576],
    ];
    for (const [text, bytes] of cases) {
      assert.equal(parseSize(text), bytes, text);
    }
  });

  it("refuses unknown units, fractions of a byte, garbage and values beyond exact integers", () => {
    assert.throws(() => parseSize("1K"), {
      name: "SizeParseError",
      message: /did you mean Ki = 1024 or k = 1000/,
    });
    assert.throws(() => parseSize("1GB"), /unknown unit 'GB'/);
    assert.throws(() => parseSize("1.1"), /not a whole number of bytes/);
    assert.throws(() => parseSize("0.0001Ki"), /not a whole number of bytes/);
    assert.throws(() => parseSize("-1Gi"), SizeParseError);
    assert.throws(() => parseSize("Gi"), SizeParseError);
    assert.throws(() => parseSize(""), SizeParseError);
    assert.throws(() => parseSize("1e3"), SizeParseError);
    assert.throws(() => parseSize("8Ei"), /too large/);
  });

  it("formats sizes with the largest exact binary unit", () => {
    assert.equal(formatSize(65536), "64Ki");
    assert.equal(formatSize(16 * 2 ** 30), "16Gi");
    assert.equal(formatSize(1000), "1000");
  });
});

describe("parseDuration", () => {
  it("parses units, combinations and plain seconds", () => {
    assert.equal(parseDuration("60s"), 60_000);
    assert.equal(parseDuration("2m"), 120_000);
    assert.equal(parseDuration("1m30s"), 90_000);
    assert.equal(parseDuration("500ms"), 500);
    assert.equal(parseDuration("1h"), 3_600_000);
    assert.equal(parseDuration("45"), 45_000);
    assert.equal(parseDuration("0"), 0);
  });

  it("refuses anything else", () => {
    for (const text of ["", "soon", "10 s", "1d", "s", "-5s"]) {
      assert.throws(() => parseDuration(text), DurationParseError, text);
    }
  });
});

describe("parseUnixEndpoint", () => {
  it("accepts unix:///path, unix:/path and a plain absolute path", () => {
    assert.equal(parseUnixEndpoint("unix:///csi/csi.sock"), "/csi/csi.sock");
    assert.equal(parseUnixEndpoint("unix:/csi/csi.sock"), "/csi/csi.sock");
    assert.equal(parseUnixEndpoint("/csi/csi.sock"), "/csi/csi.sock");
    assert.equal(parseUnixEndpoint("unix:///csi//x/../csi.sock"), "/csi/csi.sock");
  });

  it("refuses TCP, relative paths, a host part and directories", () => {
    for (const endpoint of [
      "tcp://127.0.0.1:10000",
      "csi.sock",
      "unix:csi.sock",
      "unix://host/csi.sock",
      "/csi/",
    ]) {
      assert.throws(() => parseUnixEndpoint(endpoint), EndpointError, endpoint);
    }
  });
});
