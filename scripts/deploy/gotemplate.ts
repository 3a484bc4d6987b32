/**
 * A small Go text/template engine with the Helm/sprig functions that the thinpool-csi chart uses.
 *
 * No helm binary can be installed on the development machines, so the chart is rendered by this engine in
 * the unit tests and by scripts/deploy/render-manifests. It follows Go's text/template semantics for the
 * constructs it supports (trim markers, pipelines, variables, if/else if/range/with/define/template/end,
 * Go truthiness, int vs float64 values, missing map keys vs missing struct fields, `<no value>` handling as
 * Helm does) and refuses everything else at parse time, so a chart that uses a construct it does not know
 * fails loudly instead of rendering differently from Helm.
 */
import { createHash } from "node:crypto";
import { stringify as yamlStringify } from "yaml";

export class TemplateError extends Error {
  override readonly name = "TemplateError";
}

/** A Go struct (Helm's .Release, .Chart, .Capabilities...): unknown fields are errors, unlike map keys. */
export class GoStruct {
  constructor(
    readonly typeName: string,
    readonly fields: Readonly<Record<string, unknown>>,
  ) {}
}

/** A Go method value: called with arguments when it ends a field chain (e.g. .Capabilities.APIVersions.Has). */
export class GoMethod {
  constructor(readonly fn: (...args: unknown[]) => unknown) {}
}

export type GoFunc = (...args: unknown[]) => unknown;

// ---------------------------------------------------------------------------------------------------------
// Lexing

type Tok =
  | { k: "field"; name: string; sp: boolean }
  | { k: "dot"; sp: boolean }
  | { k: "var"; name: string; sp: boolean }
  | { k: "ident"; name: string; sp: boolean }
  | { k: "string"; value: string; sp: boolean }
  | { k: "number"; value: bigint | number; sp: boolean }
  | { k: "punct"; value: "(" | ")" | "|" | ":=" | "=" | ","; sp: boolean };

interface Segment {
  kind: "text" | "action" | "comment";
  text: string;
  line: number;
}

function isSpace(c: string | undefined): boolean {
  return c === " " || c === "\t" || c === "\n" || c === "\r";
}

function splitSegments(src: string, tplName: string): Segment[] {
  const segs: Segment[] = [];
  let pos = 0;
  let line = 1;
  let trimNextText = false;
  const countLines = (s: string): number => s.split("\n").length - 1;
  while (pos < src.length) {
    const open = src.indexOf("{{", pos);
    let text = open === -1 ? src.slice(pos) : src.slice(pos, open);
    if (trimNextText) text = text.replace(/^[ \t\r\n]+/, "");
    const textLine = line;
    line += countLines(open === -1 ? src.slice(pos) : src.slice(pos, open));
    if (open === -1) {
      if (text) segs.push({ kind: "text", text, line: textLine });
      break;
    }
    let p = open + 2;
    const trimLeft = src[p] === "-" && isSpace(src[p + 1]);
    if (trimLeft) {
      text = text.replace(/[ \t\r\n]+$/, "");
      p += 1;
    }
    if (text) segs.push({ kind: "text", text, line: textLine });
    // a comment: {{/* ... */}} or {{- /* ... */ -}}, no quote handling inside
    const commentStart = trimLeft ? p + 1 : p;
    if (src.startsWith("/*", commentStart)) {
      const end = src.indexOf("*/", commentStart + 2);
      if (end === -1) throw new TemplateError(`${tplName}:${line}: unclosed comment`);
      let after = end + 2;
      let trimRightC = false;
      if (src.startsWith(" -}}", after)) {
        trimRightC = true;
        after += 4;
      } else if (src.startsWith("}}", after)) after += 2;
      else throw new TemplateError(`${tplName}:${line}: comment ends with no closing delimiter`);
      segs.push({ kind: "comment", text: src.slice(commentStart, end + 2), line });
      line += countLines(src.slice(open, after));
      pos = after;
      trimNextText = trimRightC;
      continue;
    }
    // find the closing delimiter outside quoted strings
    let q = p;
    let quote: string | null = null;
    let closeAt = -1;
    while (q < src.length) {
      const c = src[q];
      if (quote) {
        if (c === "\\" && quote !== "`") q += 1;
        else if (c === quote) quote = null;
        q += 1;
        continue;
      }
      if (c === '"' || c === "`" || c === "'") {
        quote = c;
        q += 1;
        continue;
      }
      if (c === "}" && src[q + 1] === "}") {
        closeAt = q;
        break;
      }
      q += 1;
    }
    if (closeAt === -1) throw new TemplateError(`${tplName}:${line}: unclosed action`);
    let inner = src.slice(p, closeAt);
    const trimRight = inner.length >= 2 && inner.endsWith("-") && isSpace(inner[inner.length - 2]);
    if (trimRight) inner = inner.slice(0, -1);
    const trimmedInner = inner.trim();
    if (trimmedInner.startsWith("/*")) {
      if (!trimmedInner.endsWith("*/")) throw new TemplateError(`${tplName}:${line}: unclosed comment`);
      segs.push({ kind: "comment", text: trimmedInner, line });
    } else {
      segs.push({ kind: "action", text: inner, line });
    }
    line += countLines(src.slice(open, closeAt + 2));
    pos = closeAt + 2;
    trimNextText = trimRight;
  }
  return segs;
}

const IDENT = /[A-Za-z_][A-Za-z0-9_]*/y;
const NUMBER =
  /[-+]?(0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO]?[0-7_]+|[0-9][0-9_]*(\.[0-9_]*)?([eE][-+]?[0-9]+)?|\.[0-9]+([eE][-+]?[0-9]+)?)/y;

function unquoteGo(raw: string, where: string): string {
  if (raw.startsWith("`")) return raw.slice(1, -1);
  let out = "";
  for (let i = 1; i < raw.length - 1; i++) {
    const c = raw[i]!;
    if (c !== "\\") {
      out += c;
      continue;
    }
    const n = raw[++i];
    switch (n) {
      case "n":
        out += "\n";
        break;
      case "t":
        out += "\t";
        break;
      case "r":
        out += "\r";
        break;
      case "\\":
        out += "\\";
        break;
      case '"':
        out += '"';
        break;
      case "'":
        out += "'";
        break;
      default:
        throw new TemplateError(`${where}: unsupported escape \\${n ?? ""}`);
    }
  }
  return out;
}

function tokenize(src: string, where: string): Tok[] {
  const toks: Tok[] = [];
  let i = 0;
  let sp = true;
  while (i < src.length) {
    const c = src[i]!;
    if (isSpace(c)) {
      sp = true;
      i++;
      continue;
    }
    if (c === '"' || c === "`") {
      let j = i + 1;
      while (j < src.length && src[j] !== c) j += c === '"' && src[j] === "\\" ? 2 : 1;
      if (j >= src.length) throw new TemplateError(`${where}: unterminated string`);
      toks.push({ k: "string", value: unquoteGo(src.slice(i, j + 1), where), sp });
      i = j + 1;
    } else if (c === "'") {
      throw new TemplateError(`${where}: character constants are not supported`);
    } else if (c === "(" || c === ")" || c === "|" || c === ",") {
      toks.push({ k: "punct", value: c, sp });
      i++;
    } else if (c === ":" && src[i + 1] === "=") {
      toks.push({ k: "punct", value: ":=", sp });
      i += 2;
    } else if (c === "=") {
      toks.push({ k: "punct", value: "=", sp });
      i++;
    } else if (c === "$") {
      IDENT.lastIndex = i + 1;
      const m = IDENT.exec(src);
      const name = m ? m[0] : "";
      toks.push({ k: "var", name: "$" + name, sp });
      i += 1 + name.length;
    } else if (c === ".") {
      IDENT.lastIndex = i + 1;
      const m = IDENT.exec(src);
      if (m) {
        toks.push({ k: "field", name: m[0], sp });
        i += 1 + m[0].length;
      } else if (/[0-9]/.test(src[i + 1] ?? "")) {
        NUMBER.lastIndex = i;
        const n = NUMBER.exec(src)!;
        toks.push({ k: "number", value: Number(n[0]), sp });
        i += n[0].length;
      } else {
        toks.push({ k: "dot", sp });
        i++;
      }
    } else if (/[0-9+-]/.test(c)) {
      NUMBER.lastIndex = i;
      const m = NUMBER.exec(src);
      if (!m) throw new TemplateError(`${where}: bad number syntax at ${JSON.stringify(src.slice(i))}`);
      const text = m[0].replace(/_/g, "");
      const isFloat = /[.eE]/.test(text) && !/^[-+]?0[xX]/.test(text);
      toks.push({
        k: "number",
        value: isFloat ? Number(text) : BigInt(text.replace(/^([-+]?)0[oO]?(?=[0-7])/, "$10o")),
        sp,
      });
      i += m[0].length;
    } else {
      IDENT.lastIndex = i;
      const m = IDENT.exec(src);
      if (!m) throw new TemplateError(`${where}: unexpected ${JSON.stringify(c)}`);
      toks.push({ k: "ident", name: m[0], sp });
      i += m[0].length;
    }
    sp = false;
  }
  return toks;
}

// ---------------------------------------------------------------------------------------------------------
// AST

type Term =
  | { t: "dot" }
  | { t: "field"; chain: string[] }
  | { t: "var"; name: string; chain: string[] }
  | { t: "literal"; value: unknown }
  | { t: "func"; name: string }
  | { t: "pipe"; pipe: Pipeline; chain: string[] };

interface Command {
  args: Term[];
}

interface Pipeline {
  decl: string[];
  assign: boolean;
  cmds: Command[];
  where: string;
}

type Node =
  | { n: "text"; text: string }
  | { n: "action"; pipe: Pipeline }
  | { n: "if"; pipe: Pipeline; body: Node[]; alt: Node[] }
  | { n: "with"; pipe: Pipeline; body: Node[]; alt: Node[] }
  | { n: "range"; pipe: Pipeline; body: Node[]; alt: Node[] }
  | { n: "template"; name: string; pipe: Pipeline | null; where: string };

const KEYWORDS = new Set([
  "if",
  "else",
  "end",
  "range",
  "with",
  "define",
  "template",
  "block",
  "break",
  "continue",
]);

class PipelineParser {
  private i = 0;
  constructor(
    private readonly toks: Tok[],
    private readonly where: string,
    private readonly funcs: ReadonlySet<string>,
  ) {}

  private err(msg: string): never {
    throw new TemplateError(`${this.where}: ${msg}`);
  }

  done(): boolean {
    return this.i >= this.toks.length;
  }

  peek(): Tok | undefined {
    return this.toks[this.i];
  }

  pipeline(allowDecl: boolean, allowTwoVars: boolean): Pipeline {
    const decl: string[] = [];
    let assign = false;
    if (allowDecl) {
      // look ahead for `$x :=`, `$x =` or `$k, $v :=`
      const t0 = this.toks[this.i];
      const t1 = this.toks[this.i + 1];
      const t2 = this.toks[this.i + 2];
      const t3 = this.toks[this.i + 3];
      if (t0?.k === "var" && t1?.k === "punct" && (t1.value === ":=" || t1.value === "=")) {
        decl.push(t0.name);
        assign = t1.value === "=";
        this.i += 2;
      } else if (
        allowTwoVars &&
        t0?.k === "var" &&
        t1?.k === "punct" &&
        t1.value === "," &&
        t2?.k === "var" &&
        t3?.k === "punct" &&
        t3.value === ":="
      ) {
        decl.push(t0.name, t2.name);
        this.i += 4;
      }
    }
    const cmds: Command[] = [];
    for (;;) {
      cmds.push(this.command());
      const t = this.peek();
      if (t?.k === "punct" && t.value === "|") {
        this.i++;
        continue;
      }
      break;
    }
    return { decl, assign, cmds, where: this.where };
  }

  private command(): Command {
    const args: Term[] = [];
    for (;;) {
      const t = this.peek();
      if (!t || (t.k === "punct" && (t.value === ")" || t.value === "|"))) break;
      args.push(this.operand());
    }
    if (args.length === 0) this.err("missing value for command");
    return { args };
  }

  private chain(): string[] {
    const chain: string[] = [];
    for (;;) {
      const t = this.peek();
      if (t?.k === "field" && !t.sp) {
        chain.push(t.name);
        this.i++;
      } else break;
    }
    return chain;
  }

  private operand(): Term {
    const t = this.toks[this.i++];
    if (!t) this.err("unexpected end of action");
    switch (t.k) {
      case "dot":
        return { t: "dot" };
      case "field": {
        const chain = [t.name, ...this.chain()];
        return { t: "field", chain };
      }
      case "var":
        return { t: "var", name: t.name, chain: this.chain() };
      case "string":
        return { t: "literal", value: t.value };
      case "number":
        return { t: "literal", value: t.value };
      case "ident":
        if (t.name === "true" || t.name === "false") return { t: "literal", value: t.name === "true" };
        if (t.name === "nil") return { t: "literal", value: null };
        if (KEYWORDS.has(t.name)) this.err(`unexpected keyword ${t.name}`);
        if (!this.funcs.has(t.name)) this.err(`function "${t.name}" not defined`);
        return { t: "func", name: t.name };
      case "punct":
        if (t.value === "(") {
          const pipe = this.pipeline(false, false);
          const close = this.toks[this.i++];
          if (!close || close.k !== "punct" || close.value !== ")") this.err("unclosed left paren");
          return { t: "pipe", pipe, chain: this.chain() };
        }
        return this.err(`unexpected ${t.value}`);
    }
  }
}

export interface ParsedTemplate {
  name: string;
  root: Node[];
}

/** Parses one file; returns its body and registers its `define`d templates into `defines`. */
function parseFile(
  src: string,
  name: string,
  funcs: ReadonlySet<string>,
  defines: Map<string, Node[]>,
): Node[] {
  const segs = splitSegments(src, name);
  let idx = 0;

  type Stop = { word: "end" | "else"; rest: Tok[]; where: string } | { word: "eof" };

  const parseList = (inDefine: boolean, depth: number): { nodes: Node[]; stop: Stop } => {
    const nodes: Node[] = [];
    while (idx < segs.length) {
      const seg = segs[idx++]!;
      const where = `${name}:${seg.line}`;
      if (seg.kind === "text") {
        nodes.push({ n: "text", text: seg.text });
        continue;
      }
      if (seg.kind === "comment") continue;
      const toks = tokenize(seg.text, where);
      const first = toks[0];
      if (!first) throw new TemplateError(`${where}: missing value for command`);
      const kw = first.k === "ident" && KEYWORDS.has(first.name) ? first.name : null;
      if (kw === "end" || kw === "else") {
        if (depth === 0) throw new TemplateError(`${where}: unexpected {{${kw}}}`);
        return { nodes, stop: { word: kw, rest: toks.slice(1), where } };
      }
      if (kw === "if" || kw === "with" || kw === "range") {
        nodes.push(parseControl(kw, toks.slice(1), where, inDefine, depth));
        continue;
      }
      if (kw === "define") {
        if (depth !== 0 || inDefine) throw new TemplateError(`${where}: define is only allowed at top level`);
        const nameTok = toks[1];
        if (toks.length !== 2 || nameTok?.k !== "string") throw new TemplateError(`${where}: bad define`);
        const body = parseList(true, depth + 1);
        if (body.stop.word !== "end" || body.stop.rest.length)
          throw new TemplateError(`${where}: define "${nameTok.value}" not closed by {{end}}`);
        defines.set(nameTok.value, body.nodes);
        continue;
      }
      if (kw === "template") {
        const nameTok = toks[1];
        if (nameTok?.k !== "string") throw new TemplateError(`${where}: template needs a name string`);
        const rest = toks.slice(2);
        let pipe: Pipeline | null = null;
        if (rest.length) {
          const pp = new PipelineParser(rest, where, funcs);
          pipe = pp.pipeline(false, false);
          if (!pp.done()) throw new TemplateError(`${where}: unexpected tokens after template`);
        }
        nodes.push({ n: "template", name: nameTok.value, pipe, where });
        continue;
      }
      if (kw) throw new TemplateError(`${where}: {{${kw}}} is not supported by this renderer`);
      const pp = new PipelineParser(toks, where, funcs);
      const pipe = pp.pipeline(true, false);
      if (!pp.done()) throw new TemplateError(`${where}: unexpected ${JSON.stringify(pp.peek())}`);
      nodes.push({ n: "action", pipe });
    }
    return { nodes, stop: { word: "eof" } };
  };

  const parseControl = (
    kw: "if" | "with" | "range",
    rest: Tok[],
    where: string,
    inDefine: boolean,
    depth: number,
  ): Node => {
    if (rest.length === 0) throw new TemplateError(`${where}: missing value for ${kw}`);
    const pp = new PipelineParser(rest, where, funcs);
    const pipe = pp.pipeline(true, kw === "range");
    if (!pp.done()) throw new TemplateError(`${where}: unexpected tokens in ${kw}`);
    const body = parseList(inDefine, depth + 1);
    let alt: Node[] = [];
    if (body.stop.word === "eof") throw new TemplateError(`${where}: unclosed {{${kw}}}`);
    if (body.stop.word === "else") {
      const elseRest = body.stop.rest;
      const firstElse = elseRest[0];
      if (firstElse?.k === "ident" && firstElse.name === "if" && kw === "if") {
        // `else if`: a nested if that shares our {{end}}
        alt = [parseControl("if", elseRest.slice(1), body.stop.where, inDefine, depth)];
        return { n: kw, pipe, body: body.nodes, alt };
      }
      if (elseRest.length) throw new TemplateError(`${body.stop.where}: unsupported else form`);
      const altList = parseList(inDefine, depth + 1);
      if (altList.stop.word !== "end" || altList.stop.rest.length)
        throw new TemplateError(`${where}: {{else}} of {{${kw}}} not closed by {{end}}`);
      alt = altList.nodes;
    } else if (body.stop.rest.length) {
      throw new TemplateError(`${body.stop.where}: unexpected tokens after end`);
    }
    return { n: kw, pipe, body: body.nodes, alt };
  };

  const top = parseList(false, 0);
  return top.nodes;
}

// ---------------------------------------------------------------------------------------------------------
// Values

const NO_VALUE = Symbol("no value");

function isMap(v: unknown): v is Record<string, unknown> {
  return (
    typeof v === "object" &&
    v !== null &&
    !Array.isArray(v) &&
    !(v instanceof GoStruct) &&
    !(v instanceof GoMethod)
  );
}

function isNil(v: unknown): boolean {
  return v === null || v === undefined || v === NO_VALUE;
}

export function truth(v: unknown): boolean {
  if (isNil(v)) return false;
  if (typeof v === "boolean") return v;
  if (typeof v === "number") return v !== 0;
  if (typeof v === "bigint") return v !== 0n;
  if (typeof v === "string") return v.length > 0;
  if (Array.isArray(v)) return v.length > 0;
  if (isMap(v)) return Object.keys(v).length > 0;
  return true;
}

/** Go's %v for float64: strconv.FormatFloat(f, 'g', -1, 64), i.e. %e when exp < -4 || exp >= 6. */
export function formatFloat(f: number): string {
  if (Number.isNaN(f)) return "NaN";
  if (!Number.isFinite(f)) return f > 0 ? "+Inf" : "-Inf";
  if (f === 0) return Object.is(f, -0) ? "-0" : "0";
  const [mant, expStr] = f.toExponential().split("e") as [string, string];
  const exp = Number(expStr);
  if (exp < -4 || exp >= 6) {
    const e = Math.abs(exp).toString().padStart(2, "0");
    return `${mant}e${exp < 0 ? "-" : "+"}${e}`;
  }
  return String(f);
}

export function printValue(v: unknown): string {
  if (v === NO_VALUE || v === undefined || v === null) return "<no value>";
  if (typeof v === "string") return v;
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "number") return formatFloat(v);
  if (typeof v === "boolean") return v ? "true" : "false";
  if (Array.isArray(v)) return "[" + v.map(printValue).join(" ") + "]";
  if (v instanceof GoStruct) return "{" + Object.values(v.fields).map(printValue).join(" ") + "}";
  if (isMap(v))
    return (
      "map[" +
      Object.keys(v)
        .sort()
        .map((k) => `${k}:${printValue(v[k])}`)
        .join(" ") +
      "]"
    );
  return String(v);
}

function typeName(v: unknown): string {
  if (isNil(v)) return "nil";
  if (typeof v === "bigint") return "int";
  if (typeof v === "number") return "float64";
  if (typeof v === "string") return "string";
  if (typeof v === "boolean") return "bool";
  if (Array.isArray(v)) return "[]interface {}";
  if (v instanceof GoStruct) return v.typeName;
  if (isMap(v)) return "map[string]interface {}";
  return typeof v;
}

/** Plain JS data (for toYaml/toJson): bigint becomes number, NO_VALUE becomes null. */
function toPlain(v: unknown): unknown {
  if (v === NO_VALUE || v === undefined) return null;
  if (typeof v === "bigint") return Number(v);
  if (Array.isArray(v)) return v.map(toPlain);
  if (v instanceof GoStruct)
    return Object.fromEntries(Object.entries(v.fields).map(([k, x]) => [k, toPlain(x)]));
  if (isMap(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toPlain(x)]));
  return v;
}

function basicKind(v: unknown): string {
  if (isNil(v)) return "nil";
  if (typeof v === "bigint") return "int";
  if (typeof v === "number") return "float";
  if (typeof v === "string") return "string";
  if (typeof v === "boolean") return "bool";
  return "other";
}

function goEq(a: unknown, b: unknown): boolean {
  const ka = basicKind(a);
  const kb = basicKind(b);
  if (ka === "nil" || kb === "nil") return ka === kb;
  if (ka === "other" || kb === "other")
    throw new TemplateError(`error calling eq: invalid type for comparison`);
  if (ka !== kb)
    throw new TemplateError(`error calling eq: incompatible types for comparison (${ka}, ${kb})`);
  return a === b;
}

function goLess(a: unknown, b: unknown, fn: string): boolean {
  const ka = basicKind(a);
  const kb = basicKind(b);
  if (ka !== kb || !["int", "float", "string"].includes(ka))
    throw new TemplateError(`error calling ${fn}: incompatible types for comparison (${ka}, ${kb})`);
  return (a as number) < (b as number);
}

function toInt(v: unknown): bigint {
  if (isNil(v)) return 0n;
  if (typeof v === "bigint") return v;
  if (typeof v === "number") return BigInt(Math.trunc(v));
  if (typeof v === "boolean") return v ? 1n : 0n;
  if (typeof v === "string") {
    const n = Number(v);
    return Number.isFinite(n) ? BigInt(Math.trunc(n)) : 0n;
  }
  return 0n;
}

function toStr(v: unknown): string {
  if (isNil(v)) return "";
  if (Array.isArray(v)) return v.map(toStr).join(" ");
  return printValue(v);
}

function asLen(v: unknown, fn: string): number {
  if (typeof v === "bigint") return Number(v);
  if (typeof v === "number" && Number.isInteger(v)) return v;
  throw new TemplateError(`${fn}: expected an integer, got ${typeName(v)}`);
}

function goQuote(s: string): string {
  return JSON.stringify(s)
    .replace(/\\u0007/g, "\\a")
    .replace(/\\u000b/g, "\\v");
}

function goSprintf(format: string, args: unknown[]): string {
  let ai = 0;
  return format.replace(/%([-+ #0]*)(\d*)([%vsdqtx])/g, (_m, _flags: string, width: string, verb: string) => {
    if (verb === "%") return "%";
    const arg = args[ai++];
    let s: string;
    switch (verb) {
      case "d":
        if (typeof arg !== "bigint") s = `%!d(${typeName(arg)}=${printValue(arg)})`;
        else s = arg.toString();
        break;
      case "q":
        s = goQuote(toStr(arg));
        break;
      case "t":
        s = typeof arg === "boolean" ? String(arg) : `%!t(${typeName(arg)})`;
        break;
      case "x":
        s = typeof arg === "string" ? Buffer.from(arg).toString("hex") : toInt(arg).toString(16);
        break;
      default:
        s = printValue(arg);
    }
    return width ? s.padStart(Number(width)) : s;
  });
}

function yamlOf(v: unknown): string {
  const plain = toPlain(v);
  const out = yamlStringify(plain, {
    version: "1.1",
    indentSeq: false,
    sortMapEntries: true,
    lineWidth: 0,
    minContentWidth: 0,
  });
  return out.replace(/\n$/, "");
}

// ---------------------------------------------------------------------------------------------------------
// Execution

interface Scope {
  vars: Map<string, unknown>;
  parent: Scope | null;
}

function lookupVar(scope: Scope, name: string, where: string): unknown {
  for (let s: Scope | null = scope; s; s = s.parent) if (s.vars.has(name)) return s.vars.get(name);
  throw new TemplateError(`${where}: undefined variable "${name}"`);
}

function assignVar(scope: Scope, name: string, value: unknown, where: string): void {
  for (let s: Scope | null = scope; s; s = s.parent)
    if (s.vars.has(name)) {
      s.vars.set(name, value);
      return;
    }
  throw new TemplateError(`${where}: undefined variable "${name}"`);
}

export interface RenderOptions {
  /** extra functions (besides the built-in Go and sprig ones below) */
  funcs?: Record<string, GoFunc>;
}

export class TemplateSet {
  private readonly defines = new Map<string, Node[]>();
  private readonly files = new Map<string, Node[]>();
  private readonly funcs: Map<string, GoFunc>;
  private includeDepth = 0;

  constructor(opts: RenderOptions = {}) {
    this.funcs = new Map(Object.entries({ ...this.builtins(), ...(opts.funcs ?? {}) }));
  }

  /** Adds a file. Its `define`s become visible to every file; the file itself is also a named template. */
  add(name: string, src: string): void {
    const nodes = parseFile(src, name, new Set([...this.funcs.keys(), ...CONTROL_FUNCS]), this.defines);
    this.files.set(name, nodes);
    this.defines.set(name, nodes);
  }

  render(name: string, data: unknown): string {
    const nodes = this.files.get(name);
    if (!nodes) throw new TemplateError(`no template file ${name}`);
    const out: string[] = [];
    this.exec(nodes, data, { vars: new Map([["$", data]]), parent: null }, out);
    return out.join("");
  }

  renderNamed(name: string, data: unknown): string {
    const nodes = this.defines.get(name);
    if (!nodes) throw new TemplateError(`template: no template "${name}" associated with template`);
    if (++this.includeDepth > 100) throw new TemplateError(`include depth exceeded at "${name}"`);
    try {
      const out: string[] = [];
      this.exec(nodes, data, { vars: new Map([["$", data]]), parent: null }, out);
      return out.join("");
    } finally {
      this.includeDepth--;
    }
  }

  private exec(nodes: Node[], dot: unknown, scope: Scope, out: string[]): void {
    for (const node of nodes) {
      switch (node.n) {
        case "text":
          out.push(node.text);
          break;
        case "action": {
          const v = this.evalPipeline(node.pipe, dot, scope);
          if (node.pipe.decl.length === 0) out.push(printValue(v));
          break;
        }
        case "template": {
          const data = node.pipe ? this.evalPipeline(node.pipe, dot, scope) : null;
          out.push(this.renderNamed(node.name, data));
          break;
        }
        case "if":
        case "with": {
          const inner: Scope = { vars: new Map(), parent: scope };
          const v = this.evalPipeline(node.pipe, dot, inner);
          if (truth(v)) this.exec(node.body, node.n === "with" ? v : dot, inner, out);
          else this.exec(node.alt, dot, { vars: new Map(), parent: scope }, out);
          break;
        }
        case "range": {
          const inner: Scope = { vars: new Map(), parent: scope };
          const pipe = { ...node.pipe, decl: [] };
          const v = this.evalPipeline(pipe, dot, inner);
          const items: Array<[unknown, unknown]> = [];
          if (Array.isArray(v)) v.forEach((x, i) => items.push([BigInt(i), x]));
          else if (isMap(v))
            Object.keys(v)
              .sort()
              .forEach((k) => items.push([k, v[k]]));
          else if (typeof v === "bigint") for (let i = 0n; i < v; i++) items.push([i, i]);
          else if (!isNil(v))
            throw new TemplateError(`${node.pipe.where}: range can't iterate over ${printValue(v)}`);
          if (items.length === 0) {
            this.exec(node.alt, dot, { vars: new Map(), parent: scope }, out);
            break;
          }
          for (const [k, x] of items) {
            const iter: Scope = { vars: new Map(), parent: scope };
            if (node.pipe.decl.length === 1) iter.vars.set(node.pipe.decl[0]!, x);
            if (node.pipe.decl.length === 2) {
              iter.vars.set(node.pipe.decl[0]!, k);
              iter.vars.set(node.pipe.decl[1]!, x);
            }
            this.exec(node.body, x, iter, out);
          }
          break;
        }
      }
    }
  }

  private evalPipeline(pipe: Pipeline, dot: unknown, scope: Scope): unknown {
    let value: unknown = NO_VALUE;
    let first = true;
    for (const cmd of pipe.cmds) {
      value = this.evalCommand(cmd, dot, scope, first ? NO_VALUE : value, pipe.where);
      first = false;
    }
    if (pipe.decl.length === 1) {
      if (pipe.assign) assignVar(scope, pipe.decl[0]!, value, pipe.where);
      else scope.vars.set(pipe.decl[0]!, value);
    }
    return value;
  }

  private evalCommand(cmd: Command, dot: unknown, scope: Scope, final: unknown, where: string): unknown {
    const [head, ...rest] = cmd.args as [Term, ...Term[]];
    const hasFinal = final !== NO_VALUE;
    if (head.t === "func") {
      if (CONTROL_FUNCS.has(head.name))
        return this.evalControlFunc(head.name, rest, dot, scope, final, where);
      const fn = this.funcs.get(head.name)!;
      const args = rest.map((a) => this.evalArg(a, dot, scope, where));
      if (hasFinal) args.push(final);
      try {
        return fn(...args);
      } catch (e) {
        if (e instanceof TemplateError) throw new TemplateError(`${where}: ${e.message}`);
        throw e;
      }
    }
    if (head.t === "field" || head.t === "var" || head.t === "pipe") {
      const args = rest.map((a) => this.evalArg(a, dot, scope, where));
      if (hasFinal) args.push(final);
      return this.evalChainTerm(head, dot, scope, args, where);
    }
    if (rest.length || hasFinal) throw new TemplateError(`${where}: can't give argument to non-function`);
    return this.evalArg(head, dot, scope, where);
  }

  private evalControlFunc(
    name: string,
    rest: Term[],
    dot: unknown,
    scope: Scope,
    final: unknown,
    where: string,
  ): unknown {
    // and/or evaluate lazily (Go 1.18+)
    const thunks: Array<() => unknown> = rest.map((a) => () => this.evalArg(a, dot, scope, where));
    if (final !== NO_VALUE) thunks.push(() => final);
    if (thunks.length === 0) throw new TemplateError(`${where}: wrong number of args for ${name}`);
    let v: unknown = null;
    for (const th of thunks) {
      v = th();
      if (name === "and" ? !truth(v) : truth(v)) return v;
    }
    return v;
  }

  private evalArg(term: Term, dot: unknown, scope: Scope, where: string): unknown {
    switch (term.t) {
      case "dot":
        return dot;
      case "literal":
        return term.value;
      case "func": {
        if (CONTROL_FUNCS.has(term.name))
          throw new TemplateError(`${where}: wrong number of args for ${term.name}`);
        return this.funcs.get(term.name)!();
      }
      default:
        return this.evalChainTerm(term, dot, scope, [], where);
    }
  }

  private evalChainTerm(
    term: Extract<Term, { t: "field" | "var" | "pipe" }>,
    dot: unknown,
    scope: Scope,
    args: unknown[],
    where: string,
  ): unknown {
    let base: unknown;
    if (term.t === "field") base = dot;
    else if (term.t === "var") base = lookupVar(scope, term.name, where);
    else base = this.evalPipeline(term.pipe, dot, scope);
    if (term.chain.length === 0) {
      if (args.length) throw new TemplateError(`${where}: can't give argument to non-function`);
      return base;
    }
    let cur = base;
    term.chain.forEach((field, idx) => {
      const last = idx === term.chain.length - 1;
      cur = this.field(cur, field, last ? args : [], where);
    });
    return cur;
  }

  private field(receiver: unknown, name: string, args: unknown[], where: string): unknown {
    if (isNil(receiver)) throw new TemplateError(`${where}: nil pointer evaluating interface {}.${name}`);
    if (receiver instanceof GoStruct) {
      if (!(name in receiver.fields))
        throw new TemplateError(`${where}: can't evaluate field ${name} in type ${receiver.typeName}`);
      const f = receiver.fields[name];
      if (f instanceof GoMethod) return f.fn(...args);
      if (args.length) throw new TemplateError(`${where}: ${name} is not a method but has arguments`);
      return f;
    }
    if (isMap(receiver)) {
      if (args.length) throw new TemplateError(`${where}: ${name} is not a method but has arguments`);
      return Object.prototype.hasOwnProperty.call(receiver, name) ? receiver[name] : NO_VALUE;
    }
    throw new TemplateError(`${where}: can't evaluate field ${name} in type ${typeName(receiver)}`);
  }

  private builtins(): Record<string, GoFunc> {
    const empty = (v: unknown): boolean => !truth(v);
    return {
      // Go text/template builtins
      not: (v) => !truth(v),
      eq: (a, ...bs) => {
        if (bs.length === 0) throw new TemplateError("wrong number of args for eq");
        return bs.some((b) => goEq(a, b));
      },
      ne: (a, b) => !goEq(a, b),
      lt: (a, b) => goLess(a, b, "lt"),
      le: (a, b) => goLess(a, b, "le") || goEq(a, b),
      gt: (a, b) => goLess(b, a, "gt"),
      ge: (a, b) => goLess(b, a, "ge") || goEq(a, b),
      len: (v) => {
        if (typeof v === "string" || Array.isArray(v)) return BigInt(v.length);
        if (isMap(v)) return BigInt(Object.keys(v).length);
        throw new TemplateError(`len of type ${typeName(v)}`);
      },
      index: (v, ...keys) => {
        let cur = v;
        for (const k of keys) {
          if (Array.isArray(cur)) {
            const i = asLen(k, "index");
            if (i < 0 || i >= cur.length)
              throw new TemplateError(`error calling index: index out of range: ${i}`);
            cur = cur[i];
          } else if (isMap(cur)) {
            if (typeof k !== "string")
              throw new TemplateError("error calling index: map key must be a string");
            cur = Object.prototype.hasOwnProperty.call(cur, k) ? cur[k] : NO_VALUE;
          } else if (isNil(cur)) {
            throw new TemplateError("error calling index: index of untyped nil");
          } else throw new TemplateError(`error calling index: can't index item of type ${typeName(cur)}`);
        }
        return cur;
      },
      print: (...args) => args.map(printValue).join(""),
      printf: (format, ...args) => goSprintf(String(format), args),
      // Helm
      include: (name, data) => this.renderNamed(String(name), data),
      required: (msg, v) => {
        if (isNil(v) || (typeof v === "string" && v === "")) throw new TemplateError(String(msg));
        return v;
      },
      fail: (msg) => {
        throw new TemplateError(`execution error: ${String(msg)}`);
      },
      toYaml: (v) => yamlOf(v),
      toJson: (v) => JSON.stringify(toPlain(v)),
      // sprig
      default: (d, ...rest) => {
        const v = rest.length ? rest[0] : NO_VALUE;
        return empty(v) ? d : v;
      },
      empty,
      coalesce: (...vs) => vs.find((v) => truth(v)) ?? null,
      ternary: (a, b, cond) => (truth(cond) ? a : b),
      quote: (...vs) =>
        vs
          .filter((v) => !isNil(v))
          .map((v) => goQuote(toStr(v)))
          .join(" "),
      squote: (...vs) =>
        vs
          .filter((v) => !isNil(v))
          .map((v) => `'${toStr(v)}'`)
          .join(" "),
      indent: (n, s) => {
        const pad = " ".repeat(asLen(n, "indent"));
        return pad + toStr(s).replace(/\n/g, "\n" + pad);
      },
      nindent: (n, s) => {
        const pad = " ".repeat(asLen(n, "nindent"));
        return "\n" + pad + toStr(s).replace(/\n/g, "\n" + pad);
      },
      trunc: (n, s) => {
        const str = toStr(s);
        const c = asLen(n, "trunc");
        return c >= 0 ? str.slice(0, c) : str.slice(Math.max(0, str.length + c));
      },
      trimSuffix: (suf, s) => {
        const str = toStr(s);
        const x = toStr(suf);
        return x && str.endsWith(x) ? str.slice(0, -x.length) : str;
      },
      trimPrefix: (pre, s) => {
        const str = toStr(s);
        const x = toStr(pre);
        return x && str.startsWith(x) ? str.slice(x.length) : str;
      },
      trim: (s) => toStr(s).trim(),
      replace: (from, to, s) => toStr(s).split(toStr(from)).join(toStr(to)),
      lower: (s) => toStr(s).toLowerCase(),
      upper: (s) => toStr(s).toUpperCase(),
      contains: (sub, s) => toStr(s).includes(toStr(sub)),
      hasPrefix: (pre, s) => toStr(s).startsWith(toStr(pre)),
      hasSuffix: (suf, s) => toStr(s).endsWith(toStr(suf)),
      toString: (v: unknown) => toStr(v),
      int: (v) => toInt(v),
      int64: (v) => toInt(v),
      sha256sum: (s) => createHash("sha256").update(toStr(s)).digest("hex"),
      b64enc: (s) => Buffer.from(toStr(s)).toString("base64"),
      list: (...vs) => vs,
      set: (d, k, v) => {
        if (!isMap(d)) throw new TemplateError(`set: first argument must be a map, got ${typeName(d)}`);
        d[toStr(k)] = v;
        return d;
      },
      dict: (...kv) => {
        const out: Record<string, unknown> = {};
        for (let i = 0; i < kv.length; i += 2) out[toStr(kv[i])] = i + 1 < kv.length ? kv[i + 1] : "";
        return out;
      },
      has: (needle, list) => {
        if (isNil(list)) return false;
        if (!Array.isArray(list)) throw new TemplateError(`cannot find has on type ${typeName(list)}`);
        return list.some((x) => basicKind(x) === basicKind(needle) && x === needle);
      },
      hasKey: (m, k) => isMap(m) && Object.prototype.hasOwnProperty.call(m, toStr(k)),
      keys: (...ms) => ms.flatMap((m) => (isMap(m) ? Object.keys(m) : [])),
      sortAlpha: (l) => (Array.isArray(l) ? l.map(toStr).sort() : [toStr(l)]),
      join: (sep, l) => (Array.isArray(l) ? l.map(toStr).join(toStr(sep)) : toStr(l)),
      kindIs: (kind, v) => {
        const k = toStr(kind);
        const map: Record<string, string> = { int: "int", float64: "float", string: "string", bool: "bool" };
        if (k === "map") return isMap(v);
        if (k === "slice") return Array.isArray(v);
        if (k === "invalid") return isNil(v);
        return map[k] !== undefined && basicKind(v) === map[k];
      },
      regexMatch: (re, s) => new RegExp(toStr(re)).test(toStr(s)),
    };
  }
}

const CONTROL_FUNCS = new Set(["and", "or"]);
