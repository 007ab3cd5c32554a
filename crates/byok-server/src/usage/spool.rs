//! The usage spool file: usage records the database could not take and memory could not hold,
//! as JSON lines in `$BYOK_DATA_DIR/usage-spool.jsonl` (mode 0600), replayed after recovery
//! and at the next start, then emptied.
//!
//! One line per record: `{"id":…,"user_id":…,"provider":…,"model":…,"credential":…,"status":…,
//! "input_tokens":…,"output_tokens":…,"latency_ms":…,"at":…,"fallback":…}` (`fallback` absent
//! in lines older than it: false; no secrets: the model name is the
//! scrubbed one the log line shows). Appends are synced to disk. Only the writer task touches the
//! file, so appends and replay never overlap within a process; `BYOK_DATA_DIR` belongs to one
//! process (as its SQLite database and key file do).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use byok_core::{CredentialKind, ProviderId, UsageRecord, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The file name under `BYOK_DATA_DIR`.
pub const SPOOL_FILE: &str = "usage-spool.jsonl";

/// The line format (kept apart from the domain type: the file outlives a version).
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    id: Uuid,
    user_id: UserId,
    provider: ProviderId,
    model: String,
    credential: CredentialKind,
    status: u16,
    input_tokens: u64,
    output_tokens: u64,
    latency_ms: u64,
    at: DateTime<Utc>,
    /// Absent in lines written before it existed.
    #[serde(default)]
    fallback: bool,
}

impl From<&UsageRecord> for Line {
    fn from(r: &UsageRecord) -> Self {
        Self {
            id: r.id,
            user_id: r.user_id,
            provider: r.provider,
            model: r.model.clone(),
            credential: r.credential,
            status: r.status,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            latency_ms: r.latency_ms,
            at: r.at,
            fallback: r.fallback,
        }
    }
}

impl From<Line> for UsageRecord {
    fn from(l: Line) -> Self {
        Self {
            id: l.id,
            user_id: l.user_id,
            provider: l.provider,
            model: l.model,
            credential: l.credential,
            status: l.status,
            input_tokens: l.input_tokens,
            output_tokens: l.output_tokens,
            latency_ms: l.latency_ms,
            at: l.at,
            fallback: l.fallback,
        }
    }
}

/// What an append did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Appended {
    pub written: u64,
    /// Records that did not fit under the size limit, or could not be written.
    pub lost: u64,
    /// The file's size afterwards.
    pub size: u64,
}

/// Records read from the spool, and where the next read starts.
#[derive(Debug, Default)]
pub struct Chunk {
    pub records: Vec<UsageRecord>,
    pub next: u64,
    /// Lines that were not records (a torn write from a crash): skipped.
    pub unreadable: u64,
}

fn open_append(path: &Path) -> std::io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.create(true).append(true).read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

/// Appends `records` (blocking; run on a blocking thread), up to `max_bytes` in all.
pub fn append(path: &Path, max_bytes: u64, records: &[UsageRecord]) -> Appended {
    let all = records.len() as u64;
    let mut file = match open_append(path) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, path = %path.display(), "cannot open the usage spool file");
            return Appended {
                lost: all,
                ..Appended::default()
            };
        }
    };
    let mut size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut buf = Vec::with_capacity(records.len() * 256);
    // A line torn by a crash must not swallow the first record appended after it.
    if size > 0 && !ends_with_newline(&mut file, size) {
        buf.push(b'\n');
    }
    let mut written = 0;
    for r in records {
        let start = buf.len();
        if serde_json::to_writer(&mut buf, &Line::from(r)).is_err() {
            buf.truncate(start);
            continue;
        }
        buf.push(b'\n');
        if size + buf.len() as u64 > max_bytes {
            buf.truncate(start);
            break;
        }
        written += 1;
    }
    if buf.is_empty() {
        return Appended {
            written: 0,
            lost: all,
            size,
        };
    }
    let result = file.write_all(&buf).and_then(|()| file.sync_data());
    match result {
        Ok(()) => {
            size += buf.len() as u64;
            Appended {
                written,
                lost: all - written,
                size,
            }
        }
        Err(e) => {
            tracing::error!(error = %e, path = %path.display(), "cannot write the usage spool file");
            Appended {
                written: 0,
                lost: all,
                size: file.metadata().map(|m| m.len()).unwrap_or(size),
            }
        }
    }
}

fn ends_with_newline(file: &mut File, size: u64) -> bool {
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(size - 1))
        .and_then(|_| file.read_exact(&mut last))
        .is_ok_and(|()| last[0] == b'\n')
}

/// The spool file's size (0 when there is none).
pub fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Reads up to `max` records from byte `from` (blocking). A last line without its newline is
/// read as well (a torn write, at the end of the file only after a crash).
pub fn read(path: &Path, from: u64, max: usize) -> std::io::Result<Chunk> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Chunk::default());
        }
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    // The file was emptied under us (cannot happen with one process per data directory).
    let from = if from > len { 0 } else { from };
    file.seek(SeekFrom::Start(from))?;
    let mut reader = BufReader::new(file);
    let mut chunk = Chunk {
        next: from,
        ..Chunk::default()
    };
    let mut line = Vec::new();
    while chunk.records.len() < max {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        chunk.next += n as u64;
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Line>(text) {
            Ok(l) => chunk.records.push(l.into()),
            Err(_) => chunk.unreadable += 1,
        }
    }
    Ok(chunk)
}

/// Empties the file once everything up to `upto` was written (blocking). Returns whether it
/// did (a record appended since stays).
pub fn finish(path: &Path, upto: u64) -> std::io::Result<bool> {
    let file = match OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(e),
    };
    if file.metadata()?.len() > upto {
        return Ok(false);
    }
    file.set_len(0)?;
    file.sync_all()?;
    Ok(true)
}

/// The spool's place: `$BYOK_DATA_DIR/usage-spool.jsonl`.
pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join(SPOOL_FILE)
}

/// Takes the spool for this process: an exclusive lock on `<spool>.lock`, held as long as the
/// returned file lives. `None` when another process holds it (two processes sharing a data
/// directory would wipe or skip each other's records) or the file cannot be opened.
pub fn take(spool: &Path) -> Option<File> {
    let path = spool.with_extension("lock");
    let file = open_append(&path).ok()?;
    file.try_lock().ok()?;
    Some(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u64) -> UsageRecord {
        UsageRecord {
            id: Uuid::now_v7(),
            user_id: UserId::new_random(),
            provider: ProviderId::Openai,
            model: format!("gpt-{n}"),
            credential: CredentialKind::User,
            status: 200,
            input_tokens: n,
            output_tokens: 1,
            latency_ms: 3,
            at: Utc::now(),
            fallback: false,
        }
    }

    #[test]
    fn one_process_takes_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let spool = path_in(dir.path());
        let first = take(&spool).expect("the first process takes it");
        assert!(take(&spool).is_none(), "a second one does not");
        drop(first);
        assert!(take(&spool).is_some(), "free again once released");
    }

    #[test]
    fn append_read_finish() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        let recs: Vec<_> = (0..5).map(rec).collect();
        let a = append(&path, 1 << 20, &recs[..3]);
        assert_eq!((a.written, a.lost), (3, 0));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A torn last line (a crash mid-write): skipped, the next append starts a new line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"id\":\"torn")
            .unwrap();
        append(&path, 1 << 20, &recs[3..]);
        let first = read(&path, 0, 2).unwrap();
        assert_eq!(first.records, recs[..2]);
        let rest = read(&path, first.next, 100).unwrap();
        assert_eq!(rest.records, recs[2..]);
        assert_eq!(rest.unreadable, 1);
        assert!(
            !finish(&path, first.next).unwrap(),
            "not everything was read"
        );
        assert!(finish(&path, rest.next).unwrap());
        assert_eq!(size(&path), 0);
        assert!(read(&path, 0, 10).unwrap().records.is_empty());
    }

    #[test]
    fn the_size_limit_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        let recs: Vec<_> = (0..10).map(rec).collect();
        let a = append(&path, 600, &recs);
        assert!(a.written > 0 && a.written < 10, "{a:?}");
        assert_eq!(a.written + a.lost, 10);
        assert!(size(&path) <= 600);
        assert_eq!(read(&path, 0, 100).unwrap().records.len() as u64, a.written);
    }
}
