/**
 * `:authority` normalization in front of grpc-js.
 *
 * Why: over unix sockets, grpc-go clients older than the fixes in kubernetes#112597 (kubelet's plugin
 * registration, older sidecars) and several other gRPC stacks send the socket path, or `unix:///path`,
 * as `:authority`. Node's HTTP/2 layer (nghttp2's HTTP messaging checks, which Node does not let a
 * server turn off) resets such a stream with PROTOCOL_ERROR before grpc-js sees it. The unit tests show
 * this against a bare grpc-js server.
 *
 * How: a connection whose first request has an invalid `:authority` (see http2-handshake.ts for how that
 * is found out) is read through {@link Http2HeaderRewriter}, which parses the client's HTTP/2 frames and
 * decodes every header block with a full HPACK decoder: an invalid authority is replaced with
 * `localhost`, and each block is re-encoded without indexing. Re-encoding every block (not only the bad
 * ones) keeps the client's and the server's HPACK tables from diverging.
 * Frames other than HEADERS/CONTINUATION pass through byte for byte; server-to-client bytes are not
 * touched. Nothing in this driver reads `:authority`, so the substitution changes no behaviour.
 */
import { Duplex } from "node:stream";
import type { Socket } from "node:net";

import { encodeWithoutIndexing, HpackDecoder, type HeaderField } from "./hpack.js";
import {
  CLIENT_PREFACE,
  DEFAULT_MAX_FRAME_SIZE,
  FLAG_END_HEADERS,
  FLAG_END_STREAM,
  FLAG_PRIORITY,
  FRAME_CONTINUATION,
  FRAME_HEADER_LENGTH,
  FRAME_HEADERS,
  FRAME_PUSH_PROMISE,
  frameHeader,
  type HeaderBlock,
  HeaderBlockAssembler,
  Http2RewriteError,
  isSettingsAck,
  readFrameHeader,
} from "./http2-frames.js";

export { CLIENT_PREFACE, Http2RewriteError };
export const REPLACEMENT_AUTHORITY = "localhost";

/**
 * RFC 3986 authority characters (unreserved, sub-delims, ':', '@', '[', ']', '%'), which is also what
 * nghttp2 accepts. An empty value is not accepted.
 */
export function isValidAuthority(value: string): boolean {
  return /^[A-Za-z0-9\-._~!$&'()*+,;=:@[\]%]+$/.test(value);
}

export interface AuthorityRewrite {
  readonly header: string;
  readonly from: string | undefined;
  readonly to: string;
}

/**
 * The request's header list with `:authority`/`host` made acceptable to Node's HTTP/2 server. A missing
 * `:authority` is added when there is no `host` either, as nghttp2 refuses such a request.
 */
export function normalizeAuthority(fields: readonly HeaderField[]): {
  fields: HeaderField[];
  rewrites: AuthorityRewrite[];
} {
  const rewrites: AuthorityRewrite[] = [];
  const result = fields.map((field) => {
    if ((field.name === ":authority" || field.name === "host") && !isValidAuthority(field.value)) {
      rewrites.push({ header: field.name, from: field.value, to: REPLACEMENT_AUTHORITY });
      return { ...field, value: REPLACEMENT_AUTHORITY };
    }
    return field;
  });
  const isRequest = result.some((field) => field.name === ":method");
  const hasAuthority = result.some((field) => field.name === ":authority" || field.name === "host");
  if (isRequest && !hasAuthority) {
    // Pseudo-headers must precede regular ones: insert after the last pseudo-header.
    let insertAt = 0;
    result.forEach((field, index) => {
      if (field.name.startsWith(":")) {
        insertAt = index + 1;
      }
    });
    result.splice(insertAt, 0, { name: ":authority", value: REPLACEMENT_AUTHORITY, neverIndex: false });
    rewrites.push({ header: ":authority", from: undefined, to: REPLACEMENT_AUTHORITY });
  }
  return { fields: result, rewrites };
}

type State =
  | { readonly kind: "preface" }
  | { readonly kind: "frame-header" }
  | { readonly kind: "pass-payload"; remaining: number }
  | {
      readonly kind: "header-payload";
      readonly type: number;
      readonly flags: number;
      readonly streamId: number;
      readonly length: number;
    }
  | { readonly kind: "pass-through" };

/**
 * Rewrites the client-to-server byte stream of one HTTP/2 connection. Feed it chunks in order; it
 * returns the bytes to forward. Throws {@link Http2RewriteError} on input that is not valid HTTP/2
 * (the connection should then be closed: the server would have closed it too).
 */
export class Http2HeaderRewriter {
  private state: State = { kind: "preface" };
  private buffered: Buffer = Buffer.alloc(0);
  /** Chunks of a header frame still incomplete, kept apart and joined once (not each copied onto the rest). */
  private readonly waiting: Buffer[] = [];
  private waitingBytes = 0;
  private readonly blocks = new HeaderBlockAssembler();
  private readonly decoder = new HpackDecoder();

  /**
   * `dropSettingsAck`: the client owes an ACK for a SETTINGS frame the server's session did not send (the
   * handshake's, see http2-handshake.ts); the first SETTINGS ACK is then not forwarded.
   */
  constructor(
    private readonly onRewrite: (rewrite: AuthorityRewrite) => void = () => undefined,
    private dropSettingsAck = false,
  ) {}

  push(chunk: Buffer): Buffer[] {
    const state = this.state;
    if (
      state.kind === "header-payload" &&
      this.buffered.length + this.waitingBytes + chunk.length < state.length
    ) {
      this.waiting.push(chunk);
      this.waitingBytes += chunk.length;
      return [];
    }
    if (this.buffered.length === 0 && this.waiting.length === 0) this.buffered = chunk;
    else this.buffered = Buffer.concat([this.buffered, ...this.waiting, chunk]);
    this.waiting.length = 0;
    this.waitingBytes = 0;
    return this.parse();
  }

  private parse(): Buffer[] {
    const output: Buffer[] = [];
    for (;;) {
      const state = this.state;
      switch (state.kind) {
        case "pass-through": {
          if (this.buffered.length > 0) {
            output.push(this.buffered);
            this.buffered = Buffer.alloc(0);
          }
          return output;
        }
        case "preface": {
          const seen = Math.min(this.buffered.length, CLIENT_PREFACE.length);
          if (!this.buffered.subarray(0, seen).equals(CLIENT_PREFACE.subarray(0, seen))) {
            // Not HTTP/2 with prior knowledge: let the server deal with (and reject) it unchanged.
            this.state = { kind: "pass-through" };
            continue;
          }
          if (seen < CLIENT_PREFACE.length) {
            return output;
          }
          output.push(this.take(CLIENT_PREFACE.length));
          this.state = { kind: "frame-header" };
          continue;
        }
        case "frame-header": {
          if (this.buffered.length < FRAME_HEADER_LENGTH) {
            return output;
          }
          const header = this.take(FRAME_HEADER_LENGTH);
          const { length, type, flags, streamId } = readFrameHeader(header);
          this.blocks.checkNext(type);
          if (this.dropSettingsAck && isSettingsAck({ length, type, flags, streamId })) {
            this.dropSettingsAck = false;
            continue;
          }
          if (type === FRAME_HEADERS || type === FRAME_CONTINUATION) {
            // grpc-js's session announces no larger frame size, so it would refuse this frame too; refused
            // from its header, its payload is never buffered (a chunk at a time, each copied onto the rest).
            if (length > DEFAULT_MAX_FRAME_SIZE) {
              throw new Http2RewriteError(
                `a header frame of ${length} bytes exceeds ${DEFAULT_MAX_FRAME_SIZE}`,
              );
            }
            this.state = { kind: "header-payload", type, flags, streamId, length };
          } else {
            if (type === FRAME_PUSH_PROMISE) {
              // Clients must not push; the server answers with a connection error. Stop parsing, as
              // the HPACK state can no longer be followed.
              output.push(header);
              this.state = { kind: "pass-through" };
              continue;
            }
            output.push(header);
            this.state = { kind: "pass-payload", remaining: length };
          }
          continue;
        }
        case "pass-payload": {
          if (state.remaining === 0) {
            this.state = { kind: "frame-header" };
            continue;
          }
          if (this.buffered.length === 0) {
            return output;
          }
          const part = this.take(Math.min(state.remaining, this.buffered.length));
          state.remaining -= part.length;
          output.push(part);
          continue;
        }
        case "header-payload": {
          if (this.buffered.length < state.length) {
            return output;
          }
          const payload = this.take(state.length);
          this.state = { kind: "frame-header" };
          const block = this.blocks.add(state, payload);
          if (block !== undefined) output.push(...this.rewrite(block));
          continue;
        }
      }
    }
  }

  private take(length: number): Buffer {
    const taken = this.buffered.subarray(0, length);
    this.buffered = this.buffered.subarray(length);
    return taken;
  }

  /** The block normalized and re-encoded, as frames. */
  private rewrite({ streamId, endStream, priority, block }: HeaderBlock): Buffer[] {
    const fields = decodeHeaderBlock(this.decoder, block);
    const normalized = normalizeAuthority(fields);
    for (const rewrite of normalized.rewrites) {
      this.onRewrite(rewrite);
    }
    return frameHeaderBlock(streamId, endStream, priority, encodeWithoutIndexing(normalized.fields));
  }
}

/** A header block's fields; a block HPACK cannot decode is a protocol error. */
export function decodeHeaderBlock(decoder: HpackDecoder, block: Buffer): HeaderField[] {
  try {
    return decoder.decode(block);
  } catch (error) {
    throw new Http2RewriteError(`cannot decode a header block: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

/** HEADERS (+ CONTINUATION) frames carrying `block`, each within the minimum frame size. */
function frameHeaderBlock(
  streamId: number,
  endStream: boolean,
  priority: Buffer | undefined,
  block: Buffer,
): Buffer[] {
  const frames: Buffer[] = [];
  const firstCapacity = DEFAULT_MAX_FRAME_SIZE - (priority?.length ?? 0);
  let offset = Math.min(block.length, firstCapacity);
  const first = block.subarray(0, offset);
  let flags = (endStream ? FLAG_END_STREAM : 0) | (priority === undefined ? 0 : FLAG_PRIORITY);
  if (offset === block.length) {
    flags |= FLAG_END_HEADERS;
  }
  const firstPayload = priority === undefined ? first : Buffer.concat([priority, first]);
  frames.push(frameHeader(firstPayload.length, FRAME_HEADERS, flags, streamId), firstPayload);
  while (offset < block.length) {
    const next = block.subarray(offset, offset + DEFAULT_MAX_FRAME_SIZE);
    offset += next.length;
    const continuationFlags = offset === block.length ? FLAG_END_HEADERS : 0;
    frames.push(frameHeader(next.length, FRAME_CONTINUATION, continuationFlags, streamId), next);
  }
  return frames;
}

/**
 * A client socket as the server's side sees it: reads come through {@link Http2HeaderRewriter}, writes
 * go to the socket unchanged. Given to grpc-js through its connection injector.
 */
export class AuthorityNormalizingConnection extends Duplex {
  private readonly rewriter: Http2HeaderRewriter;

  /**
   * `received`: what the handshake already read from the socket (from the client preface on);
   * `settingsAckOwed`: the client has yet to acknowledge the handshake's SETTINGS.
   */
  constructor(
    private readonly socket: Socket,
    received: Buffer,
    settingsAckOwed: boolean,
    onRewrite?: (rewrite: AuthorityRewrite) => void,
    private readonly onProtocolError?: (error: Http2RewriteError) => void,
  ) {
    super({ allowHalfOpen: false });
    this.rewriter = new Http2HeaderRewriter(onRewrite, settingsAckOwed);
    socket.on("data", (chunk: Buffer) => this.receive(chunk));
    socket.on("end", () => this.push(null));
    socket.on("error", (error) => this.destroy(error));
    socket.on("close", () => {
      if (!this.destroyed) {
        this.destroy();
      }
    });
    if (received.length > 0) this.receive(received);
  }

  private receive(chunk: Buffer): void {
    let output: Buffer[];
    try {
      output = this.rewriter.push(chunk);
    } catch (error) {
      if (error instanceof Http2RewriteError) {
        this.onProtocolError?.(error);
      }
      this.destroy(error instanceof Error ? error : new Error(String(error)));
      return;
    }
    for (const part of output) {
      if (!this.push(part)) {
        this.socket.pause();
      }
    }
  }

  override _read(): void {
    this.socket.resume();
  }

  override _write(chunk: Buffer, encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.socket.write(chunk, encoding, callback);
  }

  /**
   * Node's HTTP/2 session corks this stream around the frames of one flush (a reply's HEADERS, DATA and
   * trailers): written together here, they leave in one `writev` instead of one write, and one turn of
   * the event loop, each.
   */
  override _writev(
    chunks: Array<{ chunk: Buffer; encoding: BufferEncoding }>,
    callback: (error?: Error | null) => void,
  ): void {
    this.socket.cork();
    chunks.forEach(({ chunk }, index) =>
      this.socket.write(chunk, index === chunks.length - 1 ? callback : undefined),
    );
    this.socket.uncork();
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.socket.end(callback);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.socket.destroy();
    callback(error);
  }
}
