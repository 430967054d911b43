// The "Integrity" section of the row detail: is the event sealed, and does its
// inclusion proof lead to a checkpoint whose signature verifies? Checked here,
// in the browser (verify.js); the outcome is spoken through a status region.

import { gql } from "./api.js";
import { byId, el, setText } from "./dom.js";
import { EVENT_PROOF } from "./queries.js";
import { VerifyError, verifyEvent } from "./verify.js";

const code = (text) => el("code", {}, text);
const howToCheck = () => ["Check it with ", code("auditlog verify"), " (see the console guide, docs/console.md, Integrity)."];

function included(proof) {
  return `Included in checkpoint ${proof.treeSize} as leaf ${proof.leafIndex}`;
}

export class IntegrityCheck {
  constructor({ onError }) {
    this.status = byId("integrity-status");
    this.detail = byId("integrity-detail");
    this.recheck = byId("integrity-recheck");
    this.note = byId("integrity-note");
    this.noteText = byId("integrity-note-text");
    this.onError = onError;
    this.ticket = 0;
    this.eventId = null;
    this.recheck.addEventListener("click", () => this.check(this.eventId));
  }

  // state: checking, unsealed, verified, unchecked, failed, error, unavailable (for styling only).
  // detail: text, or text and <code> nodes.
  show(state, mark, status, detail = []) {
    this.status.dataset.state = state;
    this.status.replaceChildren(...(mark ? [el("span", { "aria-hidden": "true" }, `${mark} `)] : []), status);
    this.detail.replaceChildren(...[detail].flat());
  }

  showNote(proof) {
    setText(this.noteText, proof ? proof.checkpoint.signedNote : "");
    this.note.hidden = !proof;
  }

  stop() {
    this.ticket += 1;
  }

  async check(eventId) {
    const ticket = ++this.ticket;
    this.eventId = eventId;
    this.recheck.hidden = true;
    this.showNote(null);
    this.show("checking", "", "Checking the event's integrity…");
    let data;
    try {
      data = await gql(EVENT_PROOF, { id: eventId });
    } catch (error) {
      if (ticket !== this.ticket) return;
      this.show("error", "!", `Could not check the event's integrity: ${error.message}`);
      this.recheck.hidden = false;
      this.onError(error);
      return;
    }
    if (ticket !== this.ticket) return;
    const event = data.auditEvent;
    if (!event) {
      this.show("unavailable", "", "This event is no longer available (past retention).");
      return;
    }
    this.recheck.hidden = false;
    const proof = event.inclusionProof;
    if (event.leafIndex === null || !proof) {
      this.show("unsealed", "", "Not yet sealed: events are sealed within seconds.",
        "Once sealed, the event is a leaf of the workspace's signed tree. Select “Check again” in a moment.");
      return;
    }
    this.showNote(proof);
    await this.verify(ticket, event, data.integrity);
  }

  async verify(ticket, event, integrity) {
    const proof = event.inclusionProof;
    if (!globalThis.crypto?.subtle) {
      this.show("unchecked", "", `Not checked here. ${included(proof)}, says the service.`,
        ["This page is not a secure context (https), so the browser offers no WebCrypto to check the proof. ",
          ...howToCheck()]);
      return;
    }
    let result;
    try {
      result = await verifyEvent(event, integrity);
    } catch (error) {
      if (ticket !== this.ticket) return;
      const reason = error instanceof VerifyError ? error.message : `The proof could not be checked (${error}).`;
      this.show("failed", "✗", `Verification failed: ${reason}`,
        [`The service says it is in checkpoint ${proof.treeSize} as leaf ${proof.leafIndex}. Do not rely on ` +
          "this event until that is explained; ", code("auditlog verify --database"),
          " recomputes every workspace's tree."]);
      return;
    }
    if (ticket !== this.ticket) return;
    const { key } = result;
    const n = proof.hashes.length;
    const checked = `the event's RFC 8785 hash, its inclusion path (${n} hash${n === 1 ? "" : "es"}) up to ` +
      "the checkpoint's root hash";
    if (result.status === "unsupported") {
      this.show("unchecked", "✓", `Inclusion verified; signature not checked here. ${included(proof)}.`,
        [`Checked in this browser: ${checked}. This browser's WebCrypto has no Ed25519, so the checkpoint's ` +
          "signature was not checked here. ", ...howToCheck()]);
      return;
    }
    this.show("verified", "✓", `Verified. ${included(proof)}, signed by ${key.name} (key ${key.hashHex}).`,
      [`Checked in this browser: ${checked}, and the checkpoint's Ed25519 signature. The verifier key came ` +
        `from this service: compare ${key.name}+${key.hashHex} with one you hold (`,
        code("auditlog integrity verifier-key"), " prints it)."]);
  }
}
