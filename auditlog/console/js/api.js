// The service's own GraphQL API over HTTP, with the bearer token kept in
// sessionStorage (this tab only; never in a URL, a cookie or localStorage).

const TOKEN_KEY = "auditlog.console.token";
export const GRAPHQL_PATH = "/graphql";

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
  },
};

export class ApiError extends Error {
  constructor(code, message, argument = null) {
    super(message);
    this.code = code;
    this.argument = argument;
  }
}

export async function gql(query, variables = {}) {
  const token = session.token;
  if (!token) throw new ApiError("UNAUTHENTICATED", "Not signed in.");
  let response;
  try {
    response = await fetch(GRAPHQL_PATH, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json",
        Authorization: `Bearer ${token}`,
      },
      body: JSON.stringify({ query, variables }),
      credentials: "omit",
      cache: "no-store",
    });
  } catch {
    throw new ApiError("NETWORK", "The audit log service could not be reached. Check the connection and try again.");
  }
  if (response.status === 401) {
    throw new ApiError("UNAUTHENTICATED", "The token was not accepted: it is mistyped, expired or revoked.");
  }
  let body;
  try {
    body = await response.json();
  } catch {
    throw new ApiError("SERVER", `Unexpected answer from the service (HTTP ${response.status}).`);
  }
  const first = Array.isArray(body.errors) ? body.errors[0] : null;
  if (first) {
    const ext = first.extensions || {};
    throw new ApiError(ext.code || "ERROR", String(first.message || "Request failed."), ext.argument || null);
  }
  if (!response.ok || !body.data) {
    throw new ApiError("SERVER", `Unexpected answer from the service (HTTP ${response.status}).`);
  }
  return body.data;
}

export function websocketURL() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${GRAPHQL_PATH}`;
}
