//! The command line of the suite's binaries, read word by word: `--flag VALUE`, `--flag=VALUE`,
//! switches and bare words (`get PATH`), in any order. Each binary matches the names itself;
//! this only hands them out and says what is wrong in one line.

use std::process::ExitCode;
use std::str::FromStr;

/// The words of a command line, and the flag being read.
pub struct Args {
    words: std::vec::IntoIter<String>,
    /// The last word as given, for "unknown argument".
    word: String,
    /// Its name: the word up to `=` when it starts with `-`.
    name: String,
    /// What followed that `=`, until taken by [`Args::value`].
    inline: Option<String>,
}

impl Args {
    /// The words after the program's name.
    pub fn new(argv: Vec<String>) -> Args {
        Args { words: argv.into_iter(), word: String::new(), name: String::new(), inline: None }
    }

    /// The name of the next flag or bare word; `None` at the end.
    pub fn next_name(&mut self) -> Option<String> {
        self.word = self.words.next()?;
        (self.name, self.inline) = match self.word.split_once('=') {
            Some((name, value)) if self.word.starts_with('-') => (name.to_string(), Some(value.to_string())),
            _ => (self.word.clone(), None),
        };
        Some(self.name.clone())
    }

    /// The value of the current flag: after its `=`, or else the next word.
    pub fn value(&mut self) -> Result<String, String> {
        self.inline.take().or_else(|| self.words.next()).ok_or_else(|| format!("{} needs a value", self.name))
    }

    /// The value of the current flag, parsed; "bad --flag" when it does not parse.
    pub fn parse<T: FromStr>(&mut self) -> Result<T, String> {
        self.value()?.parse().map_err(|_| format!("bad {}", self.name))
    }

    /// The current flag as a switch: `true`, as it is given; an error if given a value
    /// (`--quick=no`), which would otherwise be taken for yes.
    pub fn switch(&self) -> Result<bool, String> {
        match self.inline {
            Some(_) => Err(format!("{} takes no value", self.name)),
            None => Ok(true),
        }
    }

    /// The error for a word no binary knows, naming it as given.
    pub fn unknown(&self) -> String {
        format!("unknown argument {:?}", self.word)
    }
}

/// Says what was wrong with the command line, and the usage, on stderr: exit status 2.
pub fn refuse(program: &str, error: &str, usage: &str) -> ExitCode {
    eprintln!("{program}: {error}\n{usage}");
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Args {
        Args::new(words.iter().map(|w| w.to_string()).collect())
    }

    #[test]
    fn values_follow_the_flag_or_its_equals_sign() {
        let mut a = args(&["--target", "127.0.0.1:1", "--clients=32", "get", "/a?b=c", "--quick"]);
        assert_eq!(a.next_name().as_deref(), Some("--target"));
        assert_eq!(a.value().as_deref(), Ok("127.0.0.1:1"));
        assert_eq!(a.next_name().as_deref(), Some("--clients"));
        assert_eq!(a.parse::<usize>(), Ok(32));
        assert_eq!(a.next_name().as_deref(), Some("get"));
        assert_eq!(a.value().as_deref(), Ok("/a?b=c"), "a bare word's value is the next word, whole");
        assert_eq!(a.next_name().as_deref(), Some("--quick"));
        assert_eq!(a.switch(), Ok(true));
        assert_eq!(a.next_name(), None);
    }

    #[test]
    fn mistakes_are_one_line_naming_the_flag() {
        let mut a = args(&["--clients", "many", "--quick=yes", "--what=x", "--timeout"]);
        a.next_name();
        assert_eq!(a.parse::<usize>(), Err("bad --clients".to_string()));
        a.next_name();
        assert_eq!(a.switch(), Err("--quick takes no value".to_string()));
        a.next_name();
        assert_eq!(a.unknown(), r#"unknown argument "--what=x""#);
        a.next_name();
        assert_eq!(a.value(), Err("--timeout needs a value".to_string()));
    }

    #[test]
    fn a_bare_word_with_an_equals_sign_is_one_word() {
        let mut a = args(&["get=/x"]);
        assert_eq!(a.next_name().as_deref(), Some("get=/x"));
        assert_eq!(a.unknown(), r#"unknown argument "get=/x""#);
    }
}
