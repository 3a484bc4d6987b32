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

/**
 * Mount flags that would let a pod escape or change what the device is. Checked for every capability
 * (CreateVolume too, so a volume that could never be staged is not made; the hostile-input suite found
 * CreateVolume accepting `bind` and `X-mount.mkdir`).
 */
const FORBIDDEN_MOUNT_FLAGS =
  /^(bind|rbind|move|remount|make-|shared|rshared|slave|rslave|private|rprivate|unbindable|runbindable|X-mount\.|x-mount\.|loop|offset|sizelimit|encryption)/;
/**
 * One mount(8) option: a name, optionally `=value`. The driver joins flags with commas into one `-o`, so a
 * comma, whitespace or a control character (a NUL made execa throw after the device was activated and
 * mounted) would smuggle in another option; an empty name (`=bind`) is not an option.
 */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const MOUNT_FLAG_SYNTAX = /^[A-Za-z0-9_.-]+(=[^\s,\x00-\x1f\x7f]*)?$/;

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
    for (const flag of cap.mount?.mount_flags ?? []) {
      if (!MOUNT_FLAG_SYNTAX.test(flag) || FORBIDDEN_MOUNT_FLAGS.test(flag))
        return `mount flag ${JSON.stringify(flag)} is not allowed`;
    }
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

/**
 * A CreateVolume/CreateSnapshot name: "Any Unicode string that conforms to the length limit is allowed
 * except those containing the following banned characters: U+0000-U+0008, U+000B, U+000C,
 * U+000E-U+001F, U+007F-U+009F" (the length limit is enforced for every field by FieldLimits).
 */
export function requireName(value: string | undefined, name: string): string {
  const given = requireField(value, name);
  // eslint-disable-next-line no-control-regex -- the spec's banned characters are control characters
  const banned = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]/.exec(given);
  if (banned)
    throw new CsiError(
      status.INVALID_ARGUMENT,
      `${name} must not contain control character U+${banned[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, "0")}`,
    );
  return given;
}
