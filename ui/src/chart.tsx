import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";

/** One line: its label and its points as [x, y], x ascending (a step, or seconds since 1970 for time). */
export interface Series {
  label: string;
  points: [number, number][];
}

// Distinguishable in print and for the common colour-vision deficiencies (Okabe–Ito), five runs at most.
const COLOURS = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000"];

const HEIGHT = 260;
const MAX_WIDTH = 860;

/**
 * A uPlot line chart sized to its box (and resized with it, so it stays readable at phone width).
 * The series count is on the figure as data-series, and the figure carries an accessible summary,
 * since a canvas says nothing to a screen reader.
 */
export function LineChart(props: {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  time?: boolean;
  testId?: string;
}) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    // Each series has its own x values (runs stop at different rounds): join aligns them on one x axis.
    const tables = props.series.map(
      (s) => [s.points.map((p) => p[0]), s.points.map((p) => p[1])] as uPlot.AlignedData,
    );
    const data = tables.length === 0 ? ([[]] as uPlot.AlignedData) : uPlot.join(tables);
    const width = () => Math.max(240, Math.min(MAX_WIDTH, el.clientWidth));
    const plot = new uPlot(
      {
        width: width(),
        height: HEIGHT,
        scales: { x: { time: props.time === true } },
        axes: [{ label: props.xLabel }, { label: props.yLabel, size: 60 }],
        series: [
          // The legend's first entry: short, as the axis below already says what x is.
          { label: props.time === true ? "time" : "step" },
          ...props.series.map((s, i) => ({
            label: s.label,
            stroke: COLOURS[i % COLOURS.length] as string,
            width: 2,
            spanGaps: true,
            points: { show: s.points.length < 40 },
          })),
        ],
        legend: { live: true },
        cursor: { drag: { x: true, y: false } },
      },
      data,
      el,
    );
    const resize = new ResizeObserver(() => plot.setSize({ width: width(), height: HEIGHT }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.destroy();
    };
  }, [props.series, props.time, props.xLabel, props.yLabel]);
  const summary = props.series
    .map((s) => `${s.label}: ${s.points.length} point${s.points.length === 1 ? "" : "s"}`)
    .join("; ");
  return (
    <figure class="chart" data-testid={props.testId} data-series={String(props.series.length)}>
      <figcaption>{props.title}</figcaption>
      <div ref={box} role="img" aria-label={`${props.title}. ${summary}`} />
    </figure>
  );
}
