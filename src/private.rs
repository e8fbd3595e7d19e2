//! Folders and files only berth's own user may read: its state folders are 0700 and every file
//! it writes in them 0600, whatever the umask. The store holds node credentials and the values
//! pods read; the agent's folder holds the files of Secret volumes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Makes `dir` (and its parents) if missing, and tightens it to 0700 if it is looser, saying so.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        tracing::info!(folder = %dir.display(), was = format!("{mode:o}"), "Tightened a state folder to 0700.");
    }
    Ok(())
}

/// Tightens an existing file to 0600; a missing one is left missing.
pub fn private_file(path: &Path) -> std::io::Result<()> {
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.permissions().mode() & 0o077 != 0 => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        }
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

/// Opens `path` for writing as a 0600 file (created so, or tightened), truncated.
pub fn create_private(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// Writes `bytes` to `path` as a 0600 file.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    create_private(path)?.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_folders_and_files_are_the_owners_alone() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        let file = dir.join("a");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        private_file(&file).unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        private_file(&dir.join("missing")).unwrap();
        let written = dir.join("b");
        std::fs::write(&written, "old and longer").unwrap();
        std::fs::set_permissions(&written, std::fs::Permissions::from_mode(0o666)).unwrap();
        write_private(&written, b"new").unwrap();
        assert_eq!(std::fs::read(&written).unwrap(), b"new");
        assert_eq!(std::fs::metadata(&written).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
