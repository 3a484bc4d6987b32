/**
 * The request checks the hostile-input suite (test/e2e/suites/hostile-input.test.ts) drove into the
 * driver, on the host: CSI size limits, capacity ranges, names, mount flags and kubelet paths.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { capabilityProblem, requireName } from "../../../src/csi/capabilities.js";
import { maxSizeBytes, parseCapacityRange } from "../../../src/csi/capacity-range.js";
import { CsiError } from "../../../src/csi/errors.js";
import { FieldLimits } from "../../../src/csi/field-limits.js";
import type { VolumeCapability__Output } from "../../../src/generated/csi/v1/VolumeCapability.js";
import { checkPathUnder } from "../../../src/node/host-paths.js";

const code = (fn: () => unknown): string => {
  try {
    fn();
    return "OK";
  } catch (err) {
    assert.ok(err instanceof CsiError, String(err));
    return status[err.code] as string;
  }
};

describe("hostile request fields", () => {
  it("FieldLimits: 128-byte strings, 4 KiB maps, paths exempt, nested messages walked", () => {
    const limits = new FieldLimits();
    const create = "/csi.v1.Controller/CreateVolume";
    assert.equal(limits.problem(create, { name: "n".repeat(128) }), undefined);
    assert.match(limits.problem(create, { name: "n".repeat(129) }) ?? "", /^name is 129 bytes/);
    assert.match(limits.problem(create, { name: "€".repeat(43) }) ?? "", /129 bytes/);
    const big = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`k${i}`, "v".repeat(100)]));
    assert.match(limits.problem(create, { name: "n", secrets: big }) ?? "", /^secrets holds \d+ bytes/);
    assert.equal(
      limits.problem(create, { name: "n", parameters: { "csi.storage.k8s.io/pvc/name": "p".repeat(253) } }),
      undefined,
    );
    assert.match(
      limits.problem(create, {
        name: "n",
        volume_capabilities: [{ mount: { mount_flags: ["ok", "f".repeat(129)] } }],
      }) ?? "",
      /^volume_capabilities\.mount\.mount_flags is 129 bytes/,
    );
    assert.match(
      limits.problem(create, {
        name: "n",
        volume_content_source: { snapshot: { snapshot_id: "s".repeat(200) } },
      }) ?? "",
      /volume_content_source\.snapshot\.snapshot_id/,
    );
    const publish = "/csi.v1.Node/NodePublishVolume";
    assert.equal(limits.problem(publish, { volume_id: "v", target_path: `/${"p".repeat(3000)}` }), undefined);
    assert.equal(
      limits.problem("/csi.v1.Controller/ControllerPublishVolume", { node_id: "n".repeat(256) }),
      undefined,
    );
    assert.equal(limits.problem("/no.Such/Method", { name: "n".repeat(999) }), undefined);
  });

  it("parseCapacityRange: negative and inverted are INVALID_ARGUMENT, unrepresentable OUT_OF_RANGE, huge limits no bound", () => {
    const max = maxSizeBytes(65536);
    assert.ok(max <= Number.MAX_SAFE_INTEGER && max % 65536 === 0);
    assert.deepEqual(parseCapacityRange(null, max), {});
    assert.deepEqual(parseCapacityRange({ required_bytes: "0", limit_bytes: "0" }, max), {});
    assert.deepEqual(parseCapacityRange({ required_bytes: "8", limit_bytes: "9223372036854775807" }, max), {
      required: 8,
    });
    assert.equal(
      code(() => parseCapacityRange({ required_bytes: "-1", limit_bytes: "0" }, max)),
      "INVALID_ARGUMENT",
    );
    assert.equal(
      code(() => parseCapacityRange({ required_bytes: "0", limit_bytes: "-1" }, max)),
      "INVALID_ARGUMENT",
    );
    assert.equal(
      code(() => parseCapacityRange({ required_bytes: "9", limit_bytes: "8" }, max)),
      "INVALID_ARGUMENT",
    );
    assert.equal(
      code(() => parseCapacityRange({ required_bytes: "9223372036854775807", limit_bytes: "0" }, max)),
      "OUT_OF_RANGE",
    );
    assert.equal(
      code(() => parseCapacityRange({ required_bytes: String(max + 1), limit_bytes: "0" }, max)),
      "OUT_OF_RANGE",
    );
    assert.deepEqual(parseCapacityRange({ required_bytes: String(max), limit_bytes: "0" }, max), {
      required: max,
    });
  });

  it("requireName: the spec's banned control characters, not other Unicode or common whitespace", () => {
    for (const ok of ["pvc-1", "ボリューム", "🦀", "a\tb\nc\rd", "../../etc"])
      assert.equal(
        code(() => requireName(ok, "name")),
        "OK",
      );
    for (const c of [0x00, 0x08, 0x0b, 0x0c, 0x0e, 0x1f, 0x7f, 0x85, 0x9f])
      assert.equal(
        code(() => requireName(`a${String.fromCharCode(c)}b`, "name")),
        "INVALID_ARGUMENT",
        c.toString(16),
      );
    assert.equal(
      code(() => requireName("", "name")),
      "INVALID_ARGUMENT",
    );
  });

  it("mount flags: one well-formed option each, nothing that escapes", () => {
    const cap = (flag: string) =>
      ({
        access_mode: { mode: "SINGLE_NODE_WRITER" },
        access_type: "mount",
        mount: { fs_type: "ext4", mount_flags: [flag] },
      }) as unknown as VolumeCapability__Output;
    for (const ok of [
      "noatime",
      "data=ordered",
      "errors=remount-ro",
      "commit=60",
      'context="system_u:object_r:x:s0"',
    ])
      assert.equal(capabilityProblem(cap(ok), ["ext4"]), undefined, ok);
    for (const bad of [
      "bind",
      "rbind",
      "remount",
      "make-shared",
      "X-mount.mkdir",
      "x-mount.subdir=..",
      "ro,bind",
      "=bind",
      "a b",
      "a\u0000b",
      "a\nb",
      "",
    ])
      assert.match(capabilityProblem(cap(bad), ["ext4"]) ?? "", /not allowed/, JSON.stringify(bad));
  });

  it("checkPathUnder: dangling symlinks, loops, files as directories and over-long names are refused", async () => {
    const dir = mkdtempSync(join(tmpdir(), "tpcsi-paths-"));
    const root = join(dir, "kubelet");
    try {
      mkdirSync(join(root, "pods"), { recursive: true });
      writeFileSync(join(root, "config.yaml"), "x");
      symlinkSync(join(dir, "nowhere"), join(root, "dangling"));
      symlinkSync(join(root, "loop"), join(root, "loop"));
      symlinkSync(join(root, "pods"), join(root, "inner"));
      const problem = (p: string) => checkPathUnder(root, p, "target_path");
      assert.equal(await problem(join(root, "pods/a/b/mount")), undefined);
      assert.equal(await problem(join(root, "inner/a/mount")), undefined, "a symlink that stays inside");
      assert.match((await problem(join(root, "dangling"))) ?? "", /does not resolve/);
      assert.match((await problem(join(root, "dangling/x"))) ?? "", /does not resolve/);
      assert.match((await problem(join(root, "loop/x"))) ?? "", /ELOOP|does not resolve/);
      assert.match((await problem(join(root, "config.yaml/x"))) ?? "", /ENOTDIR/);
      assert.match((await problem(join(root, "pods", "c".repeat(256)))) ?? "", /ENAMETOOLONG/);
      assert.match((await problem(root)) ?? "", /outside/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
