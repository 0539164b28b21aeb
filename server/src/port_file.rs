//! The port file: where the exec probes (`healthcheck`) learn the port the kernel chose. A file
//! left by an earlier run of the container must not answer for this one, so it is removed
//! before anything else, and the new port appears in it whole (written aside, then renamed).

use std::io;
use std::path::{Path, PathBuf};

/// Removes a port file left by an earlier run: until this run has bound its port, the probes
/// find no port and fail, rather than probe whatever holds the old one now.
pub fn clear(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes `port`, so that a reader sees either no file or the whole number.
pub fn write(path: &Path, port: u16) -> io::Result<()> {
    let mut aside = PathBuf::from(path);
    aside.as_mut_os_string().push(".new");
    std::fs::write(&aside, format!("{port}\n"))?;
    std::fs::rename(&aside, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_file_is_cleared_and_a_new_port_replaces_it_whole() {
        let dir = std::env::temp_dir().join(format!("port-file-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("port");
        std::fs::write(&path, "43800\n").unwrap();
        clear(&path).unwrap();
        assert!(!path.exists(), "the last run's port is gone");
        clear(&path).expect("no file is no error");
        write(&path, 51234).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "51234\n");
        assert!(!dir.join("port.new").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
