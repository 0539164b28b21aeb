//! The write token, read from a file: a mounted Kubernetes Secret on both sides of a write.

/// Reads a token from a file (a mounted Kubernetes Secret, say), without its trailing
/// newline. An empty file is an error, not "no token": an operator who set a token file meant
/// to require one.
pub fn read_file(path: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{path} is empty"));
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_token_without_its_newline_and_refuses_an_empty_file() {
        let dir = std::env::temp_dir().join(format!("token-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(read_file(path.to_str().unwrap()), Ok("s3cret".to_string()));
        std::fs::write(&path, " \n").unwrap();
        assert!(read_file(path.to_str().unwrap()).unwrap_err().ends_with("is empty"));
        assert!(read_file(dir.join("missing").to_str().unwrap()).unwrap_err().starts_with("cannot read"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
