import { BikeshareError } from "../../core/errors.js";

/** A task stopped because its job was cancelled (not because it failed). */
export class TaskCancelled extends BikeshareError {
  constructor() {
    super("cancelled", "cancelled");
    this.name = "TaskCancelled";
  }
}

/** The abort reason JobQueue.cancel uses; any other reason (e.g. a shutdown) is not a cancellation. */
export const CANCEL_REQUESTED = new Error("cancelled by request");
