export * from "./calendar.js";
export * from "./features.js";
export * from "./schema.js";
