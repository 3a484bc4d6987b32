import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { pino } from "pino";

import { nodeEventsFor, reportPressureChange } from "../../../src/server/node-events.js";
import type { PressureChange } from "../../../src/server/pool-monitor.js";
import { FakeKubeApi } from "../../support/fake-kube-api.js";
import { makeTempDir } from "./helpers.js";

const rising: PressureChange = {
  pool: "default",
  resource: "data",
  from: "normal",
  to: "critical",
  usedPercent: 93.04,
  thresholds: { warningPercent: 80, criticalPercent: 90 },
};

function capture() {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino(
    { level: "info" },
    { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) },
  );
  return { lines, logger };
}

describe("pool pressure reports (Node Events, logs)", () => {
  let api: FakeKubeApi;
  let temp: ReturnType<typeof makeTempDir>;

  beforeEach(async () => {
    api = new FakeKubeApi();
    await api.start();
    temp = makeTempDir();
  });

  afterEach(async () => {
    await api.stop();
    temp.cleanup();
  });

  it("raises a crossing as a Warning Event on the Node and a recovery as a Normal one, and logs both", async () => {
    const kubeconfig = path.join(temp.dir, "kubeconfig");
    writeFileSync(kubeconfig, api.kubeconfigYaml());
    const { lines, logger } = capture();
    const events = nodeEventsFor("worker-1", { env: { KUBECONFIG: kubeconfig }, homeDir: temp.dir }, logger);
    assert.ok(events, "a kubeconfig was given");
    await reportPressureChange(rising, logger, events);
    await reportPressureChange(
      { ...rising, from: "critical", to: "normal", usedPercent: 42 },
      logger,
      events,
    );

    const written = api.list("Event");
    assert.equal(written.length, 2);
    const [up, down] = written as Array<
      Record<string, unknown> & { involvedObject: Record<string, unknown> }
    >;
    assert.deepEqual(up?.involvedObject, {
      kind: "Node",
      name: "worker-1",
      uid: "worker-1",
      apiVersion: "v1",
    });
    assert.equal(up?.type, "Warning");
    assert.equal(up?.reason, "ThinPoolDataCritical");
    assert.match(
      String(up?.message),
      /thin pool default: data use 93.0% has reached the critical level of 90%/,
    );
    assert.equal(down?.type, "Normal");
    assert.equal(down?.reason, "ThinPoolDataNormal");

    const pressureLines = lines.filter((line) => line.pool === "default");
    assert.deepEqual(
      pressureLines.map((line) => [line.level, line.reason, line.used_percent]),
      [
        [40, "ThinPoolDataCritical", 93],
        [30, "ThinPoolDataNormal", 42],
      ],
      "warn going up, info coming back",
    );
  });

  it("only logs when no Kubernetes API is configured (not in a cluster)", async () => {
    const { lines, logger } = capture();
    const events = nodeEventsFor(
      "worker-1",
      { env: {}, homeDir: temp.dir, serviceAccountDir: temp.dir },
      logger,
    );
    assert.equal(events, undefined);
    assert.ok(lines.some((line) => /pool pressure is logged only/.test(String(line.msg))));
    await reportPressureChange(rising, logger, events);
    assert.ok(lines.some((line) => line.reason === "ThinPoolDataCritical"));
    assert.equal(api.list("Event").length, 0);
  });

  it("logs, and sends nothing, when the kubeconfig found at start-up turns out unusable", async () => {
    const kubeconfig = path.join(temp.dir, "kubeconfig");
    writeFileSync(kubeconfig, "clusters: [this is not a kubeconfig");
    const { lines, logger } = capture();
    const events = nodeEventsFor("worker-1", { env: { KUBECONFIG: kubeconfig }, homeDir: temp.dir }, logger);
    assert.ok(events, "the file exists, so Events are planned");
    await reportPressureChange(rising, logger, events);
    await reportPressureChange(rising, logger, events);
    const errors = lines.filter((line) => line.level === 50);
    assert.equal(errors.length, 1, "said once, not at every Event");
    assert.match(String(errors[0]?.err), /cannot be read/);
    assert.equal(api.list("Event").length, 0);
  });

  it("serving does not load @kubernetes/client-node (the first Event does)", () => {
    // A resolve hook that refuses the library: importing the serve path must not need it.
    const hook = `export async function resolve(s, c, next) {
      if (s.startsWith("@kubernetes/client-node")) throw new Error("client-node was loaded");
      return next(s, c);
    }`;
    const register = `import { register } from "node:module";
      register("data:text/javascript," + encodeURIComponent(${JSON.stringify(hook)}));`;
    const importing = (module: string) =>
      spawnSync(
        process.execPath,
        [
          "--import",
          `data:text/javascript,${encodeURIComponent(register)}`,
          "--input-type=module",
          "-e",
          `await import(${JSON.stringify(new URL(module, import.meta.url).href)});`,
        ],
        { encoding: "utf8" },
      );
    const serve = importing("../../../src/server/engine-wiring.js");
    assert.equal(serve.status, 0, serve.stderr);
    const kube = importing("../../../src/kube/index.js");
    assert.notEqual(kube.status, 0, "the hook does catch the library");
    assert.match(kube.stderr, /client-node was loaded/);
  });
});
