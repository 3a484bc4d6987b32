import { status } from "@grpc/grpc-js";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import protobuf from "protobufjs";

import { CsiError, statusName } from "../../../src/csi/errors.js";
import { csiProtoPath, loadCsiServices } from "../../../src/csi/proto.js";
import { REDACTED, SecretRedactor } from "../../../src/csi/secrets.js";
import { findPackageRoot } from "../../../src/util/package-info.js";

const repoRoot = findPackageRoot();
/** The spec's proto as shipped in the shared reference folder next to the repository, when present. */
const referenceProto = path.resolve(repoRoot, "..", "shared", "reference", "csi-spec-v1.12.0", "csi.proto");

function listFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: "utf8" })
    .filter((entry) => statSync(path.join(dir, entry)).isFile())
    .sort();
}

describe("CSI protocol", () => {
  it("csi-proto/csi.proto is byte-identical to the CSI v1.12.0 reference proto", function () {
    if (!existsSync(referenceProto)) {
      this.skip();
    }
    assert.ok(readFileSync(csiProtoPath()).equals(readFileSync(referenceProto)));
  });

  it("the committed src/generated/ is what scripts/gen-proto.mjs generates now", function () {
    this.timeout(60_000);
    const outDir = mkdtempSync(path.join(os.tmpdir(), "tpcsi-gen-"));
    try {
      execFileSync(process.execPath, [path.join(repoRoot, "scripts", "gen-proto.mjs"), outDir], {
        stdio: "pipe",
      });
      const committedDir = path.join(repoRoot, "src", "generated");
      const generated = listFiles(outDir);
      assert.deepEqual(listFiles(committedDir), generated, "same file list (run npm run gen:proto)");
      for (const file of generated) {
        assert.equal(
          readFileSync(path.join(committedDir, file), "utf8"),
          readFileSync(path.join(outDir, file), "utf8"),
          `${file} differs from the generator's output (run npm run gen:proto)`,
        );
      }
    } finally {
      rmSync(outDir, { recursive: true, force: true });
    }
  });

  it("loads the Identity, Controller and Node services with every v1.12 RPC", () => {
    const services = loadCsiServices();
    assert.deepEqual(Object.keys(services.identity).sort(), [
      "GetPluginCapabilities",
      "GetPluginInfo",
      "Probe",
    ]);
    assert.ok("GetSnapshot" in services.controller, "GetSnapshot is new in v1.12");
    assert.equal(Object.keys(services.controller).length, 15);
    assert.equal(Object.keys(services.node).length, 8);
    assert.equal(services.controller.CreateVolume.path, "/csi.v1.Controller/CreateVolume");
  });

  it("decodes with the documented loader options: defaults, enums as names, int64 as strings", () => {
    const encoded = loadCsiServices().controller.CreateVolume.responseSerialize({
      volume: { volume_id: "v", capacity_bytes: "9007199254740993" },
    });
    const decoded = loadCsiServices().controller.CreateVolume.responseDeserialize(encoded);
    assert.equal(decoded.volume?.capacity_bytes, "9007199254740993", "exact beyond 2^53");
    assert.deepEqual(decoded.volume?.volume_context, {});
    const capability = loadCsiServices().node.NodeGetCapabilities.responseDeserialize(
      loadCsiServices().node.NodeGetCapabilities.responseSerialize({
        capabilities: [{ rpc: { type: "STAGE_UNSTAGE_VOLUME" } }],
      }),
    );
    assert.deepEqual(capability.capabilities[0]?.rpc?.type, "STAGE_UNSTAGE_VOLUME");
  });

  describe("csi_secret redaction", () => {
    it("derives the secret fields from the proto's field options, all of them", () => {
      const redactor = new SecretRedactor();
      const protoText = readFileSync(csiProtoPath(), "utf8");
      const marked = protoText.match(/\[\s*\(csi_secret\)\s*=\s*true/g) ?? [];
      const derived = [...redactor.secretFieldsByType.values()].reduce((sum, names) => sum + names.size, 0);
      assert.ok(marked.length > 10);
      assert.equal(derived, marked.length);
      assert.deepEqual(
        [...(redactor.secretFieldsByType.get(".csi.v1.NodeStageVolumeRequest") ?? [])],
        ["secrets"],
      );
      assert.deepEqual(
        [...(redactor.secretFieldsByType.get(".csi.v1.CreateSnapshotRequest") ?? [])],
        ["secrets"],
      );
      assert.equal(redactor.secretFieldsByType.has(".csi.v1.NodeGetVolumeStatsRequest"), false);
    });

    it("redacts a copy of a CSI request and leaves messages without secrets alone", () => {
      const redactor = new SecretRedactor();
      const request = { name: "pvc-1", secrets: { password: "p" }, parameters: { a: "b" } };
      const redacted = redactor.redactRequest("/csi.v1.Controller/CreateVolume", request) as Record<
        string,
        unknown
      >;
      assert.equal(redacted.secrets, REDACTED);
      assert.deepEqual(redacted.parameters, { a: "b" });
      assert.deepEqual(request.secrets, { password: "p" }, "the request itself is not changed");
      const info = { node_id: "n1" };
      assert.equal(redactor.redactResponse("/csi.v1.Node/NodeGetInfo", info), info);
    });

    it("finds secret fields however the option is spelled and however deep they are nested", () => {
      // A proto of our own, in another package: the option written with its full name, the secret
      // inside a message used singly, repeated and as a map value.
      const dir = mkdtempSync(path.join(os.tmpdir(), "tpcsi-proto-"));
      try {
        writeFileSync(
          path.join(dir, "ext.proto"),
          'syntax = "proto3"; package csi.v1; import "google/protobuf/descriptor.proto";\n' +
            "extend google.protobuf.FieldOptions { bool csi_secret = 1059; }\n",
        );
        writeFileSync(
          path.join(dir, "nested.proto"),
          'syntax = "proto3"; package test.nested; import "ext.proto";\n' +
            "message Outer {\n" +
            "  message Inner { map<string, string> creds = 1 [(csi.v1.csi_secret) = true]; string plain = 2; }\n" +
            "  Inner one = 1; repeated Inner many = 2; map<string, Inner> by_key = 3; string token = 4 [(.csi.v1.csi_secret) = true];\n" +
            "}\n" +
            "service S { rpc Do(Outer) returns (Outer); }\n",
        );
        const includeDirs = [
          dir,
          path.dirname(createRequire(import.meta.url).resolve("protobufjs/package.json")),
        ];
        const root = new protobuf.Root();
        root.resolvePath = (_origin, target) =>
          includeDirs.map((d) => path.join(d, target)).find((candidate) => existsSync(candidate)) ?? target;
        root.loadSync("nested.proto", { keepCase: true });
        root.resolveAll();
        const redactor = new SecretRedactor(root);
        const inner = (n: string) => ({ creds: { key: `secret-${n}` }, plain: `plain-${n}` });
        const redacted = redactor.redactRequest("/test.nested.S/Do", {
          one: inner("1"),
          many: [inner("2"), inner("3")],
          by_key: { k: inner("4") },
          token: "secret-5",
        });
        const text = JSON.stringify(redacted);
        assert.doesNotMatch(text, /secret-/);
        assert.match(text, /plain-1.*plain-2.*plain-3.*plain-4/);
        assert.deepEqual((redacted as { one: unknown }).one, { creds: REDACTED, plain: "plain-1" });
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });

  it("CsiError carries a gRPC code and a message", () => {
    const error = new CsiError(status.NOT_FOUND, "volume vol-x not found on node n1");
    assert.equal(error.code, status.NOT_FOUND);
    assert.equal(error.message, "volume vol-x not found on node n1");
    assert.ok(error instanceof Error);
    assert.equal(statusName(status.RESOURCE_EXHAUSTED), "RESOURCE_EXHAUSTED");
  });
});
