import assert from "node:assert/strict";
import { parseMountInfo } from "../../../src/node/mounts.js";

describe("parseMountInfo", () => {
  it("reads each mount's device number, root, mount point and source, decoding octal escapes", () => {
    const text = [
      "22 1 0:21 / / rw,relatime - tmpfs tmpfs rw",
      "97 22 253:4 / /var/lib/kubelet/staging/pv\\0401 rw,relatime shared:40 - ext4 /dev/mapper/tpcsi-v1 rw",
      "98 22 253:4 /data /pods/a/volume rw - ext4 /dev/mapper/tpcsi-v1 rw",
      "",
    ].join("\n");
    assert.deepEqual(parseMountInfo(text), [
      {
        devno: "0:21",
        root: "/",
        mountPoint: "/",
        options: ["rw", "relatime"],
        fsType: "tmpfs",
        source: "tmpfs",
      },
      {
        devno: "253:4",
        root: "/",
        mountPoint: "/var/lib/kubelet/staging/pv 1",
        options: ["rw", "relatime"],
        fsType: "ext4",
        source: "/dev/mapper/tpcsi-v1",
      },
      {
        devno: "253:4",
        root: "/data",
        mountPoint: "/pods/a/volume",
        options: ["rw"],
        fsType: "ext4",
        source: "/dev/mapper/tpcsi-v1",
      },
    ]);
  });
});
