// Minimal writer for the cpio "newc" format, the only format the kernel accepts for an initramfs.
//
// Written in TypeScript rather than shelling out to cpio(1) so the initramfs build depends on nothing but
// Node and is byte-for-byte reproducible (fixed mtimes, uid/gid 0, sorted entries chosen by the caller).
// Format reference: Documentation/driver-api/early-userspace/buffer-format.rst in the kernel tree.

export type CpioEntry =
  | { kind: "dir"; path: string; mode?: number }
  | { kind: "file"; path: string; data: Uint8Array; mode?: number }
  | { kind: "symlink"; path: string; target: string }
  | { kind: "chardev"; path: string; major: number; minor: number; mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

function hex8(value: number): string {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new RangeError(`cpio field out of range: ${value}`);
  }
  return value.toString(16).padStart(8, "0");
}

function pad4(length: number): number {
  return (4 - (length % 4)) % 4;
}

function header(fields: {
  ino: number;
  mode: number;
  nlink: number;
  fileSize: number;
  rdevMajor: number;
  rdevMinor: number;
  nameSize: number;
}): string {
  return (
    "070701" +
    hex8(fields.ino) +
    hex8(fields.mode) +
    hex8(0) + // uid
    hex8(0) + // gid
    hex8(fields.nlink) +
    hex8(0) + // mtime: fixed so the archive is reproducible
    hex8(fields.fileSize) +
    hex8(0) + // devmajor
    hex8(0) + // devminor
    hex8(fields.rdevMajor) +
    hex8(fields.rdevMinor) +
    hex8(fields.nameSize) +
    hex8(0) // check (unused by newc)
  );
}

/** Serialises the entries (in the given order; parents must precede children) into a newc archive. */
export function buildCpio(entries: readonly CpioEntry[]): Buffer {
  const chunks: Buffer[] = [];
  let ino = 1;
  const push = (
    path: string,
    mode: number,
    nlink: number,
    data: Uint8Array,
    rdev: [number, number],
  ): void => {
    // newc paths are relative to the archive root, without a leading slash.
    const name = Buffer.from(path.replace(/^\/+/, "") + "\0", "utf8");
    const head = Buffer.from(
      header({
        ino: ino++,
        mode,
        nlink,
        fileSize: data.length,
        rdevMajor: rdev[0],
        rdevMinor: rdev[1],
        nameSize: name.length,
      }),
      "ascii",
    );
    chunks.push(head, name, Buffer.alloc(pad4(head.length + name.length)));
    chunks.push(Buffer.from(data.buffer, data.byteOffset, data.length), Buffer.alloc(pad4(data.length)));
  };

  for (const entry of entries) {
    switch (entry.kind) {
      case "dir":
        push(entry.path, S_IFDIR | (entry.mode ?? 0o755), 2, new Uint8Array(0), [0, 0]);
        break;
      case "file":
        push(entry.path, S_IFREG | (entry.mode ?? 0o644), 1, entry.data, [0, 0]);
        break;
      case "symlink":
        push(entry.path, S_IFLNK | 0o777, 1, Buffer.from(entry.target, "utf8"), [0, 0]);
        break;
      case "chardev":
        push(entry.path, S_IFCHR | (entry.mode ?? 0o600), 1, new Uint8Array(0), [entry.major, entry.minor]);
        break;
    }
  }
  push("TRAILER!!!", 0, 1, new Uint8Array(0), [0, 0]);
  return Buffer.concat(chunks);
}
