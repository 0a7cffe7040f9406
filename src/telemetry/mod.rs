//! What the importer tells its operator: log lines (metrics and health come later).

pub mod log;
