import { readFileSync } from "node:fs";
import { join } from "node:path";

export const HOUR_CSV = join(import.meta.dirname, "../../data/raw/hour.csv");

/** hour.csv parsed the plain way, as a client of the REST API would build its JSON bodies. */
export function readHourCsvRecords(path = HOUR_CSV): Record<string, number | string>[] {
  const [header, ...lines] = readFileSync(path, "utf8")
    .split(/\r?\n/)
    .filter((l) => l !== "");
  const names = (header as string).split(",");
  return lines.map((line) => {
    const cells = line.split(",");
    return Object.fromEntries(
      names.map((n, i) => [n, n === "dteday" ? (cells[i] as string) : Number(cells[i])]),
    );
  });
}

export const MODEL_FIELDS = [
  "season",
  "yr",
  "mnth",
  "hr",
  "holiday",
  "weekday",
  "workingday",
  "weathersit",
  "temp",
  "atemp",
  "hum",
  "windspeed",
] as const;

export function modelInput(row: Record<string, number | string>): Record<string, number> {
  return Object.fromEntries(MODEL_FIELDS.map((f) => [f, row[f] as number]));
}
