//! What the importer tells its operator: log lines, metrics, health.

pub mod health;
pub mod log;
pub mod metrics;
pub mod server;
