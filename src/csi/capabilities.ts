import { status } from "@grpc/grpc-js";
import type { VolumeCapability__Output } from "../generated/csi/v1/VolumeCapability.js";
import { CsiError } from "./errors.js";

/** Single-node access modes only: a thin device lives on one node. */
export const SUPPORTED_ACCESS_MODES = new Set([
  "SINGLE_NODE_WRITER",
  "SINGLE_NODE_SINGLE_WRITER",
  "SINGLE_NODE_MULTI_WRITER",
  "SINGLE_NODE_READER_ONLY",
]);

/** Why a capability is unsupported, or undefined when it is supported. */
export function capabilityProblem(
  cap: VolumeCapability__Output,
  fsTypes: readonly string[],
): string | undefined {
  const mode = cap.access_mode?.mode ?? "UNKNOWN";
  if (!SUPPORTED_ACCESS_MODES.has(mode)) {
    return `access mode ${mode} is not supported: thin volumes are local to one node (use ${[...SUPPORTED_ACCESS_MODES].join(", ")})`;
  }
  if (cap.access_type === "mount") {
    const fsType = cap.mount?.fs_type ?? "";
    if (fsType && !fsTypes.includes(fsType))
      return `fs type '${fsType}' is not supported (supported: ${fsTypes.join(", ")})`;
    return undefined;
  }
  if (cap.access_type === "block") return undefined;
  return "volume capability must set an access type (mount or block)";
}

export function requireCapabilities(
  caps: VolumeCapability__Output[] | undefined,
  fsTypes: readonly string[],
): VolumeCapability__Output[] {
  if (!caps || caps.length === 0)
    throw new CsiError(status.INVALID_ARGUMENT, "volume_capabilities is required");
  for (const cap of caps) {
    const problem = capabilityProblem(cap, fsTypes);
    if (problem) throw new CsiError(status.INVALID_ARGUMENT, problem);
  }
  return caps;
}

/** A stable text form of capabilities, to compare a repeated CreateVolume with the first one. */
export function capabilitiesFingerprint(caps: VolumeCapability__Output[]): string[] {
  return caps
    .map((c) =>
      JSON.stringify([
        c.access_mode?.mode ?? "",
        c.access_type ?? "",
        c.mount?.fs_type ?? "",
        [...(c.mount?.mount_flags ?? [])].sort(),
      ]),
    )
    .sort();
}

export function requireField(value: string | undefined, name: string): string {
  if (!value) throw new CsiError(status.INVALID_ARGUMENT, `${name} is required`);
  return value;
}
