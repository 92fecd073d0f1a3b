//! File systems mounted for a test (needs permission to `mount`, e.g. root
//! in the test container): a small tmpfs to fill up, a read-only bind
//! mount. Each is undone by a guard, even when an assertion fails.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Unmounts (lazily, so open files cannot keep it) when dropped.
pub struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount(args: &[&str], target: &Path) -> Result<Mount, String> {
    let out = Command::new("mount")
        .args(args)
        .arg(target)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if out.status.success() {
        Ok(Mount(target.to_path_buf()))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A tmpfs of `size` (e.g. `4m`) on `dir`; `Err` says why not.
pub fn tmpfs(dir: &Path, size: &str) -> Result<Mount, String> {
    mount(
        &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
        dir,
    )
    .map_err(|why| format!("cannot mount a tmpfs here: {why}"))
}

/// Make `dir` read-only with a read-only bind mount of itself over it
/// (files already open for writing stay writable; new files cannot be
/// created); `Err` says why not.
pub fn read_only(dir: &Path) -> Result<Mount, String> {
    let source = dir.to_str().expect("a UTF-8 path");
    let bind =
        mount(&["--bind", source], dir).map_err(|why| format!("cannot bind-mount here: {why}"))?;
    match mount(&["-o", "remount,bind,ro"], dir) {
        // The same mount as `bind`, whose guard unmounts it.
        Ok(remounted) => {
            std::mem::forget(remounted);
            Ok(bind)
        }
        Err(why) => Err(format!("cannot remount read-only here: {why}")),
    }
}

/// `mounted`'s mount, or `None` after saying on stderr why the test is
/// skipped (mounting is not permitted everywhere).
pub fn or_skip(mounted: Result<Mount, String>) -> Option<Mount> {
    mounted.inspect_err(|why| eprintln!("skipped: {why}")).ok()
}
