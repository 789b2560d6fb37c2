import { useEffect, useState } from "preact/hooks";

/** A page and its query, from the URL's hash: `#/runs?filter=...` is { page: "runs", query: {filter} }. */
export interface Route {
  page: string;
  query: URLSearchParams;
}

export function parseHash(hash: string): Route {
  const raw = hash.replace(/^#\/?/, "");
  const [page = "", query = ""] = raw.split("?", 2);
  return { page: page === "" ? "runs" : page, query: new URLSearchParams(query) };
}

export function href(page: string, query: Record<string, string> = {}): string {
  const q = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== "")).toString();
  return `#/${page}${q === "" ? "" : `?${q}`}`;
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseHash(window.location.hash));
  useEffect(() => {
    const onChange = () => setRoute(parseHash(window.location.hash));
    window.addEventListener("hashchange", onChange);
    return () => window.removeEventListener("hashchange", onChange);
  }, []);
  return route;
}
