/** Where the Kubernetes clients find the API server: flag, in-cluster, KUBECONFIG, home; a typed error otherwise. */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { KubeConfigError, currentNamespace, loadKubeConfig } from "../../../src/kube/config.js";

function kubeconfig(server: string, namespace = "team-a"): string {
  return [
    "apiVersion: v1",
    "kind: Config",
    "clusters: [{name: c, cluster: {server: '" + server + "'}}]",
    "users: [{name: u, user: {token: t}}]",
    `contexts: [{name: x, context: {cluster: c, user: u, namespace: ${namespace}}}]`,
    "current-context: x",
  ].join("\n");
}

describe("kube loadKubeConfig", () => {
  let dir: string;
  let sa: string;
  let home: string;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "tpcsi-kubeconfig-"));
    sa = join(dir, "sa");
    home = join(dir, "home");
    mkdirSync(sa);
    mkdirSync(home);
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("uses the service account in a pod, with the pod's namespace", () => {
    writeFileSync(join(sa, "token"), "tok");
    writeFileSync(join(sa, "namespace"), "thinpool-csi\n");
    const loaded = loadKubeConfig({
      env: { KUBERNETES_SERVICE_HOST: "10.0.0.1", KUBERNETES_SERVICE_PORT: "443", KUBECONFIG: "/nope" },
      serviceAccountDir: sa,
      homeDir: home,
    });
    assert.equal(loaded.origin, "in-cluster");
    assert.equal(loaded.server, "https://10.0.0.1:443");
    assert.equal(currentNamespace(loaded.config), "thinpool-csi");
    assert.equal(loaded.config.getCurrentCluster()?.caFile, join(sa, "ca.crt"));
  });

  it("brackets an IPv6 service address", () => {
    writeFileSync(join(sa, "token"), "tok");
    const loaded = loadKubeConfig({
      env: { KUBERNETES_SERVICE_HOST: "fd00::1" },
      serviceAccountDir: sa,
      homeDir: home,
    });
    assert.equal(loaded.server, "https://[fd00::1]:443");
  });

  it("prefers an explicit --kubeconfig over the service account", () => {
    writeFileSync(join(sa, "token"), "tok");
    const file = join(dir, "kc");
    writeFileSync(file, kubeconfig("https://flag:6443"));
    const loaded = loadKubeConfig({
      kubeconfigPath: file,
      env: { KUBERNETES_SERVICE_HOST: "10.0.0.1" },
      serviceAccountDir: sa,
      homeDir: home,
    });
    assert.equal(loaded.origin, "kubeconfig-flag");
    assert.equal(loaded.server, "https://flag:6443");
    assert.equal(currentNamespace(loaded.config), "team-a");
  });

  it("falls back to KUBECONFIG (first file of a list), then ~/.kube/config", () => {
    const file = join(dir, "kc");
    writeFileSync(file, kubeconfig("https://env:6443"));
    assert.equal(
      loadKubeConfig({ env: { KUBECONFIG: `${file}:/other` }, serviceAccountDir: sa, homeDir: home }).server,
      "https://env:6443",
    );
    mkdirSync(join(home, ".kube"));
    writeFileSync(join(home, ".kube", "config"), kubeconfig("https://home:6443"));
    const loaded = loadKubeConfig({ env: {}, serviceAccountDir: sa, homeDir: home });
    assert.equal(loaded.origin, "home");
    assert.equal(loaded.server, "https://home:6443");
  });

  it("throws KubeConfigError naming what was tried when nothing is there", () => {
    assert.throws(
      () =>
        loadKubeConfig({
          env: { KUBERNETES_SERVICE_HOST: "10.0.0.1" },
          serviceAccountDir: sa,
          homeDir: home,
        }),
      (error: unknown) =>
        error instanceof KubeConfigError &&
        /no --kubeconfig, no KUBECONFIG/.test(error.message) &&
        error.message.includes(sa),
    );
  });

  it("throws KubeConfigError for a named file that is missing or not a kubeconfig", () => {
    assert.throws(() => loadKubeConfig({ kubeconfigPath: join(dir, "missing"), env: {} }), KubeConfigError);
    const bad = join(dir, "bad");
    writeFileSync(bad, "{{{ not yaml");
    assert.throws(() => loadKubeConfig({ kubeconfigPath: bad, env: {} }), KubeConfigError);
  });
});
