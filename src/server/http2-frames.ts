/** HTTP/2 framing (RFC 9113 sections 3.4, 4 and 6), shared by the connection handshake and the `:authority` normalizer. */

export const CLIENT_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
export const FRAME_HEADER_LENGTH = 9;
/** SETTINGS_MAX_FRAME_SIZE until a peer announces more, and the least it may announce. */
export const DEFAULT_MAX_FRAME_SIZE = 16384;
/** A header block larger than this is refused (Node's own limit on header lists is 64 KiB). */
export const MAX_HEADER_BLOCK = 256 * 1024;

export const FRAME_HEADERS = 0x1;
export const FRAME_SETTINGS = 0x4;
export const FRAME_PUSH_PROMISE = 0x5;
export const FRAME_CONTINUATION = 0x9;

export const FLAG_END_STREAM = 0x1;
/** On a SETTINGS frame. */
export const FLAG_ACK = 0x1;
export const FLAG_END_HEADERS = 0x4;
export const FLAG_PADDED = 0x8;
export const FLAG_PRIORITY = 0x20;

export interface FrameHeader {
  readonly length: number;
  readonly type: number;
  readonly flags: number;
  readonly streamId: number;
}

/** Thrown on bytes that are not valid HTTP/2: the connection should be closed, as the server would. */
export class Http2RewriteError extends Error {
  override readonly name = "Http2RewriteError";
}

export function readFrameHeader(bytes: Buffer, offset = 0): FrameHeader {
  return {
    length: bytes.readUIntBE(offset, 3),
    type: bytes[offset + 3] as number,
    flags: bytes[offset + 4] as number,
    streamId: bytes.readUInt32BE(offset + 5) & 0x7fffffff,
  };
}

/** An acknowledgement of SETTINGS, as a client sends it (empty, on the connection's stream 0). */
export function isSettingsAck(frame: FrameHeader): boolean {
  return (
    frame.type === FRAME_SETTINGS &&
    (frame.flags & FLAG_ACK) !== 0 &&
    frame.length === 0 &&
    frame.streamId === 0
  );
}

export function frameHeader(length: number, type: number, flags: number, streamId: number): Buffer {
  const header = Buffer.alloc(FRAME_HEADER_LENGTH);
  header.writeUIntBE(length, 0, 3);
  header[3] = type;
  header[4] = flags;
  header.writeUInt32BE(streamId & 0x7fffffff, 5);
  return header;
}

/** A HEADERS frame's payload without its padding: the priority fields (if flagged) and the block fragment. */
function headersPayload(flags: number, payload: Buffer): { priority: Buffer | undefined; fragment: Buffer } {
  let offset = 0;
  let padLength = 0;
  if ((flags & FLAG_PADDED) !== 0) {
    padLength = payload[0] ?? 0;
    offset = 1;
  }
  let priority: Buffer | undefined;
  if ((flags & FLAG_PRIORITY) !== 0) {
    priority = payload.subarray(offset, offset + 5);
    offset += 5;
  }
  if (offset + padLength > payload.length) {
    throw new Http2RewriteError("HEADERS padding longer than the frame");
  }
  return { priority, fragment: payload.subarray(offset, payload.length - padLength) };
}

/** A complete header block: a HEADERS frame's fields and the fragments of it and its CONTINUATION frames. */
export interface HeaderBlock {
  readonly streamId: number;
  readonly endStream: boolean;
  readonly priority: Buffer | undefined;
  readonly block: Buffer;
}

/** Collects header blocks frame by frame; no other frame may come between a HEADERS and its CONTINUATIONs. */
export class HeaderBlockAssembler {
  private pending:
    | {
        streamId: number;
        endStream: boolean;
        priority: Buffer | undefined;
        fragments: Buffer[];
        size: number;
      }
    | undefined;

  /** Throws when a frame of `type` would interrupt a block in progress. */
  checkNext(type: number): void {
    if (this.pending !== undefined && type !== FRAME_CONTINUATION) {
      throw new Http2RewriteError(`expected a CONTINUATION frame, got frame type ${type}`);
    }
  }

  /** Adds a HEADERS or CONTINUATION frame; returns the block once its END_HEADERS frame is in. */
  add({ type, flags, streamId }: FrameHeader, payload: Buffer): HeaderBlock | undefined {
    if (type === FRAME_HEADERS) {
      const { priority, fragment } = headersPayload(flags, payload);
      this.pending = {
        streamId,
        endStream: (flags & FLAG_END_STREAM) !== 0,
        priority,
        fragments: [fragment],
        size: fragment.length,
      };
    } else {
      if (this.pending === undefined || this.pending.streamId !== streamId) {
        throw new Http2RewriteError("CONTINUATION frame without a header block in progress on its stream");
      }
      this.pending.fragments.push(payload);
      this.pending.size += payload.length;
    }
    if (this.pending.size > MAX_HEADER_BLOCK) {
      throw new Http2RewriteError(`header block exceeds ${MAX_HEADER_BLOCK} bytes`);
    }
    if ((flags & FLAG_END_HEADERS) === 0) return undefined;
    const { streamId: id, endStream, priority, fragments } = this.pending;
    this.pending = undefined;
    return { streamId: id, endStream, priority, block: Buffer.concat(fragments) };
  }
}
