import { createContextKey } from "@connectrpc/connect";

export type Role = "reader" | "trainer" | "admin";

/** Who is calling, as established by the auth interceptor from the bearer token. */
export interface Principal {
  readonly name: string;
  readonly role: Role;
}

/** Set by the auth interceptor on every RPC; undefined for unauthenticated calls to open methods. */
export const principalKey = createContextKey<Principal | undefined>(undefined, {
  description: "calling principal",
});

/** The name recorded in audit logs for a call. */
export function actorOf(values: { get<T>(key: { id: symbol; defaultValue: T }): T }): string {
  return values.get(principalKey)?.name ?? "anonymous";
}
