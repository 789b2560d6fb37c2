export * from "./detect.js";
export * from "./histogram.js";
export * from "./performance-estimate.js";
export * from "./seasonal.js";
export * from "./special.js";
export * from "./stats.js";
