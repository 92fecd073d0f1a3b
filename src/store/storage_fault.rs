//! What kind of storage failure an I/O error is, so the API can tell a
//! full disk (507, "free space and retry") from a read-only or failing one
//! (503), and metrics can count each kind separately.

use std::io;

/// The kind of a failed write, fsync, create or rename in the data dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageFault {
    /// No space left on the device, or the quota is exhausted
    /// (`ENOSPC`, `EDQUOT`).
    NoSpace,
    /// The file system is read-only or the directory is not writable
    /// (`EROFS`, `EACCES`, `EPERM`).
    ReadOnly,
    /// Any other I/O error (`EIO` and the like).
    Io,
}

impl StorageFault {
    /// Classify an I/O error.
    pub fn of(e: &io::Error) -> StorageFault {
        match e.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => StorageFault::NoSpace,
            io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied => {
                StorageFault::ReadOnly
            }
            _ => StorageFault::Io,
        }
    }

    /// The metric label of this kind.
    pub fn label(self) -> &'static str {
        match self {
            StorageFault::NoSpace => "no_space",
            StorageFault::ReadOnly => "read_only",
            StorageFault::Io => "io",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_values_map_to_kinds() {
        // Linux errno values: ENOSPC 28, EDQUOT 122, EROFS 30, EACCES 13, EIO 5.
        for (errno, kind) in [
            (28, StorageFault::NoSpace),
            (122, StorageFault::NoSpace),
            (30, StorageFault::ReadOnly),
            (13, StorageFault::ReadOnly),
            (5, StorageFault::Io),
        ] {
            assert_eq!(StorageFault::of(&io::Error::from_raw_os_error(errno)), kind);
        }
        assert_eq!(StorageFault::NoSpace.label(), "no_space");
    }
}
