import { RegistryError } from "./errors.js";

/**
 * MLflow-style run search: `metrics.rmse < 60 and params.max_depth = '6' and tags.family = 'gbtree'`
 * and order_by entries such as `metrics.valid_rmse ASC`, `attributes.start_time DESC`.
 *
 * Parsing yields a small AST; SQL generation only ever places fixed fragments (table and column
 * names chosen from whitelists, operators from a fixed map) into the text, and every user value,
 * metric/param/tag key included, goes through `bind`, which returns a `$n` placeholder.
 * Positions in error messages are 1-based character offsets into the filter (or order_by entry).
 */

export type Entity = "metrics" | "params" | "tags" | "attributes";
export type AttributeKey = "status" | "run_name" | "start_time" | "end_time" | "run_id";
export type ComparisonOp = "=" | "!=" | "<" | "<=" | ">" | ">=" | "LIKE" | "ILIKE";

export interface FilterClause {
  readonly entity: Entity;
  readonly key: string;
  readonly op: ComparisonOp;
  /** Numbers for metrics; strings for params, tags, status, run_name, run_id; Dates for times. */
  readonly value: number | string | Date;
  /** 1-based position of the clause in the filter. */
  readonly position: number;
}

export interface OrderTerm {
  readonly entity: Entity;
  readonly key: string;
  readonly descending: boolean;
}

/** Tables and run columns the generated SQL refers to (fixed; never user-provided). */
export const SEARCH_TABLES = {
  runs: "registry.runs",
  latestMetrics: "registry.latest_metrics",
  params: "registry.run_params",
  tags: "registry.run_tags",
} as const;

const ENTITIES: Record<string, Entity> = {
  metric: "metrics",
  metrics: "metrics",
  param: "params",
  params: "params",
  parameter: "params",
  parameters: "params",
  tag: "tags",
  tags: "tags",
  attribute: "attributes",
  attributes: "attributes",
  attr: "attributes",
};

const ATTRIBUTE_COLUMNS: Record<AttributeKey, string> = {
  status: "upper(r.status)",
  run_name: "r.name",
  start_time: "r.start_time",
  end_time: "r.end_time",
  run_id: "r.id",
};

const ATTRIBUTE_KEYS = Object.keys(ATTRIBUTE_COLUMNS) as AttributeKey[];
const TIME_KEYS: ReadonlySet<string> = new Set(["start_time", "end_time"]);
const STATUSES = ["running", "finished", "failed", "cancelled"];

const NUMERIC_OPS: readonly ComparisonOp[] = ["=", "!=", "<", "<=", ">", ">="];
const STRING_OPS: readonly ComparisonOp[] = ["=", "!=", "LIKE", "ILIKE"];

const SQL_OPS: Record<ComparisonOp, string> = {
  "=": "=",
  "!=": "<>",
  "<": "<",
  "<=": "<=",
  ">": ">",
  ">=": ">=",
  LIKE: "LIKE",
  ILIKE: "ILIKE",
};

const MAX_FILTER_LENGTH = 10_000;
const MAX_CLAUSES = 100;
const KEY_CHAR = /[A-Za-z0-9_.\-/:]/;
const NUMBER = /^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?/;

function bad(context: string, message: string, field: string): never {
  throw new RegistryError("invalid_argument", `${context}: ${message}`, field);
}

/** A cursor over one filter or order_by entry. */
class Scanner {
  pos = 0;

  constructor(
    readonly text: string,
    readonly context: string,
    readonly field: string,
  ) {}

  get done(): boolean {
    return this.pos >= this.text.length;
  }

  peek(): string {
    return this.text[this.pos] ?? "";
  }

  skipSpace(): void {
    while (!this.done && /\s/.test(this.peek())) this.pos++;
  }

  /** The token at the cursor, for error messages. */
  found(at = this.pos): string {
    if (at >= this.text.length) return "end of input";
    const rest = this.text.slice(at);
    const word = /^[A-Za-z0-9_.\-/:`'"]+/.exec(rest)?.[0] ?? rest[0] ?? "";
    return JSON.stringify(word.length > 30 ? `${word.slice(0, 30)}…` : word);
  }

  fail(message: string, at = this.pos): never {
    return bad(this.context, `${message} at position ${at + 1}, found ${this.found(at)}`, this.field);
  }

  failPlain(message: string, at: number): never {
    return bad(this.context, `${message} (position ${at + 1})`, this.field);
  }

  word(): string {
    const match = /^[A-Za-z_][A-Za-z0-9_]*/.exec(this.text.slice(this.pos));
    if (!match) return "";
    this.pos += match[0].length;
    return match[0];
  }
}

function entityOf(s: Scanner, allowBareAttribute: boolean): { entity: Entity; key: string; start: number } {
  s.skipSpace();
  const start = s.pos;
  const name = s.word();
  const expected = "expected metrics.<key>, params.<key>, tags.<key> or attributes.<key>";
  if (name === "") s.fail(expected, start);
  if (s.peek() !== ".") {
    if (allowBareAttribute && (ATTRIBUTE_KEYS as string[]).includes(name)) {
      return { entity: "attributes", key: name, start };
    }
    s.fail(expected, start);
  }
  const entity = ENTITIES[name.toLowerCase()];
  if (!entity) {
    s.failPlain(`unknown entity ${JSON.stringify(name)}; ${expected}`, start);
  }
  s.pos++; // the dot
  const keyStart = s.pos;
  let key = "";
  if (s.peek() === "`") {
    s.pos++;
    for (;;) {
      if (s.done) s.failPlain("unterminated backquoted key", keyStart);
      const c = s.peek();
      s.pos++;
      if (c === "`") {
        if (s.peek() === "`") {
          key += "`";
          s.pos++;
          continue;
        }
        break;
      }
      key += c;
    }
  } else {
    while (!s.done && KEY_CHAR.test(s.peek())) key += s.text[s.pos++];
  }
  if (key === "") s.fail(`expected a key after "${name}."`, keyStart);
  if (entity === "attributes" && !(ATTRIBUTE_KEYS as string[]).includes(key)) {
    s.failPlain(
      `unknown attribute ${JSON.stringify(key)}; expected one of ${ATTRIBUTE_KEYS.join(", ")}`,
      keyStart,
    );
  }
  return { entity, key, start };
}

function operatorOf(s: Scanner): { op: ComparisonOp; at: number } {
  s.skipSpace();
  const at = s.pos;
  const rest = s.text.slice(at);
  const symbolic = /^(<=|>=|!=|<>|==|=|<|>)/.exec(rest)?.[0];
  if (symbolic) {
    s.pos += symbolic.length;
    const op = symbolic === "<>" ? "!=" : symbolic === "==" ? "=" : (symbolic as ComparisonOp);
    return { op, at };
  }
  const w = s.word().toUpperCase();
  if (w === "LIKE" || w === "ILIKE") return { op: w, at };
  return s.fail("expected a comparison operator", at);
}

function literalOf(s: Scanner): { value: string | number; quoted: boolean; at: number } {
  s.skipSpace();
  const at = s.pos;
  const q = s.peek();
  if (q === "'" || q === '"') {
    s.pos++;
    let value = "";
    for (;;) {
      if (s.done) s.failPlain("unterminated string", at);
      const c = s.peek();
      s.pos++;
      if (c === q) {
        if (s.peek() === q) {
          value += q;
          s.pos++;
          continue;
        }
        break;
      }
      value += c;
    }
    return { value, quoted: true, at };
  }
  const num = NUMBER.exec(s.text.slice(at))?.[0];
  if (num !== undefined) {
    const next = s.text[at + num.length];
    if (next === undefined || !/[A-Za-z0-9_]/.test(next)) {
      s.pos += num.length;
      return { value: Number(num), quoted: false, at };
    }
  }
  return s.fail("expected a number or a quoted string", at);
}

function clauseOf(s: Scanner): FilterClause {
  const { entity, key, start } = entityOf(s, false);
  const { op, at: opAt } = operatorOf(s);
  const { value, quoted, at } = literalOf(s);
  const name = `${entity}.${key}`;
  const timeKey = entity === "attributes" && TIME_KEYS.has(key);
  const numeric = entity === "metrics" || timeKey;
  const ops = numeric ? NUMERIC_OPS : STRING_OPS;
  if (!ops.includes(op)) {
    s.failPlain(`${op} cannot be used with ${name}; use one of ${ops.join(", ")}`, opAt);
  }
  if (entity === "metrics") {
    if (quoted) s.fail(`${name} must be compared to a number`, at);
    return { entity, key, op, value, position: start + 1 };
  }
  if (timeKey) {
    // Epoch milliseconds (as MLflow) or a quoted ISO-8601 timestamp.
    const time = typeof value === "number" ? new Date(value) : new Date(value);
    if (Number.isNaN(time.getTime()) || (quoted && !/^\d{4}-\d{2}-\d{2}/.test(String(value)))) {
      s.fail(`${name} must be compared to epoch milliseconds or a quoted ISO-8601 time`, at);
    }
    return { entity, key, op, value: time, position: start + 1 };
  }
  if (!quoted) s.fail(`${name} must be compared to a quoted string`, at);
  if (entity === "attributes" && key === "status") {
    const upper = String(value).toUpperCase();
    if ((op === "=" || op === "!=") && !STATUSES.includes(upper.toLowerCase())) {
      s.failPlain(`unknown status ${JSON.stringify(value)}; expected one of ${STATUSES.join(", ")}`, at);
    }
    return { entity, key, op, value: upper, position: start + 1 };
  }
  return { entity, key, op, value, position: start + 1 };
}

/** Parses a filter; empty or blank means no condition. Throws RegistryError("invalid_argument"). */
export function parseFilter(filter: string): FilterClause[] {
  if (filter.length > MAX_FILTER_LENGTH) {
    bad("filter", `is ${filter.length} characters long; the limit is ${MAX_FILTER_LENGTH}`, "filter");
  }
  const s = new Scanner(filter, "filter", "filter");
  const clauses: FilterClause[] = [];
  s.skipSpace();
  if (s.done) return clauses;
  for (;;) {
    clauses.push(clauseOf(s));
    if (clauses.length > MAX_CLAUSES) s.failPlain(`more than ${MAX_CLAUSES} conditions`, s.pos);
    s.skipSpace();
    if (s.done) return clauses;
    const at = s.pos;
    const w = s.word();
    if (w.toLowerCase() !== "and") {
      const hint = w.toLowerCase() === "or" ? " (only and is supported)" : "";
      s.fail(`expected "and" or the end of the filter${hint}`, at);
    }
    if (!/\s/.test(s.peek()) && !s.done) s.fail('expected a space after "and"', s.pos);
    s.skipSpace();
    if (s.done) s.fail('expected a condition after "and"', s.pos);
  }
}

/** Parses order_by entries such as `metrics.rmse ASC`, `attributes.start_time DESC`, `start_time`. */
export function parseOrderBy(entries: readonly string[]): OrderTerm[] {
  return entries.map((entry, i) => {
    const s = new Scanner(entry, `order_by[${i}]`, "order_by");
    const { entity, key } = entityOf(s, true);
    s.skipSpace();
    let descending = false;
    if (!s.done) {
      const at = s.pos;
      const w = s.word().toUpperCase();
      if (w === "DESC") descending = true;
      else if (w !== "ASC") s.fail("expected ASC or DESC", at);
      s.skipSpace();
      if (!s.done) s.fail("expected the end of the entry", s.pos);
    }
    return { entity, key, descending };
  });
}

export type Bind = (value: unknown) => string;

/** One SQL condition per clause over runs aliased `r`; ANDed by the caller. */
export function filterToSql(clauses: readonly FilterClause[], bind: Bind): string[] {
  return clauses.map((c) => {
    const op = SQL_OPS[c.op];
    switch (c.entity) {
      case "metrics":
        return `EXISTS (SELECT 1 FROM ${SEARCH_TABLES.latestMetrics} m WHERE m.run_id = r.id AND m.key = ${bind(c.key)} AND m.value ${op} ${bind(c.value)})`;
      case "params":
        return `EXISTS (SELECT 1 FROM ${SEARCH_TABLES.params} p WHERE p.run_id = r.id AND p.key = ${bind(c.key)} AND p.value ${op} ${bind(c.value)})`;
      case "tags":
        return `EXISTS (SELECT 1 FROM ${SEARCH_TABLES.tags} t WHERE t.run_id = r.id AND t.key = ${bind(c.key)} AND t.value ${op} ${bind(c.value)})`;
      default:
        return `${ATTRIBUTE_COLUMNS[c.key as AttributeKey]} ${op} ${bind(c.value)}`;
    }
  });
}

/** ORDER BY terms; runs lacking the value sort last in either direction (as MLflow). */
export function orderByToSql(terms: readonly OrderTerm[], bind: Bind): string[] {
  return terms.map((t) => {
    const dir = t.descending ? "DESC" : "ASC";
    let expr: string;
    switch (t.entity) {
      case "metrics":
        expr = `(SELECT m.value FROM ${SEARCH_TABLES.latestMetrics} m WHERE m.run_id = r.id AND m.key = ${bind(t.key)})`;
        break;
      case "params":
        expr = `(SELECT p.value FROM ${SEARCH_TABLES.params} p WHERE p.run_id = r.id AND p.key = ${bind(t.key)})`;
        break;
      case "tags":
        expr = `(SELECT t.value FROM ${SEARCH_TABLES.tags} t WHERE t.run_id = r.id AND t.key = ${bind(t.key)})`;
        break;
      case "attributes":
        expr = ATTRIBUTE_COLUMNS[t.key as AttributeKey];
        break;
    }
    return `${expr} ${dir} NULLS LAST`;
  });
}
