import assert from "node:assert/strict";

import {
  encodeWithoutIndexing,
  HpackDecoder,
  HpackError,
  HUFFMAN_CODE_LENGTHS,
  HUFFMAN_CODES,
  huffmanDecode,
  huffmanEncode,
} from "../../../src/server/hpack.js";

const hex = (text: string): Buffer => Buffer.from(text.replace(/\s+/g, ""), "hex");
const pairs = (fields: ReadonlyArray<{ name: string; value: string }>): Array<[string, string]> =>
  fields.map((field) => [field.name, field.value]);

describe("HPACK", () => {
  describe("Huffman code (RFC 7541 Appendix B)", () => {
    it("is a complete prefix code over 257 symbols (Kraft sum exactly 1)", () => {
      assert.equal(HUFFMAN_CODE_LENGTHS.length, 257);
      const kraft = HUFFMAN_CODE_LENGTHS.reduce((sum, length) => sum + 2 ** -length, 0);
      assert.equal(kraft, 1);
    });

    it("assigns the RFC's codes to sample symbols", () => {
      // From the RFC table: ' ' (32) = 010100 [6], '0' (48) = 00000 [5], 'a' (97) = 00011 [5],
      // 0 = 1111111111000 [13], EOS (256) = 30 ones.
      assert.equal(HUFFMAN_CODES[32], 0b010100);
      assert.equal(HUFFMAN_CODES[48], 0b00000);
      assert.equal(HUFFMAN_CODES[97], 0b00011);
      assert.equal(HUFFMAN_CODES[0], 0x1ff8);
      assert.equal(HUFFMAN_CODES[256], 0x3fffffff);
    });

    it("encodes and decodes the RFC C.4 examples", () => {
      const examples: Array<[string, string]> = [
        ["www.example.com", "f1e3 c2e5 f23a 6ba0 ab90 f4ff"],
        ["no-cache", "a8eb 1064 9cbf"],
        ["custom-key", "25a8 49e9 5ba9 7d7f"],
        ["custom-value", "25a8 49e9 5bb8 e8b4 bf"],
      ];
      for (const [text, encoded] of examples) {
        assert.deepEqual(huffmanEncode(Buffer.from(text, "latin1")), hex(encoded), text);
        assert.equal(huffmanDecode(hex(encoded)).toString("latin1"), text);
      }
    });

    it("round-trips every octet value", () => {
      const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
      assert.deepEqual(huffmanDecode(huffmanEncode(all)), all);
    });

    it("refuses padding longer than 7 bits and padding that is not all ones", () => {
      // 'a' (00011) followed by a whole byte of ones: 8+ bits of padding.
      assert.throws(() => huffmanDecode(hex("1f ff")), HpackError);
      // 'a' (00011) + padding 000: padding must be ones.
      assert.throws(() => huffmanDecode(hex("18")), HpackError);
    });
  });

  describe("decoder", () => {
    it("decodes the RFC C.3 request sequence (no Huffman) with its dynamic table", () => {
      const decoder = new HpackDecoder();
      assert.deepEqual(pairs(decoder.decode(hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"))), [
        [":method", "GET"],
        [":scheme", "http"],
        [":path", "/"],
        [":authority", "www.example.com"],
      ]);
      assert.equal(decoder.tableSize, 57);
      assert.deepEqual(pairs(decoder.decode(hex("8286 84be 5808 6e6f 2d63 6163 6865"))), [
        [":method", "GET"],
        [":scheme", "http"],
        [":path", "/"],
        [":authority", "www.example.com"],
        ["cache-control", "no-cache"],
      ]);
      assert.equal(decoder.tableSize, 110);
      assert.deepEqual(
        pairs(
          decoder.decode(hex("8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65")),
        ),
        [
          [":method", "GET"],
          [":scheme", "https"],
          [":path", "/index.html"],
          [":authority", "www.example.com"],
          ["custom-key", "custom-value"],
        ],
      );
      assert.equal(decoder.tableSize, 164);
    });

    it("decodes the RFC C.4 request sequence (Huffman)", () => {
      const decoder = new HpackDecoder();
      assert.deepEqual(pairs(decoder.decode(hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"))).at(-1), [
        ":authority",
        "www.example.com",
      ]);
      assert.deepEqual(pairs(decoder.decode(hex("8286 84be 5886 a8eb 1064 9cbf"))).at(-1), [
        "cache-control",
        "no-cache",
      ]);
      assert.deepEqual(
        pairs(decoder.decode(hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"))).at(-1),
        ["custom-key", "custom-value"],
      );
      assert.equal(decoder.tableSize, 164);
    });

    it("evicts the oldest entries when the table is full, and empties it on a size update to 0", () => {
      const decoder = new HpackDecoder();
      // Size update to 100, then two literal-with-indexing entries of 32 + 1 + 40 = 73 octets each.
      const value = "v".repeat(40);
      const literal = (name: string): Buffer =>
        Buffer.concat([
          Buffer.from([0x40, name.length]),
          Buffer.from(name),
          Buffer.from([value.length]),
          Buffer.from(value),
        ]);
      decoder.decode(Buffer.concat([Buffer.from([0x3f, 0x45]), literal("a")])); // 31 + 0x45 = 100
      assert.equal(decoder.tableSize, 73);
      decoder.decode(literal("b"));
      assert.equal(decoder.tableSize, 73, "'a' was evicted to make room for 'b'");
      assert.deepEqual(pairs(decoder.decode(Buffer.from([0xbe]))), [["b", value]]);
      decoder.decode(Buffer.from([0x20]));
      assert.equal(decoder.tableSize, 0);
      assert.throws(() => decoder.decode(Buffer.from([0xbe])), /not in the table/);
    });

    it("keeps the never-indexed flag", () => {
      const decoder = new HpackDecoder();
      const [field] = decoder.decode(hex("1008 7061 7373 776f 7264 0673 6563 7265 74"));
      assert.deepEqual(field, { name: "password", value: "secret", neverIndex: true });
    });

    it("refuses a size update after a field, one above the limit, index 0 and truncated blocks", () => {
      assert.throws(() => new HpackDecoder().decode(Buffer.from([0x82, 0x20])), /after a header field/);
      assert.throws(
        () => new HpackDecoder(4096).decode(Buffer.from([0x3f, 0xe2, 0x1f])),
        /exceeds the limit/,
      );
      assert.throws(() => new HpackDecoder().decode(Buffer.from([0x80])), /index 0/);
      assert.throws(() => new HpackDecoder().decode(Buffer.from([0x00, 0x05, 0x61])), /runs past/);
    });
  });

  describe("encoder", () => {
    it("produces blocks that decode to the same fields and leave the receiver's table empty", () => {
      const fields = [
        { name: ":method", value: "POST", neverIndex: false },
        { name: "x-long", value: "y".repeat(300), neverIndex: false },
        { name: "authorization", value: "secret", neverIndex: true },
      ];
      const decoder = new HpackDecoder();
      assert.deepEqual(decoder.decode(encodeWithoutIndexing(fields)), fields);
      assert.equal(decoder.tableSize, 0);
    });
  });
});
