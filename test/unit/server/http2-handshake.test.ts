import assert from "node:assert/strict";
import net from "node:net";
import path from "node:path";

import { encodeWithoutIndexing } from "../../../src/server/hpack.js";
import { CLIENT_PREFACE, Http2RewriteError } from "../../../src/server/http2-authority.js";
import {
  EMPTY_SETTINGS,
  HandshakeReader,
  MAX_HANDSHAKE_BYTES,
  routeConnection,
  type HandshakeOutcome,
} from "../../../src/server/http2-handshake.js";
import { frame, header, makeTempDir } from "./helpers.js";

const SETTINGS = frame(0x4, 0, 0, Buffer.alloc(0));
const SETTINGS_ACK = frame(0x4, 0x1, 0, Buffer.alloc(0));
const WINDOW_UPDATE = frame(0x8, 0, 0, Buffer.from([0, 0, 0x40, 0]));

const requestBlock = (authority: string | undefined): Buffer =>
  encodeWithoutIndexing([
    header(":method", "POST"),
    header(":path", "/csi.v1.Identity/Probe"),
    ...(authority === undefined ? [] : [header(":authority", authority)]),
  ]);

/** Feeds `input` one byte at a time; the outcome and how many bytes it took. */
function feedBytewise(input: Buffer): { outcome: HandshakeOutcome | undefined; consumed: number } {
  const reader = new HandshakeReader();
  for (let i = 0; i < input.length; i++) {
    const outcome = reader.push(input.subarray(i, i + 1));
    if (outcome !== undefined) return { outcome, consumed: i + 1 };
  }
  return { outcome: undefined, consumed: input.length };
}

describe("HTTP/2 connection handshake", () => {
  it("routes a connection whose first request has a valid :authority to the session itself, with every byte but the client's ACK", () => {
    const block = requestBlock("localhost");
    const beforeAck = Buffer.concat([
      CLIENT_PREFACE,
      SETTINGS,
      frame(0x1, 0x1, 1, block.subarray(0, 5)), // HEADERS split over a CONTINUATION
      frame(0x9, 0x4, 1, block.subarray(5)),
      frame(0x0, 0x1, 1, Buffer.alloc(5)),
    ]);
    const { outcome, consumed } = feedBytewise(Buffer.concat([beforeAck, SETTINGS_ACK, WINDOW_UPDATE]));
    assert.equal(consumed, beforeAck.length + SETTINGS_ACK.length, "decided at the end of the ACK");
    assert.deepEqual(outcome, { route: "native", received: beforeAck, settingsAckOwed: false });
  });

  it("keeps what came after the deciding frame in the same chunk", () => {
    const headers = frame(0x1, 0x4, 1, requestBlock("localhost"));
    const data = frame(0x0, 0x1, 1, Buffer.alloc(5));
    const outcome = new HandshakeReader().push(
      Buffer.concat([CLIENT_PREFACE, SETTINGS, SETTINGS_ACK, headers, data, WINDOW_UPDATE]),
    );
    assert.deepEqual(outcome, {
      route: "native",
      received: Buffer.concat([CLIENT_PREFACE, SETTINGS, headers, data, WINDOW_UPDATE]),
      settingsAckOwed: false,
    });
  });

  it("decides at the end of the first header block when the ACK came first, and cuts the ACK out", () => {
    const headers = frame(0x1, 0x4 | 0x1, 1, requestBlock("localhost:50051"));
    const input = Buffer.concat([CLIENT_PREFACE, SETTINGS, SETTINGS_ACK, WINDOW_UPDATE, headers]);
    const { outcome, consumed } = feedBytewise(Buffer.concat([input, frame(0x0, 0, 3, Buffer.from("x"))]));
    assert.equal(consumed, input.length);
    assert.deepEqual(outcome, {
      route: "native",
      received: Buffer.concat([CLIENT_PREFACE, SETTINGS, WINDOW_UPDATE, headers]),
      settingsAckOwed: false,
    });
  });

  for (const [what, authority] of [
    ["a socket path", "/var/lib/kubelet/plugins/thinpool.csi.dev/csi.sock"],
    ["no :authority at all", undefined],
  ] as const)
    it(`routes a connection whose first request has ${what} to the normalizer`, () => {
      const headers = frame(0x1, 0x4, 1, requestBlock(authority));
      const reader = new HandshakeReader();
      assert.equal(reader.push(Buffer.concat([CLIENT_PREFACE, SETTINGS, headers])), undefined);
      assert.deepEqual(reader.push(SETTINGS_ACK), {
        route: "normalize",
        received: Buffer.concat([CLIENT_PREFACE, SETTINGS, headers]),
        settingsAckOwed: false,
      });
    });

  it("hands a client that does not speak HTTP/2 to the session unchanged, for it to refuse", () => {
    const input = Buffer.from("GET / HTTP/1.1\r\nHost: /x\r\n\r\n");
    assert.deepEqual(new HandshakeReader().push(input), {
      route: "native",
      received: input,
      settingsAckOwed: false,
    });
  });

  it("gives up to the normalizer with what it has, saying whether the ACK is still owed", () => {
    const headers = frame(0x1, 0x4, 1, requestBlock("localhost"));
    const waiting = new HandshakeReader();
    assert.equal(waiting.push(Buffer.concat([CLIENT_PREFACE, SETTINGS, headers])), undefined);
    assert.deepEqual(waiting.giveUp(), {
      route: "normalize",
      received: Buffer.concat([CLIENT_PREFACE, SETTINGS, headers]),
      settingsAckOwed: true,
    });
    const idle = new HandshakeReader();
    // An ACK on a stream other than 0 is not the acknowledgement: it stays for the session to refuse.
    const strayAck = frame(0x4, 0x1, 1, Buffer.alloc(0));
    assert.equal(idle.push(Buffer.concat([CLIENT_PREFACE, SETTINGS, strayAck, SETTINGS_ACK])), undefined);
    assert.deepEqual(idle.giveUp(), {
      route: "normalize",
      received: Buffer.concat([CLIENT_PREFACE, SETTINGS, strayAck]),
      settingsAckOwed: false,
    });
  });

  it("refuses invalid HTTP/2 and a client that sends too much without finishing its handshake", () => {
    const refuses = (input: Buffer, message: RegExp): void =>
      assert.throws(
        () => new HandshakeReader().push(input),
        (error: unknown) => {
          assert.ok(error instanceof Http2RewriteError);
          assert.match(error.message, message);
          return true;
        },
      );
    refuses(
      Buffer.concat([CLIENT_PREFACE, frame(0x9, 0x4, 1, Buffer.alloc(0))]),
      /CONTINUATION frame without/,
    );
    refuses(
      Buffer.concat([
        CLIENT_PREFACE,
        frame(0x1, 0, 1, Buffer.from([0x82])),
        frame(0x0, 0, 1, Buffer.from("x")),
      ]),
      /expected a CONTINUATION/,
    );
    refuses(Buffer.concat([CLIENT_PREFACE, frame(0x5, 0x4, 1, Buffer.alloc(4))]), /PUSH_PROMISE/);
    refuses(
      Buffer.concat([CLIENT_PREFACE, frame(0x1, 0, 1, Buffer.from([0x82])), SETTINGS_ACK]),
      /expected a CONTINUATION/,
    );
    // Refused from its header alone: nothing larger than 16 KiB may come before the server allows it.
    refuses(
      Buffer.concat([CLIENT_PREFACE, frame(0x0, 0, 1, Buffer.alloc(16_385)).subarray(0, 9)]),
      /exceeds 16384/,
    );
    const data = frame(0x0, 0, 1, Buffer.alloc(16_384));
    const flood = Buffer.concat([
      CLIENT_PREFACE,
      ...Array<Buffer>(Math.ceil(MAX_HANDSHAKE_BYTES / data.length)).fill(data),
    ]);
    refuses(flood, /without both acknowledging the server's SETTINGS and completing/);
  });

  /** Runs `test` with a client connected to a server that routes connections but expects none routed. */
  async function withUnroutedClient(
    onProtocolError: (error: Error) => void,
    test: (client: net.Socket) => Promise<void>,
  ): Promise<void> {
    const { dir, cleanup } = makeTempDir();
    const socketPath = path.join(dir, "h.sock");
    const server = net.createServer((socket) =>
      routeConnection(socket, {
        native: () => assert.fail("not routed"),
        normalize: () => assert.fail("not routed"),
        protocolError: onProtocolError,
      }),
    );
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
    const client = net.connect(socketPath);
    try {
      await test(client);
    } finally {
      client.destroy();
      server.close();
      cleanup();
    }
  }

  it("reports a client that sends invalid HTTP/2 during the handshake and closes its connection", async () => {
    const errors: Error[] = [];
    await withUnroutedClient(
      (error) => errors.push(error),
      async (client) => {
        client.write(Buffer.concat([CLIENT_PREFACE, frame(0x9, 0x4, 1, Buffer.alloc(0))]));
        client.resume();
        await new Promise((resolve) => client.once("close", resolve));
      },
    );
    assert.equal(errors.length, 1);
    assert.match(errors[0]?.message ?? "", /CONTINUATION frame without/);
  });

  it("sends the server's preface as soon as a client connects, before the client sends anything", async () => {
    await withUnroutedClient(
      (error) => assert.fail(error),
      async (client) => {
        const first = await new Promise<Buffer>((resolve) => client.once("data", resolve));
        assert.deepEqual(first, EMPTY_SETTINGS);
      },
    );
  });
});
