//! Pure logic of syncing (SPEC §3, §4): when an entry is due, which window
//! a sync reads, the paging plan, the checks its pages must pass, and the
//! rules of a reconciliation, the records a sync has in flight, the
//! SYNCs webhook events bring forward, the deletions they announce, and
//! when each entry is next worth a look.

mod checks;
mod debounce;
mod deletions;
mod in_flight;
mod plan;
mod preview;
mod reconcile;
mod schedule;
mod tally;
mod upcoming;
mod window;

pub use checks::{check_page, Bounds, DistinctIds, PagingFault};
pub use debounce::{Burst, Debounce};
pub use deletions::{Added, DeletionBatch, Deletions, DELETION_BATCH, MAX_QUEUED};
pub use in_flight::InFlight;
pub use plan::{MemberKey, PageRequest, PageVerdict, Pass, SweepPlan, Why, OFFSET_SWEEPS};
pub use preview::EntryPlan;
pub use reconcile::{
    check_deletions, reconcile_cap, reconcile_due, tail_window, MAX_TAIL_READS, RECONCILE_COUNT, RECONCILE_KIND,
    UNSEEN_PAGE,
};
pub use schedule::{
    alert_threshold, decide, delta, due_since, human, lag, refresh_of, trusted_cursor, Backoff, Decision, SyncKind,
    FIRST_RETRY_DELAY,
};
pub use tally::{DroppedValues, SyncCounts};
pub use upcoming::Upcoming;
pub use window::{start_time, Window, DEFAULT_OVERLAP};
