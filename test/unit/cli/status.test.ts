import assert from "node:assert/strict";
import { pino } from "pino";

import { renderStatus } from "../../../src/cli/status-render.js";
import { runStatus } from "../../../src/cli/status.js";
import { serveHttp } from "../../../src/server/http-endpoint.js";
import { adminSocketPath, buildNodeStatus } from "../../../src/server/node-status.js";
import { makeTempDir } from "../server/helpers.js";
import { statusInput } from "../server/node-status-fixtures.js";

function io(env: NodeJS.ProcessEnv = {}) {
  const out: string[] = [];
  const err: string[] = [];
  return {
    env,
    stdout: (text: string) => out.push(text),
    stderr: (text: string) => err.push(text),
    out: () => out.join(""),
    err: () => err.join(""),
  };
}

describe("thinpool-csi status", () => {
  const report = buildNodeStatus(statusInput());

  it("asks the driver's admin socket and prints JSON with -o json, text by default", async () => {
    const { dir, cleanup } = makeTempDir();
    const endpoint = await serveHttp(
      { socketPath: adminSocketPath(dir), socketMode: 0o600 },
      { "/status": async () => ({ contentType: "application/json", body: JSON.stringify(report) }) },
      pino({ level: "silent" }),
    );
    try {
      const json = io({ STATE_DIR: dir });
      assert.equal(await runStatus(["-o", "json"], json), 0);
      assert.deepEqual(JSON.parse(json.out()), report);

      const text = io();
      assert.equal(await runStatus([`--state-dir=${dir}`], text), 0);
      assert.equal(text.out(), renderStatus([report], { nodeColumn: false }));
    } finally {
      await endpoint.close();
      cleanup();
    }
  });

  it("says why when no driver serves the state directory, and refuses bad flags", async () => {
    const { dir, cleanup } = makeTempDir();
    try {
      const none = io();
      assert.equal(await runStatus([`--state-dir=${dir}`], none), 2);
      assert.match(
        none.err(),
        /no driver is serving .*admin\.sock \(is the driver running with this --state-dir\?\)/,
      );
      const bad = io();
      assert.equal(await runStatus(["-o", "yaml"], bad), 64);
      assert.match(bad.err(), /-o must be text or json, got 'yaml'/);
    } finally {
      cleanup();
    }
  });

  it("renders the report of a driver too old to report its phases or spares (a rolling upgrade)", () => {
    const { phasesMs: _dropped, ...older } = report.lastReconcile ?? assert.fail("fixture has a report");
    const pools = report.pools.map(({ spareThinIds: _none, ...pool }) => pool);
    const text = renderStatus([{ ...report, pools, lastReconcile: older }], { nodeColumn: false });
    assert.equal(
      text.split("\n")[1],
      "  start-up reconciliation: checked 4, reactivated 1, resumed 0, rolledForward 0, rolledBack 1, deactivated 0, quarantined 1, faulty 2 (87 ms)",
    );
    assert.match(text, /^default\s+rw\s.*\s17GiB\s+-\s+data WARNING/m);
  });

  it("renders pools, devices with their owners, faulty devices with what to do, and quarantined ids", () => {
    const text = renderStatus([report], { nodeColumn: false });
    const lines = text.split("\n");
    assert.equal(lines[0], "Node worker-1: thinpool.csi.dev 0.1.0, ready");
    assert.equal(
      lines[1],
      "  start-up reconciliation: checked 4, reactivated 1, resumed 0, rolledForward 0, rolledBack 1, deactivated 0, quarantined 1, faulty 2 (87 ms: listing 9, settling 21, reactivation 50, metadata check 7)",
    );
    assert.match(
      text,
      /^POOL\s+MODE\s+DATA USED\s+METADATA USED\s+PROVISIONED\s+PROVISIONABLE\s+SPARE IDS\s+PRESSURE$/m,
    );
    assert.match(
      text,
      /^default\s+rw\s+1\.65GiB\/2GiB \(82\.4%\)\s+1\.17MiB\/64MiB \(1\.8%\)\s+3GiB \(1\.50x of 10x\)\s+17GiB\s+8\s+data WARNING \(warn 80%, crit 90%\), metadata ok \(warn 80%, crit 90%\)$/m,
    );
    assert.match(
      text,
      /^v-000000000000000000000001\s+volume\s+default\s+Active\s+1GiB\s+300MiB\s+pv\/pvc-1111 \(pvc shop\/data\)$/m,
    );
    assert.match(
      text,
      /^s-000000000000000000000002\s+snapshot\s+default\s+Inactive\s+1GiB\s+-\s+volumesnapshotcontent\/snapcontent-2222 \(volumesnapshot shop\/nightly\)$/m,
    );
    assert.match(text, /^FAULTY DEVICES \(2\)$/m);
    assert.match(
      text,
      /^v-000000000000000000000003 \(volume, pool default, pv\/pvc-3333\)\n {2}reason: thin id 3 is missing/m,
    );
    assert.match(text, /^ {2}what to do: its thin device is gone from the pool/m);
    assert.match(text, /^pool default, id 9: found in the pool's metadata but unknown to the store/m);
  });

  it("adds a NODE column for several nodes", () => {
    const other = buildNodeStatus(
      statusInput({ node: "worker-2", devices: [], readiness: { ready: false, reason: "reconciling" } }),
    );
    const text = renderStatus([report, other], { nodeColumn: true });
    assert.match(text, /^Node worker-2: thinpool.csi.dev 0.1.0, NOT READY: reconciling$/m);
    assert.match(text, /^NODE\s+POOL\s+MODE/m);
    assert.match(text, /^worker-1\s+default\s+rw/m);
    assert.match(text, /^worker-2\s+default\s+rw/m);
    assert.match(text, /^worker-1\s+v-000000000000000000000001\s+volume/m);
    assert.match(text, /^v-000000000000000000000003 \(volume, node worker-1, pool default/m);
  });
});
