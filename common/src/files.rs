//! Atomic file replacement.
//!
//! A file is written to a temporary name in the same directory, flushed to
//! disk, renamed over the target and the directory is flushed. `rename(2)`
//! within one filesystem is atomic, so a reader sees either the old complete
//! file or the new complete file, never a partial or empty one, even if the
//! process is killed at any point.
//!
//! [`replace_all`] replaces several files that belong together (`token` and
//! `pgpass`) as one: all of them, or none. Every file is staged first; then
//! they are renamed in order, and if a rename fails the ones already renamed
//! are put back from hard links of their previous versions.

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
    let tmp = stage(dir, name, contents, mode)?;
    before_rename(&tmp)?;
    if let Err(e) = fs::rename(&tmp, &target) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)?.sync_all()
}

/// Writes `contents` to a new temporary file beside `dir/name`, flushed to
/// disk, and returns its path. On failure nothing is left behind.
fn stage(dir: &Path, name: &str, contents: &[u8], mode: u32) -> io::Result<PathBuf> {
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
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// What a failed [`replace_all`] left in place.
#[derive(Debug)]
pub enum Left {
    /// Every file holds its previous content (or is still absent).
    Unchanged,
    /// Undoing the renames failed: `replaced` hold the new content, the
    /// others the previous one.
    Mixed {
        replaced: Vec<String>,
        undo_error: io::Error,
    },
}

/// Replacing a set of files failed; says exactly what is on disk now.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {source}; {}", path.display(), describe(left))]
pub struct ReplaceError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
    pub left: Left,
}

fn describe(left: &Left) -> String {
    match left {
        Left::Unchanged => "the previous files are kept".to_owned(),
        Left::Mixed {
            replaced,
            undo_error,
        } => format!(
            "{} already holds the new content and putting the previous version back \
             failed ({undo_error}), so the files disagree until the next refresh",
            replaced.join(" and ")
        ),
    }
}

/// Replaces every `(name, contents)` in `dir`, all or none, each with mode
/// `mode`.
pub fn replace_all(dir: &Path, files: &[(&str, &[u8])], mode: u32) -> Result<(), ReplaceError> {
    replace_all_with(dir, files, mode, |_| Ok(()))
}

/// Like [`replace_all`], with a hook run before each rename (with the
/// file's name); tests use it to make a rename fail.
pub fn replace_all_with(
    dir: &Path,
    files: &[(&str, &[u8])],
    mode: u32,
    mut before_rename: impl FnMut(&str) -> io::Result<()>,
) -> Result<(), ReplaceError> {
    let fail = |name: &str, source: io::Error, left: Left| ReplaceError {
        path: dir.join(name),
        source,
        left,
    };
    let mut staged: Vec<(&str, PathBuf)> = Vec::with_capacity(files.len());
    for (name, contents) in files {
        match stage(dir, name, contents, mode) {
            Ok(tmp) => staged.push((name, tmp)),
            Err(e) => {
                remove_all(staged.iter().map(|(_, t)| t));
                return Err(fail(name, e, Left::Unchanged));
            }
        }
    }
    // The previous version of every file but the last (whose rename is the
    // last step), to put back if a later rename fails.
    let backups: Vec<Previous> = staged
        .iter()
        .take(staged.len().saturating_sub(1))
        .map(|(name, _)| {
            let b = temp_path(dir, &format!("{name}-previous"));
            match fs::hard_link(dir.join(name), &b) {
                Ok(()) => Previous::Saved(b),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Previous::Absent,
                Err(e) => Previous::Unsaved(e),
            }
        })
        .collect();
    for (i, (name, tmp)) in staged.iter().enumerate() {
        let renamed = before_rename(name).and_then(|()| fs::rename(tmp, dir.join(name)));
        if let Err(e) = renamed {
            remove_all(staged[i..].iter().map(|(_, t)| t));
            let left = undo(dir, &staged[..i], backups);
            let _ = File::open(dir).and_then(|d| d.sync_all());
            return Err(fail(name, e, left));
        }
    }
    remove_all(backups.iter().filter_map(Previous::saved));
    // The files are complete and in place; flushing the directory only
    // matters for a power loss, so its failure is not an error of the write.
    let _ = File::open(dir).and_then(|d| d.sync_all());
    Ok(())
}

/// A file's version before [`replace_all`].
enum Previous {
    /// Hard-linked to this temporary name.
    Saved(PathBuf),
    /// There was no file.
    Absent,
    /// It could not be linked (a filesystem without hard links).
    Unsaved(io::Error),
}

impl Previous {
    fn saved(&self) -> Option<&PathBuf> {
        match self {
            Previous::Saved(p) => Some(p),
            _ => None,
        }
    }
}

/// Puts back the previous versions of the `renamed` files, removing the
/// ones that had none, and drops the other saved versions.
fn undo(dir: &Path, renamed: &[(&str, PathBuf)], backups: Vec<Previous>) -> Left {
    let mut replaced = Vec::new();
    let mut undo_error = None;
    let mut backups = backups.into_iter();
    for ((name, _), previous) in renamed.iter().zip(backups.by_ref()) {
        let target = dir.join(name);
        let r = match previous {
            Previous::Saved(b) => fs::rename(&b, &target).inspect_err(|_| {
                let _ = fs::remove_file(&b);
            }),
            Previous::Absent => fs::remove_file(&target),
            Previous::Unsaved(e) => Err(e),
        };
        if let Err(e) = r {
            replaced.push((*name).to_owned());
            undo_error.get_or_insert(e);
        }
    }
    remove_all(
        backups
            .collect::<Vec<_>>()
            .iter()
            .filter_map(Previous::saved),
    );
    match undo_error {
        None => Left::Unchanged,
        Some(undo_error) => Left::Mixed {
            replaced,
            undo_error,
        },
    }
}

fn remove_all<'a>(paths: impl Iterator<Item = &'a PathBuf>) {
    for p in paths {
        let _ = fs::remove_file(p);
    }
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

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    const PAIR_OLD: &[(&str, &[u8])] = &[("token", b"old-token"), ("pgpass", b"old-line\n")];
    const PAIR_NEW: &[(&str, &[u8])] = &[("token", b"new-token"), ("pgpass", b"new-line\n")];

    fn read(dir: &Path, name: &str) -> String {
        fs::read_to_string(dir.join(name)).unwrap()
    }

    #[test]
    fn replace_all_replaces_every_file() {
        let d = tempfile::tempdir().unwrap();
        replace_all(d.path(), PAIR_OLD, 0o600).unwrap();
        replace_all(d.path(), PAIR_NEW, 0o600).unwrap();
        assert_eq!(read(d.path(), "token"), "new-token");
        assert_eq!(read(d.path(), "pgpass"), "new-line\n");
        assert_eq!(mode_of(&d.path().join("pgpass")), 0o600);
        assert_eq!(
            names(d.path()),
            ["pgpass", "token"],
            "no temporary file left"
        );
    }

    #[test]
    fn a_failed_second_rename_puts_the_first_file_back() {
        let d = tempfile::tempdir().unwrap();
        replace_all(d.path(), PAIR_OLD, 0o600).unwrap();
        // A directory in pgpass's place makes its rename fail after token's.
        fs::remove_file(d.path().join("pgpass")).unwrap();
        fs::create_dir(d.path().join("pgpass")).unwrap();
        fs::write(d.path().join("pgpass").join("x"), b"").unwrap();
        let e = replace_all(d.path(), PAIR_NEW, 0o600).unwrap_err();
        assert!(matches!(e.left, Left::Unchanged), "{e}");
        assert!(e.path.ends_with("pgpass"), "{e}");
        assert!(
            e.to_string().ends_with("; the previous files are kept"),
            "{e}"
        );
        assert_eq!(read(d.path(), "token"), "old-token", "token put back");
        assert_eq!(
            names(d.path()),
            ["pgpass", "token"],
            "no temporary file left"
        );
        // With no previous token, the new one is removed again.
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("pgpass")).unwrap();
        fs::write(d.path().join("pgpass").join("x"), b"").unwrap();
        let e = replace_all(d.path(), PAIR_NEW, 0o600).unwrap_err();
        assert!(matches!(e.left, Left::Unchanged), "{e}");
        assert_eq!(names(d.path()), ["pgpass"]);
    }

    #[test]
    fn a_failed_undo_says_which_file_changed() {
        let d = tempfile::tempdir().unwrap();
        replace_all(d.path(), PAIR_OLD, 0o600).unwrap();
        let e = replace_all_with(d.path(), PAIR_NEW, 0o600, |name| {
            if name != "pgpass" {
                return Ok(());
            }
            // Lose the saved previous token, then fail pgpass's rename.
            for n in names(d.path()) {
                if n.starts_with(".rds-iam-tmp-token-previous-") {
                    fs::remove_file(d.path().join(n)).unwrap();
                }
            }
            Err(io::Error::other("simulated rename failure"))
        })
        .unwrap_err();
        assert!(
            matches!(&e.left, Left::Mixed { replaced, .. } if replaced == &["token"]),
            "{e}"
        );
        assert!(
            e.to_string().starts_with(&format!(
                "cannot write {}: simulated rename failure; token already holds the new \
                 content and putting the previous version back failed (",
                d.path().join("pgpass").display()
            )),
            "{e}"
        );
        assert_eq!(read(d.path(), "token"), "new-token");
        assert_eq!(read(d.path(), "pgpass"), "old-line\n");
        assert_eq!(
            names(d.path()),
            ["pgpass", "token"],
            "no temporary file left"
        );
    }

    #[test]
    fn a_failed_stage_changes_nothing() {
        let d = tempfile::tempdir().unwrap();
        replace_all(d.path(), PAIR_OLD, 0o600).unwrap();
        let bad: &[(&str, &[u8])] = &[("token", b"new"), ("no/such/dir", b"x")];
        let e = replace_all(d.path(), bad, 0o600).unwrap_err();
        assert!(matches!(e.left, Left::Unchanged), "{e}");
        assert_eq!(read(d.path(), "token"), "old-token");
        assert_eq!(names(d.path()), ["pgpass", "token"]);
    }

    #[test]
    fn read_only_directory_is_an_error_not_a_panic() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("nope");
        let e = write_atomic(&missing, "token", b"x", 0o600).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
