#!/usr/bin/env node
// Generates the TypeScript types of csi-proto/csi.proto into src/generated/ (or the directory given as the
// first argument, which the unit test uses to prove the committed files are current).
//
// Plain JS on purpose: it runs before `tsc` (npm run build = gen:proto && tsc), so it cannot be compiled
// by the build it feeds. The generated files are committed, so a checkout builds without this step too.
import { execFileSync } from "node:child_process";
import { rmSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const outDir = path.resolve(process.argv[2] ?? path.join(repoRoot, "src", "generated"));
// descriptor.proto (imported by csi.proto for its custom options) ships with protobufjs; timestamp and
// wrappers are built into protobufjs itself.
const protobufjsDir = path.dirname(require.resolve("protobufjs/package.json"));
const generator = require.resolve("@grpc/proto-loader/build/bin/proto-loader-gen-types.js");

// The same options as the runtime loader in src/csi/proto.ts: the types must describe what it returns.
const args = [
  generator,
  "--keepCase",
  "--longs=String",
  "--enums=String",
  "--defaults",
  "--oneofs",
  "--grpcLib=@grpc/grpc-js",
  // NodeNext ESM needs explicit extensions on relative imports.
  "--importFileExtension=.js",
  "-I",
  "csi-proto",
  "-I",
  path.relative(repoRoot, protobufjsDir),
  "-O",
  outDir,
  "csi.proto",
];

rmSync(outDir, { recursive: true, force: true });
mkdirSync(outDir, { recursive: true });
// cwd = repo root so the "Original file:" comments in the output are stable relative paths.
execFileSync(process.execPath, args, { cwd: repoRoot, stdio: "inherit" });
