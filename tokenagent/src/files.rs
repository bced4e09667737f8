//! Atomic file replacement.
//!
//! A file is written to a temporary name in the same directory, flushed to
//! disk, renamed over the target and the directory is flushed. `rename(2)`
//! within one filesystem is atomic, so a reader sees either the old complete
//! file or the new complete file, never a partial or empty one, even if the
//! process is killed at any point.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The prefix of temporary files; stale ones are removed by [`remove_stale_temps`].
const TEMP_PREFIX: &str = ".rds-iam-tmp-";

/// Atomically replaces `dir/name` with `contents`, with file mode `mode`.
pub fn write_atomic(dir: &Path, name: &str, contents: &[u8], mode: u32) -> io::Result<()> {
    write_atomic_with(dir, name, contents, mode, |_| Ok(()))
}

/// Like [`write_atomic`], with a hook run after the temporary file is complete
/// and before the rename. Tests use it to simulate a crash at that point: if
/// the hook fails, the temporary file is left behind, as after a real crash.
pub fn write_atomic_with(
    dir: &Path,
    name: &str,
    contents: &[u8],
    mode: u32,
    before_rename: impl FnOnce(&Path) -> io::Result<()>,
) -> io::Result<()> {
    let target = dir.join(name);
    let tmp = temp_path(dir, name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have removed bits; set exactly what was asked for.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()?;
        Ok::<_, io::Error>(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    before_rename(&tmp)?;
    if let Err(e) = fs::rename(&tmp, &target) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)?.sync_all()
}

fn temp_path(dir: &Path, name: &str) -> PathBuf {
    let nonce: u64 = rand::random();
    dir.join(format!(
        "{TEMP_PREFIX}{name}-{}-{nonce:016x}",
        std::process::id()
    ))
}

/// Removes temporary files a killed process may have left in `dir`.
/// Returns how many were removed.
pub fn remove_stale_temps(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(TEMP_PREFIX))
        {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn writes_with_exact_mode() {
        let d = tempfile::tempdir().unwrap();
        write_atomic(d.path(), "pgpass", b"a:1:*:u:t\n", 0o600).unwrap();
        assert_eq!(fs::read(d.path().join("pgpass")).unwrap(), b"a:1:*:u:t\n");
        assert_eq!(mode_of(&d.path().join("pgpass")), 0o600);
        // Replacing a file with looser permissions tightens them.
        fs::set_permissions(d.path().join("pgpass"), fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(d.path(), "pgpass", b"b", 0o600).unwrap();
        assert_eq!(mode_of(&d.path().join("pgpass")), 0o600);
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn crash_before_rename_keeps_old_file() {
        let d = tempfile::tempdir().unwrap();
        write_atomic(d.path(), "token", b"old-token", 0o600).unwrap();
        let err = write_atomic_with(d.path(), "token", b"new-token", 0o600, |tmp| {
            // At the crash point the new content is complete in the temp file,
            // and the target still holds the old one.
            assert_eq!(fs::read(tmp).unwrap(), b"new-token");
            assert_eq!(fs::read(d.path().join("token")).unwrap(), b"old-token");
            Err(io::Error::other("simulated crash"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "simulated crash");
        assert_eq!(fs::read(d.path().join("token")).unwrap(), b"old-token");
        // The "crashed" process left its temp file; the next start removes it.
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 2);
        assert_eq!(remove_stale_temps(d.path()).unwrap(), 1);
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn failed_write_removes_temp_and_keeps_old() {
        let d = tempfile::tempdir().unwrap();
        write_atomic(d.path(), "token", b"old", 0o600).unwrap();
        // A directory in the way makes the rename fail.
        fs::remove_file(d.path().join("token")).unwrap();
        fs::create_dir(d.path().join("token")).unwrap();
        fs::write(d.path().join("token").join("x"), b"").unwrap();
        assert!(write_atomic(d.path(), "token", b"new", 0o600).is_err());
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("token")]);
    }

    #[test]
    fn read_only_directory_is_an_error_not_a_panic() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("nope");
        let e = write_atomic(&missing, "token", b"x", 0o600).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
