// Where a PATH lookup finds a command, as execa's (and the kernel's execvp) would: the first executable
// file of that name in PATH order.

import { access, constants } from "node:fs/promises";
import path from "node:path";

export async function findOnPath(name: string, searchPath = process.env.PATH ?? ""): Promise<string | null> {
  for (const dir of searchPath.split(path.delimiter)) {
    if (dir === "") continue;
    const candidate = path.join(dir, name);
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this PATH entry
    }
  }
  return null;
}
