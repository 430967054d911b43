// Runs graphql-http's server audits (GraphQL over HTTP conformance) against a
// running auditlog service. Every request carries the bearer token, since the
// service answers 401 without one. Prints one JSON summary; exits 1 when any
// audit ends in error.
//   AUDIT_URL=http://127.0.0.1:8000/graphql AUDIT_TOKEN=alk_... node audit.mjs
import { serverAudits } from 'graphql-http';

const url = process.env.AUDIT_URL;
const token = process.env.AUDIT_TOKEN;
if (!url || !token) {
  console.error('set AUDIT_URL and AUDIT_TOKEN');
  process.exit(2);
}

const fetchFn = (input, init = {}) => {
  const headers = new Headers(init.headers);
  headers.set('authorization', `Bearer ${token}`);
  return fetch(input, { ...init, headers });
};

const summary = { ok: [], warn: [], error: [] };
for (const audit of serverAudits({ url, fetchFn })) {
  const result = await audit.fn();
  const entry = { id: audit.id, name: audit.name };
  if (result.status !== 'ok') {
    entry.reason = result.reason;
    if (result.response) {
      entry.status = result.response.status;
      entry.contentType = result.response.headers.get('content-type');
    }
  }
  summary[result.status].push(entry);
}
console.log(JSON.stringify(summary, null, 2));
process.exit(summary.error.length ? 1 : 0);
