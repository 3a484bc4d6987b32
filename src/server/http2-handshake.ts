/**
 * How a client connection reaches grpc-js: the socket itself, or through the `:authority` normalizer
 * (http2-authority.ts), decided by the client's first request.
 *
 * Why: reading a connection through the normalizer, a JavaScript stream in front of Node's HTTP/2
 * session, cost the driver about 20 ms of CPU per call in the VM (60 CreateVolume calls back to back,
 * three rounds), and only clients that send an invalid `:authority` need it. But grpc-go clients send
 * nothing until they have the server's SETTINGS, and once the HTTP/2 session owns a socket it reads it
 * natively, out of this code's reach.
 *
 * How: on accept, this module sends the server's connection preface itself: a SETTINGS frame with no
 * parameters (it changes nothing; the session's own SETTINGS follow when it takes over, and a server may
 * send SETTINGS at any time). It then reads the client's bytes until both its first header block and its
 * ACK of that SETTINGS have arrived. The ACK is cut out: the session never sent that SETTINGS and would
 * take the ACK as a connection error. The other bytes go to the session unchanged and first (Node's
 * HTTP/2 session reads what is buffered on a socket before the socket itself). A valid first
 * `:authority` gives grpc-js the socket; an invalid or missing one, the normalizer, which rewrites the
 * connection to its end. A gRPC client sends its channel's one authority on every call of a connection.
 */
import type { Socket } from "node:net";

import { HpackDecoder, type HeaderField } from "./hpack.js";
import { MAX_HEADER_BLOCK, normalizeAuthority } from "./http2-authority.js";
import {
  CLIENT_PREFACE,
  FLAG_ACK,
  FLAG_END_HEADERS,
  FRAME_CONTINUATION,
  FRAME_HEADER_LENGTH,
  FRAME_HEADERS,
  FRAME_PUSH_PROMISE,
  FRAME_SETTINGS,
  type FrameHeader,
  frameHeader,
  headersPayload,
  Http2RewriteError,
  readFrameHeader,
} from "./http2-frames.js";

/** The server's connection preface as this module sends it: a SETTINGS frame that sets nothing. */
export const EMPTY_SETTINGS = frameHeader(0, FRAME_SETTINGS, 0, 0);

/**
 * More than a client can send before it has to have read the server's SETTINGS: the largest header block
 * accepted, twice the initial flow-control window of data (65,535 bytes) and room for small frames.
 */
export const MAX_HANDSHAKE_BYTES = CLIENT_PREFACE.length + MAX_HEADER_BLOCK + 2 * 65_535 + 64 * 1024;

export interface HandshakeOutcome {
  /**
   * `native`: the first request's `:authority` is valid, or the client does not speak HTTP/2 with prior
   * knowledge (the session refuses it as it would have); `normalize`: it must be rewritten.
   */
  readonly route: "native" | "normalize";
  /** The client's bytes so far, less its ACK of the handshake's SETTINGS: the session reads them first. */
  readonly received: Buffer;
}

/** Reads a client's bytes up to the point where the route is known. */
export class HandshakeReader {
  private received: Buffer = Buffer.alloc(0);
  /** Where the next frame starts in `received`; 0 until the client preface has been read. */
  private offset = 0;
  private ack: { start: number; end: number } | undefined;
  private authorityValid: boolean | undefined;
  private block: { streamId: number; fragments: Buffer[]; size: number } | undefined;

  /** Feeds the client's bytes in order; the outcome once known. Throws Http2RewriteError on invalid HTTP/2. */
  push(chunk: Buffer): HandshakeOutcome | undefined {
    this.received = this.received.length === 0 ? chunk : Buffer.concat([this.received, chunk]);
    if (this.offset === 0) {
      const seen = Math.min(this.received.length, CLIENT_PREFACE.length);
      if (!this.received.subarray(0, seen).equals(CLIENT_PREFACE.subarray(0, seen)))
        return { route: "native", received: this.received };
      if (seen < CLIENT_PREFACE.length) return undefined;
      this.offset = CLIENT_PREFACE.length;
    }
    while (this.received.length - this.offset >= FRAME_HEADER_LENGTH) {
      const frame = readFrameHeader(this.received, this.offset);
      const end = this.offset + FRAME_HEADER_LENGTH + frame.length;
      if (end > this.received.length) break;
      this.readFrame(frame, this.received.subarray(this.offset + FRAME_HEADER_LENGTH, end), end);
      this.offset = end;
      if (this.authorityValid !== undefined && this.ack !== undefined) {
        return {
          route: this.authorityValid ? "native" : "normalize",
          received: Buffer.concat([
            this.received.subarray(0, this.ack.start),
            this.received.subarray(this.ack.end),
          ]),
        };
      }
    }
    if (this.received.length > MAX_HANDSHAKE_BYTES) {
      throw new Http2RewriteError(
        `the client sent ${this.received.length} bytes without both acknowledging the server's SETTINGS and completing its first request's headers`,
      );
    }
    return undefined;
  }

  private readFrame(frame: FrameHeader, payload: Buffer, end: number): void {
    if (
      frame.type === FRAME_SETTINGS &&
      (frame.flags & FLAG_ACK) !== 0 &&
      frame.length === 0 &&
      this.ack === undefined
    ) {
      this.ack = { start: end - FRAME_HEADER_LENGTH, end };
      return;
    }
    // After the first request's headers, the rest is the session's to read and check.
    if (this.authorityValid !== undefined) return;
    if (this.block !== undefined && frame.type !== FRAME_CONTINUATION) {
      throw new Http2RewriteError(`expected a CONTINUATION frame, got frame type ${frame.type}`);
    }
    if (frame.type === FRAME_PUSH_PROMISE) throw new Http2RewriteError("a client sent PUSH_PROMISE");
    if (frame.type === FRAME_HEADERS) {
      const { fragment } = headersPayload(frame.flags, payload);
      this.block = { streamId: frame.streamId, fragments: [fragment], size: fragment.length };
    } else if (frame.type === FRAME_CONTINUATION) {
      if (this.block === undefined || this.block.streamId !== frame.streamId) {
        throw new Http2RewriteError("CONTINUATION frame without a header block in progress on its stream");
      }
      this.block.fragments.push(payload);
      this.block.size += payload.length;
    } else {
      return;
    }
    if (this.block.size > MAX_HEADER_BLOCK) {
      throw new Http2RewriteError(`header block exceeds ${MAX_HEADER_BLOCK} bytes`);
    }
    if ((frame.flags & FLAG_END_HEADERS) === 0) return;
    let fields: HeaderField[];
    try {
      fields = new HpackDecoder().decode(Buffer.concat(this.block.fragments));
    } catch (error) {
      throw new Http2RewriteError(`cannot decode a header block: ${(error as Error).message}`, {
        cause: error,
      });
    }
    this.authorityValid = normalizeAuthority(fields).rewrites.length === 0;
    this.block = undefined;
  }
}

export interface ConnectionRoutes {
  /** The session may read the socket itself (what the handshake read is back on the socket). */
  native(socket: Socket): void;
  /** The connection needs the normalizer, which must read `received` before the socket. */
  normalize(socket: Socket, received: Buffer): void;
  /** The client sent invalid HTTP/2 during the handshake; the socket is destroyed. */
  protocolError(error: Http2RewriteError): void;
}

/** Sends the empty SETTINGS, reads the client's handshake and hands the socket on by its outcome. */
export function routeConnection(socket: Socket, routes: ConnectionRoutes): void {
  const reader = new HandshakeReader();
  const onError = (): void => {
    socket.destroy();
  };
  const onData = (chunk: Buffer): void => {
    let outcome: HandshakeOutcome | undefined;
    try {
      outcome = reader.push(chunk);
    } catch (error) {
      if (error instanceof Http2RewriteError) routes.protocolError(error);
      socket.destroy();
      return;
    }
    if (outcome === undefined) return;
    socket.pause();
    socket.off("data", onData);
    socket.off("error", onError);
    if (outcome.route === "normalize") {
      routes.normalize(socket, outcome.received);
      return;
    }
    if (outcome.received.length > 0) socket.unshift(outcome.received);
    routes.native(socket);
  };
  socket.on("error", onError);
  socket.on("data", onData);
  socket.write(EMPTY_SETTINGS);
}
