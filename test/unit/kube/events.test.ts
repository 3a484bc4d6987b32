/**
 * The event recorder against the local fake API server (test/support/fake-kube-api.ts): what it writes,
 * how repeats are merged, how floods are cut, and that API failures never reach the caller.
 */
import assert from "node:assert/strict";
import { pino } from "pino";

import { makeKubeClients } from "../../../src/kube/clients.js";
import {
  EVENT_BURST,
  EVENT_REFILL_MS,
  EventRecorder,
  type InvolvedObject,
} from "../../../src/kube/events.js";
import { FakeKubeApi } from "../../support/fake-kube-api.js";

const node: InvolvedObject = { kind: "Node", name: "worker-1", uid: "u-node", apiVersion: "v1" };
const pvc: InvolvedObject = {
  kind: "PersistentVolumeClaim",
  name: "data",
  namespace: "apps",
  uid: "u-pvc",
  apiVersion: "v1",
};

describe("kube EventRecorder (fake API server)", () => {
  let api: FakeKubeApi;
  let clock: number;
  let recorder: EventRecorder;
  let logged: string[];

  beforeEach(async () => {
    api = new FakeKubeApi();
    await api.start();
    clock = Date.parse("2026-11-23T12:00:00Z");
    logged = [];
    const logger = pino({ level: "debug" }, { write: (line: string) => logged.push(line) });
    recorder = new EventRecorder({
      core: makeKubeClients(api.kubeConfig()).core,
      component: "thinpool-csi-test",
      host: "worker-1",
      logger,
      now: () => new Date(clock),
    });
  });

  afterEach(() => api.stop());

  it("writes a core/v1 Event for a namespaced object in its namespace, with source and counts", async () => {
    await recorder.recordEvent(pvc, "Warning", "RestoreNodeMismatch", "source lives on worker-2");
    const events = api.list("Event");
    assert.equal(events.length, 1);
    const event = events[0] as Record<string, unknown> & { metadata: { namespace: string; name: string } };
    assert.equal(event.metadata.namespace, "apps");
    assert.match(event.metadata.name, /^data\.[0-9a-f]+$/);
    assert.deepEqual(event["involvedObject"], {
      kind: "PersistentVolumeClaim",
      name: "data",
      namespace: "apps",
      uid: "u-pvc",
      apiVersion: "v1",
    });
    assert.equal(event["type"], "Warning");
    assert.equal(event["reason"], "RestoreNodeMismatch");
    assert.equal(event["message"], "source lives on worker-2");
    assert.equal(event["count"], 1);
    assert.deepEqual(event["source"], { component: "thinpool-csi-test", host: "worker-1" });
    assert.equal(event["firstTimestamp"], "2026-11-23T12:00:00.000Z");
  });

  it("puts the events of a cluster-scoped object (a Node) in the default namespace", async () => {
    await recorder.recordEvent(node, "Warning", "PoolPressure", "data 91% used");
    const [event] = api.list("Event");
    assert.equal(event?.metadata?.namespace, "default");
    assert.equal((event?.["involvedObject"] as { namespace?: string }).namespace, undefined);
  });

  it("merges a repeat into the Event already written: count and lastTimestamp go up, no new Event", async () => {
    await recorder.recordEvent(node, "Warning", "PoolPressure", "data 91% used");
    clock += 60_000;
    await recorder.recordEvent(node, "Warning", "PoolPressure", "data 91% used");
    clock += 60_000;
    await recorder.recordEvent(node, "Warning", "PoolPressure", "data 91% used");
    const events = api.list("Event");
    assert.equal(events.length, 1);
    assert.equal(events[0]?.["count"], 3);
    assert.equal(events[0]?.["firstTimestamp"], "2026-11-23T12:00:00.000Z");
    assert.equal(events[0]?.["lastTimestamp"], "2026-11-23T12:02:00.000Z");
    assert.equal(api.requestsTo("POST", /\/events$/).length, 1);
    const patches = api.requestsTo("PATCH", /\/events\//);
    assert.equal(patches.length, 2);
    assert.equal(patches[0]?.contentType, "application/merge-patch+json");
  });

  it("merges concurrent repeats into one Event", async () => {
    await Promise.all(
      Array.from({ length: 5 }, () => recorder.recordEvent(pvc, "Normal", "SelectedNode", "set to worker-2")),
    );
    const events = api.list("Event");
    assert.equal(events.length, 1);
    assert.equal(events[0]?.["count"], 5);
  });

  it("keeps different reasons, messages and objects apart", async () => {
    await recorder.recordEvent(node, "Warning", "PoolPressure", "data 91% used");
    await recorder.recordEvent(node, "Warning", "PoolPressure", "data 95% used");
    await recorder.recordEvent(node, "Normal", "PoolPressureRelieved", "data 50% used");
    await recorder.recordEvent(pvc, "Warning", "PoolPressure", "data 91% used");
    assert.equal(api.list("Event").length, 4);
  });

  it("writes a new Event when the one it would bump has expired (404 on patch)", async () => {
    await recorder.recordEvent(node, "Warning", "PoolPressure", "data 91% used");
    const [first] = api.list("Event");
    api.remove("Event", first?.metadata?.name ?? "", "default");
    clock += 1;
    await recorder.recordEvent(node, "Warning", "PoolPressure", "data 91% used");
    const events = api.list("Event");
    assert.equal(events.length, 1);
    assert.notEqual(events[0]?.metadata?.name, first?.metadata?.name);
    assert.equal(events[0]?.["count"], 1);
  });

  it("never throws: an API error (500, 403) or an unreachable server is logged and swallowed", async () => {
    api.failNext({ method: "POST", path: /\/events$/, status: 500 });
    await recorder.recordEvent(node, "Warning", "PoolPressure", "one");
    api.failNext({ method: "POST", path: /\/events$/, status: 403 });
    await recorder.recordEvent(node, "Warning", "PoolPressure", "two");
    assert.equal(api.list("Event").length, 0);
    assert.equal(logged.filter((l) => l.includes("could not record a Kubernetes event")).length, 2);

    await api.stop();
    await recorder.recordEvent(node, "Warning", "PoolPressure", "three");
    assert.equal(logged.filter((l) => l.includes("could not record a Kubernetes event")).length, 3);
  });

  it("cuts a flood of distinct events for one object at the burst, then allows one per refill period", async () => {
    for (let i = 0; i < EVENT_BURST + 10; i++) {
      await recorder.recordEvent(node, "Warning", "PoolPressure", `data ${i}`);
    }
    assert.equal(api.list("Event").length, EVENT_BURST);
    // Another object has its own allowance.
    await recorder.recordEvent(pvc, "Warning", "PoolPressure", "data 1");
    assert.equal(api.list("Event").length, EVENT_BURST + 1);
    // Repeats of an Event already written are merged, not dropped.
    await recorder.recordEvent(node, "Warning", "PoolPressure", "data 0");
    assert.equal(api.list("Event").find((e) => e["message"] === "data 0")?.["count"], 2);

    clock += EVENT_REFILL_MS;
    await recorder.recordEvent(node, "Warning", "PoolPressure", "after refill");
    await recorder.recordEvent(node, "Warning", "PoolPressure", "one too many");
    const messages = api.list("Event").map((e) => e["message"]);
    assert.ok(messages.includes("after refill"));
    assert.ok(!messages.includes("one too many"));
  });

  it("truncates a message over the API's 1 KiB limit", async () => {
    await recorder.recordEvent(node, "Warning", "PoolPressure", "x".repeat(5000));
    const message = api.list("Event")[0]?.["message"] as string;
    assert.equal(message.length, 1024);
    assert.ok(message.endsWith("..."));
  });
});
