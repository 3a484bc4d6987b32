/**
 * `thinpool-csi placement-controller`: flags, and the real binary against the fake API server: it places
 * a restore, and SIGTERM stops it cleanly and releases the Lease.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { EXIT_USAGE, main } from "../../../src/cli/main.js";
import { KubeConfigError } from "../../../src/kube/index.js";
import { findPackageRoot } from "../../../src/util/package-info.js";
import { FakeKubeApi } from "../../support/fake-kube-api.js";
import { SELECTED, claim, seedCluster, waitFor } from "./fixtures.js";

function captureIo(env: NodeJS.ProcessEnv = {}) {
  const out: string[] = [];
  const err: string[] = [];
  return { env, stdout: (t: string) => void out.push(t), stderr: (t: string) => void err.push(t), out, err };
}

describe("thinpool-csi placement-controller", () => {
  it("--help lists the flags with their environment variables and defaults", async () => {
    const io = captureIo();
    assert.equal(await main(["placement-controller", "--help"], io), 0);
    const text = io.out.join("");
    for (const flag of ["--kubeconfig", "--lease-name", "--lease-namespace", "--identity", "--driver-name"])
      assert.ok(text.includes(flag), flag);
    assert.match(text, /env POD_NAME/);
  });

  it("bad flags are a usage error listing every problem", async () => {
    const io = captureIo();
    const code = await main(
      [
        "placement-controller",
        "--lease-duration",
        "1500ms",
        "--renew-deadline",
        "20s",
        "--log-level",
        "loud",
      ],
      io,
    );
    assert.equal(code, EXIT_USAGE);
    const text = io.err.join("");
    assert.match(text, /--lease-duration must be whole seconds/);
    assert.match(text, /--renew-deadline must be shorter than --lease-duration/);
    assert.match(text, /--log-level/);
    assert.equal(await main(["placement-controller", "--frobnicate"], captureIo()), EXIT_USAGE);
  });

  it("without any way to the API server: a KubeConfigError", async () => {
    await assert.rejects(
      main(
        ["placement-controller", "--kubeconfig", "/nonexistent/kubeconfig", "--log-level", "silent"],
        captureIo(),
      ),
      KubeConfigError,
    );
  });

  it("the binary places a restore, and on SIGTERM stops with exit 0 and releases its Lease", async function () {
    this.timeout(30_000);
    const api = new FakeKubeApi();
    await api.start();
    const dir = mkdtempSync(join(tmpdir(), "tpcsi-placement-"));
    try {
      seedCluster(api);
      const kubeconfig = join(dir, "kubeconfig");
      writeFileSync(kubeconfig, api.kubeconfigYaml());
      const child = spawn(
        process.execPath,
        [
          join(findPackageRoot(), "dist/src/cli/main.js"),
          "placement-controller",
          `--kubeconfig=${kubeconfig}`,
          "--lease-duration=2s",
          "--renew-deadline=1s",
          "--retry-period=100ms",
          "--log-level=info",
        ],
        {
          env: { PATH: process.env["PATH"], NAMESPACE: "thinpool-csi", POD_NAME: "placement-0" },
          stdio: ["ignore", "pipe", "pipe"],
        },
      );
      let output = "";
      child.stdout.on("data", (d: Buffer) => (output += d.toString()));
      child.stderr.on("data", (d: Buffer) => (output += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));

      api.put(claim("restore", "thin-wffc", { kind: "VolumeSnapshot", name: "snap" }));
      const lease = () =>
        api.get("Lease", "thinpool-csi-placement", "thinpool-csi")?.["spec"] as
          { holderIdentity?: string } | undefined;
      await waitFor(() => lease()?.holderIdentity === "placement-0", "the binary to take the Lease");
      await waitFor(
        () =>
          api.get("PersistentVolumeClaim", "restore", "apps")?.metadata?.annotations?.[SELECTED] ===
          "worker-2",
        "the restore to be placed",
      );
      child.kill("SIGTERM");
      assert.equal(await exited, 0, output);
      assert.equal(lease()?.holderIdentity, "", "the Lease is released on a clean stop");
      assert.match(output, /placement controller stopped/);
    } finally {
      await api.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
