/**
 * The chart against the driver's own configuration parser (src/server/config.ts): the driver container's
 * arguments and environment, with the rendered ConfigMap as the --config file, start the driver as meant.
 */
import assert from "node:assert/strict";
import type { JsonObject, K8sObject } from "../../../scripts/deploy/helm-render.js";
import { ConfigError, type DriverConfig, parseServeArgs } from "../../../src/server/config.js";
import { argMap, container, only, podSpec, render } from "./fixtures.js";

/** What the driver parses on `node`: args after `serve`, $(VAR) expanded as kubelet does, the ConfigMap file. */
function driverConfig(objects: K8sObject[], node: string): DriverConfig {
  const spec = podSpec(only(objects, "DaemonSet"));
  const driver = container(spec, "thinpool-csi");
  const env: Record<string, string> = { NODE_NAME: node, NAMESPACE: "storage-system", POD_NAME: "pod-1" };
  for (const e of driver.env ?? []) if (e.value !== undefined) env[e.name] = e.value;
  const args = (driver.args ?? [])
    .slice(1)
    .map((a) => a.replace(/\$\(([A-Z_]+)\)/g, (_m, v: string) => env[v] ?? ""));
  const configPath = argMap(args).get("--config");
  const cmName = spec.volumes?.find((v) => v.configMap)?.configMap?.name;
  const cm = only(objects, "ConfigMap", cmName);
  const file = (cm.data as Record<string, string>)["config.yaml"];
  let parsed;
  try {
    parsed = parseServeArgs(args, {
      env,
      readFile: (f) => {
        assert.equal(f, configPath);
        assert.ok(file !== undefined);
        return file;
      },
    });
  } catch (e) {
    if (e instanceof ConfigError) assert.fail(`driver refuses the chart's configuration: ${e.message}`);
    throw e;
  }
  assert.equal(parsed.help, false);
  assert.ok(parsed.config);
  return parsed.config;
}

describe("deploy: chart configuration as the driver parses it", () => {
  it("default values: node id, socket, kubelet dir, metrics, shutdown timeout and the example pool", () => {
    const c = driverConfig(render().objects, "node-a");
    assert.equal(c.nodeId, "node-a");
    assert.equal(c.driverName, "thinpool.csi.dev");
    assert.equal(c.socketPath, "/csi/csi.sock");
    assert.equal(c.kubeletDir, "/var/lib/kubelet");
    assert.equal(c.stateDir, "/var/lib/thinpool-csi");
    assert.equal(c.metricsAddress?.port, 9810);
    assert.equal(c.shutdownTimeoutMs, 60_000);
    assert.equal(c.overProvisioningRatio, 10);
    assert.deepEqual(c.pools, [{ name: "default", source: { type: "existing", device: "vg0-pool0" } }]);
  });

  it("per-node overrides reach the right node; file settings and flags line up", () => {
    const values: JsonObject = {
      kubeletDir: "/var/lib/k0s/kubelet",
      metrics: { enabled: false },
      config: {
        overProvisioningRatio: 4,
        reservedDataPercent: 5,
        pools: [
          {
            name: "fast",
            source: { type: "devices", data: "/dev/disk/by-id/a", metadata: "/dev/disk/by-id/b" },
          },
        ],
        nodes: {
          "dev-box": {
            pools: [{ name: "fast", source: { type: "loop", dataSize: "20Gi", metadataSize: "256Mi" } }],
          },
        },
      },
      driver: { defaultFsType: "xfs", maxVolumesPerNode: 250, logLevel: "debug" },
    };
    const objects = render(values).objects;
    const a = driverConfig(objects, "node-a");
    assert.equal(a.pools[0]?.source.type, "devices");
    assert.equal(a.overProvisioningRatio, 4);
    assert.equal(a.reservedDataPercent, 5);
    assert.equal(a.kubeletDir, "/var/lib/k0s/kubelet");
    assert.equal(a.metricsAddress, undefined);
    assert.equal(a.defaultFsType, "xfs");
    assert.equal(a.maxVolumesPerNode, 250);
    assert.equal(a.logLevel, "debug");
    const dev = driverConfig(objects, "dev-box");
    assert.equal(dev.pools[0]?.source.type, "loop");
  });
});
