// Subscribes to auditEvents with the graphql-ws client and prints one JSON line per event.
// usage: node subscribe.mjs <ws-url> <token> <count>
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const [url, token, count] = process.argv.slice(2);
const client = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: { authorization: `Bearer ${token}` },
  retryAttempts: 0,
});
let seen = 0;
const query = `subscription ($filter: AuditEventFilter) {
  auditEvents(filter: $filter) { cursor node { id action } }
}`;
client.subscribe(
  { query, variables: { filter: { categories: ['AUTHENTICATION', 'DATA'] } } },
  {
    next: (msg) => {
      console.log(JSON.stringify(msg));
      seen += 1;
      if (seen >= Number(count)) {
        client.dispose();
        process.exit(0);
      }
    },
    error: (err) => {
      // A close is a CloseEvent (its fields are getters: name them for JSON).
      const { message, code, reason } = err ?? {};
      console.error('error', JSON.stringify({ message, code, reason }));
      process.exit(2);
    },
    complete: () => process.exit(3),
  },
);
client.on('connected', () => console.log(JSON.stringify({ connected: true })));
