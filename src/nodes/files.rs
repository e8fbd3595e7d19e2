//! Writes the files of a pod's configMap and secret volumes, and cannot write anywhere else.
//!
//! Paths come from a manifest (`items[].path`), so a committer chooses them. Validation refuses
//! absolute paths and `..`, but this module does not rely on it: every file and folder is
//! opened beneath a handle on the volume's folder with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)`, so neither `..`, an absolute path nor a symlink planted in the folder
//! can lead out of it. It must never open a path by its full name.

use rustix::fs::{Mode, OFlags, ResolveFlags};
use std::os::fd::OwnedFd;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("volume file path `{path}` is not a relative path inside the volume")]
    OutsideVolume { path: String },
    #[error("opening {path} beneath the volume folder failed")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path} failed")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// How openat2 resolves every path here: inside the folder handle, following no symlink.
const BENEATH: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS);

/// The folders and file name of a path that stays inside its folder ([`relative_path_parts`]).
pub use crate::manifest::validate::relative_path_parts as split_relative;

/// Opens `dir` itself as the handle files are written beneath; `dir` must be a real folder, not
/// a symlink.
pub fn open_folder(dir: &Path) -> Result<OwnedFd, FilesError> {
    rustix::fs::open(dir, OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY, Mode::empty())
        .map_err(|error| FilesError::Open { path: dir.display().to_string(), source: error.into() })
}

/// Writes `contents` to `relative` beneath `folder` with `mode` (and owned by `group`, when
/// given), making the folders between (mode 0755), replacing a file of that name. Nothing
/// outside `folder` is opened or created.
pub fn write_beneath(
    folder: &OwnedFd,
    relative: &str,
    contents: &[u8],
    mode: u32,
    group: Option<u32>,
) -> Result<(), FilesError> {
    let outside = || FilesError::OutsideVolume { path: relative.to_owned() };
    let (folders, _) = split_relative(relative).ok_or_else(outside)?;
    let mut so_far = String::new();
    for name in folders {
        if !so_far.is_empty() {
            so_far.push('/');
        }
        so_far.push_str(name);
        match rustix::fs::mkdirat(folder, so_far.as_str(), Mode::from_raw_mode(0o755)) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => {}
            Err(error) => return Err(FilesError::Open { path: so_far.clone(), source: error.into() }),
        }
        // An existing entry must be a folder reached without a symlink.
        rustix::fs::openat2(folder, so_far.as_str(), OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty(), BENEATH)
            .map_err(|error| FilesError::Open { path: so_far.clone(), source: error.into() })?;
    }
    let file = rustix::fs::openat2(
        folder,
        relative,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode & 0o777),
        BENEATH,
    )
    .map_err(|error| FilesError::Open { path: relative.to_owned(), source: error.into() })?;
    let mut file = std::fs::File::from(file);
    std::io::Write::write_all(&mut file, contents)
        .and_then(|()| file.set_len(contents.len() as u64))
        .map_err(|source| FilesError::Write { path: relative.to_owned(), source })?;
    if let Some(group) = group {
        rustix::fs::fchown(&file, None, Some(rustix::fs::Gid::from_raw(group)))
            .map_err(|error| FilesError::Write { path: relative.to_owned(), source: error.into() })?;
    }
    // The mode the file was created with passed through the umask; a file that existed keeps
    // its old mode. Set it exactly.
    rustix::fs::fchmod(&file, Mode::from_raw_mode(mode & 0o777))
        .map_err(|error| FilesError::Write { path: relative.to_owned(), source: error.into() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn relative_paths_only() {
        assert_eq!(split_relative("a/b/c.txt"), Some((vec!["a", "b"], "c.txt")));
        assert_eq!(split_relative("..data"), Some((vec![], "..data")));
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a/./b", "a/", ".", "a\0b"] {
            assert_eq!(split_relative(bad), None, "{bad:?}");
        }
    }

    /// Issue 13: adversarial paths and planted symlinks never lead a write out of the folder.
    #[test]
    fn writes_stay_beneath_the_folder() {
        let root = tempfile::tempdir().unwrap();
        let volume = root.path().join("volume");
        let outside = root.path().join("outside");
        std::fs::create_dir_all(&volume).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, volume.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.join("target"), volume.join("file-link")).unwrap();
        std::os::unix::fs::symlink("/", volume.join("root")).unwrap();
        let folder = open_folder(&volume).unwrap();

        for path in ["../outside/x", "/tmp/berth-escape", "link/x", "file-link", "root/tmp/x", "a/../../outside/y"] {
            assert!(write_beneath(&folder, path, b"value", 0o644, None).is_err(), "{path} was written");
        }
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "something was written outside");
        assert!(!Path::new("/tmp/berth-escape").exists());

        write_beneath(&folder, "conf/app/settings.conf", b"port = 80\n", 0o440, None).unwrap();
        let written = volume.join("conf/app/settings.conf");
        assert_eq!(std::fs::read(&written).unwrap(), b"port = 80\n");
        assert_eq!(std::fs::metadata(&written).unwrap().permissions().mode() & 0o777, 0o440);
        // Shorter contents replace longer ones whole, and a new mode is applied.
        write_beneath(&folder, "conf/app/settings.conf", b"p\n", 0o600, Some(4321)).unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::gid(&std::fs::metadata(&written).unwrap()), 4321);
        assert_eq!(std::fs::read(&written).unwrap(), b"p\n");
        assert_eq!(std::fs::metadata(&written).unwrap().permissions().mode() & 0o777, 0o600);
        // The volume folder itself must not be a symlink.
        assert!(open_folder(&volume.join("link")).is_err());
    }
}
