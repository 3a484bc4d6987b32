import assert from "node:assert/strict";
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
});
