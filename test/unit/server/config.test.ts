import assert from "node:assert/strict";

import { readFileSync } from "node:fs";

import {
  ConfigError,
  parseServeArgs,
  SERVE_FLAGS,
  serveUsage,
  type DriverConfig,
} from "../../../src/server/config.js";
import { repoPath } from "../../support/repo.js";

const POOL = "--pool=name=default,type=existing,device=vg0-pool0-tpool";

function parse(
  argv: string[],
  env: NodeJS.ProcessEnv = {},
  files: Record<string, string> = {},
): DriverConfig {
  const result = parseServeArgs(argv, {
    env,
    readFile: (file) => {
      const text = files[file];
      if (text === undefined) {
        throw Object.assign(new Error(`ENOENT: no such file, open '${file}'`), { code: "ENOENT" });
      }
      return text;
    },
  });
  assert.ok(result.config !== undefined);
  return result.config;
}

function problemsOf(
  argv: string[],
  env: NodeJS.ProcessEnv = {},
  files: Record<string, string> = {},
): readonly string[] {
  try {
    parse(argv, env, files);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
    return error.problems;
  }
  assert.fail("the configuration was accepted");
}

describe("serve configuration", () => {
  it("applies the documented defaults", () => {
    const config = parse(["--node-id", "node-a", POOL]);
    assert.deepEqual(config, {
      endpoint: "unix:///csi/csi.sock",
      socketPath: "/csi/csi.sock",
      socketMode: 0o600,
      nodeId: "node-a",
      driverName: "thinpool.csi.dev",
      stateDir: "/var/lib/thinpool-csi",
      configFile: undefined,
      pools: [{ name: "default", source: { type: "existing", device: "vg0-pool0-tpool" } }],
      overProvisioningRatio: 10,
      reservedDataPercent: 10,
      reservedMetadataPercent: 10,
      spareThinIds: 8,
      poolPressure: {
        data: { warningPercent: 80, criticalPercent: 90 },
        metadata: { warningPercent: 80, criticalPercent: 90 },
      },
      defaultFsType: "ext4",
      kubeletDir: "/var/lib/kubelet",
      maxVolumesPerNode: 0,
      metricsAddress: { host: undefined, port: 9810 },
      logLevel: "info",
      shutdownTimeoutMs: 60_000,
    } satisfies DriverConfig);
  });

  it("reads the documented environment variables, and flags win over them", () => {
    const env = {
      CSI_ENDPOINT: "unix:/plugin/csi.sock",
      NODE_NAME: "from-env",
      DRIVER_NAME: "env.csi.dev",
      STATE_DIR: "/state/",
      KUBELET_DIR: "/var/snap/microk8s/common/var/lib/kubelet",
      LOG_LEVEL: "debug",
    };
    const fromEnv = parse([POOL], env);
    assert.equal(fromEnv.socketPath, "/plugin/csi.sock");
    assert.equal(fromEnv.nodeId, "from-env");
    assert.equal(fromEnv.driverName, "env.csi.dev");
    assert.equal(fromEnv.stateDir, "/state");
    assert.equal(fromEnv.kubeletDir, "/var/snap/microk8s/common/var/lib/kubelet");
    assert.equal(fromEnv.logLevel, "debug");
    const flagsWin = parse([POOL, "--node-id=from-flag", "--endpoint", "/plain/path.sock"], env);
    assert.equal(flagsWin.nodeId, "from-flag");
    assert.equal(flagsWin.socketPath, "/plain/path.sock");
    // An empty variable counts as unset.
    assert.equal(parse([POOL, "--node-id", "n"], { DRIVER_NAME: "" }).driverName, "thinpool.csi.dev");
  });

  it("parses every flag's value", () => {
    const config = parse([
      "--node-id=n1",
      POOL,
      "--socket-mode=0660",
      "--over-provisioning-ratio=2.5",
      "--reserved-data-percent=0",
      "--reserved-metadata-percent=25",
      "--default-fs-type=xfs",
      "--max-volumes-per-node=128",
      "--spare-thin-ids=0",
      "--metrics-address=127.0.0.1:9900",
      "--shutdown-timeout=2m30s",
    ]);
    assert.equal(config.socketMode, 0o660);
    assert.equal(config.overProvisioningRatio, 2.5);
    assert.equal(config.reservedDataPercent, 0);
    assert.equal(config.reservedMetadataPercent, 25);
    assert.equal(config.defaultFsType, "xfs");
    assert.equal(config.maxVolumesPerNode, 128);
    assert.equal(config.spareThinIds, 0);
    assert.deepEqual(config.metricsAddress, { host: "127.0.0.1", port: 9900 });
    assert.equal(config.shutdownTimeoutMs, 150_000);
    assert.equal(parse(["--node-id=n1", POOL, "--metrics-address", ""]).metricsAddress, undefined);
    assert.deepEqual(parse(["--node-id=n1", POOL, "--metrics-address=[::1]:9810"]).metricsAddress, {
      host: "::1",
      port: 9810,
    });
  });

  it("reports each bad value with the flag, the rule and the value", () => {
    const problems = problemsOf([
      "--node-id=n1",
      POOL,
      "--over-provisioning-ratio=abc",
      "--reserved-data-percent=100",
      "--reserved-metadata-percent=-1",
      "--max-volumes-per-node=1.5",
      "--default-fs-type=btrfs",
      "--socket-mode=0999",
      "--metrics-address=localhost",
      "--log-level=verbose",
      "--state-dir=relative/dir",
      "--shutdown-timeout=soon",
    ]);
    assert.deepEqual(problems, [
      "--socket-mode must be an octal file mode such as 0600 or 0660, got '0999'",
      "--state-dir must be an absolute path, got 'relative/dir'",
      "--over-provisioning-ratio must be a number >= 1, got 'abc'",
      "--reserved-data-percent must be a number >= 0 and < 100, got '100'",
      "--reserved-metadata-percent must be a number >= 0 and < 100, got '-1'",
      "--default-fs-type must be one of ext4, xfs, got 'btrfs'",
      "--max-volumes-per-node must be an integer >= 0, got '1.5'",
      `--metrics-address must be [host]:port with a port from 1 to 65535 (e.g. :9810 or 127.0.0.1:9810), or "" to disable metrics, got 'localhost'`,
      "--log-level must be one of fatal, error, warn, info, debug, trace, silent, got 'verbose'",
      "--shutdown-timeout: 'soon' is not a duration: use e.g. 60s, 2m, 1m30s or 500ms",
    ]);
  });

  it("reads the pool pressure thresholds and refuses a warning at or above its critical level", () => {
    const config = parse([
      "--node-id=n",
      POOL,
      "--pool-data-warning-percent=70",
      "--pool-data-critical-percent=95.5",
      "--pool-metadata-warning-percent=50",
      "--pool-metadata-critical-percent=100",
    ]);
    assert.deepEqual(config.poolPressure, {
      data: { warningPercent: 70, criticalPercent: 95.5 },
      metadata: { warningPercent: 50, criticalPercent: 100 },
    });
    assert.deepEqual(
      problemsOf([
        "--node-id=n",
        POOL,
        "--pool-data-warning-percent=95",
        "--pool-metadata-warning-percent=0",
        "--pool-metadata-critical-percent=101",
      ]),
      [
        "--pool-data-warning-percent (95) must be below --pool-data-critical-percent (90): the warning comes before the critical level",
        "--pool-metadata-warning-percent must be a number > 0 and <= 100, got '0'",
        "--pool-metadata-critical-percent must be a number > 0 and <= 100, got '101'",
      ],
    );
  });

  it("requires the node id and validates it as a topology value", () => {
    assert.match(problemsOf([POOL])[0] ?? "", /^--node-id \(or NODE_NAME\) is required/);
    const tooLong = "n".repeat(64);
    assert.match(
      problemsOf([POOL, `--node-id=${tooLong}`])[0] ?? "",
      /--node-id must be 63 characters or less/,
    );
    assert.match(
      problemsOf([POOL], { NODE_NAME: "-bad-" })[0] ?? "",
      /^NODE_NAME \(environment, for --node-id\) must be 63 characters or less, begin and end with a letter or digit/,
    );
  });

  it("validates the driver name (<= 63 characters, domain style)", () => {
    assert.match(
      problemsOf(["--node-id=n", POOL, `--driver-name=${"a".repeat(60)}.dev`])[0] ?? "",
      /^--driver-name must be 63 characters or less, got 64/,
    );
    assert.match(problemsOf(["--node-id=n", POOL, "--driver-name=thin_pool"])[0] ?? "", /domain-style name/);
  });

  it("validates the endpoint", () => {
    assert.match(
      problemsOf(["--node-id=n", POOL, "--endpoint=tcp://0.0.0.0:10000"])[0] ?? "",
      /only unix:\/\/\/path/,
    );
    assert.match(
      problemsOf(["--node-id=n", POOL, "--endpoint=unix://csi/csi.sock"])[0] ?? "",
      /three slashes/,
    );
    assert.match(
      problemsOf(["--node-id=n", POOL, `--endpoint=unix:///${"d/".repeat(60)}csi.sock`])[0] ?? "",
      /unix sockets allow at most 107/,
    );
  });

  it("reports unknown flags and stray arguments", () => {
    assert.deepEqual(problemsOf(["--node-id=n", POOL, "--nodeid=x"]), [
      "Unknown option '--nodeid' (see thinpool-csi serve --help)",
    ]);
    assert.match(problemsOf(["--node-id=n", POOL, "extra"])[0] ?? "", /^Unexpected argument 'extra'/);
  });

  it("parses inline pools of each source type and reports their bad values", () => {
    assert.deepEqual(
      parse([
        "--node-id=n",
        "--pool",
        "name=fast,type=devices,data=/dev/nvme0n1,metadata=/dev/nvme1n1,blockSize=128Ki",
      ]).pools,
      [
        {
          name: "fast",
          source: {
            type: "devices",
            data: "/dev/nvme0n1",
            metadata: "/dev/nvme1n1",
            blockSizeBytes: 128 * 1024,
          },
        },
      ],
    );
    assert.deepEqual(
      parse(["--node-id=n", "--pool", "name=dev,source.type=loop,dataSize=20Gi,metadataSize=256Mi"]).pools,
      [
        {
          name: "dev",
          source: {
            type: "loop",
            dataSizeBytes: 20 * 2 ** 30,
            metadataSizeBytes: 256 * 2 ** 20,
            blockSizeBytes: 65536,
          },
        },
      ],
    );
    assert.deepEqual(
      problemsOf([
        "--node-id=n",
        "--pool",
        "name=Dev,type=loop,dataSize=20G1,metadataSize=1Mi,blockSize=96Ki,device=x",
      ]),
      [
        "--pool.name must be 1-63 lowercase letters, digits or '-' (beginning and ending with a letter or digit), got 'Dev'",
        "--pool.source (type loop): unknown key 'device' (allowed: type, dataSize, metadataSize, blockSize)",
        "--pool.source.blockSize must be a multiple of 64Ki between 64Ki and 1Gi (a dm-thin limit), got '96Ki'",
        "--pool.source.dataSize: '20G1' is not a size: use a whole or decimal number with an optional suffix (Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E), e.g. 20Gi",
        "--pool.source.metadataSize must be between 2Mi and 16Gi, got '1Mi'",
      ],
    );
    assert.deepEqual(
      problemsOf(["--node-id=n", "--pool", "name=x,type=devices,data=/dev/sda,metadata=/dev/sda"]),
      ["--pool.source: data and metadata must be different devices, both are '/dev/sda'"],
    );
    assert.deepEqual(problemsOf(["--node-id=n", "--pool", "name=x,type=zfs"]), [
      "--pool.source.type must be one of existing, devices, loop, got 'zfs'",
    ]);
    assert.deepEqual(problemsOf(["--node-id=n", "--pool", "name=x,oops"]), [
      "--pool: 'oops' is not key=value (expected e.g. name=default,type=existing,device=vg0-pool0-tpool)",
    ]);
    assert.deepEqual(problemsOf(["--node-id=n", POOL, POOL]), [
      "--pool may be given only once (configure several pools with --config)",
    ]);
  });

  it("requires a pool", () => {
    assert.deepEqual(problemsOf(["--node-id=n1"]), [
      "no pool configured for node 'n1': give --pool name=...,type=..., or pools (or nodes.n1.pools) in the --config file",
    ]);
  });

  describe("config file", () => {
    const yamlFile = `
overProvisioningRatio: 4
reservedDataPercent: 5
pools:
  - name: default
    source:
      type: existing
      device: vg0-pool0-tpool
nodes:
  node-a:
    reservedDataPercent: 20
    pools:
      - name: default
        source:
          type: devices
          data: /dev/disk/by-id/nvme-data
          metadata: /dev/disk/by-id/nvme-meta
          blockSize: 64Ki
  dev-box:
    pools:
      - name: default
        source:
          type: loop
          dataSize: 20Gi
          metadataSize: 256Mi
`;

    it("uses the default pools and settings for a node without an entry", () => {
      const config = parse(
        ["--node-id=node-z", "--config=/etc/thinpool/config.yaml"],
        {},
        { "/etc/thinpool/config.yaml": yamlFile },
      );
      assert.equal(config.configFile, "/etc/thinpool/config.yaml");
      assert.deepEqual(config.pools, [
        { name: "default", source: { type: "existing", device: "vg0-pool0-tpool" } },
      ]);
      assert.equal(config.overProvisioningRatio, 4);
      assert.equal(config.reservedDataPercent, 5);
      assert.equal(config.reservedMetadataPercent, 10, "default when neither flag nor file sets it");
    });

    it("merges the node's overrides over the defaults, and flags over both", () => {
      const files = { "/c.yaml": yamlFile };
      const nodeA = parse(["--node-id=node-a", "--config=/c.yaml"], {}, files);
      assert.deepEqual(nodeA.pools, [
        {
          name: "default",
          source: {
            type: "devices",
            data: "/dev/disk/by-id/nvme-data",
            metadata: "/dev/disk/by-id/nvme-meta",
            blockSizeBytes: 65536,
          },
        },
      ]);
      assert.equal(nodeA.reservedDataPercent, 20);
      assert.equal(nodeA.overProvisioningRatio, 4);
      const devBox = parse(["--config=/c.yaml"], { NODE_NAME: "dev-box" }, files);
      assert.equal(devBox.pools[0]?.source.type, "loop");
      const flagged = parse(
        ["--node-id=node-a", "--config=/c.yaml", "--reserved-data-percent=1", POOL],
        {},
        files,
      );
      assert.equal(flagged.reservedDataPercent, 1);
      assert.deepEqual(flagged.pools, [
        { name: "default", source: { type: "existing", device: "vg0-pool0-tpool" } },
      ]);
      // THINPOOL_CSI_CONFIG names the file too.
      assert.equal(
        parse(["--node-id=node-a"], { THINPOOL_CSI_CONFIG: "/c.yaml" }, files).reservedDataPercent,
        20,
      );
    });

    it("reads JSON files", () => {
      const json = JSON.stringify({
        pools: [{ name: "p1", source: { type: "loop", dataSize: 1073741824, metadataSize: "64Mi" } }],
      });
      const config = parse(["--node-id=n", "--config=/c.json"], {}, { "/c.json": json });
      assert.deepEqual(config.pools[0]?.source, {
        type: "loop",
        dataSizeBytes: 1073741824,
        metadataSizeBytes: 64 * 2 ** 20,
        blockSizeBytes: 65536,
      });
    });

    it("reports unknown keys, bad values in any node's entry, duplicate pool names and a missing file", () => {
      const bad = `
overprovisioningRatio: 3
reservedMetadataPercent: lots
pools:
  - name: a
    source: { type: existing, device: dm-a }
  - name: a
    source: { type: existing, device: dm-b }
nodes:
  other-node:
    pools: []
    color: blue
`;
      assert.deepEqual(problemsOf(["--node-id=n", "--config=/bad.yaml"], {}, { "/bad.yaml": bad }), [
        "config file '/bad.yaml': unknown key 'overprovisioningRatio' (allowed: overProvisioningRatio, reservedDataPercent, reservedMetadataPercent, pools, nodes)",
        "config file '/bad.yaml': reservedMetadataPercent must be a number >= 0 and < 100, got 'lots'",
        "config file '/bad.yaml': pools[1].name 'a' is used by another pool in the same list",
        "config file '/bad.yaml': nodes.other-node: unknown key 'color' (allowed: overProvisioningRatio, reservedDataPercent, reservedMetadataPercent, pools)",
        "config file '/bad.yaml': nodes.other-node.pools must be a non-empty list of pools, got []",
      ]);
      assert.deepEqual(problemsOf(["--node-id=n", "--config=/missing.yaml"]), [
        "--config: config file '/missing.yaml' does not exist",
      ]);
      assert.match(
        problemsOf(["--node-id=n", "--config=/broken.yaml"], {}, { "/broken.yaml": "pools: [\n" })[0] ?? "",
        /^config file '\/broken.yaml' is not valid YAML: /,
      );
    });
  });

  it("documents every flag, with its environment variable and default, in docs/CONFIGURATION.md", () => {
    const doc = readFileSync(repoPath("docs", "CONFIGURATION.md"), "utf8");
    const rows = new Map(
      [...doc.matchAll(/^\|\s*`--([a-z0-9-]+)`\s*\|([^|]*)\|([^|]*)\|/gm)].map((m) => [
        m[1] as string,
        { env: (m[2] ?? "").trim(), defaultText: (m[3] ?? "").trim() },
      ]),
    );
    for (const [flag, spec] of Object.entries(SERVE_FLAGS) as Array<
      [string, { env?: string; default?: string }]
    >) {
      const row = rows.get(flag);
      assert.ok(row, `--${flag} is in the flag table`);
      assert.equal(
        row.env,
        spec.env === undefined ? "" : `\`${spec.env}\``,
        `--${flag} environment variable`,
      );
      if (spec.default !== undefined && spec.default !== "") {
        assert.ok(row.defaultText.startsWith(`\`${spec.default}\``), `--${flag} default ${spec.default}`);
      }
    }
  });

  it("returns help without validating anything", () => {
    assert.deepEqual(parseServeArgs(["--help"], { env: {} }), { help: true });
    const usage = serveUsage();
    for (const flag of [
      "--endpoint [CSI_ENDPOINT]",
      "--node-id [NODE_NAME]",
      "--metrics-address",
      "--shutdown-timeout",
    ]) {
      assert.ok(usage.includes(flag), flag);
    }
  });
});
