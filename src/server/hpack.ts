/**
 * HPACK (RFC 7541): a complete decoder and a minimal encoder, for the `:authority` normalizer in
 * http2-authority.ts. The decoder must follow the client's dynamic table exactly, so it implements the
 * whole RFC (static and dynamic tables, eviction, size updates, Huffman); the encoder never indexes, so
 * the server's table stays empty and needs no bookkeeping.
 */

export class HpackError extends Error {
  override readonly name = "HpackError";
}

export interface HeaderField {
  /** Raw octets, lower-case for HTTP/2. */
  readonly name: string;
  readonly value: string;
  /** Sent as "never indexed" (sensitive); kept so a proxy does not weaken the client's choice. */
  readonly neverIndex: boolean;
}

/** RFC 7541 Appendix A. Index 1 is the first entry. */
const STATIC_TABLE: ReadonlyArray<readonly [string, string]> = [
  [":authority", ""],
  [":method", "GET"],
  [":method", "POST"],
  [":path", "/"],
  [":path", "/index.html"],
  [":scheme", "http"],
  [":scheme", "https"],
  [":status", "200"],
  [":status", "204"],
  [":status", "206"],
  [":status", "304"],
  [":status", "400"],
  [":status", "404"],
  [":status", "500"],
  ["accept-charset", ""],
  ["accept-encoding", "gzip, deflate"],
  ["accept-language", ""],
  ["accept-ranges", ""],
  ["accept", ""],
  ["access-control-allow-origin", ""],
  ["age", ""],
  ["allow", ""],
  ["authorization", ""],
  ["cache-control", ""],
  ["content-disposition", ""],
  ["content-encoding", ""],
  ["content-language", ""],
  ["content-length", ""],
  ["content-location", ""],
  ["content-range", ""],
  ["content-type", ""],
  ["cookie", ""],
  ["date", ""],
  ["etag", ""],
  ["expect", ""],
  ["expires", ""],
  ["from", ""],
  ["host", ""],
  ["if-match", ""],
  ["if-modified-since", ""],
  ["if-none-match", ""],
  ["if-range", ""],
  ["if-unmodified-since", ""],
  ["last-modified", ""],
  ["link", ""],
  ["location", ""],
  ["max-forwards", ""],
  ["proxy-authenticate", ""],
  ["proxy-authorization", ""],
  ["range", ""],
  ["referer", ""],
  ["refresh", ""],
  ["retry-after", ""],
  ["server", ""],
  ["set-cookie", ""],
  ["strict-transport-security", ""],
  ["transfer-encoding", ""],
  ["user-agent", ""],
  ["vary", ""],
  ["via", ""],
  ["www-authenticate", ""],
];

/**
 * RFC 7541 Appendix B code lengths for symbols 0..255 and EOS (256). The code is canonical (codes are
 * assigned in order of length, then symbol), so the lengths determine every code; the unit tests check
 * the RFC's Huffman examples and a round trip through Node's own nghttp2 encoder.
 */
export const HUFFMAN_CODE_LENGTHS: readonly number[] = [
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28,
  28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7,
  8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19,
  13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13,
  28, 20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21,
  22, 23, 22, 23, 23, 24, 22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23,
  22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
  19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25,
  25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

const EOS_SYMBOL = 256;
const MAX_CODE_LENGTH = 30;

interface CanonicalHuffman {
  /** Symbols sorted by (code length, symbol). */
  readonly symbols: readonly number[];
  /** Per length: the first code of that length, the number of codes, and where they start in `symbols`. */
  readonly firstCode: readonly number[];
  readonly count: readonly number[];
  readonly offset: readonly number[];
  /** Per symbol: its code (for the tests and for completeness). */
  readonly codes: readonly number[];
}

function buildCanonicalHuffman(lengths: readonly number[]): CanonicalHuffman {
  const symbols = lengths
    .map((length, symbol) => ({ length, symbol }))
    .sort((a, b) => a.length - b.length || a.symbol - b.symbol);
  const firstCode = new Array<number>(MAX_CODE_LENGTH + 1).fill(0);
  const count = new Array<number>(MAX_CODE_LENGTH + 1).fill(0);
  const offset = new Array<number>(MAX_CODE_LENGTH + 1).fill(0);
  const codes = new Array<number>(lengths.length).fill(0);
  let code = 0;
  let previousLength = 0;
  symbols.forEach(({ length, symbol }, index) => {
    code *= 2 ** (length - previousLength);
    if (length !== previousLength) {
      firstCode[length] = code;
      offset[length] = index;
      previousLength = length;
    }
    count[length] = (count[length] ?? 0) + 1;
    codes[symbol] = code;
    code += 1;
  });
  return { symbols: symbols.map((entry) => entry.symbol), firstCode, count, offset, codes };
}

const HUFFMAN = buildCanonicalHuffman(HUFFMAN_CODE_LENGTHS);

/** The Huffman code of each symbol (0..256), derived from the lengths; exported for the tests. */
export const HUFFMAN_CODES: readonly number[] = HUFFMAN.codes;

export function huffmanDecode(input: Uint8Array): Buffer {
  const output: number[] = [];
  let code = 0;
  let length = 0;
  for (const byte of input) {
    for (let bit = 7; bit >= 0; bit--) {
      code = code * 2 + ((byte >> bit) & 1);
      length += 1;
      const countAtLength = HUFFMAN.count[length] ?? 0;
      const first = HUFFMAN.firstCode[length] ?? 0;
      if (countAtLength > 0 && code >= first && code - first < countAtLength) {
        const symbol = HUFFMAN.symbols[(HUFFMAN.offset[length] ?? 0) + code - first] as number;
        if (symbol === EOS_SYMBOL) {
          throw new HpackError("Huffman string contains EOS");
        }
        output.push(symbol);
        code = 0;
        length = 0;
      } else if (length >= MAX_CODE_LENGTH) {
        throw new HpackError("invalid Huffman code");
      }
    }
  }
  // Padding: fewer than 8 bits, all ones (a prefix of EOS).
  if (length > 7 || code !== 2 ** length - 1) {
    throw new HpackError("invalid Huffman padding");
  }
  return Buffer.from(output);
}

export function huffmanEncode(input: Uint8Array): Buffer {
  const output: number[] = [];
  let accumulator = 0;
  let bits = 0;
  for (const byte of input) {
    const length = HUFFMAN_CODE_LENGTHS[byte] as number;
    const code = HUFFMAN.codes[byte] as number;
    for (let bit = length - 1; bit >= 0; bit--) {
      accumulator = (accumulator << 1) | (Math.floor(code / 2 ** bit) & 1);
      bits += 1;
      if (bits === 8) {
        output.push(accumulator);
        accumulator = 0;
        bits = 0;
      }
    }
  }
  if (bits > 0) {
    output.push(((accumulator << (8 - bits)) | ((1 << (8 - bits)) - 1)) & 0xff);
  }
  return Buffer.from(output);
}

/** Header names and values are octets; latin1 maps them 1:1 to string code units and back. */
const OCTETS = "latin1";

class BlockReader {
  private position = 0;

  constructor(private readonly block: Buffer) {}

  get done(): boolean {
    return this.position >= this.block.length;
  }

  peek(): number {
    if (this.done) {
      throw new HpackError("header block truncated");
    }
    return this.block[this.position] as number;
  }

  /** RFC 7541 5.1 integer with an N-bit prefix. */
  integer(prefixBits: number): number {
    const max = (1 << prefixBits) - 1;
    let value = this.peek() & max;
    this.position += 1;
    if (value < max) {
      return value;
    }
    let shift = 0;
    for (;;) {
      const byte = this.peek();
      this.position += 1;
      value += (byte & 0x7f) * 2 ** shift;
      shift += 7;
      if ((byte & 0x80) === 0) {
        return value;
      }
      if (shift > 28) {
        throw new HpackError("integer too large");
      }
    }
  }

  /** RFC 7541 5.2 string literal. */
  string(): string {
    const huffman = (this.peek() & 0x80) !== 0;
    const length = this.integer(7);
    if (this.position + length > this.block.length) {
      throw new HpackError("string literal runs past the header block");
    }
    const raw = this.block.subarray(this.position, this.position + length);
    this.position += length;
    return (huffman ? huffmanDecode(raw) : raw).toString(OCTETS);
  }
}

/** Size of a table entry: name and value octets plus 32 (RFC 7541 4.1). */
function entrySize(name: string, value: string): number {
  return name.length + value.length + 32;
}

export class HpackDecoder {
  /** Newest first. */
  private readonly dynamicTable: Array<readonly [string, string]> = [];
  private dynamicTableSize = 0;
  private maxTableSize: number;

  /**
   * @param maxTableSizeLimit the largest table size the peer may switch to. The encoder starts at
   *   4096 (the protocol default) and may only change it with a size update inside a header block.
   */
  constructor(private readonly maxTableSizeLimit = 65536) {
    this.maxTableSize = 4096;
  }

  get tableSize(): number {
    return this.dynamicTableSize;
  }

  decode(block: Buffer): HeaderField[] {
    const reader = new BlockReader(block);
    const fields: HeaderField[] = [];
    let sawField = false;
    while (!reader.done) {
      const first = reader.peek();
      if ((first & 0x80) !== 0) {
        // 6.1 Indexed header field.
        const index = reader.integer(7);
        const [name, value] = this.lookup(index);
        fields.push({ name, value, neverIndex: false });
        sawField = true;
      } else if ((first & 0xc0) === 0x40) {
        // 6.2.1 Literal with incremental indexing.
        const { name, value } = this.literal(reader, 6);
        this.insert(name, value);
        fields.push({ name, value, neverIndex: false });
        sawField = true;
      } else if ((first & 0xe0) === 0x20) {
        // 6.3 Dynamic table size update: only before the first field of a block.
        if (sawField) {
          throw new HpackError("dynamic table size update after a header field");
        }
        const size = reader.integer(5);
        if (size > this.maxTableSizeLimit) {
          throw new HpackError(
            `dynamic table size update to ${size} exceeds the limit ${this.maxTableSizeLimit}`,
          );
        }
        this.maxTableSize = size;
        this.evict(0);
      } else {
        // 6.2.2 Literal without indexing (0000xxxx), 6.2.3 never indexed (0001xxxx).
        const neverIndex = (first & 0xf0) === 0x10;
        const { name, value } = this.literal(reader, 4);
        fields.push({ name, value, neverIndex });
        sawField = true;
      }
    }
    return fields;
  }

  private literal(reader: BlockReader, prefixBits: number): { name: string; value: string } {
    const nameIndex = reader.integer(prefixBits);
    const name = nameIndex === 0 ? reader.string() : this.lookup(nameIndex)[0];
    const value = reader.string();
    return { name, value };
  }

  private lookup(index: number): readonly [string, string] {
    if (index === 0) {
      throw new HpackError("header index 0");
    }
    if (index <= STATIC_TABLE.length) {
      return STATIC_TABLE[index - 1] as readonly [string, string];
    }
    const entry = this.dynamicTable[index - STATIC_TABLE.length - 1];
    if (entry === undefined) {
      throw new HpackError(`header index ${index} is not in the table`);
    }
    return entry;
  }

  private insert(name: string, value: string): void {
    const size = entrySize(name, value);
    // 4.4: an entry larger than the table empties it and is not added.
    this.evict(size);
    if (size <= this.maxTableSize) {
      this.dynamicTable.unshift([name, value]);
      this.dynamicTableSize += size;
    }
  }

  /** Evicts oldest entries until `incoming` more octets fit. */
  private evict(incoming: number): void {
    while (this.dynamicTable.length > 0 && this.dynamicTableSize + incoming > this.maxTableSize) {
      const [name, value] = this.dynamicTable.pop() as readonly [string, string];
      this.dynamicTableSize -= entrySize(name, value);
    }
  }
}

function encodeInteger(value: number, prefixBits: number, firstByteFlags: number, output: number[]): void {
  const max = (1 << prefixBits) - 1;
  if (value < max) {
    output.push(firstByteFlags | value);
    return;
  }
  output.push(firstByteFlags | max);
  let rest = value - max;
  while (rest >= 0x80) {
    output.push((rest % 0x80) | 0x80);
    rest = Math.floor(rest / 0x80);
  }
  output.push(rest);
}

function encodeString(text: string, output: number[]): void {
  const raw = Buffer.from(text, OCTETS);
  encodeInteger(raw.length, 7, 0x00, output);
  for (const byte of raw) {
    output.push(byte);
  }
}

/**
 * Encodes every field as a literal that is not indexed (never-indexed fields stay never-indexed) with
 * plain strings, so the receiver's dynamic table is never used.
 */
export function encodeWithoutIndexing(fields: readonly HeaderField[]): Buffer {
  const output: number[] = [];
  for (const field of fields) {
    output.push(field.neverIndex ? 0x10 : 0x00);
    encodeString(field.name, output);
    encodeString(field.value, output);
  }
  return Buffer.from(output);
}
