import * as grpc from "@grpc/grpc-js";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, lstatSync, statSync } from "node:fs";
import path from "node:path";

import { EXIT_USAGE, main, type CliIo } from "../../../src/cli/main.js";
import type { GetPluginInfoResponse__Output } from "../../../src/generated/csi/v1/GetPluginInfoResponse.js";
import type { ProbeResponse__Output } from "../../../src/generated/csi/v1/ProbeResponse.js";
import { findPackageRoot, readPackageVersion } from "../../../src/util/package-info.js";
import { csiClients, expectStatus, makeTempDir, unary, waitFor } from "../server/helpers.js";

function captureIo(env: NodeJS.ProcessEnv = {}): CliIo & { out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  return { env, stdout: (text) => void out.push(text), stderr: (text) => void err.push(text), out, err };
}

describe("thinpool-csi CLI", () => {
  it("prints usage; an unknown command is a usage error", async () => {
    const help = captureIo();
    assert.equal(await main(["--help"], help), 0);
    assert.match(help.out.join(""), /serve\s+run the CSI server/);
    const unknown = captureIo();
    assert.equal(await main(["frobnicate"], unknown), EXIT_USAGE);
    assert.match(unknown.err.join(""), /unknown command 'frobnicate'/);
    assert.equal(await main([], captureIo()), EXIT_USAGE);
  });

  it("prints the version from package.json", async () => {
    const io = captureIo();
    assert.equal(await main(["--version"], io), 0);
    assert.equal(io.out.join(""), `${readPackageVersion()}\n`);
  });

  it("serve --help lists the flags; a bad configuration lists every problem and exits with a usage error", async () => {
    const help = captureIo();
    assert.equal(await main(["serve", "--help"], help), 0);
    assert.match(help.out.join(""), /--node-id \[NODE_NAME\]/);

    const bad = captureIo({});
    assert.equal(
      await main(["serve", "--over-provisioning-ratio=abc", "--pool=name=p,type=existing,device=d"], bad),
      EXIT_USAGE,
    );
    const message = bad.err.join("");
    assert.match(message, /invalid configuration/);
    assert.match(message, / {2}- --node-id \(or NODE_NAME\) is required/);
    assert.match(message, / {2}- --over-provisioning-ratio must be a number >= 1, got 'abc'/);
  });

  it("serve runs the server from the built entry point and shuts down cleanly on SIGTERM", async function () {
    this.timeout(30_000);
    const { dir, cleanup } = makeTempDir();
    const socketPath = path.join(dir, "csi.sock");
    const entryPoint = path.join(findPackageRoot(), "dist", "src", "cli", "main.js");
    const child = spawn(
      process.execPath,
      [
        entryPoint,
        "serve",
        `--endpoint=unix://${socketPath}`,
        "--pool=name=p,type=existing,device=d",
        "--metrics-address=",
      ],
      {
        env: { ...process.env, NODE_NAME: "node-1", STATE_DIR: dir, LOG_LEVEL: "info" },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    const clients = csiClients(socketPath);
    try {
      await waitFor(() => existsSync(socketPath) || child.exitCode !== null, "the socket", 15_000);
      assert.ok(lstatSync(socketPath).isSocket(), `no socket; stderr: ${stderr}`);
      assert.equal(statSync(socketPath).mode & 0o777, 0o600);

      const info = await unary<GetPluginInfoResponse__Output>((cb) => clients.identity.GetPluginInfo({}, cb));
      assert.equal(info.name, "thinpool.csi.dev");
      assert.equal(info.vendor_version, readPackageVersion());
      const probe = await unary<ProbeResponse__Output>((cb) => clients.identity.Probe({}, cb));
      // Pool "d" does not exist on this host: the engine cannot start, so the driver stays not ready and
      // Controller/Node calls answer UNAVAILABLE (which the sidecars retry) rather than failing for good.
      assert.deepEqual(probe.ready, { value: false }, "the pool cannot be assembled: not ready");
      const unavailable = await expectStatus(unary((cb) => clients.node.NodeGetInfo({}, cb)));
      assert.equal(unavailable.code, grpc.status.UNAVAILABLE);

      child.kill("SIGTERM");
      assert.equal(await exited, 0, `stderr: ${stderr}`);
      assert.equal(existsSync(socketPath), false, "the socket is removed");
      const lines = stdout
        .trim()
        .split("\n")
        .map((line) => JSON.parse(line) as Record<string, unknown>);
      assert.ok(lines.every((line) => line.node === "node-1" && typeof line.time === "string"));
      assert.ok(lines.some((line) => line.msg === "shutdown complete"));
    } finally {
      clients.close();
      if (child.exitCode === null) {
        child.kill("SIGKILL");
      }
      cleanup();
    }
  });
});
