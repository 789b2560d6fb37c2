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

/** One valid request of the 12 fields: a clear summer weekday at 17:00 (the README's example). */
export const SUMMER_EVENING = {
  season: 3,
  yr: 1,
  mnth: 7,
  hr: 17,
  holiday: 0,
  weekday: 3,
  workingday: 1,
  weathersit: 1,
  temp: 0.72,
  atemp: 0.66,
  hum: 0.5,
  windspeed: 0.2,
} as const;
