/**
 * The Go text/template + sprig renderer used to check the chart. Each expectation is what Go's text/template
 * (and Helm's function map) produces for the same template, so the chart renders here as under helm.
 */
import assert from "node:assert/strict";
import {
  formatFloat,
  GoMethod,
  GoStruct,
  TemplateError,
  TemplateSet,
} from "../../../scripts/deploy/gotemplate.js";

function render(src: string, data: unknown = {}, partials: Record<string, string> = {}): string {
  const set = new TemplateSet();
  for (const [name, text] of Object.entries(partials)) set.add(name, text);
  set.add("main", src);
  return set.render("main", data).replaceAll("<no value>", "");
}

describe("deploy: Go template renderer", () => {
  it("trims whitespace on {{- and -}} only when the dash is followed/preceded by a space", () => {
    assert.equal(render("a  \n  {{- 1 -}}  \n b"), "a1b");
    assert.equal(render("a {{ 1 }} b"), "a 1 b");
    assert.equal(render("x {{-3}}"), "x -3");
  });

  it("ignores comments, apostrophes and braces included", () => {
    assert.equal(render("a{{/* it's {x} */}}b{{- /* y */ -}}  c"), "abc");
  });

  it("evaluates if / else if / else with Go truthiness", () => {
    const t = `{{ if .a }}A{{ else if .b }}B{{ else }}C{{ end }}`;
    assert.equal(render(t, { a: 1, b: 1 }), "A");
    assert.equal(render(t, { a: 0, b: "x" }), "B");
    assert.equal(render(t, { a: [], b: {} }), "C");
    assert.equal(render(t, {}), "C");
  });

  it("ranges over lists (index is an int), maps in key order, and runs else when empty", () => {
    assert.equal(
      render(`{{ range $i, $v := .l }}{{ $i }}={{ $v }};{{ end }}`, { l: ["a", "b"] }),
      "0=a;1=b;",
    );
    assert.equal(
      render(`{{ range $k, $v := .m }}{{ $k }}={{ . }};{{ end }}`, { m: { z: 1, a: 2 } }),
      "a=2;z=1;",
    );
    assert.equal(render(`{{ range .l }}x{{ else }}empty{{ end }}`, { l: [] }), "empty");
    assert.throws(() => render(`{{ range .s }}{{ end }}`, { s: 1.5 }), TemplateError);
  });

  it("with rebinds dot, $ stays the root, variables are scoped and assignable", () => {
    assert.equal(render(`{{ with .a }}{{ .b }}{{ $.r }}{{ end }}`, { a: { b: "B" }, r: "R" }), "BR");
    assert.equal(render(`{{ $x := "1" }}{{ if true }}{{ $x = "2" }}{{ end }}{{ $x }}`), "2");
    assert.throws(() => render(`{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}`), /undefined variable/);
  });

  it("defines, includes and pipes into sprig string functions", () => {
    const partials = { "_h.tpl": `{{- define "lbl" -}}a: {{ .x }}\nb: 2{{- end -}}` };
    assert.equal(render(`k:{{ include "lbl" . | nindent 2 }}`, { x: "1" }, partials), "k:\n  a: 1\n  b: 2");
    assert.equal(render(`{{ "abc-" | trimSuffix "-" | upper }}{{ "hello" | trunc 3 }}`), "ABChel");
    assert.equal(render(`{{ printf "%s-%d-%q" "a" 7 "b" }}`), `a-7-"b"`);
    assert.equal(render(`{{ quote .v }}`, { v: 'a"b' }), `"a\\"b"`);
    assert.equal(render(`{{ template "lbl" . }}`, { x: "z" }, partials), "a: z\nb: 2");
  });

  it("default treats false, 0, empty and missing as empty", () => {
    assert.equal(render(`{{ default "d" .v }}`, { v: false }), "d");
    assert.equal(render(`{{ default "d" .v }}`, { v: 0 }), "d");
    assert.equal(render(`{{ default "d" .missing }}`), "d");
    assert.equal(render(`{{ default "d" .v }}`, { v: "x" }), "x");
    assert.equal(render(`{{ if hasKey . "v" }}{{ .v }}{{ end }}`, { v: false }), "false");
  });

  it("prints float64 values as Go does (why the chart pipes numbers through int64)", () => {
    assert.equal(render(`{{ .n }}`, { n: 1000000 }), "1e+06");
    assert.equal(render(`{{ .n | int64 }}`, { n: 1000000 }), "1000000");
    assert.equal(render(`{{ .n }}`, { n: 9810 }), "9810");
    assert.equal(formatFloat(0.5), "0.5");
    assert.equal(formatFloat(1234567), "1.234567e+06");
    assert.equal(formatFloat(0.00001), "1e-05");
  });

  it("compares ints and floats like Go: mixing them is an error", () => {
    assert.equal(render(`{{ eq 1 1 }}{{ eq .a "x" "y" }}`, { a: "y" }), "truetrue");
    assert.throws(() => render(`{{ eq .n 1 }}`, { n: 1 }), /incompatible types/);
    assert.equal(render(`{{ gt (len .l) 1 }}`, { l: [1, 2] }), "true");
  });

  it("and/or return an operand and short-circuit", () => {
    assert.equal(render(`{{ or .a "b" }}{{ and "x" .c }}`, { a: "", c: "C" }), "bC");
    assert.equal(render(`{{ and false (fail "not evaluated") }}`), "false");
  });

  it("missing map keys are empty, fields of nil and unknown struct fields are errors", () => {
    assert.equal(render(`[{{ .a.missing }}]`, { a: {} }), "[]");
    assert.throws(() => render(`{{ .a.b.c }}`, { a: {} }), /nil pointer evaluating interface \{\}\.c/);
    const data = new GoStruct("chartutil.ReleaseOptions", { Name: "r" });
    assert.throws(() => render(`{{ .name }}`, data), /can't evaluate field name/);
  });

  it("calls methods with arguments at the end of a field chain", () => {
    const caps = new GoStruct("Caps", {
      APIVersions: new GoStruct("VersionSet", { Has: new GoMethod((v) => v === "x/v1") }),
    });
    assert.equal(
      render(`{{ .APIVersions.Has "x/v1" }} {{ if (.APIVersions.Has "y/v1") }}y{{ end }}`, caps),
      "true ",
    );
  });

  it("toYaml sorts keys, nests with nindent, and quotes YAML 1.1 special strings", () => {
    const out = render(`x:{{ toYaml .v | nindent 2 }}`, { v: { b: [1, "on"], a: { c: "0600" } } });
    assert.equal(out, 'x:\n  a:\n    c: "0600"\n  b:\n  - 1\n  - "on"');
  });

  it("required and fail abort the render with the message", () => {
    assert.throws(() => render(`{{ required "need x" .x }}`), /need x/);
    assert.throws(() => render(`{{ fail "boom" }}`), /execution error: boom/);
  });

  it("refuses what it does not implement instead of rendering differently", () => {
    assert.throws(() => render(`{{ lookup "v1" "Pod" "" "" }}`), /function "lookup" not defined/);
    assert.throws(() => render(`{{ block "x" . }}{{ end }}`), /not supported/);
    assert.throws(() => render(`{{ if true }}`), /unclosed/);
    assert.throws(() => render(`{{ end }}`), /unexpected/);
  });
});
