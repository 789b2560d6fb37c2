import { describe, expect, it } from "vitest";
import { RegistryError } from "../../services/registry/errors.js";
import { parseFilter, parseOrderBy } from "../../services/registry/search-filter.js";

/*
 * The run-search grammar against MLflow's own reading. Every expectation below was written from
 * mlflow-skinny 3.18.0: SearchUtils.parse_search_filter / parse_order_by_for_search_runs (plus the
 * comparator checks SearchUtils.filter applies) run on the same string. Most strings are the ones in
 * MLflow's tests/utils/test_search_utils.py; the rest probe the forms issue 16 names.
 * MLflow's "type" is our entity (metric → metrics, parameter → params, tag → tags, attribute →
 * attributes); its numeric strings are our numbers.
 */

type Clause = [entity: string, key: string, op: string, value: unknown];

const clauses = (filter: string): Clause[] =>
  parseFilter(filter).map((c) => [
    c.entity,
    c.key,
    c.op,
    c.value instanceof Date ? c.value.toISOString() : c.value,
  ]);

function refusal(work: () => unknown): RegistryError {
  try {
    work();
  } catch (error) {
    expect(error).toBeInstanceOf(RegistryError);
    return error as RegistryError;
  }
  return expect.fail("expected a refusal");
}

describe("filters MLflow accepts, read as MLflow reads them", () => {
  const accepted: [string, Clause[]][] = [
    // tests/utils/test_search_utils.py::test_filter
    ["metric.acc >= 0.94", [["metrics", "acc", ">=", 0.94]]],
    ["metric.acc>=100", [["metrics", "acc", ">=", 100]]],
    ["params.m!='tf'", [["params", "m", "!=", "tf"]]],
    ['params."m"!="tf"', [["params", "m", "!=", "tf"]]],
    ['metric."legit name" >= 0.243', [["metrics", "legit name", ">=", 0.243]]],
    ["metrics.XYZ = 3", [["metrics", "XYZ", "=", 3]]],
    ['params."cat dog" = "pets"', [["params", "cat dog", "=", "pets"]]],
    ["params.\"cat dog\" = 'x'", [["params", "cat dog", "=", "x"]]],
    ['metrics."X-Y-Z" = 3', [["metrics", "X-Y-Z", "=", 3]]],
    ['metrics."X//Y#$$@&Z" = 3', [["metrics", "X//Y#$$@&Z", "=", 3]]],
    ["params.model = 'LinearRegression'", [["params", "model", "=", "LinearRegression"]]],
    [
      "metrics.rmse < 1 and params.model_class = 'LR'",
      [
        ["metrics", "rmse", "<", 1],
        ["params", "model_class", "=", "LR"],
      ],
    ],
    ["", []],
    ["`metric`.a >= 0.1", [["metrics", "a", ">=", 0.1]]],
    ["tags.version = 'commit-hash'", [["tags", "version", "=", "commit-hash"]]],
    ["`tags`.source_name = 'a notebook'", [["tags", "source_name", "=", "a notebook"]]],
    ['metrics."accuracy.2.0" > 5', [["metrics", "accuracy.2.0", ">", 5]]],
    ["metrics.`spacey name` > 5", [["metrics", "spacey name", ">", 5]]],
    ['params."p.a.r.a.m" != "a"', [["params", "p.a.r.a.m", "!=", "a"]]],
    ['tags."t.a.g" = "a"', [["tags", "t.a.g", "=", "a"]]],
    ["attribute.artifact_uri = '1/23/4'", [["attributes", "artifact_uri", "=", "1/23/4"]]],
    ["attribute.start_time >= 1234", [["attributes", "start_time", ">=", "1970-01-01T00:00:01.234Z"]]],
    ["run.status = 'RUNNING'", [["attributes", "status", "=", "RUNNING"]]],
    ["tags.version IS NULL", [["tags", "version", "IS NULL", null]]],
    ["tags.version IS NOT NULL", [["tags", "version", "IS NOT NULL", null]]],
    ["params.lr IS NULL", [["params", "lr", "IS NULL", null]]],
    ["params.lr IS NOT NULL", [["params", "lr", "IS NOT NULL", null]]],
    [
      "tags.a IS NULL AND params.b = 'val'",
      [
        ["tags", "a", "IS NULL", null],
        ["params", "b", "=", "val"],
      ],
    ],
    // test_correct_quote_trimming
    ["params.m = 'LR'", [["params", "m", "=", "LR"]]],
    ['params.m = "LR"', [["params", "m", "=", "LR"]]],
    ['params.m = "L\'Hosp"', [["params", "m", "=", "L'Hosp"]]],
    // IS NULL spelled any case, with any spacing
    ["params.a is not null", [["params", "a", "IS NOT NULL", null]]],
    ["tags.a IS  NULL", [["tags", "a", "IS NULL", null]]],
    // IN / NOT IN lists (run_id only), read as Python literals
    ["attributes.run_id IN ('a', 'b')", [["attributes", "run_id", "IN", ["a", "b"]]]],
    ["run_id in ('a','b')", [["attributes", "run_id", "IN", ["a", "b"]]]],
    ["run_id NOT IN ('a')", [["attributes", "run_id", "NOT IN", ["a"]]]],
    ["run_id IN ('a',)", [["attributes", "run_id", "IN", ["a"]]]],
    ["run_id IN (\"a\", 'b')", [["attributes", "run_id", "IN", ["a", "b"]]]],
    ["run_id IN ('a' 'b')", [["attributes", "run_id", "IN", ["ab"]]]],
    // the run. prefix, attr., and bare attribute names
    ["status = 'FINISHED'", [["attributes", "status", "=", "FINISHED"]]],
    ['status = "FINISHED"', [["attributes", "status", "=", "FINISHED"]]],
    ["attr.status = 'RUNNING'", [["attributes", "status", "=", "RUNNING"]]],
    ["run.run_name = 'a'", [["attributes", "run_name", "=", "a"]]],
    ["run_id = 'abc'", [["attributes", "run_id", "=", "abc"]]],
    ["attributes.user_id = 'u'", [["attributes", "user_id", "=", "u"]]],
    ["user_id = 'me'", [["attributes", "user_id", "=", "me"]]],
    ["artifact_uri LIKE '%x%'", [["attributes", "artifact_uri", "LIKE", "%x%"]]],
    ["attributes.artifact_uri = 'x'", [["attributes", "artifact_uri", "=", "x"]]],
    ["created > 5", [["attributes", "start_time", ">", "1970-01-01T00:00:00.005Z"]]],
    ["Created > 5", [["attributes", "start_time", ">", "1970-01-01T00:00:00.005Z"]]],
    ["attributes.`run name` = 'x'", [["attributes", "run_name", "=", "x"]]],
    ["attributes.\"Run Name\" = 'x'", [["attributes", "run_name", "=", "x"]]],
    // KILLED, and any other status string: accepted, compared case-sensitively
    ["status = 'KILLED'", [["attributes", "status", "=", "KILLED"]]],
    ["status = 'finished'", [["attributes", "status", "=", "finished"]]],
    ["status = 'done'", [["attributes", "status", "=", "done"]]],
    // `and` is skipped wherever it stands
    ["status = 'KILLED' and", [["attributes", "status", "=", "KILLED"]]],
    ["metrics.a > 1 AND", [["metrics", "a", ">", 1]]],
    ["metrics.a > 1 and  ", [["metrics", "a", ">", 1]]],
    [
      "params.a = 'x' and tags.b = 'y' and",
      [
        ["params", "a", "=", "x"],
        ["tags", "b", "=", "y"],
      ],
    ],
    ["and metrics.a > 1", [["metrics", "a", ">", 1]]],
    ["and", []],
    [
      "metrics.a > 1 and and metrics.b > 2",
      [
        ["metrics", "a", ">", 1],
        ["metrics", "b", ">", 2],
      ],
    ],
    [
      "metrics.a > 1 AnD metrics.b > 2",
      [
        ["metrics", "a", ">", 1],
        ["metrics", "b", ">", 2],
      ],
    ],
    [
      "metrics.a > 1 metrics.b > 2",
      [
        ["metrics", "a", ">", 1],
        ["metrics", "b", ">", 2],
      ],
    ],
    [
      "params.a='x'and tags.b='y'",
      [
        ["params", "a", "=", "x"],
        ["tags", "b", "=", "y"],
      ],
    ],
    // quotes: MLflow only trims the outer pair, so doubled quotes stay doubled
    ["params.a = 'it''s'", [["params", "a", "=", "it''s"]]],
    ['params.a = "x""y"', [["params", "a", "=", 'x""y']]],
    ["params.a = 'x\\'y'", [["params", "a", "=", "x\\'y"]]],
    ["tags.`a``b` = 'x'", [["tags", "a``b", "=", "x"]]],
    ["metrics.`a``b` > 1", [["metrics", "a``b", ">", 1]]],
    ['params."a""b" = \'x\'', [["params", 'a""b', "=", "x"]]],
    ["params.'a b' = 'x'", [["params", "a b", "=", "x"]]],
    ["params.a = ''", [["params", "a", "=", ""]]],
    ["tags.\"a b\" != ''", [["tags", "a b", "!=", ""]]],
    ['params.a != "it\'s"', [["params", "a", "!=", "it's"]]],
    ["params.\"a-b\" = 'x'", [["params", "a-b", "=", "x"]]],
    ["params.`a/b` = 'x'", [["params", "a/b", "=", "x"]]],
    ["metrics.`a` > 1", [["metrics", "a", ">", 1]]],
    ["`metrics`.`a b` > 1", [["metrics", "a b", ">", 1]]],
    // keys and numbers
    ["metrics.a.b > 1", [["metrics", "a.b", ">", 1]]],
    ["metrics.1a > 1", [["metrics", "1a", ">", 1]]],
    ["metrics.a > -1", [["metrics", "a", ">", -1]]],
    ["metrics.a > 1e5", [["metrics", "a", ">", 100000]]],
    ["metrics.a > .5", [["metrics", "a", ">", 0.5]]],
    ["metrics.a > 1.", [["metrics", "a", ">", 1]]],
    ["metrics.a >= 0.1e-3", [["metrics", "a", ">=", 0.0001]]],
    ["params.a like 'x%'", [["params", "a", "LIKE", "x%"]]],
  ];

  it.each(accepted)("%s", (filter, expected) => {
    expect(clauses(filter)).toEqual(expected);
  });
});

describe("filters MLflow rejects", () => {
  const rejected: [string, string][] = [
    // test_error_filter
    [
      "metric.acc >= 0.94; metrics.rmse < 1",
      'expected "and" or the end of the filter at position 19, found ";"',
    ],
    ["m.acc >= 0.94", 'unknown entity "m"'],
    ["acc >= 0.94", 'unknown attribute "acc"'],
    ["p.model >= 'LR'", 'unknown entity "p"'],
    ["attri.x != 1", 'unknown entity "attri"'],
    ["model >= 'LR'", 'unknown attribute "model"'],
    [
      "metrics.A > 0.1 OR params.B = 'LR'",
      "or is not supported; conditions can only be joined by and at position 17",
    ],
    ["metrics.A > 0.1 NAND params.B = 'LR'", 'unknown attribute "NAND"'],
    ["metrics.A > 0.1 AND (params.B = 'LR')", "parentheses are not supported"],
    ["`metrics.A > 0.1", "unterminated backquoted name"],
    ["param`.A > 0.1", 'unknown attribute "param"'],
    ["attribute.start != 1", 'unknown attribute "start"'],
    ["attribute.experiment_id != 1", 'unknown attribute "experiment_id"'],
    ["attribute.lifecycle_stage = 'ACTIVE'", 'unknown attribute "lifecycle_stage"'],
    ["attribute.name != 1", 'unknown attribute "name"'],
    ["attribute._status != 'RUNNING'", 'unknown attribute "_status"'],
    ["attribute.status = true", "expected a number, a quoted string or a list at position 20"],
    [
      "metrics.acc IS NULL",
      "IS NULL cannot be used with metrics.acc (IS NULL / IS NOT NULL apply to params and tags)",
    ],
    ["attribute.status IS NULL", "IS NULL cannot be used with attributes.status"],
    ["end_time IS NULL", "IS NULL cannot be used with attributes.end_time"],
    // test_error_comparison_clauses
    ["metric.model = 'LR'", "metrics.model must be compared to a number"],
    ["metric.model = '5'", "metrics.model must be compared to a number"],
    ["params.acc = 5", "params.acc must be compared to a quoted string"],
    ["tags.acc = 5", "tags.acc must be compared to a quoted string"],
    ["metrics.acc != metrics.acc", "expected a number, a quoted string or a list"],
    ["1.0 > metrics.acc", "expected metrics.<key>"],
    ["attribute.status = 1", "attributes.status must be compared to a quoted string"],
    // test_bad_quotes
    ["params.acc = LR", "expected a number, a quoted string or a list at position 14"],
    ["params.acc = `LR`", "expected a number, a quoted string or a list"],
    ["params.'acc = LR", "unterminated quoted key"],
    ["params.acc = 'LR", "unterminated string (position 14)"],
    ["params.acc = LR'", "expected a number, a quoted string or a list"],
    ["params.acc = \"LR'", "unterminated string"],
    ["tags.acc = = 'LR'", "expected a number, a quoted string or a list at position 12"],
    ["attribute.status IS 'RUNNING'", "expected NULL after IS"],
    // test_invalid_clauses
    ["params.acc LR !=", "expected a comparison operator at position 12"],
    ["metric.acc !=", "expected a number, a quoted string or a list at position 14, found end of input"],
    ["foo is null", 'unknown attribute "foo"'],
    ["1=1", "expected metrics.<key>"],
    ["1==2", "expected metrics.<key>"],
    // test_bad_comparators (SearchUtils.filter's comparator checks)
    ["metrics.abc ~ 1.0", "expected a comparison operator"],
    ["params.abc > 'my-param-value'", "> cannot be used with params.abc"],
    ["tags.abc <= 'x'", "<= cannot be used with tags.abc"],
    ["attributes.status >= 'x'", ">= cannot be used with attributes.status"],
    ["attributes.start_time LIKE 1234", "LIKE cannot be used with attributes.start_time"],
    ["params.a NOT LIKE 'x'", "NOT LIKE is not an operator"],
    // MLflow rejects these; so do we (issue 16)
    ["metrics.a == 1", "== is not an operator; use ="],
    ["metrics.a <> 1", "<> is not an operator; use !="],
    ["params.a-b = 'x'", 'a key with "-" must be quoted, e.g. params."a-…" at position 9'],
    ["params.a/b = 'x'", 'a key with "/" must be quoted'],
    ["metrics.a$b > 1", 'a key with "$" must be quoted'],
    ["metrics.a:b > 1", 'a key with ":" must be quoted'],
    ["params.a_b-c = 'x'", 'a key with "-" must be quoted'],
    ["Metrics.a > 1", 'unknown entity "Metrics" (entity names are case-sensitive: use metrics)'],
    ["METRICS.a > 1", 'unknown entity "METRICS"'],
    ["metrics.a > +1", "expected a number, a quoted string or a list at position 13"],
    ["metrics.a>1and metrics.b>2", "expected a number, a quoted string or a list at position 11"],
    ["metrics.a > 1;", 'expected "and" or the end of the filter at position 14, found ";"'],
    ["metrics.a > 1 )", 'expected "and" or the end of the filter'],
    ["not metrics.a > 1", "not is not supported"],
    ["tags.x = 'a' 'b'", 'unknown attribute "b"'],
    ["metrics.a = 1 AND metrics.b < 2 OR metrics.c > 3", "or is not supported"],
    ["metrics.a NOT IN (1)", "NOT IN cannot be used with metrics.a"],
    ["experiment_id = '1'", 'unknown attribute "experiment_id"'],
    ["run_name IN ('a')", "IN is only supported on attributes.run_id"],
    ["attributes.status IN ('FINISHED')", "IN is only supported on attributes.run_id"],
    ["attributes.run_id IN ()", "expected a non-empty list of quoted strings"],
    ["run_id IN (1)", "expected a quoted string in the list"],
    ["created >= '2024'", "attributes.start_time must be compared to epoch milliseconds"],
    // bikeshare records no dataset inputs: a clear refusal rather than an empty answer
    ["dataset.name = 'x'", "dataset filters are not supported"],
  ];

  it.each(rejected)("%s", (filter, message) => {
    const error = refusal(() => parseFilter(filter));
    expect(error.code).toBe("invalid_argument");
    expect(error.field).toBe("filter");
    expect(error.message).toContain(message);
    expect(error.message.startsWith("filter: ")).toBe(true);
  });
});

describe("where bikeshare departs from MLflow (docs/mlflow-api.md)", () => {
  it("refuses a list after = or != (MLflow's parser takes it, and then no run ever matches)", () => {
    expect(refusal(() => parseFilter("run_id = ('a')")).message).toContain(
      "a list can only follow IN or NOT IN",
    );
  });

  it("compares start_time and end_time to a quoted ISO-8601 time as well as to epoch milliseconds", () => {
    expect(clauses("attributes.start_time < '2024-05-01T00:00:00Z'")).toEqual([
      ["attributes", "start_time", "<", "2024-05-01T00:00:00.000Z"],
    ]);
    expect(refusal(() => parseFilter("end_time > 'yesterday'")).message).toContain(
      "attributes.end_time must be compared to epoch milliseconds or a quoted ISO-8601 time",
    );
  });
});

describe("order_by as MLflow reads it", () => {
  const accepted: [string, [string, string, boolean]][] = [
    ["metrics.rmse", ["metrics", "rmse", false]],
    ["metrics.rmse DESC", ["metrics", "rmse", true]],
    ["metrics.rmse desc", ["metrics", "rmse", true]],
    ["metrics.`a b` ASC", ["metrics", "a b", false]],
    ['metrics."a b" ASC', ["metrics", "a b", false]],
    ["params.a  DESC", ["params", "a", true]],
    ["run_name", ["attributes", "run_name", false]],
    ["created DESC", ["attributes", "start_time", true]],
    ["status", ["attributes", "status", false]],
    ["tags.`a``b`", ["tags", "a``b", false]],
    ["run.start_time DESC", ["attributes", "start_time", true]],
    ["run.user_id asc", ["attributes", "user_id", false]],
    ["start_time", ["attributes", "start_time", false]],
  ];

  it.each(accepted)("%s", (entry, [entity, key, descending]) => {
    expect(parseOrderBy([entry])).toEqual([{ entity, key, descending }]);
  });

  const rejected: [string, string][] = [
    ["attributes.experiment_id", 'unknown attribute "experiment_id"'],
    ["metrics.a DOWN", 'expected ASC or DESC at position 11, found "DOWN"'],
    ["metrics.a ASC DESC", "expected the end of the entry at position 15"],
    ["Metrics.a", 'unknown entity "Metrics"'],
    ["metrics.a-b", 'a key with "-" must be quoted'],
    ["", "expected metrics.<key>"],
  ];

  it.each(rejected)("%s", (entry, message) => {
    const error = refusal(() => parseOrderBy(["metrics.ok", entry]));
    expect(error.field).toBe("order_by");
    expect(error.message).toContain(`order_by[1]: ${message}`);
  });
});
