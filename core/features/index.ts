export * from "./features.js";
export * from "./schema.js";
