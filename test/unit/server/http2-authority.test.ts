import assert from "node:assert/strict";
import http2 from "node:http2";
import net from "node:net";
import path from "node:path";

import { encodeWithoutIndexing, HpackDecoder } from "../../../src/server/hpack.js";
import {
  AuthorityNormalizingConnection,
  CLIENT_PREFACE,
  Http2HeaderRewriter,
  Http2RewriteError,
  isValidAuthority,
  normalizeAuthority,
} from "../../../src/server/http2-authority.js";
import { routeConnection } from "../../../src/server/http2-handshake.js";
import { frame, header, makeTempDir } from "./helpers.js";

interface ParsedFrame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

function parseFrames(bytes: Buffer): ParsedFrame[] {
  const frames: ParsedFrame[] = [];
  let offset = 0;
  while (offset < bytes.length) {
    const length = bytes.readUIntBE(offset, 3);
    frames.push({
      type: bytes[offset + 3] as number,
      flags: bytes[offset + 4] as number,
      streamId: bytes.readUInt32BE(offset + 5),
      payload: bytes.subarray(offset + 9, offset + 9 + length),
    });
    offset += 9 + length;
  }
  return frames;
}

describe("HTTP/2 :authority normalization", () => {
  it("accepts RFC 3986 authorities and refuses socket paths, unix: URIs, spaces and empty values", () => {
    for (const ok of [
      "localhost",
      "localhost:50051",
      "csi.sock",
      "[::1]:80",
      "%2Fcsi%2Fcsi.sock",
      "user@host",
    ]) {
      assert.equal(isValidAuthority(ok), true, ok);
    }
    for (const bad of ["/csi/csi.sock", "unix:///csi/csi.sock", "unix:/csi/csi.sock", "a b", ""]) {
      assert.equal(isValidAuthority(bad), false, bad);
    }
  });

  it("replaces an invalid :authority or host, keeps a valid one, and adds a missing one", () => {
    const replaced = normalizeAuthority([header(":method", "POST"), header(":authority", "/csi/csi.sock")]);
    assert.deepEqual(replaced.fields[1], header(":authority", "localhost"));
    assert.deepEqual(replaced.rewrites, [{ header: ":authority", from: "/csi/csi.sock", to: "localhost" }]);

    const kept = normalizeAuthority([header(":method", "POST"), header(":authority", "localhost:9000")]);
    assert.deepEqual(kept.rewrites, []);

    const added = normalizeAuthority([
      header(":method", "POST"),
      header(":path", "/x"),
      header("te", "trailers"),
    ]);
    assert.deepEqual(
      added.fields.map((field) => field.name),
      [":method", ":path", ":authority", "te"],
    );

    const hostOnly = normalizeAuthority([header(":method", "POST"), header("host", "unix:/x")]);
    assert.deepEqual(hostOnly.fields[1], header("host", "localhost"));
    assert.equal(hostOnly.fields.length, 2);

    const trailers = normalizeAuthority([header("grpc-status", "0")]);
    assert.deepEqual(trailers.rewrites, [], "trailers (no :method) get no :authority");
  });

  describe("frame rewriter", () => {
    /** A rewriter that records the rewrites it reports. */
    const recordingRewriter = () => {
      const rewrites: unknown[] = [];
      return { rewrites, rewriter: new Http2HeaderRewriter((rewrite) => rewrites.push(rewrite)) };
    };
    /** A POST request's header block, encoded without indexing. */
    const requestBlock = (path: string, authority: string) =>
      encodeWithoutIndexing([
        header(":method", "POST"),
        header(":path", path),
        header(":authority", authority),
      ]);

    it("re-encodes a padded, prioritized header block split over CONTINUATION frames into plain HEADERS", () => {
      const { rewrites, rewriter } = recordingRewriter();
      const block = requestBlock(
        "/csi.v1.Identity/Probe",
        "/var/lib/kubelet/plugins/thinpool.csi.dev/csi.sock",
      );
      const priority = Buffer.from([0, 0, 0, 0, 15]);
      const padding = Buffer.alloc(3);
      const first = Buffer.concat([Buffer.from([padding.length]), priority, block.subarray(0, 10), padding]);
      const input = Buffer.concat([
        CLIENT_PREFACE,
        frame(0x4, 0, 0, Buffer.alloc(0)),
        frame(0x1, 0x8 | 0x20 | 0x1, 1, first), // PADDED | PRIORITY | END_STREAM, no END_HEADERS
        frame(0x9, 0, 1, block.subarray(10, 20)),
        frame(0x9, 0x4, 1, block.subarray(20)),
        frame(0x0, 0x1, 3, Buffer.from("data")),
      ]);
      // Fed one byte at a time: frame boundaries must not depend on chunking.
      const output = Buffer.concat([...input].flatMap((byte) => rewriter.push(Buffer.from([byte]))));

      assert.deepEqual(output.subarray(0, CLIENT_PREFACE.length), CLIENT_PREFACE);
      const frames = parseFrames(output.subarray(CLIENT_PREFACE.length));
      assert.deepEqual(
        frames.map((f) => f.type),
        [0x4, 0x1, 0x0],
      );
      const headers = frames[1] as ParsedFrame;
      assert.equal(
        headers.flags,
        0x1 | 0x4 | 0x20,
        "END_STREAM and PRIORITY kept, PADDED dropped, END_HEADERS set",
      );
      assert.equal(headers.streamId, 1);
      assert.deepEqual(headers.payload.subarray(0, 5), priority);
      const fields = new HpackDecoder().decode(headers.payload.subarray(5));
      assert.deepEqual(
        fields.map((field) => [field.name, field.value]),
        [
          [":method", "POST"],
          [":path", "/csi.v1.Identity/Probe"],
          [":authority", "localhost"],
        ],
      );
      assert.deepEqual((frames[2] as ParsedFrame).payload, Buffer.from("data"));
      assert.equal(rewrites.length, 1);
    });

    it("splits a re-encoded block larger than the minimum frame size into CONTINUATION frames", () => {
      const rewriter = new Http2HeaderRewriter();
      const big = header("x-big", "z".repeat(40_000));
      // Sent as a client must: a HEADERS frame and CONTINUATION frames of at most 16 KiB each.
      const block = encodeWithoutIndexing([header(":method", "POST"), header(":authority", "/s"), big]);
      const input = Buffer.concat([
        CLIENT_PREFACE,
        frame(0x1, 0, 1, block.subarray(0, 16_384)),
        frame(0x9, 0, 1, block.subarray(16_384, 32_768)),
        frame(0x9, 0x4, 1, block.subarray(32_768)),
      ]);
      const output = Buffer.concat(rewriter.push(input));
      const frames = parseFrames(output.subarray(CLIENT_PREFACE.length));
      assert.ok(frames.length >= 3);
      assert.ok(frames.every((f) => f.payload.length <= 16384));
      assert.deepEqual(
        frames.map((f) => f.type),
        [0x1, ...Array<number>(frames.length - 1).fill(0x9)],
      );
      assert.equal((frames.at(-1) as ParsedFrame).flags & 0x4, 0x4);
      const fields = new HpackDecoder().decode(Buffer.concat(frames.map((f) => f.payload)));
      assert.equal(fields[2]?.value.length, 40_000);
    });

    it("re-encodes every header block of a connection, valid ones too, so both HPACK tables stay in step", () => {
      const { rewrites, rewriter } = recordingRewriter();
      const input = Buffer.concat([
        CLIENT_PREFACE,
        frame(0x1, 0x4, 1, requestBlock("/csi.v1.Identity/Probe", "/x.sock")),
        frame(0x1, 0x4, 3, requestBlock("/csi.v1.Identity/Probe", "localhost")),
      ]);
      const frames = parseFrames(Buffer.concat(rewriter.push(input)).subarray(CLIENT_PREFACE.length));
      const decoder = new HpackDecoder();
      assert.deepEqual(
        frames.map((f) => decoder.decode(f.payload).find((field) => field.name === ":authority")?.value),
        ["localhost", "localhost"],
      );
      assert.equal(rewrites.length, 1, "only the invalid authority is reported");
    });

    it("drops the first SETTINGS ACK when told the client owes one the server's session did not ask for", () => {
      const ack = frame(0x4, 0x1, 0, Buffer.alloc(0));
      const input = Buffer.concat([CLIENT_PREFACE, frame(0x4, 0, 0, Buffer.alloc(0)), ack, ack]);
      const output = Buffer.concat(new Http2HeaderRewriter(undefined, true).push(input));
      assert.deepEqual(output, Buffer.concat([CLIENT_PREFACE, frame(0x4, 0, 0, Buffer.alloc(0)), ack]));
      assert.deepEqual(Buffer.concat(new Http2HeaderRewriter().push(input)), input, "and only then");
    });

    it("passes a connection that does not start with the HTTP/2 preface through untouched", () => {
      const rewriter = new Http2HeaderRewriter();
      const input = Buffer.from("GET / HTTP/1.1\r\nHost: /x\r\n\r\n");
      assert.deepEqual(Buffer.concat(rewriter.push(input)), input);
    });

    it("refuses a CONTINUATION without a header block and a frame interleaved into one", () => {
      const orphan = new Http2HeaderRewriter();
      assert.throws(
        () => orphan.push(Buffer.concat([CLIENT_PREFACE, frame(0x9, 0x4, 1, Buffer.alloc(0))])),
        Http2RewriteError,
      );
      const interleaved = new Http2HeaderRewriter();
      assert.throws(
        () =>
          interleaved.push(
            Buffer.concat([
              CLIENT_PREFACE,
              frame(0x1, 0, 1, Buffer.from([0x82])),
              frame(0x0, 0, 1, Buffer.from("x")),
            ]),
          ),
        /expected a CONTINUATION/,
      );
    });

    it("refuses a header frame larger than the session's frame size from its frame header alone", () => {
      const rewriter = new Http2HeaderRewriter();
      const oversized = frame(0x1, 0x4, 1, Buffer.alloc(16_385)).subarray(0, 9);
      assert.throws(() => rewriter.push(Buffer.concat([CLIENT_PREFACE, oversized])), /exceeds 16384/);
      // The largest allowed is still taken in, byte by byte, and rewritten.
      const largest = new Http2HeaderRewriter();
      const block = encodeWithoutIndexing([
        header(":method", "POST"),
        header(":path", "/csi.v1.Identity/Probe"),
        header("x-pad", "a".repeat(16_000)),
      ]);
      const input = Buffer.concat([CLIENT_PREFACE, frame(0x1, 0x4, 1, block)]);
      const out: Buffer[] = [];
      for (let i = 0; i < input.length; i++) out.push(...largest.push(input.subarray(i, i + 1)));
      assert.ok(Buffer.concat(out).length > CLIENT_PREFACE.length + block.length, "the block was forwarded");
    });
  });

  // Node's client encodes with nghttp2: Huffman where shorter, the dynamic table for repeats, eviction
  // once the 4 KiB table fills. Behind the handshake, the server must see exactly what was sent, both on a
  // connection that is rewritten (the first request's authority is a socket path) and on one it reads
  // itself.
  for (const { connection, authorityOf } of [
    {
      connection: "rewritten",
      authorityOf: (i: number, socketPath: string) => (i % 2 === 0 ? socketPath : "localhost"),
    },
    { connection: "read natively", authorityOf: () => "localhost" },
  ])
    it(`delivers every request header unchanged (but :authority) from Node's HTTP/2 client, Huffman and dynamic table included, on a connection ${connection}`, async function () {
      this.timeout(20_000);
      const { dir, cleanup } = makeTempDir();
      const socketPath = path.join(dir, "h2.sock");
      const received: Array<Record<string, string>> = [];
      const server = http2.createServer();
      server.on("stream", (stream, headers) => {
        const copy: Record<string, string> = {};
        for (const [name, value] of Object.entries(headers)) {
          if (typeof value === "string") copy[name] = value;
        }
        received.push(copy);
        stream.respond({ ":status": 200 });
        stream.end();
      });
      const routes: string[] = [];
      const front = net.createServer((socket) =>
        routeConnection(socket, {
          native: (client) => {
            routes.push("native");
            server.emit("connection", client);
          },
          normalize: (client, bytes, settingsAckOwed) => {
            routes.push("normalize");
            server.emit("connection", new AuthorityNormalizingConnection(client, bytes, settingsAckOwed));
          },
          protocolError: (error) => assert.fail(error),
        }),
      );
      await new Promise<void>((resolve) => front.listen(socketPath, resolve));
      const session = http2.connect("http://localhost", { createConnection: () => net.connect(socketPath) });
      try {
        const sent: Array<Record<string, string>> = [];
        let seed = 42;
        const random = (): number => {
          seed = (seed * 1103515245 + 12345) % 2 ** 31;
          return seed / 2 ** 31;
        };
        const printable = (length: number): string =>
          Array.from({ length }, () => String.fromCharCode(0x20 + Math.floor(random() * 95)))
            .join("")
            .trim() || "x";
        for (let i = 0; i < 60; i++) {
          const headers: Record<string, string> = {
            "x-repeated": "the same value every time",
            [`x-name-${i % 7}`]: printable(1 + Math.floor(random() * 400)),
            "x-digits": String(Math.floor(random() * 1e9)),
          };
          sent.push(headers);
          await new Promise<void>((resolve, reject) => {
            const stream = session.request({
              ":method": "POST",
              ":path": `/p/${i}`,
              ":authority": authorityOf(i, socketPath),
              ...headers,
            });
            stream.on("response", () => undefined);
            stream.on("error", reject);
            stream.on("close", () => resolve());
            stream.resume();
            stream.end();
          });
        }
        assert.deepEqual(routes, [connection === "rewritten" ? "normalize" : "native"]);
        assert.equal(received.length, sent.length);
        received.forEach((headers, i) => {
          assert.equal(headers[":authority"], "localhost");
          assert.equal(headers[":path"], `/p/${i}`);
          for (const [name, value] of Object.entries(sent[i] as Record<string, string>)) {
            assert.equal(headers[name], value, `request ${i} header ${name}`);
          }
        });
      } finally {
        session.close();
        front.close();
        server.close();
        cleanup();
      }
    });
});
