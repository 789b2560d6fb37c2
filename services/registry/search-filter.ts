import { RegistryError } from "./errors.js";

/**
 * MLflow's run-search grammar: `metrics.rmse < 60 and params.max_depth = '6' and tags.family = 'gbtree'`
 * and order_by entries such as `metrics.valid_rmse ASC`, `attributes.start_time DESC`.
 *
 * The reading is MLflow's (mlflow/utils/search_utils.py, SearchUtils.parse_search_filter, checked
 * against mlflow-skinny 3.18.0): what MLflow accepts is accepted with the same meaning, what it rejects
 * is rejected. Notable points of that reading, each covered by tests/fast/search-grammar.test.ts:
 *   - entity names are case-sensitive (`metric(s)`, `param(s)`/`parameter(s)`, `tag(s)`,
 *     `attribute(s)`/`attr`/`run`), optionally backquoted; a bare name is an attribute (`status`);
 *   - keys are `[A-Za-z0-9_.]` or quoted with "…", '…' or `…`; MLflow only trims the outer quotes, so
 *     a doubled quote inside a quoted key or value stays doubled (`'it''s'` reads `it''s`);
 *   - `and` is a separator MLflow skips wherever it stands (a trailing `and` is tolerated);
 *   - `==`, `<>`, `or`, parentheses and unquoted `-` or `/` in keys are rejected;
 *   - status compares case-sensitively with MLflow's names (RUNNING, FINISHED, FAILED, KILLED);
 *     a bikeshare `cancelled` run reads as KILLED.
 * Extensions (documented in docs/mlflow-api.md): start_time/end_time also compare to a quoted ISO-8601
 * time. Not supported: `dataset.*` (bikeshare records no dataset inputs), refused with a clear error.
 *
 * SQL generation only ever places fixed fragments (table and column names from whitelists, operators
 * from a fixed map) into the text; every user value, keys included, goes through `bind` ($n).
 * Positions in error messages are 1-based character offsets into the filter (or order_by entry).
 */

export type Entity = "metrics" | "params" | "tags" | "attributes";
export type AttributeKey =
  | "status"
  | "run_name"
  | "start_time"
  | "end_time"
  | "run_id"
  | "user_id"
  | "artifact_uri";
export type ComparisonOp =
  | "="
  | "!="
  | "<"
  | "<="
  | ">"
  | ">="
  | "LIKE"
  | "ILIKE"
  | "IN"
  | "NOT IN"
  | "IS NULL"
  | "IS NOT NULL";

export interface FilterClause {
  readonly entity: Entity;
  readonly key: string;
  readonly op: ComparisonOp;
  /**
   * Numbers for metrics; strings for params, tags and string attributes; Dates for times; a list of
   * strings for IN / NOT IN; null for IS NULL / IS NOT NULL.
   */
  readonly value: number | string | Date | readonly string[] | null;
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

/** The run tag MLflow's client records its user in; `attributes.user_id` reads it. */
export const USER_TAG = "mlflow.user";

/** The run's artifact root as the MLflow API reports it (served by the mlflow-artifacts proxy). */
export function runArtifactUri(experimentId: string, runId: string): string {
  return `mlflow-artifacts:/${experimentId}/${runId}/artifacts`;
}

/** MLflow's status names for bikeshare's run states. */
export const MLFLOW_STATUS = {
  running: "RUNNING",
  finished: "FINISHED",
  failed: "FAILED",
  cancelled: "KILLED",
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
  run: "attributes",
};

const ATTRIBUTE_COLUMNS: Record<AttributeKey, string> = {
  status: `(CASE r.status ${Object.entries(MLFLOW_STATUS)
    .map(([ours, theirs]) => `WHEN '${ours}' THEN '${theirs}'`)
    .join(" ")} ELSE upper(r.status) END)`,
  run_name: "r.name",
  start_time: "r.start_time",
  end_time: "r.end_time",
  run_id: "r.id",
  user_id: `COALESCE((SELECT u.value FROM ${SEARCH_TABLES.tags} u WHERE u.run_id = r.id AND u.key = '${USER_TAG}'), '')`,
  artifact_uri: "('mlflow-artifacts:/' || r.experiment_id || '/' || r.id || '/artifacts')",
};

/** MLflow's other spellings of attribute keys (SearchUtils.translate_key_alias). */
const ATTRIBUTE_ALIASES: Record<string, AttributeKey> = {
  created: "start_time",
  Created: "start_time",
  "run name": "run_name",
  "Run name": "run_name",
  "Run Name": "run_name",
};

const ATTRIBUTE_KEYS = Object.keys(ATTRIBUTE_COLUMNS) as AttributeKey[];
const TIME_KEYS: ReadonlySet<string> = new Set(["start_time", "end_time"]);

const NUMERIC_OPS: readonly ComparisonOp[] = ["=", "!=", "<", "<=", ">", ">="];
const KEYED_STRING_OPS: readonly ComparisonOp[] = ["=", "!=", "LIKE", "ILIKE", "IS NULL", "IS NOT NULL"];
const ATTRIBUTE_STRING_OPS: readonly ComparisonOp[] = ["=", "!=", "LIKE", "ILIKE", "IN", "NOT IN"];

const SQL_OPS: Record<Exclude<ComparisonOp, "IN" | "NOT IN" | "IS NULL" | "IS NOT NULL">, string> = {
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
const MAX_ORDER_BY = 10;
/** How many experiments one run search may name. */
export const MAX_SEARCH_EXPERIMENTS = 100;
const MAX_LIST = 1000;
/** sqlparse's name characters: what MLflow reads as one identifier without quotes. */
const BARE_KEY = /^[A-Za-z0-9_][A-Za-z0-9_.]*/;
const WORD = /^[A-Za-z_][A-Za-z0-9_]*/;
/** sqlparse's numbers (no leading `+`); the token must end at a non-word character. */
const NUMBER = /^-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?/;

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

  peek(offset = 0): string {
    return this.text[this.pos + offset] ?? "";
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

  match(re: RegExp): string {
    const m = re.exec(this.text.slice(this.pos));
    if (!m) return "";
    this.pos += m[0].length;
    return m[0];
  }

  /** The next word, without consuming it. */
  peekWord(): string {
    return WORD.exec(this.text.slice(this.pos))?.[0] ?? "";
  }

  /**
   * A quoted token opened by `q` at the cursor. MLflow (through sqlparse) ends it at the first lone
   * `q`; a doubled `q` (and, in single quotes, a backslash-escaped one) does not end it and, since
   * MLflow only trims the outer quotes, stays in the text as written.
   */
  quoted(what: string): string {
    const q = this.peek();
    const at = this.pos;
    this.pos++;
    let text = "";
    for (;;) {
      if (this.done) this.failPlain(`unterminated ${what}`, at);
      const c = this.peek();
      if (q === "'" && c === "\\" && this.peek(1) === "'") {
        text += "\\'";
        this.pos += 2;
        continue;
      }
      if (c === q) {
        if (this.peek(1) === q) {
          text += q + q;
          this.pos += 2;
          continue;
        }
        this.pos++;
        return text;
      }
      text += c;
      this.pos++;
    }
  }
}

const EXPECTED_IDENTIFIER =
  "expected metrics.<key>, params.<key>, tags.<key>, attributes.<key> or an attribute name";

function attributeOf(s: Scanner, key: string, at: number, orderBy: boolean): AttributeKey {
  const resolved = ATTRIBUTE_ALIASES[key] ?? key;
  const valid = (ATTRIBUTE_KEYS as string[]).includes(resolved);
  // MLflow orders by created/Created but not by the spaced run-name spellings.
  if (!valid || (orderBy && key.includes(" "))) {
    s.failPlain(`unknown attribute ${JSON.stringify(key)}; expected one of ${ATTRIBUTE_KEYS.join(", ")}`, at);
  }
  return resolved as AttributeKey;
}

/** `entity.key`, `` `entity`.key ``, `entity."key"` or a bare attribute name. */
function identifierOf(s: Scanner, orderBy: boolean): { entity: Entity; key: string; start: number } {
  s.skipSpace();
  const start = s.pos;
  let name: string;
  let nameQuoted = false;
  if (s.peek() === "`") {
    name = s.quoted("backquoted name");
    nameQuoted = true;
  } else if (s.peek() === '"' || (s.peek() === "'" && !orderBy)) {
    // A quoted bare attribute name: `"Run Name" = 'x'`.
    const key = s.quoted("quoted name");
    if (s.peek() === ".") s.failPlain("a quoted entity name must use backquotes", start);
    return { entity: "attributes", key: attributeOf(s, key, start, orderBy), start };
  } else {
    name = s.match(WORD);
  }
  if (name === "") {
    const c = s.peek();
    const hint = c === "(" ? " (parentheses are not supported; conditions are joined by and)" : "";
    s.fail(`${EXPECTED_IDENTIFIER}${hint}`, start);
  }
  if (s.peek() !== ".") {
    if (nameQuoted) s.failPlain(`expected a key after the entity ${JSON.stringify(name)}`, s.pos);
    return { entity: "attributes", key: attributeOf(s, name, start, orderBy), start };
  }
  if (name === "dataset" || name === "datasets") {
    s.failPlain("dataset filters are not supported: bikeshare runs record no dataset inputs", start);
  }
  const entity = ENTITIES[name];
  if (!entity) {
    const lower = ENTITIES[name.toLowerCase()];
    const hint = lower ? ` (entity names are case-sensitive: use ${name.toLowerCase()})` : "";
    s.failPlain(`unknown entity ${JSON.stringify(name)}${hint}; ${EXPECTED_IDENTIFIER}`, start);
  }
  s.pos++; // the dot
  const keyStart = s.pos;
  const c = s.peek();
  let key: string;
  if (c === "`" || c === '"' || c === "'") {
    key = s.quoted(c === "`" ? "backquoted key" : "quoted key");
  } else {
    key = s.match(BARE_KEY);
    if (key === "") s.fail(`expected a key after "${name}."`, keyStart);
    const next = s.peek();
    if (next !== "" && /[^\s=!<>]/.test(next) && !/^\s/.test(next)) {
      s.fail(`a key with ${JSON.stringify(next)} must be quoted, e.g. ${name}."${key}${next}…"`, s.pos);
    }
  }
  if (entity === "attributes") return { entity, key: attributeOf(s, key, keyStart, orderBy), start };
  return { entity, key, start };
}

function operatorOf(s: Scanner): { op: ComparisonOp; at: number } {
  s.skipSpace();
  const at = s.pos;
  const rest = s.text.slice(at);
  const symbolic = /^(==|<>|<=|>=|!=|=|<|>)/.exec(rest)?.[0];
  if (symbolic === "==" || symbolic === "<>") {
    s.failPlain(`${symbolic} is not an operator; use ${symbolic === "==" ? "=" : "!="}`, at);
  }
  if (symbolic) {
    s.pos += symbolic.length;
    return { op: symbolic as ComparisonOp, at };
  }
  const w = s.match(WORD).toUpperCase();
  if (w === "LIKE" || w === "ILIKE" || w === "IN") return { op: w, at };
  if (w === "NOT") {
    s.skipSpace();
    const next = s.match(WORD).toUpperCase();
    if (next === "IN") return { op: "NOT IN", at };
    s.failPlain(`NOT ${next} is not an operator; NOT is only used in NOT IN`, at);
  }
  if (w === "IS") {
    s.skipSpace();
    let next = s.match(WORD).toUpperCase();
    let negated = false;
    if (next === "NOT") {
      negated = true;
      s.skipSpace();
      next = s.match(WORD).toUpperCase();
    }
    if (next !== "NULL") s.fail("expected NULL after IS (IS NULL or IS NOT NULL)", s.pos);
    return { op: negated ? "IS NOT NULL" : "IS NULL", at };
  }
  return s.fail("expected a comparison operator", at);
}

type Literal =
  | { kind: "string"; value: string; at: number }
  | { kind: "number"; value: number; at: number }
  | { kind: "list"; value: string[]; at: number };

/** A Python-literal tuple of strings, as MLflow reads IN lists (ast.literal_eval). */
function listOf(s: Scanner): string[] {
  const at = s.pos;
  s.pos++; // (
  const items: string[] = [];
  for (;;) {
    s.skipSpace();
    if (s.peek() === ")") {
      s.pos++;
      break;
    }
    let c = s.peek();
    if (c !== "'" && c !== '"') s.fail("expected a quoted string in the list", s.pos);
    // Python's reading: adjacent strings concatenate (so `'a''b'` is "ab"), a backslash escapes.
    let item = "";
    while (c === "'" || c === '"') {
      item += pythonString(s);
      s.skipSpace();
      c = s.peek();
    }
    items.push(item);
    if (items.length > MAX_LIST) s.failPlain(`a list has more than ${MAX_LIST} values`, at);
    s.skipSpace();
    if (s.peek() === ",") {
      s.pos++;
      continue;
    }
    if (s.peek() === ")") {
      s.pos++;
      break;
    }
    s.fail('expected "," or ")" in the list', s.pos);
  }
  if (items.length === 0) s.failPlain("expected a non-empty list of quoted strings", at);
  return items;
}

function pythonString(s: Scanner): string {
  const q = s.peek();
  const at = s.pos;
  s.pos++;
  let text = "";
  for (;;) {
    if (s.done) s.failPlain("unterminated string in the list", at);
    const c = s.peek();
    s.pos++;
    if (c === q) return text;
    if (c === "\\" && !s.done) {
      const e = s.peek();
      s.pos++;
      text += e === "n" ? "\n" : e === "t" ? "\t" : e === q || e === "\\" ? e : `\\${e}`;
      continue;
    }
    text += c;
  }
}

function literalOf(s: Scanner): Literal {
  s.skipSpace();
  const at = s.pos;
  const q = s.peek();
  if (q === "'" || q === '"') return { kind: "string", value: s.quoted("string"), at };
  if (q === "(") return { kind: "list", value: listOf(s), at };
  const num = NUMBER.exec(s.text.slice(at))?.[0];
  if (num !== undefined) {
    const next = s.text[at + num.length];
    if (next === undefined || !/[A-Za-z0-9_]/.test(next)) {
      s.pos += num.length;
      return { kind: "number", value: Number(num), at };
    }
  }
  return s.fail("expected a number, a quoted string or a list", at);
}

function clauseOf(s: Scanner): FilterClause {
  const { entity, key, start } = identifierOf(s, false);
  const { op, at: opAt } = operatorOf(s);
  const name = `${entity}.${key}`;
  const position = start + 1;
  const timeKey = entity === "attributes" && TIME_KEYS.has(key);
  const numeric = entity === "metrics" || timeKey;
  const ops = numeric ? NUMERIC_OPS : entity === "attributes" ? ATTRIBUTE_STRING_OPS : KEYED_STRING_OPS;
  if (!ops.includes(op)) {
    const why =
      op === "IS NULL" || op === "IS NOT NULL" ? " (IS NULL / IS NOT NULL apply to params and tags)" : "";
    s.failPlain(`${op} cannot be used with ${name}${why}; use one of ${ops.join(", ")}`, opAt);
  }
  if (op === "IS NULL" || op === "IS NOT NULL") return { entity, key, op, value: null, position };
  const lit = literalOf(s);
  if (op === "IN" || op === "NOT IN") {
    if (key !== "run_id") s.failPlain(`${op} is only supported on attributes.run_id`, opAt);
    if (lit.kind !== "list") s.fail(`${op} needs a parenthesised list of quoted strings`, lit.at);
    return { entity, key, op, value: lit.value, position };
  }
  if (lit.kind === "list") s.fail(`a list can only follow IN or NOT IN`, lit.at);
  if (entity === "metrics") {
    if (lit.kind !== "number") s.fail(`${name} must be compared to a number`, lit.at);
    return { entity, key, op, value: lit.value, position };
  }
  if (timeKey) {
    // Epoch milliseconds (as MLflow) or, as a bikeshare extension, a quoted ISO-8601 timestamp.
    const time = new Date(lit.value);
    if (Number.isNaN(time.getTime()) || (lit.kind === "string" && !/^\d{4}-\d{2}-\d{2}/.test(lit.value))) {
      s.fail(`${name} must be compared to epoch milliseconds or a quoted ISO-8601 time`, lit.at);
    }
    return { entity, key, op, value: time, position };
  }
  if (lit.kind !== "string") s.fail(`${name} must be compared to a quoted string`, lit.at);
  return { entity, key, op, value: lit.value, position };
}

/**
 * `and` (any case) is a separator MLflow skips wherever it stands: between conditions, before the
 * first, after the last, repeated, or absent between two conditions.
 */
function skipAnds(s: Scanner): void {
  for (;;) {
    s.skipSpace();
    const w = s.peekWord();
    if (w.toLowerCase() !== "and") return;
    const after = s.text[s.pos + w.length];
    // `and.x` or `and_x` is an identifier, not the keyword.
    if (after !== undefined && !/\s/.test(after) && after !== "(" && after !== "'" && after !== '"') return;
    s.pos += w.length;
  }
}

/** Parses a filter; empty or blank means no condition. Throws RegistryError("invalid_argument"). */
export function parseFilter(filter: string): FilterClause[] {
  if (filter.length > MAX_FILTER_LENGTH) {
    bad("filter", `is ${filter.length} characters long; the limit is ${MAX_FILTER_LENGTH}`, "filter");
  }
  const s = new Scanner(filter, "filter", "filter");
  const clauses: FilterClause[] = [];
  for (;;) {
    skipAnds(s);
    if (s.done) return clauses;
    const w = s.peekWord().toLowerCase();
    if (w === "or" || w === "not") {
      s.fail(`${w} is not supported; conditions can only be joined by and`, s.pos);
    }
    if (clauses.length > 0 && /[;)]/.test(s.peek())) s.fail('expected "and" or the end of the filter');
    clauses.push(clauseOf(s));
    if (clauses.length > MAX_CLAUSES) s.failPlain(`more than ${MAX_CLAUSES} conditions`, s.pos);
  }
}

/** Parses order_by entries such as `metrics.rmse ASC`, `attributes.start_time DESC`, `start_time`. */
export function parseOrderBy(entries: readonly string[]): OrderTerm[] {
  // Each term is a correlated subquery per candidate run: hundreds of them hold the database for minutes.
  if (entries.length > MAX_ORDER_BY) {
    bad("order_by", `has ${entries.length} entries; the limit is ${MAX_ORDER_BY}`, "order_by");
  }
  return entries.map((entry, i) => {
    const s = new Scanner(entry, `order_by[${i}]`, "order_by");
    const { entity, key } = identifierOf(s, true);
    s.skipSpace();
    let descending = false;
    if (!s.done) {
      const at = s.pos;
      const w = s.match(WORD).toUpperCase();
      if (w === "DESC") descending = true;
      else if (w !== "ASC") s.fail("expected ASC or DESC", at);
      s.skipSpace();
      if (!s.done) s.fail("expected the end of the entry", s.pos);
    }
    return { entity, key, descending };
  });
}

export type Bind = (value: unknown) => string;

function keyedCondition(table: string, alias: string, c: FilterClause, bind: Bind): string {
  const owner = `${alias}.run_id = r.id AND ${alias}.key = ${bind(c.key)}`;
  if (c.op === "IS NULL") return `NOT EXISTS (SELECT 1 FROM ${table} ${alias} WHERE ${owner})`;
  if (c.op === "IS NOT NULL") return `EXISTS (SELECT 1 FROM ${table} ${alias} WHERE ${owner})`;
  const op = SQL_OPS[c.op as keyof typeof SQL_OPS];
  return `EXISTS (SELECT 1 FROM ${table} ${alias} WHERE ${owner} AND ${alias}.value ${op} ${bind(c.value)})`;
}

/** One SQL condition per clause over runs aliased `r`; ANDed by the caller. */
export function filterToSql(clauses: readonly FilterClause[], bind: Bind): string[] {
  return clauses.map((c) => {
    switch (c.entity) {
      case "metrics":
        return keyedCondition(SEARCH_TABLES.latestMetrics, "m", c, bind);
      case "params":
        return keyedCondition(SEARCH_TABLES.params, "p", c, bind);
      case "tags":
        return keyedCondition(SEARCH_TABLES.tags, "t", c, bind);
      default: {
        const column = ATTRIBUTE_COLUMNS[c.key as AttributeKey];
        if (c.op === "IN" || c.op === "NOT IN") {
          const list = (c.value as readonly string[]).map(bind).join(", ");
          return `${column} ${c.op} (${list})`;
        }
        return `${column} ${SQL_OPS[c.op as keyof typeof SQL_OPS]} ${bind(c.value)}`;
      }
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

/**
 * A SQL LIKE pattern (`%` any run, `_` one character) as a linear-time test. A RegExp built from the
 * pattern (`%` -> `.*`) backtracks exponentially on `'%%%%…x'`, blocking the event loop; here the
 * pattern is split on `%` and each piece is found at its earliest position left to right, which is
 * correct for LIKE (an earlier match never rules out a later piece) and costs O(name × pattern).
 */
export function likeMatcher(pattern: string, caseInsensitive: boolean): (value: string) => boolean {
  const fold = (s: string) => Array.from(caseInsensitive ? s.toLowerCase() : s);
  const pieces = pattern.split("%").map(fold);
  const first = pieces[0] as string[];
  const last = pieces[pieces.length - 1] as string[];
  const middle = pieces.slice(1, -1).filter((p) => p.length > 0);
  const at = (v: string[], p: string[], i: number) => {
    for (let j = 0; j < p.length; j++) if (p[j] !== "_" && p[j] !== v[i + j]) return false;
    return true;
  };
  return (raw) => {
    const v = fold(raw);
    if (pieces.length === 1) return v.length === first.length && at(v, first, 0);
    if (v.length < first.length + last.length || !at(v, first, 0)) return false;
    const end = v.length - last.length;
    if (!at(v, last, end)) return false;
    let i = first.length;
    for (const p of middle) {
      let found = -1;
      for (let k = i; k + p.length <= end; k++) {
        if (at(v, p, k)) {
          found = k;
          break;
        }
      }
      if (found < 0) return false;
      i = found + p.length;
    }
    return true;
  };
}
