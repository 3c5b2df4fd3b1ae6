//! Writing a file the user named as output (a capture, a report, a
//! snapshot) without harming what is at that path.
//!
//! - A regular file, or nothing yet: written beside under a name of our own
//!   and renamed over it, so that a reader never sees half a file.
//! - A symbolic link to a regular file: the file it points to is replaced
//!   that way; the link stays a link.
//! - Anything else that can be opened for writing (a device such as
//!   /dev/null, a FIFO, a link to either): written into, never removed or
//!   replaced. (Replacing /dev/null with a regular file, as root, would break
//!   the machine.)

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// How the bytes reach the path.
#[derive(Debug, PartialEq)]
enum Target {
    /// Write a new file beside this one and rename it over.
    Replace(PathBuf),
    /// Open this path and write into it.
    WriteInto(PathBuf),
}

fn target(path: &Path) -> io::Result<Target> {
    match fs::metadata(path) {
        // Through any links: the file itself is what gets replaced.
        Ok(meta) if meta.is_file() => Ok(Target::Replace(fs::canonicalize(path)?)),
        Ok(meta) if meta.is_dir() => Err(io::Error::other("it is a directory")),
        Ok(_) => Ok(Target::WriteInto(path.to_path_buf())),
        // A link to nothing yet: create what it names.
        Err(e) if e.kind() == io::ErrorKind::NotFound && fs::symlink_metadata(path).is_ok() => {
            Ok(Target::WriteInto(path.to_path_buf()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Target::Replace(path.to_path_buf())),
        Err(e) => Err(e),
    }
}

/// Writes `data` to a new file beside `path` and renames it over `path`.
fn replace(path: &Path, data: &[u8]) -> io::Result<()> {
    let directory = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for attempt in 0.. {
        let partial = directory.join(format!(".{name}.{}.{attempt}.partial", std::process::id()));
        // create_new: never a file someone else is writing.
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => continue,
            Err(e) => return Err(e),
        };
        let written = file
            .write_all(data)
            .and_then(|()| keep_permissions(path, &file))
            .and_then(|()| fs::rename(&partial, path));
        if written.is_err() {
            let _ = fs::remove_file(&partial);
        }
        return written;
    }
    unreachable!("the loop returns")
}

/// The new file gets the permissions of the one it replaces (a capture kept
/// private stays private).
fn keep_permissions(path: &Path, new: &fs::File) -> io::Result<()> {
    match fs::metadata(path) {
        Ok(old) => new.set_permissions(old.permissions()),
        Err(_) => Ok(()), // nothing there yet
    }
}

fn write_into(path: &Path, data: &[u8]) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?
        .write_all(data)
}

/// Writes `data` to the path the user named; the error is one line naming
/// the path.
pub fn write(path: &Path, data: &[u8]) -> Result<(), String> {
    let written = target(path).and_then(|target| match target {
        Target::Replace(file) => replace(&file, data),
        Target::WriteInto(other) => write_into(&other, data),
    });
    written.map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, FileTypeExt, PermissionsExt};

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("heapsite-output-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn regular_files_are_replaced_and_links_kept() {
        let dir = scratch("links");
        let file = dir.join("real.capture");
        fs::write(&file, b"old").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.join("link.capture");
        symlink(&file, &link).unwrap();
        write(&link, b"new").unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&file).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        write(&dir.join("fresh"), b"x").unwrap();
        assert_eq!(fs::read(dir.join("fresh")).unwrap(), b"x");
        let left: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 3, "no partial file left behind");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn other_files_are_written_into() {
        let dir = scratch("fifo");
        let fifo = dir.join("fifo");
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        assert_eq!(target(&fifo).unwrap(), Target::WriteInto(fifo.clone()));
        let reader = std::thread::spawn({
            let fifo = fifo.clone();
            move || fs::read(fifo).unwrap()
        });
        write(&fifo, b"through").unwrap();
        assert_eq!(reader.join().unwrap(), b"through");
        assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo());
        assert!(write(&dir, b"x").unwrap_err().contains("directory"));
        let _ = fs::remove_dir_all(&dir);
    }
}
