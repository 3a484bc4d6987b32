import { readFile } from "node:fs/promises";

export interface MountEntry {
  mountPoint: string;
  source: string;
  fsType: string;
  options: string[];
  /** The path within the source filesystem that is mounted (differs for bind mounts of a subtree or a device). */
  root: string;
  /** The mounted filesystem's device number, "major:minor". */
  devno: string;
}

/** Decodes the octal escapes mountinfo uses for spaces and other special characters. */
function unescape(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Parses /proc/self/mountinfo (read fresh each time: mounts change under us). */
export function parseMountInfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const [left, right] = line.split(" - ");
    if (!left || !right) continue;
    const l = left.split(" ");
    const r = right.split(" ");
    entries.push({
      devno: l[2] ?? "",
      root: unescape(l[3] ?? ""),
      mountPoint: unescape(l[4] ?? ""),
      options: (l[5] ?? "").split(","),
      fsType: r[0] ?? "",
      source: unescape(r[1] ?? ""),
    });
  }
  return entries;
}

export async function mountsAt(path: string): Promise<MountEntry[]> {
  const entries = parseMountInfo(await readFile("/proc/self/mountinfo", "utf8"));
  return entries.filter((e) => e.mountPoint === path);
}

export async function isMountPoint(path: string): Promise<boolean> {
  return (await mountsAt(path)).length > 0;
}
