//! The actors (see ARCHITECTURE): one per file, messages in `messages`.
//!
//! - [`Controller`](controller::Controller): ticks, decides, starts syncs, stops.
//! - [`ListSync`](list_sync::ListSync): one sync of one entry; supervises the pools.
//! - [`Fetcher`](fetcher::Fetcher): reads and maps one Mailchimp page at a time.
//! - [`Writer`](writer::Writer): pushes one batch to Ometria at a time.
//! - [`StateKeeper`](state_keeper::StateKeeper): the only writer of `state.json`.
//! - [`Ledger`](ledger::Ledger): the only user of `ledger.sqlite3`.
//! - [`Reconciliation`](reconciliation::Reconciliation): one search for the
//!   members of one entry's list deleted in Mailchimp.
//! - [`Deletion`](deletion::Deletion): opts out at once the members a
//!   webhook said were deleted from one entry's list.
//! - [`Planner`](planner::Planner): `plan`'s runs of planning ListSyncs,
//!   a few at a time, and their plans gathered.

pub mod controller;
pub mod deletion;
pub mod fetcher;
pub mod ledger;
pub mod list_sync;
pub mod messages;
pub mod planner;
pub mod reconciliation;
pub mod state_keeper;
pub mod writer;
