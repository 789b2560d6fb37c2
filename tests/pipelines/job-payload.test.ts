import { describe, expect, it } from "vitest";
import { decodePayload, encodePayload } from "../../pipelines/jobs/bullmq.js";

describe("job payloads through Redis", () => {
  it("keeps typed arrays and Buffers byte for byte, and everything else as JSON", () => {
    const value = {
      onnx: Buffer.from([0, 1, 2, 254, 255]),
      matrix: new Float32Array([1.5, Number.NaN, -3]),
      labels: new Float64Array([0.1, 2e300]),
      nested: [{ name: "gbtree#0", at: new Date("2012-01-01T00:00:00Z") }],
    };
    const back = decodePayload<typeof value>(encodePayload(value));
    expect(back.onnx).toBeInstanceOf(Uint8Array);
    expect([...back.onnx]).toEqual([0, 1, 2, 254, 255]);
    expect(back.matrix).toBeInstanceOf(Float32Array);
    expect([...back.matrix]).toEqual([1.5, Number.NaN, -3]);
    expect([...back.labels]).toEqual([0.1, 2e300]);
    expect(back.nested).toEqual([{ name: "gbtree#0", at: "2012-01-01T00:00:00.000Z" }]);
  });
});
