/** The container image: its entrypoint, as the benchmark reads it to start its driver the same way, and its dmsetup. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { imageNodeFlags } from "../../../bench/driver-control.js";
import { repoPath } from "../../support/repo.js";

describe("deploy: the image's entrypoint", () => {
  it("runs the driver with a 1 MiB young generation, and the benchmark finds that flag", () => {
    assert.deepEqual(imageNodeFlags(readFileSync(repoPath("Dockerfile"), "utf8")), [
      "--max-semi-space-size=1",
    ]);
  });

  it("reads only the flags between node and the script, and refuses a shell-form entrypoint", () => {
    const exec = 'FROM x\nENTRYPOINT ["/usr/bin/tini", "--", "node", "/app/main.js"]\nCMD ["serve"]\n';
    assert.deepEqual(imageNodeFlags(exec), []);
    assert.throws(() => imageNodeFlags("ENTRYPOINT node /app/main.js\n"), /no ENTRYPOINT in exec form/);
  });
});

describe("deploy: the image's dmsetup", () => {
  const dockerfile = readFileSync(repoPath("Dockerfile"), "utf8");
  const dockerignore = readFileSync(repoPath(".dockerignore"), "utf8");

  it("is the static build of scripts/build-dmsetup.sh, the one the VM suites and the benchmark run", () => {
    assert.match(dockerfile, /^COPY scripts\/build-dmsetup\.sh (\S+)\nRUN bash \1 \/out\b/m);
    assert.match(dockerfile, /^COPY --from=dmsetup \/out\/dmsetup \/usr\/local\/sbin\/dmsetup$/m);
    assert.match(dockerignore, /^!scripts\/build-dmsetup\.sh$/m, "the build context leaves the script out");
  });

  it("is the only dmsetup in the image: Debian's dmsetup package is not installed", () => {
    // Each RUN as one line; each `apt-get install` up to the next `&&`.
    const joined = dockerfile.replace(/\\\n/g, " ");
    const installs = [...joined.matchAll(/apt-get install((?:(?!&&)[^\n])*)/g)].map((m) => m[1] ?? "");
    assert.equal(installs.length, 2, "expected the dmsetup stage's and the runtime's apt-get install");
    for (const words of installs) {
      const packages = words.split(/\s+/).filter((word) => word !== "" && !word.startsWith("-"));
      assert.ok(packages.includes("e2fsprogs") || packages.includes("gcc"), `unexpected install: ${words}`);
      assert.ok(!packages.includes("dmsetup"), `an apt-get install names dmsetup: ${words}`);
    }
  });
});
