/**
 * The Helm chart, rendered by scripts/deploy/helm-render.ts (no helm binary can be installed here) with the
 * default values and with variants, every rendered object validated against the Kubernetes schemas.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import {
  type ChartRender,
  isJsonObject,
  type JsonObject,
  type K8sObject,
  parseYaml11,
} from "../../../scripts/deploy/helm-render.js";
import { CHART_DIR, repoRoot } from "../../../scripts/deploy/paths.js";
import {
  assertAllValid,
  container,
  MONITORING_API,
  NAMESPACE,
  only,
  podSpec,
  RELEASE,
  render,
  SNAPSHOT_API,
  validationContext,
} from "./fixtures.js";
import { CLUSTER_SCOPED, schemaErrors, validateObject } from "./k8s-validate.js";

const key = (o: K8sObject): string => `${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name}`;

function assertWellFormed(r: ChartRender, release = RELEASE): void {
  assertAllValid(r.objects);
  const keys = r.objects.map(key);
  assert.equal(new Set(keys).size, keys.length, `duplicate objects: ${keys.join(", ")}`);
  for (const o of r.objects) {
    if (CLUSTER_SCOPED.has(o.kind))
      assert.equal(o.metadata.namespace, undefined, `${key(o)} is cluster-scoped`);
    else assert.equal(o.metadata.namespace, NAMESPACE, `${key(o)} is in the release namespace`);
    assert.equal(
      o.metadata.labels?.["app.kubernetes.io/instance"],
      release,
      `${key(o)} has the instance label`,
    );
  }
}

const kinds = (r: ChartRender): string[] => [...new Set(r.objects.map((o) => o.kind))].sort();

/** Values that turn everything on and move every knob away from its default. */
const EVERYTHING: JsonObject = {
  fullnameOverride: "tp",
  kubeletDir: "/var/lib/k0s/kubelet",
  stateDir: "/srv/thinpool-csi",
  imagePullSecrets: [{ name: "regcred" }],
  config: {
    overProvisioningRatio: 5,
    pools: [
      {
        name: "fast",
        source: {
          type: "devices",
          data: "/dev/disk/by-id/nvme-a",
          metadata: "/dev/disk/by-id/nvme-b",
          blockSize: "128Ki",
        },
      },
    ],
    nodes: {
      "dev-box": {
        pools: [{ name: "fast", source: { type: "loop", dataSize: "20Gi", metadataSize: "256Mi" } }],
      },
      "node-b": {
        pools: [{ name: "fast", source: { type: "existing", device: "/dev/mapper/vg1-pool-tpool" } }],
      },
    },
  },
  driver: {
    image: {
      registry: "registry.example.com/",
      repository: "storage/thinpool-csi",
      digest: "sha256:" + "a".repeat(64),
    },
    logLevel: "debug",
    extraArgs: ["--socket-mode=0660"],
    extraEnv: [{ name: "LOG_FORMAT", value: "json" }],
    extraVolumeMounts: [{ name: "run-lock", mountPath: "/run/lock" }],
    resources: { limits: { memory: "1Gi" } },
  },
  sidecars: {
    provisioner: {
      image: { registry: "mirror.example.com", tag: "v6.3.1" },
      extraArgs: ["--kube-api-qps=20"],
    },
    securityContext: { privileged: true },
  },
  node: {
    nodeSelector: { "thinpool.csi.dev/pool": "yes" },
    tolerations: [{ operator: "Exists" }],
    affinity: {
      nodeAffinity: {
        requiredDuringSchedulingIgnoredDuringExecution: {
          nodeSelectorTerms: [{ matchExpressions: [{ key: "x", operator: "Exists" }] }],
        },
      },
    },
    priorityClassName: "system-node-critical",
    podAnnotations: { "example.com/a": "b" },
    podLabels: { team: "storage" },
    extraVolumes: [{ name: "run-lock", hostPath: { path: "/run/lock", type: "Directory" } }],
  },
  priorityClass: { create: false },
  storageClasses: [
    { name: "thin-ext4", isDefaultClass: true },
    {
      name: "thin-xfs",
      fsType: "xfs",
      reclaimPolicy: "Retain",
      volumeBindingMode: "Immediate",
      allowVolumeExpansion: false,
      mountOptions: ["noatime"],
      parameters: { pool: "fast", stripe: 2 },
      allowedTopologies: [{ matchLabelExpressions: [{ key: "thinpool.csi.dev/node", values: ["node-b"] }] }],
      labels: { tier: "local" },
    },
  ],
  volumeSnapshotClasses: [
    { name: "thin-snap", isDefaultClass: true },
    { name: "thin-snap-retain", isDefaultClass: false, deletionPolicy: "Retain", parameters: { a: "1" } },
  ],
  snapshotCRDs: { install: true },
  snapshotController: { enabled: true, replicas: 3, tolerations: [{ operator: "Exists" }] },
  metrics: { podMonitor: { labels: { release: "prom" }, scrapeTimeout: "10s" } },
};

describe("deploy: Helm chart", () => {
  it("Chart.yaml is a v2 application chart at the package's version", () => {
    const chart = parseYaml11(readFileSync(join(CHART_DIR(), "Chart.yaml"), "utf8"));
    const pkg: unknown = JSON.parse(readFileSync(join(repoRoot(), "package.json"), "utf8"));
    assert.ok(isJsonObject(chart) && isJsonObject(pkg));
    assert.equal(chart.apiVersion, "v2");
    assert.equal(chart.name, "thinpool-csi");
    assert.equal(chart.type, "application");
    assert.match(String(chart.version), /^\d+\.\d+\.\d+$/);
    assert.equal(chart.appVersion, pkg.version);
  });

  it("renders valid objects with the default values", () => {
    const r = render();
    assertWellFormed(r);
    assert.deepEqual(kinds(r), [
      "CSIDriver",
      "ClusterRole",
      "ClusterRoleBinding",
      "ConfigMap",
      "DaemonSet",
      "Deployment",
      "PriorityClass",
      "Role",
      "RoleBinding",
      "ServiceAccount",
      "StorageClass",
    ]);
    const driver = only(r.objects, "CSIDriver", "thinpool.csi.dev");
    assert.deepEqual(driver.spec, {
      attachRequired: false,
      storageCapacity: true,
      podInfoOnMount: false,
      fsGroupPolicy: "File",
      volumeLifecycleModes: ["Persistent"],
    });
    const sc = only(r.objects, "StorageClass", "thinpool");
    assert.equal(sc.provisioner, "thinpool.csi.dev");
    assert.equal(sc.volumeBindingMode, "WaitForFirstConsumer");
    assert.equal(sc.allowVolumeExpansion, true);
    assert.deepEqual(sc.parameters, { "csi.storage.k8s.io/fstype": "ext4" });
    assert.equal(sc.metadata.annotations, undefined, "not the cluster default unless asked");
    const ds = only(r.objects, "DaemonSet");
    const spec = podSpec(ds);
    assert.equal(spec.priorityClassName, "thinpool-csi-node");
    assert.equal(
      only(r.objects, "PriorityClass").value,
      1000000,
      "value stays an integer (Go prints float64 1e+06)",
    );
    assert.equal(container(spec, "thinpool-csi").image, "ghcr.io/thinpool-csi/thinpool-csi:0.1.0");
  });

  it("renders valid objects with every option on", () => {
    const r = render(EVERYTHING, [...MONITORING_API]);
    assertWellFormed(r);
    for (const k of ["CustomResourceDefinition", "Deployment", "PodMonitor", "VolumeSnapshotClass"])
      assert.ok(kinds(r).includes(k), k);
    assert.ok(!kinds(r).includes("PriorityClass"));
    const spec = podSpec(only(r.objects, "DaemonSet", "tp-node"));
    assert.equal(spec.priorityClassName, "system-node-critical");
    const driver = container(spec, "thinpool-csi");
    assert.equal(driver.image, `registry.example.com/storage/thinpool-csi@sha256:${"a".repeat(64)}`);
    assert.equal(
      container(spec, "csi-provisioner").image,
      "mirror.example.com/sig-storage/csi-provisioner:v6.3.1",
    );
    assert.ok(driver.args?.includes("--socket-mode=0660") && driver.args.includes("--log-level=debug"));
    assert.ok(container(spec, "csi-provisioner").args?.includes("--kube-api-qps=20"));
    assert.ok(driver.volumeMounts?.some((m) => m.mountPath === "/run/lock"));
    assert.equal(spec.volumes?.find((v) => v.name === "state")?.hostPath?.path, "/srv/thinpool-csi");
    const text = JSON.stringify(r.objects);
    assert.ok(!text.includes("/var/lib/kubelet"), "no path of the default kubelet dir is left");
    assert.equal((only(r.objects, "Deployment", "tp-snapshot-controller").spec as JsonObject).replicas, 3);
  });

  it("renders the pool configuration into the driver's config file, and restarts the driver when it changes", () => {
    const r = render(EVERYTHING);
    const cm = only(r.objects, "ConfigMap", "tp-config");
    const text = (cm.data as Record<string, string>)["config.yaml"] ?? "";
    const config: unknown = parseYaml(text);
    assert.deepEqual(config, {
      ...(EVERYTHING.config as JsonObject),
      reservedDataPercent: 10,
      reservedMetadataPercent: 10,
    });
    const annotations = (podSpecTemplate(only(r.objects, "DaemonSet")).metadata as JsonObject)
      .annotations as JsonObject;
    assert.equal(
      annotations["checksum/config"],
      createHash("sha256").update(text.replace(/\n$/, "")).digest("hex"),
    );
    const other = render({ config: { overProvisioningRatio: 3 } });
    const otherAnn = (podSpecTemplate(only(other.objects, "DaemonSet")).metadata as JsonObject)
      .annotations as JsonObject;
    assert.notEqual(otherAnn["checksum/config"], annotations["checksum/config"]);
  });

  it("refuses pool configurations the driver cannot use", () => {
    const bad: Array<[JsonObject, RegExp]> = [
      [
        { config: { pools: [{ name: "p", source: { type: "lvm", device: "x" } }] } },
        /source.type must be existing, devices or loop/,
      ],
      [{ config: { pools: [{ name: "p", source: { type: "existing" } }] } }, /needs source.device/],
      [
        { config: { pools: [{ name: "p", source: { type: "devices", data: "/dev/a" } }] } },
        /needs source.data and source.metadata/,
      ],
      [{ config: { pools: [{ source: { type: "loop" } }] } }, /config.pools\[0\].name is required/],
      [{ config: { pools: [{ name: "Fast", source: { type: "loop" } }] } }, /name must be 1-63 lowercase/],
      [
        { config: { pools: [{ name: "p", source: { type: "loop", dataSize: "1Gi" } }] } },
        /needs source.dataSize and source.metadataSize/,
      ],
      [{ config: { pools: [], nodes: {} } }, /must name at least one pool/],
      [
        { config: { pools: [], nodes: { n1: { pools: [{ name: "p", source: {} }] } } } },
        /config.nodes.n1.pools\[0\]/,
      ],
      [{ config: { pools: { name: "p" } } }, /config.pools must be a list/],
      [{ kubeletDir: "var/lib/kubelet" }, /kubeletDir must be an absolute path/],
      [{ storageClasses: [{ fsType: "xfs" }] }, /storageClasses\[0\].name is required/],
      [{ serviceAccount: { create: false } }, /serviceAccount.name is required/],
      [{ driver: { shutdownTimeoutSeconds: 120 } }, /terminationGracePeriodSeconds must be longer/],
    ];
    for (const [values, message] of bad) assert.throws(() => render(values), message, JSON.stringify(values));
    // pools only per node are fine
    assertWellFormed(
      render({
        config: {
          pools: [],
          nodes: {
            n1: { pools: [{ name: "p", source: { type: "loop", dataSize: "1Gi", metadataSize: "64Mi" } }] },
          },
        },
      }),
    );
  });

  it("StorageClasses: defaults, cluster default, and every field passed through", () => {
    const r = render(EVERYTHING);
    const ext4 = only(r.objects, "StorageClass", "thin-ext4");
    assert.equal(ext4.metadata.annotations?.["storageclass.kubernetes.io/is-default-class"], "true");
    assert.equal(ext4.volumeBindingMode, "WaitForFirstConsumer");
    assert.equal(ext4.allowVolumeExpansion, true);
    assert.equal(ext4.reclaimPolicy, "Delete");
    const xfs = only(r.objects, "StorageClass", "thin-xfs");
    assert.equal(xfs.allowVolumeExpansion, false, "an explicit false is kept");
    assert.equal(xfs.volumeBindingMode, "Immediate");
    assert.equal(xfs.reclaimPolicy, "Retain");
    assert.deepEqual(xfs.mountOptions, ["noatime"]);
    assert.deepEqual(xfs.parameters, { "csi.storage.k8s.io/fstype": "xfs", pool: "fast", stripe: "2" });
    assert.equal(xfs.metadata.labels?.tier, "local");
    assert.equal(xfs.metadata.annotations, undefined);
    assert.deepEqual(xfs.allowedTopologies, [
      { matchLabelExpressions: [{ key: "thinpool.csi.dev/node", values: ["node-b"] }] },
    ]);
    assert.equal(render({ storageClasses: [] }).objects.filter((o) => o.kind === "StorageClass").length, 0);
  });

  it("VolumeSnapshotClasses: plain when the API is served, post-install hooks when the chart installs the CRDs, absent otherwise", () => {
    const none = render();
    assert.equal(none.objects.filter((o) => o.kind === "VolumeSnapshotClass").length, 0);
    assert.match(none.notes, /no VolumeSnapshotClass was created/);

    const served = render({}, SNAPSHOT_API);
    const vsc = only(served.objects, "VolumeSnapshotClass", "thinpool");
    assert.equal(vsc.driver, "thinpool.csi.dev");
    assert.equal(vsc.deletionPolicy, "Delete");
    assert.deepEqual(vsc.metadata.annotations, { "snapshot.storage.kubernetes.io/is-default-class": "true" });
    assert.doesNotMatch(served.notes, /no VolumeSnapshotClass was created/);

    for (const apis of [[], SNAPSHOT_API]) {
      const hooked = render({ snapshotCRDs: { install: true } }, apis);
      const h = only(hooked.objects, "VolumeSnapshotClass", "thinpool");
      assert.equal(h.metadata.annotations?.["helm.sh/hook"], "post-install,post-upgrade");
      assert.equal(h.metadata.annotations?.["helm.sh/hook-delete-policy"], "before-hook-creation");
    }
    const r = render(EVERYTHING);
    const retain = only(r.objects, "VolumeSnapshotClass", "thin-snap-retain");
    assert.equal(retain.deletionPolicy, "Retain");
    assert.deepEqual(retain.parameters, { a: "1" });
    assert.equal(retain.metadata.annotations?.["snapshot.storage.kubernetes.io/is-default-class"], undefined);
  });

  it("snapshot CRDs: off by default, kept on uninstall, and their schemas accept and refuse snapshot objects", () => {
    assert.equal(render().objects.filter((o) => o.kind === "CustomResourceDefinition").length, 0);
    const crds = render({ snapshotCRDs: { install: true } }).objects.filter(
      (o) => o.kind === "CustomResourceDefinition",
    );
    assert.deepEqual(crds.map((c) => c.metadata.name).sort(), [
      "volumesnapshotclasses.snapshot.storage.k8s.io",
      "volumesnapshotcontents.snapshot.storage.k8s.io",
      "volumesnapshots.snapshot.storage.k8s.io",
    ]);
    for (const c of crds) {
      assert.equal(c.metadata.annotations?.["helm.sh/resource-policy"], "keep");
      const versions = (c.spec as JsonObject).versions as JsonObject[];
      assert.deepEqual(
        versions.map((v) => [v.name, v.served, v.storage]),
        [["v1", true, true]],
      );
    }
    const ctx = validationContext();
    const vs = (source: JsonObject): K8sObject => ({
      apiVersion: "snapshot.storage.k8s.io/v1",
      kind: "VolumeSnapshot",
      metadata: { name: "s", namespace: "default" },
      spec: { volumeSnapshotClassName: "thinpool", source },
    });
    assert.deepEqual(validateObject(vs({ persistentVolumeClaimName: "data" }), ctx), []);
    assert.notDeepEqual(
      validateObject(vs({ persistentVolumeClaimName: "a", volumeSnapshotContentName: "b" }), ctx),
      [],
    );
    assert.notDeepEqual(validateObject(vs({}), ctx), []);
    const content: K8sObject = {
      apiVersion: "snapshot.storage.k8s.io/v1",
      kind: "VolumeSnapshotContent",
      metadata: { name: "c" },
      spec: {
        deletionPolicy: "Delete",
        driver: "thinpool.csi.dev",
        source: { volumeHandle: "pvc-1" },
        volumeSnapshotRef: { name: "s", namespace: "default" },
      },
      status: {
        readyToUse: true,
        restoreSize: 1073741824,
        creationTime: 1700000000000000000,
        snapshotHandle: "snap-1",
      },
    };
    assert.deepEqual(validateObject(content, ctx), []);
    assert.notDeepEqual(
      validateObject({ ...content, spec: { ...(content.spec as JsonObject), deletionPolicy: "Keep" } }, ctx),
      [],
    );
    const vsc = render({}, SNAPSHOT_API).objects.find((o) => o.kind === "VolumeSnapshotClass");
    assert.ok(vsc);
    assert.notDeepEqual(validateObject({ ...vsc, drivr: "x" }, ctx), [], "unknown fields are refused");
  });

  it("PodMonitor only when metrics are on and the cluster serves PodMonitor; it scrapes named ports of the pods", () => {
    assert.equal(render().objects.filter((o) => o.kind === "PodMonitor").length, 0);
    assert.equal(
      render({ metrics: { enabled: false } }, MONITORING_API).objects.filter((o) => o.kind === "PodMonitor")
        .length,
      0,
    );
    assert.equal(
      render({ metrics: { podMonitor: { enabled: false } } }, MONITORING_API).objects.filter(
        (o) => o.kind === "PodMonitor",
      ).length,
      0,
    );
    const r = render({}, MONITORING_API);
    const pm = only(r.objects, "PodMonitor");
    const ds = only(r.objects, "DaemonSet");
    const spec = pm.spec as {
      selector: { matchLabels: Record<string, string> };
      podMetricsEndpoints: Array<{ port: string }>;
      namespaceSelector: JsonObject;
    };
    const podLabels = (podSpecTemplate(ds).metadata as JsonObject).labels as Record<string, string>;
    for (const [k, v] of Object.entries(spec.selector.matchLabels))
      assert.equal(podLabels[k], v, `selector ${k}`);
    assert.deepEqual(spec.namespaceSelector, { matchNames: [NAMESPACE] });
    const ports = podSpec(ds).containers.flatMap((c) => (c.ports ?? []).map((p) => p.name));
    assert.deepEqual(
      spec.podMetricsEndpoints.map((e) => e.port),
      ["metrics", "provisioner", "snapshotter", "resizer"],
    );
    for (const e of spec.podMetricsEndpoints) assert.ok(ports.includes(e.port), `port ${e.port} exists`);
    assert.match(r.notes, /A PodMonitor/);
    const noSidecars = only(
      render({ metrics: { podMonitor: { sidecars: false } } }, MONITORING_API).objects,
      "PodMonitor",
    );
    assert.deepEqual(
      (noSidecars.spec as { podMetricsEndpoints: Array<{ port: string }> }).podMetricsEndpoints.map(
        (e) => e.port,
      ),
      ["metrics"],
    );
  });

  it("metrics off: no metrics port and an empty --metrics-address", () => {
    const spec = podSpec(only(render({ metrics: { enabled: false } }).objects, "DaemonSet"));
    const driver = container(spec, "thinpool-csi");
    assert.ok(driver.args?.includes("--metrics-address="));
    assert.ok(!driver.ports?.some((p) => p.name === "metrics"));
  });

  it("pool pressure thresholds reach the driver as flags", () => {
    const defaults = container(podSpec(only(render({}).objects, "DaemonSet")), "thinpool-csi").args ?? [];
    for (const flag of [
      "--pool-data-warning-percent=80",
      "--pool-data-critical-percent=90",
      "--pool-metadata-warning-percent=80",
      "--pool-metadata-critical-percent=90",
    ])
      assert.ok(defaults.includes(flag), flag);
    const set = render({
      driver: {
        poolPressure: { dataWarningPercent: 70, dataCriticalPercent: 85.5, metadataWarningPercent: 60 },
      },
    });
    const args = container(podSpec(only(set.objects, "DaemonSet")), "thinpool-csi").args ?? [];
    assert.ok(args.includes("--pool-data-warning-percent=70"));
    assert.ok(args.includes("--pool-data-critical-percent=85.5"));
    assert.ok(args.includes("--pool-metadata-warning-percent=60"));
    assert.ok(args.includes("--pool-metadata-critical-percent=90"), "unset values keep the default");
  });

  it("ServiceAccount, RBAC and PriorityClass switches", () => {
    const noRbac = render({ rbac: { create: false } });
    assertWellFormed(noRbac);
    assert.ok(!noRbac.objects.some((o) => /Role/.test(o.kind)));
    const ownSa = render({ serviceAccount: { create: false, name: "my-sa" } });
    // serviceAccount.* is the node pods' account; the placement controller always has its own.
    const nodeObjects = ownSa.objects.filter(
      (o) => o.metadata.labels?.["app.kubernetes.io/component"] !== "placement-controller",
    );
    assert.ok(!nodeObjects.some((o) => o.kind === "ServiceAccount"));
    assert.equal(podSpec(only(ownSa.objects, "DaemonSet")).serviceAccountName, "my-sa");
    for (const b of nodeObjects.filter((o) => o.kind.endsWith("Binding")))
      assert.deepEqual(b.subjects, [{ kind: "ServiceAccount", name: "my-sa", namespace: NAMESPACE }]);
    const noPc = render({ priorityClass: { create: false } });
    assert.ok(!noPc.objects.some((o) => o.kind === "PriorityClass"));
    assert.equal(podSpec(only(noPc.objects, "DaemonSet")).priorityClassName, undefined);
    const named = render({ priorityClass: { name: "storage-critical", value: 2000000 } });
    assert.equal(only(named.objects, "PriorityClass", "storage-critical").value, 2000000);
    assert.equal(podSpec(only(named.objects, "DaemonSet")).priorityClassName, "storage-critical");
  });

  it("names follow the release and the overrides", () => {
    assert.ok(render({}, [], "storage").objects.some((o) => o.metadata.name === "storage-thinpool-csi-node"));
    assert.ok(render({ nameOverride: "tp" }, [], "x").objects.some((o) => o.metadata.name === "x-tp-node"));
    const long = render({}, [], "a".repeat(70));
    for (const o of long.objects) assert.ok(o.metadata.name.length <= 253);
    assertWellFormed(render({}, [], "thinpool-csi-prod"), "thinpool-csi-prod");
  });

  it("NOTES.txt says what to do next, and what the cluster's snapshot-controller needs", () => {
    const notes = render().notes;
    assert.match(notes, /kubectl -n storage-system get pods/);
    assert.match(notes, /--enable-distributed-snapshotting=true/);
    assert.match(notes, /vg0-pool0;/);
    assert.match(notes, /storageClassName: thinpool/);
    const withController = render({ snapshotController: { enabled: true } }).notes;
    assert.doesNotMatch(withController, /IMPORTANT: the per-node csi-snapshotters/);
    assert.match(withController, /runs a snapshot-controller/);
  });

  it("every template renders something in some configuration", () => {
    const rendered = new Set(
      [render(EVERYTHING, [...MONITORING_API]), render()].flatMap((r) => r.files.map((f) => f.template)),
    );
    const templates = readdirSync(join(CHART_DIR(), "templates")).filter((f) => f.endsWith(".yaml"));
    for (const t of templates) assert.ok(rendered.has(`templates/${t}`), `templates/${t} renders`);
  });

  it("the validation used here rejects broken objects", () => {
    const ds = structuredClone(only(render().objects, "DaemonSet"));
    const c = podSpec(ds).containers[0]!;
    (c as unknown as JsonObject).mountPropogation = "Bidirectional";
    assert.match(validateObject(ds, validationContext()).join("\n"), /mountPropogation: unknown field/);
    const ds2 = structuredClone(only(render().objects, "DaemonSet"));
    (podSpec(ds2).containers[0]! as unknown as JsonObject).ports = [{ containerPort: "9810" }];
    assert.match(validateObject(ds2, validationContext()).join("\n"), /must be integer/);
    const sc = structuredClone(only(render().objects, "StorageClass"));
    sc.volumeBindingMode = "Later";
    assert.notDeepEqual(validateObject(sc, validationContext()), []);
    const bad = { ...only(render().objects, "ConfigMap") };
    bad.metadata = { ...bad.metadata, labels: { "bad label": "x" } };
    assert.match(validateObject(bad, validationContext()).join("\n"), /bad label key/);
    assert.notDeepEqual(schemaErrors({ a: 1 }, { type: "object", properties: {} }, "x"), []);
  });
});

function podSpecTemplate(workload: K8sObject): JsonObject {
  const spec = workload.spec;
  assert.ok(isJsonObject(spec) && isJsonObject(spec.template));
  return spec.template;
}
