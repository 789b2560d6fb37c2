/**
 * Calls `write(1, event)` for the first of a run of events, then at most once per `intervalMs` with how
 * many happened since the previous line and the latest of them: a flood of one event costs a few log
 * lines, and none is hidden. Shared by the front server (refused connections, aborted uploads) and the
 * job queue (Redis errors), so it lives below both and depends on nothing.
 */
export function rateLimited<E = void>(
  intervalMs: number,
  write: (count: number, latest: E) => void,
): (event: E) => void {
  let suppressed = 0;
  let latest: E | undefined;
  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    timer = undefined;
    if (suppressed === 0) return;
    const count = suppressed;
    suppressed = 0;
    write(count, latest as E);
    timer = setTimeout(flush, intervalMs).unref();
  };
  return (event) => {
    if (timer) {
      suppressed++;
      latest = event;
      return;
    }
    write(1, event);
    timer = setTimeout(flush, intervalMs).unref();
  };
}
