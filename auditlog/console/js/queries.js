// GraphQL documents of the console (docs/console.md; the fixed core of the API only).

const EVENT_FIELDS = `
  id occurredAt action category
  actor { type id name email }
  targets { type id name }
  ipAddress
  location { city region country countryCode }
  device { browser browserVersion os osVersion device }
  anomalies`;

export const PAGE_SIZE = 50;

export const START = `query ConsoleStart {
  workspace { id plan retentionDays }
  eventCatalog { action category description }
}`;

export const EVENTS = `query ConsoleEvents($filter: AuditEventFilter, $first: Int, $after: String) {
  auditEvents(filter: $filter, first: $first, after: $after) {
    edges { cursor node { ${EVENT_FIELDS} } }
    pageInfo { hasNextPage endCursor }
  }
}`;

export const EVENT_PAYLOAD = `query ConsoleEvent($id: ID!) {
  auditEvent(id: $id) { id payload }
}`;

// The payload again, with its proof: what is verified is what this query returned.
export const EVENT_PROOF = `query ConsoleEventProof($id: ID!) {
  auditEvent(id: $id) {
    id payload leafIndex
    inclusionProof { leafIndex treeSize hashes checkpoint { treeSize rootHash signedNote sealedAt } }
  }
  integrity { origin verifierKey verifierKeys }
}`;

export const ACTOR_ACTIVITY = `query ConsoleActor($email: String!) {
  actorActivity(actorEmail: $email) {
    actorEmail
    ipAddresses { value count firstSeen lastSeen }
    countries { value count firstSeen lastSeen }
    devices { value count firstSeen lastSeen }
  }
}`;

export const CREATE_EXPORT = `mutation ConsoleExport($input: CreateExportInput!) {
  createExport(input: $input) { id status rowCount files { part rowCount url } }
}`;

export const LIVE = `subscription ConsoleLive($filter: AuditEventFilter, $after: String) {
  auditEvents(filter: $filter, after: $after) { cursor node { ${EVENT_FIELDS} } }
}`;
