export * from "./detect.js";
export * from "./histogram.js";
export * from "./special.js";
export * from "./stats.js";
