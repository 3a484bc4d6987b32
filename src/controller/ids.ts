import { createHash } from "node:crypto";

/**
 * CSI ids name the device and the node that holds it: `<device>@<node>`, e.g. `v-3f2a…@worker-1`.
 * The node part lets any replica answer "that volume lives on worker-1" instead of "not found", which is
 * what makes the provisioner reschedule a restore onto the right node. Ids are at most 128 bytes (the
 * CSI limit); a node name too long to fit is replaced by `#<hash>`, still comparable.
 */
export const MAX_ID_BYTES = 128;

export type IdKind = "volume" | "snapshot";

export interface ParsedId {
  device: string;
  /** The node name, or `#<hash>` of it when it did not fit. */
  node: string;
}

export function deviceNameFor(kind: IdKind, requestName: string): string {
  const hash = createHash("sha256").update(`${kind}\0${requestName}`).digest("hex").slice(0, 24);
  return `${kind === "volume" ? "v" : "s"}-${hash}`;
}

export function nodeTag(node: string, deviceName: string): string {
  return Buffer.byteLength(`${deviceName}@${node}`) <= MAX_ID_BYTES
    ? node
    : `#${createHash("sha256").update(node).digest("hex").slice(0, 16)}`;
}

export function makeId(deviceName: string, node: string): string {
  return `${deviceName}@${nodeTag(node, deviceName)}`;
}

const ID_PATTERN = /^([vs]-[0-9a-f]{24})@(.+)$/;

export function parseId(id: string, kind: IdKind): ParsedId | undefined {
  const match = ID_PATTERN.exec(id);
  if (!match || !match[1] || !match[2]) return undefined;
  if ((kind === "volume") !== match[1].startsWith("v-")) return undefined;
  return { device: match[1], node: match[2] };
}

/** Whether the id's node part names this node. */
export function isLocal(parsed: ParsedId, node: string): boolean {
  return parsed.node === nodeTag(node, parsed.device);
}
