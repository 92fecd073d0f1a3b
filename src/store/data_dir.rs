//! The data directory: one checkpoint file per stream (`<id>.ckpt`), and a
//! `quarantine/` folder where unreadable checkpoints are moved aside.
//!
//! Ids are validated ([`StreamId`]) before they become file names. Every
//! write goes through [`checkpoint::PendingWrite`] (temporary file, fsync, rename,
//! directory fsync).

use std::fs;
use std::path::{Path, PathBuf};

use crate::store::checkpoint::{self, CheckpointError};
use crate::store::stream::{Broken, Slot, Stream, StreamState};
use crate::store::stream_id::StreamId;

/// File name suffix of checkpoints.
pub const SUFFIX: &str = ".ckpt";
/// Subdirectory for checkpoints that failed to load.
pub const QUARANTINE: &str = "quarantine";

/// A checkpoint that failed to load.
#[derive(Debug)]
pub struct LoadFailure {
    /// The stream it belonged to.
    pub id: StreamId,
    /// The file as found.
    pub file: PathBuf,
    /// Where it was moved (equal to `file` if moving failed too).
    pub moved_to: PathBuf,
    /// Why it failed.
    pub error: String,
}

/// What [`DataDir::load_all`] found.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Streams restored, sorted by id.
    pub loaded: Vec<StreamState>,
    /// Checkpoints that failed and were moved aside.
    pub failed: Vec<LoadFailure>,
    /// Files ignored, with the reason (not a valid id, leftover temp file).
    pub ignored: Vec<(PathBuf, String)>,
}

/// The checkpoint files of the data directory, found by name.
#[derive(Debug, Default)]
pub struct Scan {
    /// Streams with a checkpoint file, sorted.
    pub ids: Vec<StreamId>,
    /// Files ignored, with the reason (not a valid id, leftover temp file).
    pub ignored: Vec<(PathBuf, String)>,
}

/// What one save did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// A checkpoint of this many bytes was written.
    Written(usize),
    /// Nothing to write (the stream is broken or deleted).
    Nothing,
}

/// The directory holding checkpoints.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Use `root`, creating it if needed.
    pub fn open(root: impl Into<PathBuf>) -> Result<DataDir, CheckpointError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|source| CheckpointError::Io {
            path: root.clone(),
            source,
        })?;
        Ok(DataDir { root })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `id`'s checkpoint lives.
    pub fn path_for(&self, id: &StreamId) -> PathBuf {
        self.root.join(format!("{id}{SUFFIX}"))
    }

    /// Write `stream`'s checkpoint if it is a working stream, and record the
    /// version written. Holds the stream's I/O lock throughout and its state
    /// lock only while encoding.
    pub fn save(&self, stream: &Stream) -> Result<Saved, CheckpointError> {
        let _io = stream.lock_io();
        if !matches!(&*stream.lock(), Slot::Ready(_)) {
            // An evicted stream's file is already its whole state.
            return Ok(Saved::Nothing);
        }
        let mut pending = checkpoint::PendingWrite::create(&self.path_for(stream.id()))?;
        let (version, lsn) = {
            let slot = stream.lock();
            let version = stream.version();
            match &*slot {
                Slot::Ready(state) => {
                    pending.write(&**state)?;
                    (version, state.wal_lsn)
                }
                Slot::Evicted(_) | Slot::Broken(_) | Slot::Deleted => return Ok(Saved::Nothing),
            }
        };
        let bytes = pending.commit()?;
        stream.mark_saved(version);
        stream.mark_checkpoint_lsn(lsn);
        Ok(Saved::Written(bytes as usize))
    }

    /// Mark `stream` deleted and remove its checkpoint. `log` runs first,
    /// under the stream's locks (it writes the deletion to the write-ahead
    /// log, durably, so a restart cannot resurrect the stream from older
    /// log records); if it fails nothing changes. `unlink` runs while the
    /// stream's locks are still held (it removes the registry entry), so a
    /// stream recreated under the same name writes its file only after the
    /// old one is gone.
    pub fn delete<E>(
        &self,
        stream: &Stream,
        log: impl FnOnce() -> Result<(), E>,
        unlink: impl FnOnce(),
    ) -> Result<Result<(), CheckpointError>, E> {
        let _io = stream.lock_io();
        let mut slot = stream.lock();
        log()?;
        let path = self.path_for(stream.id());
        let result = match fs::remove_file(&path) {
            Ok(()) => checkpoint::sync_parent(&path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(CheckpointError::Io { path, source }),
        };
        *slot = Slot::Deleted;
        stream.mark_changed();
        unlink();
        Ok(result)
    }

    /// Load every checkpoint. Unreadable ones are moved to `quarantine/`
    /// and reported; leftover temporary files are removed.
    pub fn load_all(&self) -> Result<LoadReport, CheckpointError> {
        let scan = self.scan()?;
        let mut report = LoadReport {
            ignored: scan.ignored,
            ..LoadReport::default()
        };
        for id in scan.ids {
            match self.load_one(&id) {
                Ok(state) => report.loaded.push(state),
                Err(failure) => report.failed.push(failure),
            }
        }
        Ok(report)
    }

    /// The streams that have a checkpoint file, by file name only (nothing
    /// is decoded), sorted by id; leftover temporary files are removed.
    pub fn scan(&self) -> Result<Scan, CheckpointError> {
        let mut scan = Scan::default();
        let entries = fs::read_dir(&self.root).map_err(|source| CheckpointError::Io {
            path: self.root.clone(),
            source,
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .map(|e| e.path())
            .collect();
        files.sort();
        for path in files {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(&path);
                scan.ignored
                    .push((path, "leftover temporary file, removed".into()));
                continue;
            }
            let Some(stem) = name.strip_suffix(SUFFIX) else {
                scan.ignored.push((path, "not a checkpoint file".into()));
                continue;
            };
            match StreamId::new(stem) {
                Ok(id) => scan.ids.push(id),
                Err(e) => scan.ignored.push((path, e.to_string())),
            }
        }
        Ok(scan)
    }

    /// Decode `id`'s checkpoint. An unreadable one is moved to
    /// `quarantine/` and reported.
    pub fn load_one(&self, id: &StreamId) -> Result<StreamState, LoadFailure> {
        let path = self.path_for(id);
        let result = checkpoint::load::<StreamState>(&path).and_then(|st| {
            if st.id == *id {
                Ok(st)
            } else {
                Err(CheckpointError::Decode(format!(
                    "file holds stream {:?}",
                    st.id.as_str()
                )))
            }
        });
        result.map_err(|e| {
            let moved_to = self.quarantine(&path).unwrap_or_else(|_| path.clone());
            LoadFailure {
                id: id.clone(),
                file: path,
                moved_to,
                error: e.to_string(),
            }
        })
    }

    fn quarantine(&self, path: &Path) -> std::io::Result<PathBuf> {
        let dir = self.root.join(QUARANTINE);
        fs::create_dir_all(&dir)?;
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let target = dir.join(format!("{name}.{stamp}"));
        fs::rename(path, &target)?;
        let _ = checkpoint::sync_parent(path);
        Ok(target)
    }
}

/// The entry for a checkpoint that failed to load.
pub fn broken_stream(failure: &LoadFailure) -> Stream {
    Stream::new(
        failure.id.clone(),
        Slot::Broken(Broken {
            moved_to: failure.moved_to.clone(),
            reason: failure.error.clone(),
        }),
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::stream::Sample;
    use crate::store::stream_config::{StreamConfig, DEFAULT_THRESHOLD};

    fn ready(id: &str, samples: usize) -> Stream {
        let id = StreamId::new(id).unwrap();
        let mut st = StreamState::new(
            id.clone(),
            StreamConfig::with_preset("default", DEFAULT_THRESHOLD),
        )
        .unwrap();
        let t = chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        let batch: Vec<_> = (0..samples)
            .map(|i| Sample {
                timestamp: t,
                value: i as f64,
                learn: None,
            })
            .collect();
        st.apply(&batch, &mut Vec::new()).unwrap();
        Stream::new(id, Slot::Ready(Box::new(st)), false)
    }

    #[test]
    fn save_then_load_restores_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let dd = DataDir::open(dir.path()).unwrap();
        let s = ready("a.b-c", 5);
        assert!(s.is_dirty());
        assert!(matches!(dd.save(&s).unwrap(), Saved::Written(n) if n > 0));
        assert!(!s.is_dirty());
        let report = dd.load_all().unwrap();
        assert_eq!(report.loaded.len(), 1);
        assert_eq!(report.loaded[0].id.as_str(), "a.b-c");
        assert_eq!(report.loaded[0].model.steps(), 5);
        assert!(report.failed.is_empty());
    }

    #[test]
    fn corrupt_files_are_moved_aside_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let dd = DataDir::open(dir.path()).unwrap();
        dd.save(&ready("good", 1)).unwrap();
        dd.save(&ready("bad", 1)).unwrap();
        let bad = dd.path_for(&StreamId::new("bad").unwrap());
        let bytes = fs::read(&bad).unwrap();
        fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
        fs::write(dir.path().join("x.ckpt.tmp"), b"junk").unwrap();
        fs::write(dir.path().join("notes.txt"), b"hello").unwrap();

        let report = dd.load_all().unwrap();
        assert_eq!(report.loaded.len(), 1);
        assert_eq!(report.failed.len(), 1);
        let f = &report.failed[0];
        assert_eq!(f.id.as_str(), "bad");
        assert!(f.error.contains("truncated"), "{}", f.error);
        assert!(!bad.exists());
        assert!(f.moved_to.starts_with(dir.path().join(QUARANTINE)));
        assert!(f.moved_to.exists());
        assert!(!dir.path().join("x.ckpt.tmp").exists());
        assert_eq!(report.ignored.len(), 2);
        // A second start finds only the good stream.
        let again = dd.load_all().unwrap();
        assert_eq!(again.loaded.len(), 1);
        assert!(again.failed.is_empty());
    }

    #[test]
    fn a_file_holding_another_stream_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let dd = DataDir::open(dir.path()).unwrap();
        dd.save(&ready("one", 1)).unwrap();
        fs::rename(dir.path().join("one.ckpt"), dir.path().join("two.ckpt")).unwrap();
        let report = dd.load_all().unwrap();
        assert_eq!(report.failed.len(), 1);
        assert!(report.failed[0].error.contains("one"));
    }

    #[test]
    fn delete_removes_the_file_and_marks_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let dd = DataDir::open(dir.path()).unwrap();
        let s = ready("gone", 2);
        dd.save(&s).unwrap();
        let mut unlinked = false;
        dd.delete(&s, || Ok::<_, ()>(()), || unlinked = true)
            .unwrap()
            .unwrap();
        assert!(unlinked);
        assert!(!dd.path_for(s.id()).exists());
        assert!(matches!(*s.lock(), Slot::Deleted));
        assert_eq!(dd.save(&s).unwrap(), Saved::Nothing);
        assert!(!dd.path_for(s.id()).exists());
    }
}
