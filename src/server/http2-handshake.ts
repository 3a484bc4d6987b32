/**
 * How a client connection reaches grpc-js: the socket itself, or through the `:authority` normalizer
 * (http2-authority.ts), decided by the client's first request.
 *
 * Why: reading a connection through the normalizer, a JavaScript stream in front of Node's HTTP/2
 * session, cost the driver about 10 ms of CPU per call in the VM (60 CreateVolume calls back to back,
 * interleaved runs), and only clients that send an invalid `:authority` need it. But grpc-go clients send
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
 * A client that sends no request for {@link HANDSHAKE_WAIT_MS} goes to the normalizer too (it serves any
 * authority), so that an idle connection's pings are answered long before a client's keepalive gives up
 * (grpc-go pings after 10 s at the earliest).
 */
import type { Socket } from "node:net";

import { HpackDecoder } from "./hpack.js";
import { decodeHeaderBlock, normalizeAuthority } from "./http2-authority.js";
import {
  CLIENT_PREFACE,
  DEFAULT_MAX_FRAME_SIZE,
  FRAME_HEADER_LENGTH,
  FRAME_CONTINUATION,
  FRAME_HEADERS,
  FRAME_PUSH_PROMISE,
  FRAME_SETTINGS,
  type FrameHeader,
  frameHeader,
  HeaderBlockAssembler,
  Http2RewriteError,
  isSettingsAck,
  MAX_HEADER_BLOCK,
  readFrameHeader,
} from "./http2-frames.js";

/** The server's connection preface as this module sends it: a SETTINGS frame that sets nothing. */
export const EMPTY_SETTINGS = frameHeader(0, FRAME_SETTINGS, 0, 0);

/**
 * More than a client can send before it has to have read the server's SETTINGS: the largest header block
 * accepted, twice the initial flow-control window of data (65,535 bytes) and room for small frames.
 */
export const MAX_HANDSHAKE_BYTES = CLIENT_PREFACE.length + MAX_HEADER_BLOCK + 2 * 65_535 + 64 * 1024;

/** How long a connection may wait for its first request before it is served through the normalizer. */
export const HANDSHAKE_WAIT_MS = 2_000;

export interface HandshakeOutcome {
  /**
   * `native`: the first request's `:authority` is valid, or the client does not speak HTTP/2 with prior
   * knowledge (the session refuses it as it would have); `normalize`: it must be rewritten, or no request
   * came in time.
   */
  readonly route: "native" | "normalize";
  /** The client's bytes so far, less its ACK of the handshake's SETTINGS: the session reads them first. */
  readonly received: Buffer;
  /** The client has not acknowledged the handshake's SETTINGS yet (only when no request came in time). */
  readonly settingsAckOwed: boolean;
}

/** Reads a client's bytes up to the point where the route is known. */
export class HandshakeReader {
  /** Every chunk received, kept as received and joined once, when the route is known. */
  private readonly chunks: Buffer[] = [];
  /** The bytes not parsed yet (a partial frame at most) and where they start in the whole. */
  private unparsed: Buffer = Buffer.alloc(0);
  private unparsedAt = 0;
  private prefaceRead = false;
  private ack: { start: number; end: number } | undefined;
  private authorityValid: boolean | undefined;
  private readonly blocks = new HeaderBlockAssembler();

  /** Feeds the client's bytes in order; the outcome once known. Throws Http2RewriteError on invalid HTTP/2. */
  push(chunk: Buffer): HandshakeOutcome | undefined {
    this.chunks.push(chunk);
    this.unparsed = this.unparsed.length === 0 ? chunk : Buffer.concat([this.unparsed, chunk]);
    if (!this.prefaceRead) {
      const seen = Math.min(this.unparsed.length, CLIENT_PREFACE.length);
      if (!this.unparsed.subarray(0, seen).equals(CLIENT_PREFACE.subarray(0, seen))) {
        return { route: "native", received: Buffer.concat(this.chunks), settingsAckOwed: false };
      }
      if (seen < CLIENT_PREFACE.length) return undefined;
      this.prefaceRead = true;
      this.consume(CLIENT_PREFACE.length);
    }
    while (this.unparsed.length >= FRAME_HEADER_LENGTH) {
      const frame = readFrameHeader(this.unparsed);
      // Nothing larger is allowed before the server announces more, which the session has not done yet.
      if (frame.length > DEFAULT_MAX_FRAME_SIZE) {
        throw new Http2RewriteError(`a frame of ${frame.length} bytes exceeds ${DEFAULT_MAX_FRAME_SIZE}`);
      }
      const size = FRAME_HEADER_LENGTH + frame.length;
      if (this.unparsed.length < size) break;
      this.readFrame(frame, this.unparsed.subarray(FRAME_HEADER_LENGTH, size));
      this.consume(size);
      if (this.authorityValid !== undefined && this.ack !== undefined) {
        return this.outcome(this.authorityValid ? "native" : "normalize");
      }
    }
    if (this.unparsedAt + this.unparsed.length > MAX_HANDSHAKE_BYTES) {
      throw new Http2RewriteError(
        `the client sent ${this.unparsedAt + this.unparsed.length} bytes without both acknowledging the server's SETTINGS and completing its first request's headers`,
      );
    }
    return undefined;
  }

  /** The outcome when the client has not finished its handshake in time: the normalizer serves any. */
  giveUp(): HandshakeOutcome {
    return this.outcome("normalize");
  }

  private outcome(route: HandshakeOutcome["route"]): HandshakeOutcome {
    const all = Buffer.concat(this.chunks);
    const received =
      this.ack === undefined
        ? all
        : Buffer.concat([all.subarray(0, this.ack.start), all.subarray(this.ack.end)]);
    return { route, received, settingsAckOwed: this.ack === undefined };
  }

  private consume(length: number): void {
    this.unparsed = this.unparsed.subarray(length);
    this.unparsedAt += length;
  }

  private readFrame(frame: FrameHeader, payload: Buffer): void {
    this.blocks.checkNext(frame.type);
    if (this.ack === undefined && isSettingsAck(frame)) {
      this.ack = { start: this.unparsedAt, end: this.unparsedAt + FRAME_HEADER_LENGTH };
      return;
    }
    // After the first request's headers, the rest is the session's to read and check.
    if (this.authorityValid !== undefined) return;
    if (frame.type === FRAME_PUSH_PROMISE) throw new Http2RewriteError("a client sent PUSH_PROMISE");
    if (frame.type !== FRAME_HEADERS && frame.type !== FRAME_CONTINUATION) return;
    const block = this.blocks.add(frame, payload);
    if (block === undefined) return;
    const fields = decodeHeaderBlock(new HpackDecoder(), block.block);
    this.authorityValid = normalizeAuthority(fields).rewrites.length === 0;
  }
}

export interface ConnectionRoutes {
  /** The session may read the socket itself (what the handshake read is back on the socket). */
  native(socket: Socket): void;
  /** The connection needs the normalizer, which must read `received` before the socket. */
  normalize(socket: Socket, received: Buffer, settingsAckOwed: boolean): void;
  /** The client sent invalid HTTP/2 during the handshake; the socket is destroyed. */
  protocolError(error: Http2RewriteError): void;
}

/** Sends the empty SETTINGS, reads the client's handshake and hands the socket on by its outcome. */
export function routeConnection(
  socket: Socket,
  routes: ConnectionRoutes,
  waitMs: number = HANDSHAKE_WAIT_MS,
): void {
  const reader = new HandshakeReader();
  const stop = (): void => {
    clearTimeout(timer);
    socket.off("data", onData);
    socket.off("error", onError);
    socket.off("close", onClose);
  };
  const route = (outcome: HandshakeOutcome): void => {
    stop();
    socket.pause();
    if (outcome.route === "normalize") {
      routes.normalize(socket, outcome.received, outcome.settingsAckOwed);
      return;
    }
    if (outcome.received.length > 0) socket.unshift(outcome.received);
    routes.native(socket);
  };
  const onData = (chunk: Buffer): void => {
    let outcome: HandshakeOutcome | undefined;
    try {
      outcome = reader.push(chunk);
    } catch (error) {
      stop();
      if (error instanceof Http2RewriteError) routes.protocolError(error);
      socket.destroy();
      return;
    }
    if (outcome !== undefined) route(outcome);
  };
  const onError = (): void => {
    stop();
    socket.destroy();
  };
  const onClose = (): void => stop();
  const timer = setTimeout(() => route(reader.giveUp()), waitMs);
  socket.on("error", onError);
  socket.on("close", onClose);
  socket.on("data", onData);
  socket.write(EMPTY_SETTINGS);
}
