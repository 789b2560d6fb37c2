import { RegistryError } from "./errors.js";

/**
 * Checks of the inputs the registry accepts: each failure is a
 * RegistryError("invalid_argument") naming the field as in the proto.
 */

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const KEY = /^[A-Za-z0-9_.\-/: ]{1,250}$/;
const ALIAS = /^[a-z_][a-z0-9_-]{0,63}$/;
export const VERSION = /^[1-9][0-9]{0,8}$/;

export function invalid(field: string, message: string): never {
  throw new RegistryError("invalid_argument", message, field);
}

export function requireText(value: unknown, field: string, max = 1000): string {
  if (typeof value !== "string" || value.trim() === "") invalid(field, `${field} is required`);
  if (value.length > max) invalid(field, `${field} is ${value.length} characters long; the limit is ${max}`);
  return value;
}

export function optionalText(value: unknown, field: string, max: number): string {
  if (value === undefined || value === null) return "";
  if (typeof value !== "string") invalid(field, `${field} must be a string`);
  if (value.length > max) invalid(field, `${field} is ${value.length} characters long; the limit is ${max}`);
  return value;
}

export function checkName(value: unknown, field: string, what: string): string {
  const name = requireText(value, field, 128);
  if (!NAME.test(name)) {
    invalid(
      field,
      `${what} name ${JSON.stringify(name)} is not valid: use letters, digits, "_", "-" or ".", starting with a letter or digit (at most 128)`,
    );
  }
  return name;
}

export function checkExperimentName(value: unknown, field: string): string {
  const name = requireText(value, field, 256);
  if (name !== name.trim() || [...name].some((c) => c.charCodeAt(0) < 32 || c.charCodeAt(0) === 127)) {
    invalid(
      field,
      `experiment name ${JSON.stringify(name)} must not have control characters or surrounding spaces`,
    );
  }
  return name;
}

const hasControl = (s: string) => [...s].some((c) => c.charCodeAt(0) < 32 || c.charCodeAt(0) === 127);

/** A run's name: shown in tables and terminals, where ESC or BEL would act rather than print. */
export function checkRunName(value: unknown, field: string): string {
  const name = optionalText(value, field, 250);
  if (hasControl(name)) invalid(field, `${field} ${JSON.stringify(name)} must not have control characters`);
  return name;
}

const TOKEN = "[A-Za-z0-9!#$&^_.+-]+";
const MIME = new RegExp(`^${TOKEN}/${TOKEN}(?:[ \t]*;[ \t]*${TOKEN}=(?:${TOKEN}|"[^"\\\x00-\x1f\x7f]*"))*$`);

/** An artifact's content type, later sent as a response header: a MIME type, nothing a header could split on. */
export function checkContentType(value: unknown, field: string): string {
  const type = optionalText(value, field, 255);
  if (type !== "" && !MIME.test(type)) {
    invalid(field, `${field} ${JSON.stringify(type)} is not a MIME type such as "text/plain; charset=utf-8"`);
  }
  return type;
}

export function checkKey(key: string, field: string): void {
  if (!KEY.test(key)) {
    invalid(
      field,
      `${field} key ${JSON.stringify(key)} is not valid: use 1-250 letters, digits, "_", "-", ".", "/", ":" or spaces`,
    );
  }
}

export function checkVersion(value: unknown, field = "version"): number {
  const version = requireText(value, field, 20);
  if (!VERSION.test(version))
    invalid(field, `${field} must be a positive integer, got ${JSON.stringify(version)}`);
  return Number(version);
}

export function checkAlias(value: unknown, field = "alias"): string {
  const alias = requireText(value, field, 64).toLowerCase();
  if (!ALIAS.test(alias) || alias === "latest") {
    invalid(
      field,
      `alias ${JSON.stringify(alias)} is not valid: use letters, digits, "_" or "-", starting with a letter or "_" ("latest" is reserved)`,
    );
  }
  return alias;
}

export function checkArtifactPath(value: unknown): string {
  const path = requireText(value, "path", 1024);
  const segments = path.split("/");
  if (
    path.startsWith("/") ||
    path.includes("\\") ||
    path.includes("\0") ||
    segments.some((s) => s === "" || s === "." || s === "..")
  ) {
    invalid(
      "path",
      `artifact path ${JSON.stringify(path)} must be relative, with no empty, "." or ".." parts`,
    );
  }
  return path;
}

export function checkTags(tags: Record<string, string>, field: string): void {
  if (typeof tags !== "object" || tags === null) invalid(field, `${field} must be a map of strings`);
  for (const [key, value] of Object.entries(tags)) {
    checkKey(key, field);
    if (typeof value !== "string") invalid(field, `tag ${key} must be a string`);
    if (value.length > 8000) invalid(field, `tag ${key} is longer than 8000 characters`);
  }
}
