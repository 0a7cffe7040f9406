//! ometria-importer keeps Ometria contacts in sync with Mailchimp audience
//! ("list") members, driven by a hand-editable JSON state file.
//!
//! # Layout
//!
//! - [`config`]: settings from environment and flags; keys redacted.
//! - [`state`]: the state file: entries, validation, patching, atomic writes.
//! - [`sync`]: when an entry syncs, the window it reads, the paging plan
//!   (offset and keyset sweeps), the checks every page must pass, what
//!   a sync counts, what webhook events bring forward, and when each
//!   entry is next worth a look.
//! - [`mailchimp`]: Mailchimp members client and types.
//! - [`ometria`]: Ometria push client and the contact record.
//! - [`transform`]: member → contact.
//! - [`mapping`]: an entry's field mapping (`fields`, `collection`,
//!   `force_optin`, named mappings in `mappings.json`) and the conversion
//!   of each value to what its Ometria field takes.
//! - [`api`]: what both APIs share: HTTP client, problem bodies, errors,
//!   the redacted `ApiKey`.
//! - [`ledger`]: the member ledger and run history (`ledger.sqlite3`).
//! - [`history`]: the `history` and `forget` commands.
//! - [`limits`]: global Mailchimp connection and Ometria rate limits, and when
//!   Ometria last took a record from the process.
//! - [`retry`]: which failures are retried, backoff with full jitter.
//! - [`rejected`]: finding the records Ometria rejects or refuses, and their file.
//! - [`actors`]: Controller, ListSync, Fetcher, Writer, StateKeeper, Ledger,
//!   Reconciliation, Deletion, Planner.
//! - [`importer`]: one run: start the actors, wire signals, wait.
//! - [`check`], [`plan`], [`demo`], [`bench`](mod@bench): the commands of those names.
//! - [`webhook_setup`]: the `webhooks` command (register, list, remove each
//!   list's Mailchimp webhook).
//! - [`sandbox`]: fake Mailchimp (its audience webhooks too) and Ometria for
//!   `demo`, `bench` and tests, and the change → Ometria latency they show.
//! - [`telemetry`]: log formats, metrics, the health endpoint, and the
//!   daemon's HTTP endpoints (the webhook receiver's too).
//! - [`webhook`]: Mailchimp's audience webhooks: the secret, the events'
//!   form bodies, the receiver that tells the Controller.

pub mod actors;
pub mod api;
pub mod bench;
pub mod check;
pub mod config;
pub mod demo;
pub mod history;
pub mod importer;
pub mod ledger;
pub mod limits;
pub mod mailchimp;
pub mod mapping;
pub mod ometria;
pub mod plan;
pub mod rejected;
pub mod retry;
pub mod sandbox;
pub mod state;
pub mod sync;
pub mod telemetry;
pub mod transform;
pub mod webhook;
pub mod webhook_setup;

pub use actors::controller::{RunMode, RunSummary};
