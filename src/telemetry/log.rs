//! Log lines (SPEC §10). Text, as the original importer wrote them:
//!
//! ```text
//! 2019-10-21 10:51:16 INFO |controller| controller: starting...
//! ```
//!
//! followed by the event's own key/values as ` key=value`. JSON: one object
//! per line with `time`, `level`, `module`, `message` and every key/value,
//! the logger's context (such as `list_id`) included.
//!
//! Both are small `slog` drains of our own: slog-term's layout (`INFO`
//! abbreviations, `, key: value` suffixes) is not the original's.

use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value};
use slog::{Drain, Key, Level, Logger, OwnedKVList, Record, KV};

use crate::config::LogFormat;

/// A logger writing to `out` in `format`. Writes are synchronous, so the
/// last line (`controller: done.`) is out before the process exits. A line
/// that cannot be written (a full disk, a log reader gone) is dropped: the
/// syncs matter more than their log, and a panic in the middle of one
/// would stop the daemon.
pub fn logger(format: LogFormat, out: impl Write + Send + 'static) -> Logger {
    let out = Mutex::new(Box::new(out) as Box<dyn Write + Send>);
    Logger::root(LineDrain { format, out }.ignore_res(), slog::o!())
}

/// A logger that writes nothing (for callers that do not log).
pub fn discard() -> Logger {
    Logger::root(slog::Discard, slog::o!())
}

/// Python's level names, as the original importer printed them.
fn level_name(level: Level) -> &'static str {
    match level {
        Level::Critical => "CRITICAL",
        Level::Error => "ERROR",
        Level::Warning => "WARNING",
        Level::Info => "INFO",
        Level::Debug => "DEBUG",
        Level::Trace => "TRACE",
    }
}

/// `ometria_importer::actors::list_sync` → `list_sync`.
fn module_tag(module: &str) -> &str {
    module.rsplit("::").next().unwrap_or(module)
}

struct LineDrain {
    format: LogFormat,
    out: Mutex<Box<dyn Write + Send>>,
}

impl Drain for LineDrain {
    type Ok = ();
    type Err = io::Error;

    fn log(&self, record: &Record, values: &OwnedKVList) -> io::Result<()> {
        let line = match self.format {
            LogFormat::Text => text_line(record)?,
            LogFormat::Json => json_line(record, values)?,
        };
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.write_all(line.as_bytes())?;
        out.flush()
    }
}

fn text_line(record: &Record) -> io::Result<String> {
    let mut line = format!(
        "{} {} |{}| {}",
        Utc::now().format("%Y-%m-%d %H:%M:%S"),
        level_name(record.level()),
        module_tag(record.module()),
        record.msg()
    );
    let mut pairs = TextPairs(vec![]);
    record.kv().serialize(record, &mut pairs).map_err(io::Error::other)?;
    // slog hands key/values over last first.
    for (key, value) in pairs.0.iter().rev() {
        let _ = write!(line, " {key}={value}");
    }
    line.push('\n');
    Ok(line)
}

fn json_line(record: &Record, values: &OwnedKVList) -> io::Result<String> {
    let mut object = Map::new();
    object.insert(
        "time".into(),
        Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true).into(),
    );
    object.insert("level".into(), level_name(record.level()).into());
    object.insert("module".into(), module_tag(record.module()).into());
    object.insert("message".into(), record.msg().to_string().into());
    let mut pairs = JsonPairs(&mut object);
    values.serialize(record, &mut pairs).map_err(io::Error::other)?;
    record.kv().serialize(record, &mut pairs).map_err(io::Error::other)?;
    let mut line = serde_json::to_string(&object).map_err(io::Error::other)?;
    line.push('\n');
    Ok(line)
}

struct TextPairs(Vec<(Key, String)>);

impl slog::Serializer for TextPairs {
    fn emit_arguments(&mut self, key: Key, val: &fmt::Arguments<'_>) -> slog::Result {
        self.0.push((key, val.to_string()));
        Ok(())
    }
}

struct JsonPairs<'a>(&'a mut Map<String, Value>);

impl JsonPairs<'_> {
    fn put(&mut self, key: Key, value: Value) -> slog::Result {
        self.0.insert(key.to_string(), value);
        Ok(())
    }
}

impl slog::Serializer for JsonPairs<'_> {
    fn emit_arguments(&mut self, key: Key, val: &fmt::Arguments<'_>) -> slog::Result {
        self.put(key, val.to_string().into())
    }
    fn emit_u64(&mut self, key: Key, val: u64) -> slog::Result {
        self.put(key, val.into())
    }
    fn emit_i64(&mut self, key: Key, val: i64) -> slog::Result {
        self.put(key, val.into())
    }
    fn emit_usize(&mut self, key: Key, val: usize) -> slog::Result {
        self.put(key, val.into())
    }
    fn emit_u32(&mut self, key: Key, val: u32) -> slog::Result {
        self.put(key, val.into())
    }
    fn emit_f64(&mut self, key: Key, val: f64) -> slog::Result {
        self.put(
            key,
            serde_json::Number::from_f64(val).map_or(Value::Null, Value::Number),
        )
    }
    fn emit_bool(&mut self, key: Key, val: bool) -> slog::Result {
        self.put(key, val.into())
    }
    fn emit_str(&mut self, key: Key, val: &str) -> slog::Result {
        self.put(key, val.into())
    }
}

/// A writer into shared memory: lets tests (and `demo`) read the log.
#[derive(Clone, Default)]
pub struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    pub fn contents(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slog::{info, o, warn};

    #[test]
    fn text_lines_look_like_the_originals() {
        let buffer = SharedBuffer::default();
        let log = logger(LogFormat::Text, buffer.clone()).new(o!("list_id" => "1a2d7ebf82"));
        info!(log, "controller: starting...");
        warn!(log, "sync: slow"; "records" => 12u64, "rate" => 1.5);
        let text = buffer.contents();
        let lines: Vec<_> = text.lines().collect();
        // `2019-10-21 10:51:16 ` is 20 characters.
        assert_eq!(&lines[0][19..], " INFO |tests| controller: starting...");
        assert_eq!(&lines[1][19..], " WARNING |tests| sync: slow records=12 rate=1.5");
        assert!(chrono::NaiveDateTime::parse_from_str(&lines[0][..19], "%Y-%m-%d %H:%M:%S").is_ok());
    }

    #[test]
    fn json_lines_carry_context_and_typed_fields() {
        let buffer = SharedBuffer::default();
        let log = logger(LogFormat::Json, buffer.clone()).new(o!("list_id" => "1a2d7ebf82"));
        info!(log, "sync: completed"; "records" => 46134u64, "ok" => true);
        let v: Value = serde_json::from_str(buffer.contents().trim()).unwrap();
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["module"], "tests");
        assert_eq!(v["message"], "sync: completed");
        assert_eq!(v["list_id"], "1a2d7ebf82");
        assert_eq!(v["records"], 46134);
        assert_eq!(v["ok"], true);
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
    }
}
