/**
 * Sidecar arguments, environment and RBAC checked against what each sidecar needs, from
 * shared/reference/sidecars-and-spec-notes.md (sections 1-5: upstream flags, README requirements and the
 * rbac.yaml of each sidecar at the release named in section 5), for the DaemonSet-only design.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { K8sObject } from "../../../scripts/deploy/helm-render.js";
import { repoRoot } from "../../../scripts/deploy/paths.js";
import { MANIFEST_NAMESPACE } from "../../../scripts/deploy/render-manifests.js";
import { readCommittedManifests } from "./manifests-files.js";
import {
  argMap,
  type Container,
  container,
  NAMESPACE,
  only,
  permissionTable,
  podSpec,
  type PodSpec,
  render,
  rules,
} from "./fixtures.js";

type Table = Record<string, string[]>;

interface Requirement {
  image: string;
  tag: string;
  /** flag -> exact value ("true" for bare boolean flags) */
  args: Record<string, string>;
  /** flags that must be absent */
  absent: string[];
  /** env name -> downward API fieldPath */
  env: Record<string, string>;
  /** true: --leader-election on; false: off (absent or =false) */
  leaderElection: boolean;
  clusterRules: Table | null;
  namespaceRules: Table | null;
}

const sorted = (t: Table): Table =>
  Object.fromEntries(
    Object.entries(t)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => [k, [...v].sort()]),
  );

/** What each sidecar needs (notes section 1-4; versions section 5). */
const SIDECARS: Record<string, Requirement> = {
  "csi-provisioner": {
    image: "registry.k8s.io/sig-storage/csi-provisioner",
    tag: "v6.3.0",
    args: {
      "--node-deployment": "true",
      "--strict-topology": "true",
      "--immediate-topology": "false",
      "--enable-capacity": "true",
      "--capacity-ownerref-level": "1",
      "--extra-create-metadata": "true",
    },
    absent: ["--feature-gates", "--leader-election-namespace"],
    // NODE_NAME is fatal when missing with --node-deployment; NAMESPACE/POD_NAME for capacity ownership.
    env: { NODE_NAME: "spec.nodeName", NAMESPACE: "metadata.namespace", POD_NAME: "metadata.name" },
    leaderElection: false,
    // external-provisioner-runner, minus volumeattachments (no PUBLISH_UNPUBLISH) and secrets (unused).
    clusterRules: sorted({
      "core/persistentvolumes": ["get", "list", "watch", "create", "patch", "delete"],
      "core/persistentvolumeclaims": ["get", "list", "watch", "update"],
      "storage.k8s.io/storageclasses": ["get", "list", "watch"],
      "core/events": ["list", "watch", "create", "update", "patch"],
      "snapshot.storage.k8s.io/volumesnapshots": ["get", "list", "watch", "update"],
      "snapshot.storage.k8s.io/volumesnapshotcontents": ["get", "list"],
      "storage.k8s.io/csinodes": ["get", "list", "watch"],
      "core/nodes": ["get", "list", "watch"],
    }),
    // external-provisioner-cfg minus leases (no leader election) and replicasets (owner is a DaemonSet).
    namespaceRules: sorted({
      "storage.k8s.io/csistoragecapacities": ["get", "list", "watch", "create", "update", "patch", "delete"],
      "core/pods": ["get"],
    }),
  },
  "csi-snapshotter": {
    image: "registry.k8s.io/sig-storage/csi-snapshotter",
    tag: "v8.6.0",
    args: { "--node-deployment": "true", "--extra-create-metadata": "true" },
    absent: ["--leader-election-namespace"],
    env: { NODE_NAME: "spec.nodeName" },
    // csi-snapshotter exits when --leader-election is combined with --node-deployment.
    leaderElection: false,
    clusterRules: sorted({
      "core/events": ["list", "watch", "create", "update", "patch"],
      "snapshot.storage.k8s.io/volumesnapshotclasses": ["get", "list", "watch"],
      "snapshot.storage.k8s.io/volumesnapshotcontents": ["get", "list", "watch", "update", "patch"],
      "snapshot.storage.k8s.io/volumesnapshotcontents/status": ["update", "patch"],
      "groupsnapshot.storage.k8s.io/volumegroupsnapshotclasses": ["get", "list", "watch"],
      "groupsnapshot.storage.k8s.io/volumegroupsnapshotcontents": ["get", "list", "watch", "update", "patch"],
      "groupsnapshot.storage.k8s.io/volumegroupsnapshotcontents/status": ["update", "patch"],
    }),
    namespaceRules: null,
  },
  "csi-resizer": {
    image: "registry.k8s.io/sig-storage/csi-resizer",
    tag: "v2.2.1",
    args: { "--leader-election-namespace": "$(NAMESPACE)", "--handle-volume-inuse-error": "false" },
    // no node mode upstream (external-resizer#142)
    absent: ["--node-deployment"],
    env: { NAMESPACE: "metadata.namespace" },
    leaderElection: true,
    clusterRules: sorted({
      "core/persistentvolumes": ["get", "list", "watch", "patch"],
      "core/persistentvolumeclaims": ["get", "list", "watch"],
      "core/pods": ["get", "list", "watch"],
      "core/persistentvolumeclaims/status": ["patch"],
      "core/events": ["list", "watch", "create", "update", "patch"],
      "storage.k8s.io/volumeattributesclasses": ["get", "list", "watch"],
    }),
    namespaceRules: sorted({
      "coordination.k8s.io/leases": ["get", "watch", "list", "delete", "update", "create"],
    }),
  },
  "node-driver-registrar": {
    image: "registry.k8s.io/sig-storage/csi-node-driver-registrar",
    tag: "v2.17.0",
    args: {},
    absent: ["--mode", "--health-port"],
    env: {},
    leaderElection: false,
    // "does not interact with the Kubernetes API, so no RBAC rules are needed"
    clusterRules: null,
    namespaceRules: null,
  },
  "liveness-probe": {
    image: "registry.k8s.io/sig-storage/livenessprobe",
    tag: "v2.19.0",
    args: {},
    absent: ["--health-port", "--metrics-address"],
    env: {},
    leaderElection: false,
    clusterRules: null,
    namespaceRules: null,
  },
};

/** The driver container's own API use (events on Nodes; `thinpool-csi orphans`). */
const DRIVER_RULES: Table = sorted({
  "core/events": ["create", "patch"],
  "core/nodes": ["get"],
  "core/persistentvolumes": ["list"],
  "snapshot.storage.k8s.io/volumesnapshotcontents": ["list"],
});

/** The placement controller Deployment: what it reads, the PVC annotation it patches, its Lease. */
const PLACEMENT_RULES: Table = sorted({
  "core/persistentvolumeclaims": ["get", "list", "watch", "patch"],
  "core/persistentvolumes": ["get"],
  "snapshot.storage.k8s.io/volumesnapshots": ["get"],
  "snapshot.storage.k8s.io/volumesnapshotcontents": ["get"],
  "storage.k8s.io/storageclasses": ["list"],
  "core/nodes": ["get", "list"],
  "core/events": ["create", "patch"],
});
const PLACEMENT_NAMESPACE_RULES: Table = sorted({
  "coordination.k8s.io/leases": ["get", "create", "update"],
});

/** snapshot-controller v8 runner rules plus the nodes rule that --enable-distributed-snapshotting needs. */
const SNAPSHOT_CONTROLLER_RULES: Table = sorted({
  "core/persistentvolumes": ["get", "list", "watch"],
  "core/persistentvolumeclaims": ["get", "list", "watch", "update"],
  "storage.k8s.io/storageclasses": ["get", "list", "watch"],
  "core/events": ["list", "watch", "create", "update", "patch"],
  "snapshot.storage.k8s.io/volumesnapshotclasses": ["get", "list", "watch"],
  "snapshot.storage.k8s.io/volumesnapshotcontents": [
    "create",
    "get",
    "list",
    "watch",
    "update",
    "delete",
    "patch",
  ],
  "snapshot.storage.k8s.io/volumesnapshotcontents/status": ["patch"],
  "snapshot.storage.k8s.io/volumesnapshots": ["create", "get", "list", "watch", "update", "patch", "delete"],
  "snapshot.storage.k8s.io/volumesnapshots/status": ["update", "patch"],
  "groupsnapshot.storage.k8s.io/volumegroupsnapshotclasses": ["get", "list", "watch"],
  "groupsnapshot.storage.k8s.io/volumegroupsnapshotcontents": [
    "create",
    "get",
    "list",
    "watch",
    "update",
    "delete",
    "patch",
  ],
  "groupsnapshot.storage.k8s.io/volumegroupsnapshotcontents/status": ["patch"],
  "groupsnapshot.storage.k8s.io/volumegroupsnapshots": ["get", "list", "watch", "update", "patch"],
  "groupsnapshot.storage.k8s.io/volumegroupsnapshots/status": ["update", "patch"],
  "core/nodes": ["get", "list", "watch"],
});

/** Flags of `thinpool-csi <command>`, from its "## Flags of `<command>`" table in docs/CONFIGURATION.md. */
function documentedFlags(command: string): Set<string> {
  const doc = readFileSync(join(repoRoot(), "docs", "CONFIGURATION.md"), "utf8");
  const section = doc.split(/^## /m).find((s) => s.startsWith(`Flags of \`${command}\``)) ?? "";
  const flags = new Set([...section.matchAll(/^\|\s*`(--[a-z0-9-]+)`\s*\|/gm)].map((m) => m[1]!));
  assert.ok(flags.size > 0, `CONFIGURATION.md flag table of ${command} parsed`);
  return flags;
}

function envFieldPath(c: Container, name: string): string | undefined {
  return c.env?.find((e) => e.name === name)?.valueFrom?.fieldRef?.fieldPath;
}

function leaderElectionOn(args: Map<string, string>): boolean {
  const v = args.get("--leader-election");
  return v !== undefined && v !== "false";
}

function durationSeconds(d: string): number {
  const m = /^(\d+)(s|m)$/.exec(d);
  assert.ok(m, `duration ${d}`);
  return Number(m[1]) * (m[2] === "m" ? 60 : 1);
}

/** The socket the driver serves, as [volume name, path inside the driver container]. */
function driverSocket(spec: PodSpec): { volume: string; dir: string; file: string } {
  const driver = container(spec, "thinpool-csi");
  const endpoint = argMap(driver.args).get("--endpoint") ?? "";
  assert.ok(endpoint.startsWith("unix://"), "driver --endpoint is a unix socket");
  const path = endpoint.slice("unix://".length);
  const dir = path.slice(0, path.lastIndexOf("/"));
  const mount = driver.volumeMounts?.find((m) => m.mountPath === dir);
  assert.ok(mount, `driver mounts the socket directory ${dir}`);
  return { volume: mount.name, dir, file: path.slice(dir.length + 1) };
}

function checkNodePlugin(objects: K8sObject[], kubeletDir: string): void {
  const ds = only(objects, "DaemonSet");
  const spec = podSpec(ds);
  const names = spec.containers.map((c) => c.name).sort();
  assert.deepEqual(names, ["thinpool-csi", ...Object.keys(SIDECARS)].sort());
  const socket = driverSocket(spec);
  const socketVolume = spec.volumes?.find((v) => v.name === socket.volume);
  assert.equal(socketVolume?.hostPath?.path, `${kubeletDir}/plugins/thinpool.csi.dev`);

  // every --csi-address is the driver's socket, through a mount of the same volume
  for (const c of spec.containers.filter((x) => x.name !== "thinpool-csi")) {
    const addr = argMap(c.args).get("--csi-address");
    assert.ok(addr, `${c.name} has --csi-address`);
    const dir = addr.slice(0, addr.lastIndexOf("/"));
    const mount = c.volumeMounts?.find((m) => m.mountPath === dir);
    assert.equal(mount?.name, socket.volume, `${c.name} reaches the socket through ${socket.volume}`);
    assert.equal(addr.slice(dir.length + 1), socket.file, `${c.name} --csi-address names the driver socket`);
  }

  for (const [name, req] of Object.entries(SIDECARS)) {
    const c = container(spec, name);
    const args = argMap(c.args);
    assert.ok(c.image.startsWith(`${req.image}:`), `${name} image ${c.image}`);
    assert.equal(c.image.slice(req.image.length + 1), req.tag, `${name} tag`);
    for (const [flag, value] of Object.entries(req.args))
      assert.equal(args.get(flag), value, `${name} ${flag}`);
    for (const flag of req.absent) assert.ok(!args.has(flag), `${name} must not pass ${flag}`);
    for (const [env, fieldPath] of Object.entries(req.env))
      assert.equal(envFieldPath(c, env), fieldPath, `${name} env ${env} from ${fieldPath}`);
    assert.equal(leaderElectionOn(args), req.leaderElection, `${name} leader election`);
  }

  const prov = argMap(container(spec, "csi-provisioner").args);
  assert.ok(
    durationSeconds(prov.get("--timeout") ?? "10s") >= 60,
    "provisioner --timeout covers slow creates",
  );

  const registrar = container(spec, "node-driver-registrar");
  const regArgs = argMap(registrar.args);
  assert.equal(regArgs.get("--kubelet-registration-path"), `${socketVolume?.hostPath?.path}/${socket.file}`);
  const regMount = registrar.volumeMounts?.find((m) => m.mountPath === "/registration");
  assert.equal(
    spec.volumes?.find((v) => v.name === regMount?.name)?.hostPath?.path,
    `${kubeletDir}/plugins_registry`,
  );
  const regPort = registrar.ports?.find((p) => p.name === registrar.livenessProbe?.httpGet?.port);
  assert.equal(
    `:${regPort?.containerPort}`,
    regArgs.get("--http-endpoint"),
    "registrar probe hits its http endpoint",
  );

  // the driver's liveness probe reaches livenessprobe's --http-endpoint
  const driver = container(spec, "thinpool-csi");
  const probePort = driver.ports?.find((p) => p.name === driver.livenessProbe?.httpGet?.port);
  assert.equal(driver.livenessProbe?.httpGet?.path, "/healthz");
  assert.equal(
    `:${probePort?.containerPort}`,
    argMap(container(spec, "liveness-probe").args).get("--http-endpoint"),
  );

  // the driver: documented flags only, node identity, privileged, udev off, bidirectional kubelet mounts
  const dargs = driver.args ?? [];
  assert.equal(dargs[0], "serve");
  const documented = documentedFlags("serve");
  assert.ok(documented.has("--endpoint") && documented.has("--config"), "CONFIGURATION.md flag table parsed");
  for (const flag of argMap(dargs.slice(1)).keys())
    assert.ok(documented.has(flag), `driver flag ${flag} is in CONFIGURATION.md`);
  const dmap = argMap(dargs.slice(1));
  assert.equal(dmap.get("--node-id"), "$(NODE_NAME)");
  // CONFIGURATION.md: keep the pod's grace period longer than the driver's shutdown timeout
  const grace = spec.terminationGracePeriodSeconds ?? 30;
  assert.ok(
    durationSeconds(dmap.get("--shutdown-timeout") ?? "60s") < grace,
    "shutdown timeout < grace period",
  );
  assert.equal(dmap.get("--kubelet-dir"), kubeletDir);
  assert.equal(envFieldPath(driver, "NODE_NAME"), "spec.nodeName");
  assert.equal(driver.env?.find((e) => e.name === "DM_DISABLE_UDEV")?.value, "1");
  assert.equal(driver.securityContext?.privileged, true);
  for (const sub of ["pods", "plugins"]) {
    const m = driver.volumeMounts?.find((x) => x.mountPath === `${kubeletDir}/${sub}`);
    assert.equal(m?.mountPropagation, "Bidirectional", `${kubeletDir}/${sub} is Bidirectional`);
    assert.equal(spec.volumes?.find((v) => v.name === m?.name)?.hostPath?.path, `${kubeletDir}/${sub}`);
  }
  const cfg = dmap.get("--config") ?? "";
  const cfgMount = driver.volumeMounts?.find((m) => cfg.startsWith(m.mountPath + "/"));
  const cfgVolume = spec.volumes?.find((v) => v.name === cfgMount?.name);
  const cm = only(objects, "ConfigMap", cfgVolume?.configMap?.name);
  assert.ok(
    cfg.endsWith("/config.yaml") && typeof (cm.data as Record<string, unknown>)["config.yaml"] === "string",
  );
  assert.equal(
    driver.volumeMounts?.find((m) => m.mountPath === "/dev")?.name,
    spec.volumes?.find((v) => v.hostPath?.path === "/dev")?.name,
  );
  // no other container may change host mounts
  for (const c of spec.containers.filter((x) => x.name !== "thinpool-csi"))
    assert.ok(
      !c.volumeMounts?.some((m) => m.mountPropagation === "Bidirectional"),
      `${c.name} has no Bidirectional mount`,
    );
}

function checkRbac(objects: K8sObject[], nodeServiceAccount: string, namespace = NAMESPACE): void {
  const roles = objects.filter((o) => o.kind === "ClusterRole" || o.kind === "Role");
  for (const role of roles)
    for (const r of rules(role)) {
      for (const field of [r.verbs, r.resources ?? [], r.apiGroups ?? []])
        assert.ok(!field.some((x) => x.includes("*")), `${role.kind}/${role.metadata.name}: no wildcards`);
      assert.equal(r.nonResourceURLs, undefined, `${role.kind}/${role.metadata.name}: no nonResourceURLs`);
    }

  const byContainer = (kind: string, name: string): K8sObject[] =>
    objects.filter((o) => o.kind === kind && o.metadata.labels?.["thinpool.csi.dev/container"] === name);
  const boundTo = (role: K8sObject): string[] =>
    objects
      .filter(
        (b) =>
          b.kind === (role.kind === "ClusterRole" ? "ClusterRoleBinding" : "RoleBinding") &&
          (b.roleRef as { name: string }).name === role.metadata.name &&
          b.metadata.namespace === role.metadata.namespace,
      )
      .flatMap((b) => (b.subjects as Array<{ kind: string; name: string; namespace: string }>) ?? [])
      .map((s) => `${s.kind}:${s.namespace}/${s.name}`);

  const expect: Record<string, [Table | null, Table | null]> = {
    "thinpool-csi": [DRIVER_RULES, null],
    ...Object.fromEntries(Object.entries(SIDECARS).map(([n, r]) => [n, [r.clusterRules, r.namespaceRules]])),
  };
  const sa = `ServiceAccount:${namespace}/${nodeServiceAccount}`;
  for (const [name, [clusterRules, nsRules]] of Object.entries(expect)) {
    for (const [kind, want] of [
      ["ClusterRole", clusterRules],
      ["Role", nsRules],
    ] as const) {
      const found = byContainer(kind, name);
      if (!want) {
        assert.equal(found.length, 0, `${name} needs no ${kind}`);
        continue;
      }
      assert.equal(found.length, 1, `${name} has one ${kind}`);
      assert.deepEqual(permissionTable(rules(found[0]!)), want, `${kind} rules of ${name}`);
      assert.deepEqual(boundTo(found[0]!), [sa], `${kind} of ${name} is bound to the node ServiceAccount`);
      if (kind === "Role") assert.equal(found[0]!.metadata.namespace, namespace);
    }
  }
  // the node ServiceAccount holds nothing else
  const nodeRoles = objects
    .filter((o) => (o.kind === "ClusterRole" || o.kind === "Role") && boundTo(o).includes(sa))
    .map((o) => o.metadata.labels?.["thinpool.csi.dev/container"]);
  assert.deepEqual([...new Set(nodeRoles)].sort(), [
    "csi-provisioner",
    "csi-resizer",
    "csi-snapshotter",
    "thinpool-csi",
  ]);
}

describe("deploy: sidecars and RBAC", () => {
  it("default chart: sidecar args, env, images, sockets and RBAC", () => {
    const objects = render().objects;
    checkNodePlugin(objects, "/var/lib/kubelet");
    checkRbac(objects, "thinpool-csi-node");
  });

  it("chart with another kubelet dir and metrics off", () => {
    const objects = render({
      kubeletDir: "/var/snap/microk8s/common/var/lib/kubelet/",
      metrics: { enabled: false },
    }).objects;
    checkNodePlugin(objects, "/var/snap/microk8s/common/var/lib/kubelet");
    checkRbac(objects, "thinpool-csi-node");
    const args = container(podSpec(only(objects, "DaemonSet")), "thinpool-csi").args ?? [];
    assert.ok(args.includes("--metrics-address="), "empty --metrics-address disables metrics");
  });

  it("the placement controller: documented flags, Lease identity from the pod, least-privilege RBAC of its own", () => {
    for (const objects of [render().objects, [...readCommittedManifests().values()].flat()]) {
      const dep = only(objects, "Deployment", "thinpool-csi-placement");
      const spec = podSpec(dep);
      assert.equal(spec.serviceAccountName, "thinpool-csi-placement");
      const c = container(spec, "placement-controller");
      assert.equal(c.args?.[0], "placement-controller");
      const documented = documentedFlags("placement-controller");
      for (const flag of argMap(c.args?.slice(1)).keys())
        assert.ok(documented.has(flag), `placement-controller flag ${flag} is in CONFIGURATION.md`);
      assert.equal(envFieldPath(c, "POD_NAME"), "metadata.name");
      assert.equal(envFieldPath(c, "NAMESPACE"), "metadata.namespace");
      assert.equal(c.image, container(podSpec(only(objects, "DaemonSet")), "thinpool-csi").image);
      const ofPlacement = (kind: string) =>
        only(
          objects.filter((o) => o.metadata.labels?.["thinpool.csi.dev/container"] === "placement-controller"),
          kind,
        );
      assert.deepEqual(permissionTable(rules(ofPlacement("ClusterRole"))), PLACEMENT_RULES);
      assert.deepEqual(permissionTable(rules(ofPlacement("Role"))), PLACEMENT_NAMESPACE_RULES);
    }
    const off = render({ placementController: { enabled: false } }).objects;
    assert.ok(!off.some((o) => o.metadata.name === "thinpool-csi-placement"));
  });

  it("plain manifests: the same checks", () => {
    const objects = [...readCommittedManifests().values()].flat();
    checkNodePlugin(objects, "/var/lib/kubelet");
    checkRbac(objects, "thinpool-csi-node", MANIFEST_NAMESPACE);
  });

  it("the bundled snapshot-controller runs distributed snapshotting with node access", () => {
    const objects = render({ snapshotController: { enabled: true } }).objects;
    const dep = only(objects, "Deployment", "thinpool-csi-snapshot-controller");
    const c = container(podSpec(dep), "snapshot-controller");
    const args = argMap(c.args);
    assert.equal(args.get("--enable-distributed-snapshotting"), "true");
    assert.ok(leaderElectionOn(args));
    assert.equal(args.get("--leader-election-namespace"), "$(NAMESPACE)");
    assert.equal(envFieldPath(c, "NAMESPACE"), "metadata.namespace");
    assert.ok(c.image.endsWith("/sig-storage/snapshot-controller:v8.6.0"));
    const role = only(objects, "ClusterRole", `${dep.metadata.name}`);
    assert.deepEqual(permissionTable(rules(role)), SNAPSHOT_CONTROLLER_RULES);
    const leases = only(objects, "Role", `${dep.metadata.name}`);
    assert.deepEqual(permissionTable(rules(leases)), {
      "coordination.k8s.io/leases": ["create", "delete", "get", "list", "update", "watch"],
    });
    assert.equal(podSpec(dep).serviceAccountName, dep.metadata.name);
    // the node plugin's RBAC is unchanged by it
    checkRbac(
      objects.filter(
        (o) =>
          !["snapshot-controller", "placement-controller"].includes(
            o.metadata.labels?.["app.kubernetes.io/component"] ?? "",
          ),
      ),
      "thinpool-csi-node",
    );
  });

  it("the checks catch a wrong argument, a missing env var and a widened rule", () => {
    const objects = render().objects;
    const ds = only(objects, "DaemonSet");
    const spec = podSpec(ds);
    const prov = container(spec, "csi-provisioner");
    prov.args = (prov.args ?? []).map((a) =>
      a === "--strict-topology=true" ? "--strict-topology=false" : a,
    );
    assert.throws(() => checkNodePlugin(objects, "/var/lib/kubelet"), /--strict-topology/);

    const objects2 = render().objects;
    const snap = container(podSpec(only(objects2, "DaemonSet")), "csi-snapshotter");
    snap.env = [];
    assert.throws(() => checkNodePlugin(objects2, "/var/lib/kubelet"), /NODE_NAME/);

    const objects3 = render().objects;
    const resizerRole = objects3.find(
      (o) => o.kind === "ClusterRole" && o.metadata.labels?.["thinpool.csi.dev/container"] === "csi-resizer",
    );
    assert.ok(resizerRole);
    rules(resizerRole).push({ apiGroups: [""], resources: ["secrets"], verbs: ["get"] });
    assert.throws(() => checkRbac(objects3, "thinpool-csi-node"), /rules of csi-resizer/);
    rules(resizerRole).push({ apiGroups: [""], resources: ["*"], verbs: ["get"] });
    assert.throws(() => checkRbac(objects3, "thinpool-csi-node"), /no wildcards/);
  });
});
