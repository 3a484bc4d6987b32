import assert from "node:assert/strict";
import { chmodSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";

import { renderStatus } from "../../../src/cli/status-render.js";
import { DEFAULT_SELECTOR, runKubectlThinpool } from "../../../src/cli/kubectl-thinpool.js";
import { buildNodeStatus } from "../../../src/server/node-status.js";
import { makeTempDir } from "../server/helpers.js";
import { statusInput } from "../server/node-status-fixtures.js";

/**
 * A stand-in `kubectl` on PATH: `get pods` prints pods.json, `exec <pod> ...` prints status-<pod>.json or
 * fails like kubectl does when that file is missing. Every invocation's arguments go to calls.log.
 */
const FAKE_KUBECTL = `#!/usr/bin/env node
const fs = require("node:fs");
const path = require("node:path");
const dir = __dirname;
const args = process.argv.slice(2);
fs.appendFileSync(path.join(dir, "calls.log"), JSON.stringify(args) + "\\n");
const verb = args.find((a) => a === "get" || a === "exec");
if (verb === "get") {
  process.stdout.write(fs.readFileSync(path.join(dir, "pods.json"), "utf8"));
} else {
  const pod = args[args.indexOf("--namespace") + 2];
  const file = path.join(dir, "status-" + pod + ".json");
  if (!fs.existsSync(file)) {
    process.stderr.write('error: unable to upgrade connection: container not found ("thinpool-csi")\\n');
    process.exit(1);
  }
  process.stdout.write(fs.readFileSync(file, "utf8"));
}
`;

function pod(name: string, node: string, phase = "Running") {
  return { metadata: { name, namespace: "kube-system" }, spec: { nodeName: node }, status: { phase } };
}

describe("kubectl thinpool (fake kubectl on PATH)", () => {
  let temp: ReturnType<typeof makeTempDir>;
  const reports = {
    "node-a": buildNodeStatus(statusInput({ node: "worker-1" })),
    "node-b": buildNodeStatus(statusInput({ node: "worker-2", devices: [] })),
  };

  const run = async (argv: string[]) => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await runKubectlThinpool(argv, {
      env: { PATH: `${temp.dir}:${process.env.PATH ?? ""}` },
      stdout: (t) => out.push(t),
      stderr: (t) => err.push(t),
    });
    return { code, out: out.join(""), err: err.join("") };
  };
  const calls = (): string[][] =>
    readFileSync(path.join(temp.dir, "calls.log"), "utf8")
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as string[]);

  beforeEach(() => {
    temp = makeTempDir();
    const kubectl = path.join(temp.dir, "kubectl");
    writeFileSync(kubectl, FAKE_KUBECTL);
    chmodSync(kubectl, 0o755);
    writeFileSync(path.join(temp.dir, "package.json"), '{"type":"commonjs"}');
    for (const [podName, report] of Object.entries(reports)) {
      writeFileSync(path.join(temp.dir, `status-${podName}.json`), JSON.stringify(report));
    }
  });

  afterEach(() => temp.cleanup());

  it("finds the driver pods in every namespace, asks each, and merges them into one table", async () => {
    writeFileSync(
      path.join(temp.dir, "pods.json"),
      JSON.stringify({ items: [pod("node-b", "worker-2"), pod("node-a", "worker-1")] }),
    );
    const result = await run([]);
    assert.equal(result.code, 0, result.err);
    assert.equal(result.out, renderStatus([reports["node-a"], reports["node-b"]], { nodeColumn: true }));
    const [get, ...execs] = calls();
    assert.deepEqual(get, ["get", "pods", "--all-namespaces", "-l", DEFAULT_SELECTOR, "-o", "json"]);
    assert.deepEqual(execs.map((c) => c.join(" ")).sort(), [
      "exec --namespace kube-system node-a -c thinpool-csi -- thinpool-csi status -o json",
      "exec --namespace kube-system node-b -c thinpool-csi -- thinpool-csi status -o json",
    ]);
  });

  it("reports nodes that did not answer (exit 1) and prints JSON with -o json", async () => {
    writeFileSync(
      path.join(temp.dir, "pods.json"),
      JSON.stringify({
        items: [pod("node-a", "worker-1"), pod("node-c", "worker-3"), pod("node-d", "worker-4", "Pending")],
      }),
    );
    const text = await run(["status", "-n", "storage", "--context", "prod"]);
    assert.equal(text.code, 1);
    assert.match(text.out, /^NODES THAT DID NOT ANSWER \(2\)$/m);
    assert.match(
      text.out,
      /^worker-3 \(pod kube-system\/node-c\): kubectl exec node-c failed: error: unable to upgrade connection/m,
    );
    assert.match(text.out, /^worker-4 \(pod kube-system\/node-d\): pod is Pending$/m);
    assert.deepEqual(calls()[0], [
      "--context",
      "prod",
      "get",
      "pods",
      "--namespace",
      "storage",
      "-l",
      DEFAULT_SELECTOR,
      "-o",
      "json",
    ]);

    const json = await run(["-o", "json"]);
    const parsed = JSON.parse(json.out) as {
      nodes: Array<{ node: string }>;
      failures: Array<{ node: string }>;
    };
    assert.deepEqual(
      parsed.nodes.map((n) => n.node),
      ["worker-1"],
    );
    assert.deepEqual(
      parsed.failures.map((f) => f.node),
      ["worker-3", "worker-4"],
    );
  });

  it("says so when there are no driver pods, and exits 2 when kubectl itself fails", async () => {
    writeFileSync(path.join(temp.dir, "pods.json"), JSON.stringify({ items: [] }));
    const none = await run([]);
    assert.equal(none.code, 0);
    assert.match(none.out, /No thinpool-csi driver pods found/);
    writeFileSync(path.join(temp.dir, "pods.json"), "not json");
    const broken = await run([]);
    assert.equal(broken.code, 2);
    assert.match(broken.err, /^kubectl thinpool: /);
  });
});
