import { invalidArgument } from "./predict/predict-service.js";

/** Offset paging shared by the List RPCs: the page token is the offset of the next page. */
export interface Page {
  limit: number;
  offset: number;
}

export function pageOf(pageSize: number, pageToken: string, maxSize: number): Page {
  const limit = pageSize === 0 ? 50 : Math.min(pageSize, maxSize);
  const offset = pageToken === "" ? 0 : Number(pageToken);
  if (!Number.isInteger(offset) || offset < 0) {
    throw invalidArgument([
      { field: "page_token", type: "range", description: "is not a token returned by this list" },
    ]);
  }
  return { limit, offset };
}

/** Callers fetch `limit + 1` rows: the extra one only tells whether another page exists. */
export function pageResult<T>(rows: readonly T[], page: Page): { items: T[]; nextPageToken: string } {
  return {
    items: rows.slice(0, page.limit),
    nextPageToken: rows.length > page.limit ? String(page.offset + page.limit) : "",
  };
}
