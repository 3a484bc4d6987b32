/**
 * Test support for the server tests: temp dirs, a pino logger whose lines can be read back, real
 * grpc-js clients over the unix socket (loaded from the same proto as the server), and raw HTTP/2
 * clients for the :authority tests.
 */
import * as grpc from "@grpc/grpc-js";
import { mkdtempSync, rmSync } from "node:fs";
import http2 from "node:http2";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import type { Logger } from "pino";

import { loadCsiServices } from "../../../src/csi/proto.js";
import type { ControllerClient } from "../../../src/generated/csi/v1/Controller.js";
import type { IdentityClient } from "../../../src/generated/csi/v1/Identity.js";
import type { NodeClient } from "../../../src/generated/csi/v1/Node.js";
import { HpackDecoder, encodeWithoutIndexing, type HeaderField } from "../../../src/server/hpack.js";
import { createLogger } from "../../../src/server/logger.js";

export function makeTempDir(): { dir: string; cleanup: () => void } {
  // Short prefix: unix socket paths are limited to 107 bytes.
  const dir = mkdtempSync(path.join(os.tmpdir(), "tpcsi-"));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface CapturedLogger {
  readonly logger: Logger;
  /** Every line written so far, parsed. */
  lines(): Array<Record<string, unknown>>;
  /** Every line written so far, as written. */
  text(): string;
}

export function captureLogger(level: "trace" | "debug" | "info" | "warn" = "debug"): CapturedLogger {
  const written: string[] = [];
  const logger = createLogger({ level, destination: { write: (line: string) => void written.push(line) } });
  return {
    logger,
    lines: () => written.map((line) => JSON.parse(line) as Record<string, unknown>),
    text: () => written.join(""),
  };
}

export interface CsiClients {
  readonly identity: IdentityClient;
  readonly controller: ControllerClient;
  readonly node: NodeClient;
  close(): void;
}

export function csiClients(socketPath: string): CsiClients {
  const { grpcPackage } = loadCsiServices();
  const address = `unix://${socketPath}`;
  const credentials = grpc.credentials.createInsecure();
  const identity = new grpcPackage.csi.v1.Identity(address, credentials);
  const controller = new grpcPackage.csi.v1.Controller(address, credentials);
  const node = new grpcPackage.csi.v1.Node(address, credentials);
  return {
    identity,
    controller,
    node,
    close: () => {
      identity.close();
      controller.close();
      node.close();
    },
  };
}

/** Promisifies one grpc-js unary call: `await unary<Res>((cb) => client.Probe({}, cb))`. */
export function unary<Response>(
  invoke: (callback: grpc.requestCallback<Response>) => unknown,
): Promise<Response> {
  return new Promise((resolve, reject) => {
    invoke((error, response) => {
      if (error !== null) {
        reject(error);
      } else if (response === undefined) {
        reject(new Error("no response"));
      } else {
        resolve(response);
      }
    });
  });
}

/** The status error of a call that must fail. */
export async function expectStatus(promise: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await promise;
  } catch (error) {
    if (typeof (error as grpc.ServiceError).code === "number") {
      return error as grpc.ServiceError;
    }
    throw error;
  }
  throw new Error("the call succeeded, a status error was expected");
}

/** A deferred promise, for handlers that wait until the test lets them go. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve: (value: T) => void = () => undefined;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

export async function waitFor(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** An empty protobuf message in gRPC framing (no compression, length 0). */
export const EMPTY_GRPC_MESSAGE = Buffer.alloc(5);

export interface RawCallResult {
  readonly httpStatus: number | undefined;
  readonly grpcStatus: string | undefined;
  readonly grpcMessage: string | undefined;
  readonly body: Buffer;
  /** RST_STREAM code when the server reset the stream (1 = PROTOCOL_ERROR). */
  readonly resetCode: number | undefined;
}

export interface RawFramesCallResult extends RawCallResult {
  /** Calls answered with trailers on the connection. */
  readonly answered: number;
  /** GOAWAY error code when the server closed the connection with one. */
  readonly goAwayCode: number | undefined;
}

/**
 * A unary gRPC call made with Node's HTTP/2 client, which sends whatever :authority it is given (the
 * client side does not validate it), as old grpc-go clients did.
 */
export function http2GrpcCall(
  socketPath: string,
  authority: string,
  methodPath: string,
): Promise<RawCallResult> {
  return new Promise((resolve) => {
    const session = http2.connect("http://localhost", { createConnection: () => net.connect(socketPath) });
    session.on("error", () => undefined);
    const stream = session.request({
      ":method": "POST",
      ":scheme": "http",
      ":path": methodPath,
      ":authority": authority,
      "content-type": "application/grpc",
      te: "trailers",
    });
    let httpStatus: number | undefined;
    let grpcStatus: string | undefined;
    let grpcMessage: string | undefined;
    let body = Buffer.alloc(0);
    stream.on("response", (headers) => {
      httpStatus = headers[":status"];
      grpcStatus ??= headers["grpc-status"] as string | undefined;
      grpcMessage ??= headers["grpc-message"] as string | undefined;
    });
    stream.on("trailers", (trailers) => {
      grpcStatus = trailers["grpc-status"] as string | undefined;
      grpcMessage = trailers["grpc-message"] as string | undefined;
    });
    stream.on("data", (chunk: Buffer) => {
      body = Buffer.concat([body, chunk]);
    });
    stream.on("error", () => undefined);
    stream.on("close", () => {
      const resetCode = stream.rstCode === 0 ? undefined : stream.rstCode;
      session.close();
      resolve({ httpStatus, grpcStatus, grpcMessage, body, resetCode });
    });
    stream.end(EMPTY_GRPC_MESSAGE);
  });
}

export function frame(type: number, flags: number, streamId: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(9);
  header.writeUIntBE(payload.length, 0, 3);
  header[3] = type;
  header[4] = flags;
  header.writeUInt32BE(streamId, 5);
  return Buffer.concat([header, payload]);
}

/**
 * A unary gRPC call written frame by frame, for header lists Node's client will not produce (no
 * :authority at all). Responses are decoded with the project's HPACK decoder. `waitForServerSettings`
 * behaves as grpc-go does: only the preface and SETTINGS go out until the server's SETTINGS arrive;
 * `idleMs` then waits that long before sending the request (and the ACK of those SETTINGS too, with
 * `ackAfterIdle`). `calls` makes that many calls one after the other on the connection (the result is
 * the last one's).
 */
export function rawFramesGrpcCall(
  socketPath: string,
  requestHeaders: readonly HeaderField[],
  options: { waitForServerSettings?: boolean; idleMs?: number; ackAfterIdle?: boolean; calls?: number } = {},
): Promise<RawFramesCallResult> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath);
    const decoder = new HpackDecoder();
    let buffered = Buffer.alloc(0);
    let httpStatus: number | undefined;
    let grpcStatus: string | undefined;
    let grpcMessage: string | undefined;
    let body = Buffer.alloc(0);
    let resetCode: number | undefined;
    let answered = 0;
    let goAwayCode: number | undefined;
    let done = false;
    const finish = (): void => {
      if (!done) {
        done = true;
        socket.destroy();
        resolve({ httpStatus, grpcStatus, grpcMessage, body, resetCode, answered, goAwayCode });
      }
    };
    const timer = setTimeout(
      () => {
        socket.destroy();
        reject(new Error("raw HTTP/2 call timed out"));
      },
      5000 + (options.idleMs ?? 0),
    );
    const request = (streamId: number): Buffer =>
      Buffer.concat([
        frame(0x1, 0x4, streamId, encodeWithoutIndexing(requestHeaders)), // HEADERS, END_HEADERS
        frame(0x0, 0x1, streamId, EMPTY_GRPC_MESSAGE), // DATA, END_STREAM
      ]);
    let requestSent = false;
    socket.on("connect", () => {
      const preface = Buffer.concat([
        Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1"),
        frame(0x4, 0, 0, Buffer.alloc(0)), // SETTINGS
      ]);
      requestSent = !options.waitForServerSettings;
      socket.write(requestSent ? Buffer.concat([preface, request(1)]) : preface);
    });
    socket.on("data", (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 9) {
        const length = buffered.readUIntBE(0, 3);
        if (buffered.length < 9 + length) {
          break;
        }
        const type = buffered[3] as number;
        const flags = buffered[4] as number;
        const payload = buffered.subarray(9, 9 + length);
        buffered = buffered.subarray(9 + length);
        if (type === 0x4 && (flags & 0x1) === 0) {
          const acknowledge = (): boolean => socket.write(frame(0x4, 0x1, 0, Buffer.alloc(0))); // SETTINGS ACK
          const sendRequest = (): void => {
            if (options.ackAfterIdle) acknowledge();
            socket.write(request(1));
          };
          if (requestSent || !options.ackAfterIdle) acknowledge();
          if (!requestSent) setTimeout(sendRequest, options.idleMs ?? 0);
          requestSent = true;
        } else if (type === 0x1) {
          for (const field of decoder.decode(payload)) {
            if (field.name === ":status") httpStatus = Number(field.value);
            if (field.name === "grpc-status") grpcStatus = field.value;
            if (field.name === "grpc-message") grpcMessage = field.value;
          }
          if ((flags & 0x1) !== 0) {
            answered++;
            if (answered < (options.calls ?? 1)) {
              socket.write(request(2 * answered + 1));
            } else {
              clearTimeout(timer);
              finish();
            }
          }
        } else if (type === 0x0) {
          body = Buffer.concat([body, payload]);
        } else if (type === 0x3) {
          resetCode = payload.readUInt32BE(0);
          clearTimeout(timer);
          finish();
        } else if (type === 0x7) {
          goAwayCode = payload.readUInt32BE(4);
          clearTimeout(timer);
          finish();
        }
      }
    });
    socket.on("error", (error) => {
      clearTimeout(timer);
      if (!done) reject(error);
    });
    socket.on("close", () => {
      clearTimeout(timer);
      finish();
    });
  });
}

export function header(name: string, value: string): HeaderField {
  return { name, value, neverIndex: false };
}
